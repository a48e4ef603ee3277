"""Markdown views of a decision backtest (README table, capacity-risk report section).

The numbers come from :mod:`capforecast.decision.scores`; this module only lays them out, so the
README (``tests/benchmarks/bench_decision.py``) and the report show the same table.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from capforecast.csv_tables import read_csv_table
from capforecast.escape import markdown_text

HOW_TO_RUN = (
    "This run used all data, so there is nothing to score its calls against. To see how the "
    "calls hold up, run a decision backtest: set `data.history_end` to a past instant (e.g. "
    "`--configfile` with `data: {history_end: '2013-09-21T00:00:00Z'}`) and build the "
    "`decision` target, or run `make decision-backtest` (several cuts of the Bitbrains "
    "development set; table in the README)."
)
MISSED_SHOWN = 10


def _cell(value: Any, digits: int = 2) -> str:
    if value is None or pd.isna(value):
        return "-"
    return f"{float(value):.{digits}f}"


def summary_markdown(summary: pd.DataFrame) -> str:
    """The per-method summary (``decision.SUMMARY_COLUMNS``) as a Markdown table."""
    lines = [
        "| method | series | breached | alerts | hits | precision | recall | F1 | Brier | "
        "Brier skill | ETA MAE h (n) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in summary.to_dict("records"):
        eta = f"{_cell(row['eta_mae_hours'], 1)} ({int(row['eta_n'])})" if row["eta_n"] else "-"
        lines.append(
            f"| {row['label']} | {int(row['series'])} | {int(row['breached'])} | "
            f"{int(row['alerts'])} | {int(row['true_positives'])} | {_cell(row['precision'], 3)} | "
            f"{_cell(row['recall'], 3)} | {_cell(row['f1'], 3)} | {_cell(row['brier'], 4)} | "
            f"{_cell(row['brier_skill'])} | "
            f"{eta} |"
        )
    return "\n".join(lines)


def rightsizing_markdown(counts: Mapping[str, int]) -> str:
    """One sentence on the right-sizing check (``decision.rightsizing_counts``)."""
    unchecked = (
        f"; {counts['not_checked']} could not be checked (capacity or actuals unknown)"
        if counts["not_checked"]
        else ""
    )
    return (
        f"Right-sizing: {counts['changed']} recommendations change the instance type "
        f"({counts['downsize']} downsizing); of the {counts['checked']} checked against the "
        f"actual peaks, **{counts['harmful']} harmful** (above 100 % of the recommended type; "
        f"{counts['harmful_downsize']} of them downsizing) and {counts['over_critical']} at or "
        f"above the critical threshold{unchecked}."
    )


def _markdown_cell(value: Any) -> str:
    """Text (ids, names, times read back as text) escaped; numbers as they print."""
    return markdown_text(value) if isinstance(value, str) else str(value)


def _table(frame: pd.DataFrame) -> str:
    if frame.empty:
        return ""
    cells = frame.astype(object).where(frame.notna(), None)
    head = "| " + " | ".join(map(_markdown_cell, frame.columns)) + " |"
    rule = "|" + "---|" * len(frame.columns)
    body = [
        "| " + " | ".join("-" if v is None else _markdown_cell(v) for v in row) + " |"
        for row in cells.itertuples(index=False)
    ]
    return "\n".join([head, rule, *body])


# The decision outputs the capacity-risk report reads: inputs of its rule (rules/common.smk).
DECISION_INPUTS = ("decision_summary", "decision_series_scores", "decision_rightsizing")


def report_section(inputs: Mapping[str, str | Path] | None) -> str:
    """Markdown for the capacity-risk report: the run's decision backtest, or how to run one.

    ``inputs`` are the report's inputs; the decision backtest's are ``DECISION_INPUTS``
    (summary.json, series_scores.csv, rightsizing_check.csv of the ``decision`` target), absent
    when the run has no held-back actuals.
    """
    if not inputs or DECISION_INPUTS[0] not in inputs:
        return HOW_TO_RUN
    summary = json.loads(Path(inputs["decision_summary"]).read_text())
    scores = read_csv_table(inputs["decision_series_scores"])
    check = read_csv_table(inputs["decision_rightsizing"])
    counts = summary["series"]
    not_scored = {k: v for k, v in counts.items() if k != "scored"}
    parts = [
        f"History cut at **{summary['history_end']}**; the calls of this report are scored "
        f"against the actuals up to {summary['actuals_end']} ({summary['horizon_bins']} bins, "
        f"hourly {summary['statistic']}). {counts.get('scored', 0)} percentage series scored"
        + (
            "; not scored: " + ", ".join(f"{k} {v}" for k, v in sorted(not_scored.items()))
            if not_scored
            else ""
        )
        + ".",
        "",
        summary_markdown(pd.DataFrame(summary["methods"])),
        "",
        rightsizing_markdown(summary["rightsizing"]),
    ]
    harmful = check[check["harmful"].astype(str) == "True"] if len(check) else check
    if len(harmful):
        columns = [
            "resource_id",
            "instance_type",
            "recommended_instance_type",
            "cpu_peak_on_recommended",
            "memory_peak_on_recommended",
        ]
        parts += ["", "Harmful recommendations:", "", _table(harmful[columns].round(1))]
    missed = scores[
        scores["scored"].astype(bool)
        & scores["breached"].astype(bool)
        & ~scores["call_at_risk"].astype(bool)
    ]
    if len(missed):
        columns = ["resource_id", "metric", "first_crossing", "metric_finding", "p_breach_critical"]
        shown = missed.sort_values("first_crossing")[columns].head(MISSED_SHOWN).round(3)
        parts += [
            "",
            f"Breaches not called at_risk ({len(missed)}, first {len(shown)}):",
            "",
            _table(shown),
        ]
    return "\n".join(parts)
