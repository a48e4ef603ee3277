"""The capacity-risk report (notebooks/capacity_risk.ipynb): the ranking, the headline and first
action, findings, the daily breach heatmap, thresholds, the capacity plan and right-sizing.
Conventions as in :mod:`capforecast.reports.common`; the frames follow the risk report's
contract: every column of ``contracts.RISK_REPORT_COLUMNS`` and
``contracts.SERVICE_CAPACITY_COLUMNS`` (:func:`check_risk_report` says which one is missing)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from capforecast.config import validated_config
from capforecast.contracts import RISK_REPORT_COLUMNS, SERVICE_CAPACITY_COLUMNS
from capforecast.errors import InputDataError
from capforecast.escape import markdown_text, plot_text
from capforecast.reports.common import (
    as_utc,
    empty_figure,
    fan_chart_figure,
    format_timestamp,
    with_series_id,
    with_utc_columns,
)

# A resource (or series) with this finding is not scored: it is listed, never ranked.
STOPPED = "stopped_reporting"

# What an act_by date was computed from (the risk report's ``act_by_basis``).
ACT_BY_BASIS: dict[str, str] = {
    "critical": "median ETA of the critical level minus lead time and safety margin",
    "warning": "median ETA of the warning level (critical not reached within the horizon) "
    "minus lead time and safety margin",
}

RISK_TIME_COLUMNS: tuple[str, ...] = ("eta_p10", "eta_p50", "eta_p90", "act_by")
# The score of one resource x metric row (``risk_score`` is the resource's maximum, repeated on
# all its rows).
ROW_SCORE = "metric_risk_score"

RANKED_RISK_COLUMNS: tuple[str, ...] = (
    "resource_id",
    "service",
    "metric",
    "finding",
    "metric_finding",
    "risk_score",
    "metric_risk_score",
    "confidence",
    "p_breach_warning",
    "p_breach_critical",
    "act_by",
    "act_by_basis",
    "act_now",
    "eta_p50",
    "days_until_full",
    "headroom_pct",
    "metric_reason_codes",
    "reason_codes",
)


def risk_levels(
    thresholds: Mapping[str, Any] | None, service_overrides: Mapping[str, Any] | None
) -> dict[str, Any]:
    """``{thresholds, service_overrides}`` the risk report shows: the run's (papermill
    parameters from the validated config), the schema's for a notebook opened by hand."""
    schema = validated_config({})["risk"]
    return {
        "thresholds": dict(schema["thresholds"] if thresholds is None else thresholds),
        "service_overrides": dict(
            schema["service_overrides"] if service_overrides is None else service_overrides
        ),
    }


def thresholds_table(levels: Mapping[str, Any]) -> pd.DataFrame:
    """``applies_to, metric, warning, critical``: the fleet's levels, then each service's."""
    rows = [
        {"applies_to": "every service", "metric": metric, **dict(values)}
        for metric, values in sorted(levels["thresholds"].items())
    ]
    for service, metrics in sorted(levels["service_overrides"].items()):
        for metric, values in sorted(metrics.items()):
            merged = {**levels["thresholds"].get(metric, {}), **dict(values)}
            rows.append({"applies_to": f"service {service}", "metric": metric, **merged})
    columns = ["applies_to", "metric", "warning", "critical"]
    table = pd.DataFrame(rows, columns=columns)
    return table.astype({"warning": float, "critical": float})


def check_risk_report(risk: pd.DataFrame, service_capacity: pd.DataFrame | None = None) -> None:
    """Raise a one-line ``InputDataError`` naming the first column of the risk stage's contract
    (``contracts.RISK_REPORT_COLUMNS``, ``SERVICE_CAPACITY_COLUMNS``) a frame lacks."""
    for name, frame, columns in (
        ("risk_report", risk, RISK_REPORT_COLUMNS),
        ("service_capacity", service_capacity, SERVICE_CAPACITY_COLUMNS),
    ):
        missing = [c for c in columns if frame is not None and c not in frame.columns]
        if missing:
            raise InputDataError(name, "column missing: not a risk stage output", column=missing[0])


def scored_rows(risk: pd.DataFrame) -> pd.DataFrame:
    """The rows of resources and series that are scored: not ``stopped_reporting``."""
    stopped = (risk["finding"].astype(str) == STOPPED) | (
        risk["metric_finding"].astype(str) == STOPPED
    )
    return risk[~stopped]


def ranked_risks(risk: pd.DataFrame, top_n: int | None = None) -> pd.DataFrame:
    """Scored resources x metrics with a risk (row score > 0), most urgent first.

    Order: row score (``ROW_SCORE``) descending, then act_by ascending (no deadline last), then
    P(breach critical) descending, then resource and metric for a stable tie-break.
    """
    columns = list(RANKED_RISK_COLUMNS)
    if risk.empty:
        return pd.DataFrame(columns=["rank", *columns])
    table = with_utc_columns(scored_rows(risk), RISK_TIME_COLUMNS)
    table = table[pd.to_numeric(table[ROW_SCORE], errors="coerce").fillna(0) > 0]
    keys = [ROW_SCORE, "act_by", "p_breach_critical", "resource_id", "metric"]
    ascending = [c not in (ROW_SCORE, "p_breach_critical") for c in keys]
    table = table.sort_values(keys, ascending=ascending, na_position="last", kind="stable")
    table = table.head(top_n) if top_n is not None else table
    table = table[columns].reset_index(drop=True)
    table.insert(0, "rank", np.arange(1, len(table) + 1))
    return table


def first_action(risk: pd.DataFrame) -> pd.Series | None:
    """The scored row with the earliest act_by (ties: higher row score first), or None.

    A resource that stopped reporting is never the first action, whatever dates it carries.
    """
    if risk.empty:
        return None
    timed = with_utc_columns(scored_rows(risk), RISK_TIME_COLUMNS)
    timed = timed[timed["act_by"].notna()]
    if timed.empty:
        return None
    keys = ["act_by", ROW_SCORE, "resource_id", "metric"]
    ascending = [c != ROW_SCORE for c in keys]
    return timed.sort_values(keys, ascending=ascending, kind="stable").iloc[0]


def monthly_savings(risk: pd.DataFrame) -> dict[str, float]:
    """Fleet totals of the right-sizing advice, in USD per month.

    The advice is per resource (one instance), so each resource counts once even when the
    report repeats its delta on every metric row. ``savings`` sums the reductions of
    over-provisioned resources (reported positive), ``extra_cost`` the increases, ``net`` the
    signed total change.
    """
    if risk.empty:
        return {"savings": 0.0, "extra_cost": 0.0, "net": 0.0}
    delta = risk.assign(delta=pd.to_numeric(risk["monthly_cost_delta_usd"], errors="coerce"))
    per_resource = delta.dropna(subset=["delta"]).groupby("resource_id")["delta"].first()
    finding = risk.groupby("resource_id")["finding"].first().reindex(per_resource.index)
    reductions = (per_resource < 0) & (finding == "over_provisioned")
    return {
        "savings": float(-per_resource[reductions].sum()),
        "extra_cost": float(per_resource[per_resource > 0].sum()),
        "net": float(per_resource.sum()),
    }


def _resource_count(n: int, what: str) -> str:
    return f"{n} resource{'s' if n != 1 else ''} {what}"


def risk_headline(risk: pd.DataFrame) -> str:
    """Markdown headline: how many resources are at risk, what to do first and by when (and
    what that date rests on), what stopped reporting, what right-sizing saves.

    "At risk" counts resources whose finding is at_risk; under-provisioned ones are counted
    apart; resources that stopped reporting are neither, and never the first action.
    """
    lines = []
    findings = risk["finding"].astype(str)

    def resources_with(finding: str) -> int:
        return int(risk.loc[findings == finding, "resource_id"].nunique())

    at_risk, under = resources_with("at_risk"), resources_with("under_provisioned")
    if at_risk:
        lines.append(f"**{_resource_count(at_risk, 'at risk')}** within the forecast horizon.")
    else:
        lines.append("**No resource at risk** within the forecast horizon.")
    if under:
        lines[-1] += f" {_resource_count(under, 'under-provisioned')} (need capacity, not urgent)."
    first = first_action(risk)
    if first is None:
        lines.append("No action deadline within the forecast horizon.")
    else:
        extra = []
        if pd.notna(first["service"]):
            extra.append(f"service {markdown_text(first['service'])}")
        if pd.notna(first[ROW_SCORE]):
            extra.append(f"risk {int(first[ROW_SCORE])}/4")
        if pd.notna(first["p_breach_critical"]):
            extra.append(f"P(critical) {first['p_breach_critical']:.0%}")
        if pd.notna(first["eta_p50"]):
            extra.append(f"ETA P50 {format_timestamp(first['eta_p50'])}")
        overdue = bool(first["act_now"]) if pd.notna(first["act_now"]) else False
        when = (
            f"**now** (act-by {format_timestamp(first['act_by'])} has passed)"
            if overdue
            else f"by **{format_timestamp(first['act_by'])}**"
        )
        basis = ACT_BY_BASIS.get(str(first["act_by_basis"]))
        lines.append(
            f"First action {when}: "
            f"**{markdown_text(first['resource_id'])} {markdown_text(first['metric'])}** "
            f"({', '.join(extra)})." + (f" Act-by = {basis}." if basis else "")
        )
    stopped = resources_with(STOPPED)
    if stopped:
        lines.append(
            f"{_resource_count(stopped, 'stopped reporting')}: not scored, not sized (listed in"
            " summary.json)."
        )
    n_over = resources_with("over_provisioned")
    money = monthly_savings(risk)
    if n_over or money["savings"]:
        lines.append(
            f"{_resource_count(n_over, 'over-provisioned')}; right-sizing them saves "
            f"**USD {money['savings']:,.0f}/month** (net change of all advice USD "
            f"{money['net']:,.0f}/month)."
        )
    return "\n\n".join(lines)


def stopped_table(risk: pd.DataFrame) -> pd.DataFrame:
    """Resources that stopped reporting (one row each, longest silent first): listed, not
    scored."""
    columns = ["resource_id", "service", "instance_type", "last_observed", "reporting_lag_hours"]
    stopped = risk[risk["finding"].astype(str) == STOPPED].drop_duplicates("resource_id")
    stopped = stopped.sort_values(["reporting_lag_hours", "resource_id"], ascending=[False, True])
    return with_utc_columns(stopped, ["last_observed"])[columns].reset_index(drop=True)


def findings_table(risk: pd.DataFrame) -> pd.DataFrame:
    """Resources per finding (rows) and risk score (columns): ``finding`` and ``risk_score``
    are per resource, repeated on its metric rows."""
    if risk.empty:
        return pd.DataFrame()
    base = risk.drop_duplicates("resource_id")
    table = pd.crosstab(base["finding"], base["risk_score"], margins=True, margins_name="total")
    table.columns = [f"score {c}" if c != "total" else c for c in table.columns]
    return table.reset_index()


def breach_matrix(
    daily_breach: pd.DataFrame,
    column: str = "p_breach_critical",
    *,
    max_resources: int | None = None,
) -> pd.DataFrame:
    """Probability of breach per resource (rows) x day (columns), the max over its metrics.

    Rows are ordered by their peak probability (then resource id); ``max_resources`` keeps the
    first rows. A day without a forecast for a resource stays NaN (not 0: it is unknown).
    """
    if daily_breach.empty or column not in daily_breach:
        return pd.DataFrame()
    frame = daily_breach.assign(day=as_utc(daily_breach["day"]).dt.normalize())
    matrix = frame.pivot_table(index="resource_id", columns="day", values=column, aggfunc="max")
    peak = matrix.max(axis=1).rename("peak").reset_index()
    order = peak.sort_values(["peak", "resource_id"], ascending=[False, True])["resource_id"]
    matrix = matrix.loc[order.tolist()]
    if max_resources is not None:
        matrix = matrix.head(max_resources)
    matrix.columns = pd.DatetimeIndex(matrix.columns)
    matrix.columns.name = "day"
    return matrix


def breach_heatmap(matrix: pd.DataFrame, title: str = "P(breach critical) per day") -> Figure:
    """Heatmap of a ``breach_matrix`` (0 white to 1 dark red; blank = no forecast)."""
    if matrix.empty:
        return empty_figure("no breach probabilities", title=title)
    n_rows, n_days = matrix.shape
    fig = Figure(figsize=(max(6.0, 0.7 * n_days + 3), 0.32 * n_rows + 1.8), layout="constrained")
    ax = fig.add_subplot()
    image = ax.imshow(
        matrix.to_numpy(dtype=float),
        aspect="auto",
        cmap="Reds",
        vmin=0,
        vmax=1,
        interpolation="nearest",
    )
    ax.set_yticks(range(n_rows), [plot_text(r) for r in matrix.index], fontsize=8)
    ax.set_xticks(range(n_days), [d.strftime("%m-%d") for d in matrix.columns], fontsize=8)
    ax.tick_params(axis="x", rotation=45)
    ax.set_xlabel("day (UTC)")
    ax.set_title(title)
    fig.colorbar(image, ax=ax, label="probability", shrink=0.8)
    return fig


def threshold_lookup(risk: pd.DataFrame) -> dict[str, dict[str, float]]:
    """Warning/critical levels per series id, from the risk report's own
    ``warning_threshold``/``critical_threshold`` columns (the levels it was judged against).
    Series whose metric has no threshold get none (e.g. byte counters)."""
    columns = {"warning": "warning_threshold", "critical": "critical_threshold"}
    out: dict[str, dict[str, float]] = {}
    for row in with_series_id(risk).itertuples(index=False):
        levels = {
            k: float(getattr(row, c)) for k, c in columns.items() if pd.notna(getattr(row, c))
        }
        if levels:
            out[row.series_id] = levels
    return out


def summary_scalars(summary: Mapping[str, Any], prefix: str = "") -> pd.DataFrame:
    """Flatten the scalar entries of ``summary.json`` into (key, value) rows (lists skipped)."""
    rows: list[dict[str, Any]] = []
    for key, value in summary.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            rows.extend(summary_scalars(value, f"{name}.").to_dict("records"))
        elif not isinstance(value, list | tuple):
            rows.append({"key": name, "value": str(value)})
    return pd.DataFrame(rows, columns=["key", "value"])


def eta_lookup(risk: pd.DataFrame) -> dict[str, dict[str, Any]]:
    """ETA quantiles (UTC) per series id."""
    if risk.empty:
        return {}
    timed = with_series_id(with_utc_columns(risk, RISK_TIME_COLUMNS))
    keys = ["eta_p10", "eta_p50", "eta_p90"]
    return {row["series_id"]: {k: row[k] for k in keys} for _, row in timed.iterrows()}


def top_risk_series(risk: pd.DataFrame, top_n: int) -> list[str]:
    """Series ids of the ``top_n`` ranked risks: the series ``risk_fan_charts`` draws."""
    ranked = with_series_id(ranked_risks(risk, top_n))
    return ranked["series_id"].tolist() if len(ranked) else []


def risk_fan_charts(
    risk: pd.DataFrame,
    clean: pd.DataFrame,
    forecasts: pd.DataFrame,
    top_n: int,
    *,
    history_hours: int = 7 * 24,
) -> Figure:
    """Fan charts of the ``top_n`` ranked risks with threshold lines and ETA markers
    (``clean`` and ``forecasts`` need only hold their rows: ``top_risk_series``)."""
    ranked = with_series_id(ranked_risks(risk, top_n))
    if ranked.empty:
        return empty_figure("no resource at risk", title="Top risks")
    ids = ranked["series_id"].tolist()
    titles = {
        row["series_id"]: (
            f"#{row['rank']} {row['series_id']} - {row['metric_finding']}, risk {row[ROW_SCORE]}"
        )
        for _, row in ranked.iterrows()
    }
    return fan_chart_figure(
        clean,
        forecasts,
        ids,
        history_hours=history_hours,
        thresholds=threshold_lookup(risk),
        etas=eta_lookup(risk),
        titles=titles,
        title=f"Top {len(ids)} risks: forecast vs thresholds",
    )


def service_plan_table(service_capacity: pd.DataFrame) -> pd.DataFrame:
    """Service capacity plan, biggest change in instance count (``instance_delta``) first."""
    size = pd.to_numeric(service_capacity["instance_delta"], errors="coerce").abs()
    table = service_capacity.assign(_size=size).sort_values(
        ["_size", "service"], ascending=[False, True], na_position="last"
    )
    return table.drop(columns="_size").reset_index(drop=True)


def rightsizing_table(risk: pd.DataFrame) -> pd.DataFrame:
    """Resources with a different recommended instance type, biggest monthly saving first."""
    columns = [
        "resource_id",
        "service",
        "finding",
        "instance_type",
        "recommended_instance_type",
        "monthly_cost_delta_usd",
        "sizing",
        "reason_codes",
    ]
    delta = pd.to_numeric(risk["monthly_cost_delta_usd"], errors="coerce")
    advised = risk[delta.notna() & (delta != 0) & risk["recommended_instance_type"].notna()]
    # One row per resource: its metrics share the instance, so the advice is per resource.
    advised = advised.sort_values(["monthly_cost_delta_usd", "resource_id"])
    advised = advised.drop_duplicates("resource_id")
    return advised[columns].reset_index(drop=True)


def findings_figure(risk: pd.DataFrame) -> Figure:
    """Stacked bars: resources per finding, split by risk score (``findings_table``)."""
    table = findings_table(risk)
    if table.empty:
        return empty_figure(title="Findings")
    table = table[table["finding"] != "total"].set_index("finding").drop(columns="total")
    fig = Figure(figsize=(7, 3.2), layout="constrained")
    ax = fig.add_subplot()
    bottom = np.zeros(len(table))
    # Colour by the score itself (0 green .. 4 dark red), whichever scores occur.
    colours = {"0": "#9bc53d", "1": "#f0c808", "2": "#f08a4b", "3": "#d7263d", "4": "#7a0c1b"}
    for column in table.columns:
        colour = colours.get(column.removeprefix("score "), "0.5")
        ax.bar(
            [plot_text(f) for f in table.index],
            table[column],
            bottom=bottom,
            label=plot_text(column),
            color=colour,
        )
        bottom += table[column].to_numpy()
    ax.set(ylabel="resources", title="Findings by risk score")
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.legend(fontsize=8)
    return fig
