"""Rule render_report: execute a parameterised notebook with papermill, then self-contained HTML."""

import os
from pathlib import Path

from capforecast.reports.execute import execute_notebook
from capforecast.reports.html import notebook_html
from capforecast.rulekit import LOG, ensure_parent, run_rule, timed


def declared_inputs(smk) -> dict[str, str | list[str]]:
    """The files the rule declares (the notebook excepted), as absolute paths."""
    out: dict[str, str | list[str]] = {}
    for name, value in smk.input.items():
        if name == "notebook":
            continue
        out[name] = (
            str(Path(value).resolve())
            if isinstance(value, str)
            else [str(Path(v).resolve()) for v in value]
        )
    return out


def main(smk) -> None:
    ensure_parent(smk.output.notebook, smk.output.html)
    # The notebook finds the library through this even when --directory points elsewhere.
    os.environ["CAPFORECAST_ROOT"] = smk.params.project_root
    with timed(f"execute {smk.input.notebook}"):
        execute_notebook(
            smk.input.notebook,
            smk.output.notebook,
            # The notebook reads what this rule declares and shows the run's validated settings.
            parameters={
                "inputs": declared_inputs(smk),
                "top_n": smk.params.top_n,
                "sample_series": smk.params.sample_series,
                **smk.params.settings,
            },
            cwd=Path.cwd(),
        )
    body = notebook_html(smk.output.notebook, hide_code=smk.params.hide_code)
    Path(smk.output.html).write_text(body, encoding="utf-8")
    LOG.info("wrote %s (%d kB)", smk.output.html, len(body) // 1024)


run_rule(main, snakemake)
