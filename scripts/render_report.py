"""Rule render_report: execute a parameterised notebook with papermill, then self-contained HTML."""

import os
from pathlib import Path

import papermill

from capforecast.report_html import notebook_html
from capforecast.rulekit import LOG, ensure_parent, run_rule, timed


def decision_parameter(smk) -> dict[str, str]:
    """The run's decision backtest folder, for the report that shows it (capacity risk)."""
    summary = getattr(smk.input, "decision_summary", None)
    return {"decision_dir": str(Path(summary).parent.resolve())} if summary else {}


def main(smk) -> None:
    ensure_parent(smk.output.notebook, smk.output.html)
    # The notebook finds the library through this even when --directory points elsewhere.
    os.environ["CAPFORECAST_ROOT"] = smk.params.project_root
    with timed(f"execute {smk.input.notebook}"):
        papermill.execute_notebook(
            smk.input.notebook,
            smk.output.notebook,
            parameters={
                "results_dir": str(Path("results").resolve()),
                "top_n": smk.params.top_n,
                "sample_series": smk.params.sample_series,
                **decision_parameter(smk),
            },
            cwd=str(Path.cwd()),
            kernel_name="python3",
            progress_bar=False,
        )
    body = notebook_html(smk.output.notebook, hide_code=smk.params.hide_code)
    Path(smk.output.html).write_text(body, encoding="utf-8")
    LOG.info("wrote %s (%d kB)", smk.output.html, len(body) // 1024)


run_rule(main, snakemake)
