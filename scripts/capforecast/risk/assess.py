"""Capacity risk: what runs out, when, how sure we are, and what to do about it (Module 05).

``assess_risk`` turns the selected forecasts into one row per resource x metric (the risk report),
a per-day breach table (heatmap), a per-service capacity plan and a JSON-ready summary. The
probability model lives in ``capforecast.risk.probability``, history evidence and instance
counts in ``capforecast.risk.capacity``, catalogue right-sizing in ``capforecast.risk.rightsizing``.

Definitions (all times UTC; "now" is the forecast start, never the wall clock, so reruns on the
same inputs give the same outputs):

* forecast start: the latest first forecast step over all series (series whose data ends
  earlier start earlier; the fleet's present is the latest one). A live series that ends a few
  hours early keeps its own forecast: its ETAs are absolute times (possibly a little before the
  forecast start, in hours nobody observed), while act_by/act_now and days_until_full are
  measured from the fleet's forecast start (days_until_full is 0, not negative, when the
  crossing is already due).
* p_breach_warning / p_breach_critical: P(the threshold is reached within the horizon).
* eta_p10 / eta_p50 / eta_p90: first step where P(breach critical by t) reaches 0.1 / 0.5 / 0.9
  (earliest plausible / median / late crossing); ``eta_warning_*`` the same for warning. NaT when
  not reached within the horizon.
* act_by = eta_p50 - lead_time_days - safety_margin_days, on the critical ETA, or on the warning
  ETA when critical is not reached within the horizon; ``act_by_basis`` says which ("critical",
  "warning", empty when neither is reached). ``act_now`` when act_by <= forecast start.
* days_until_full: (median crossing of 100 % for percentage metrics, of critical for others) -
  forecast start, in days; NaN when not reached.
* headroom_pct at the forecast P90 peak: percentage metrics, in points: critical - max_t P90
  (100 - max_t P90 without thresholds); byte metrics, whose capacity is unknown: percent of the
  observed historical maximum still unused, 100 x (observed max - max_t P90) / observed max
  (negative when the forecast exceeds anything seen).
* metric_risk_score: 0 none, 1 low (P(warn) >= 0.2), 2 medium (P(warn) >= 0.5), 3 high
  (P(crit) >= 0.2), 4 critical (P(crit) >= 0.5 or act_now on the critical ETA; act_now on a
  warning ETA scores at least 2). Metrics without thresholds: 1 when
  the P90 peak exceeds the observed maximum and the median trend rises, else 0.
  ``risk_score`` = max over the resource's dimensions.
* metric_finding: at_risk (P(crit) >= 0.5 or act_now on the critical ETA); under_provisioned
  (CPU/memory P90 peak above target_utilization, P(warn) >= 0.5, act_now on the warning ETA,
  saturated, or for metrics without thresholds the rising
  beyond-observed-peak case); over_provisioned (percentage metric whose P90 peak stays under
  low_water_pct over the whole horizon and that was never pegged in its history); else
  optimized; stopped_reporting for a series that stopped reporting. ``finding`` per resource:
  stopped_reporting when every series stopped, else at_risk > under_provisioned >
  over_provisioned > optimized over its live series of CPU, memory and the dimensions with
  thresholds (a metric without thresholds has no known capacity: its growth shows in its own
  row, the risk score and the reason codes only). over_provisioned needs every *observed*
  sizing dimension (CPU, memory) over-provisioned: a dimension without a live series does not
  veto it, the reason codes name it (``memory_not_observed``) and right-sizing keeps it.
* confidence (0-1) = (1 - mean relative P10-P90 width) x history factor. The width is divided by
  100 for percentage metrics and by max(observed max, P90 peak) otherwise. History factor =
  min(1, history_hours / 168): under 7 days it drops linearly (reason ``short_history``);
  ``too_short`` series are capped at 0.5.
* stopped_reporting: the series' last observation is more than ``risk.stopped_reporting_hours``
  older than the fleet's latest observation (``reporting_lag_hours``; a decommissioned
  instance?). Its ETAs describe a past that did not happen: finding ``stopped_reporting``,
  score 0, no act_by, never sized, never in the daily breach table, the capacity plan or the
  "at risk" counts; the summary lists it. A shorter lag is a live series (reason
  ``reporting_lag_<N>h``), scored normally.
* no_data: a series without one usable row (every row quarantined; its forecast rows are NaN,
  see ``capforecast.forecast.no_data``): metric_finding ``no_data``, score 0, never sized,
  planned or in the daily breach table; the resource's finding when it has no other series, and
  reason code ``<dim>_no_data`` on every row of its resource; the summary counts and lists it.
* saturated: pegged at the ceiling (see ``capforecast.risk.capacity``): reason
  ``demand_hidden_by_ceiling``, the forecast is a lower bound of the true demand.

Columns repeated on every metric row of a resource (finding, risk_score, reason_codes,
first_to_run_out, recommended_instance_type, monthly_cost_delta_usd) describe the resource: sum
cost deltas over resources, not rows (the summary does).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from capforecast.contracts import RISK_REPORT_COLUMNS
from capforecast.errors import ForecastInputError
from capforecast.forecast.no_data import NO_DATA, all_nan_series
from capforecast.risk.capacity import (
    CPU,
    MEMORY,
    SATURATION_REASON,
    HistoryRules,
    clean_history,
    evidence_flags,
    history_aggregates,
    service_capacity,
)
from capforecast.risk.probability import (
    SELECTED_MODEL,
    SERIES_KEYS,
    BreachSetup,
    ThresholdsFor,
    breach_setup,
    breach_tables,
    first_crossings,
    quantile_at,
    quantile_levels,
    selected_forecasts,
)
from capforecast.risk.rightsizing import NEEDS_CAPACITY, note_codes, resource_inventory, right_size
from capforecast.settings import RiskSettings

STOPPED = "stopped_reporting"
# Metrics without thresholds whose growth past anything seen means more load on the resource.
DEMAND_METRICS: frozenset[str] = frozenset(
    {
        "network_in_bytes",
        "network_out_bytes",
        "disk_read_bytes",
        "disk_write_bytes",
        "request_count",
        "request_latency",
    }
)
FINDINGS: tuple[str, ...] = (
    "at_risk",
    "under_provisioned",
    "over_provisioned",
    "optimized",
    STOPPED,
    NO_DATA,
)
# Findings that are listed but never scored, ranked, sized or planned.
UNSCORED: tuple[str, ...] = (STOPPED, NO_DATA)
SHORT_HISTORY_HOURS = 7 * 24
TOO_SHORT_CONFIDENCE_CAP = 0.5
FULL_LEVEL = "full"
PERCENT_CEILING = 100.0
# At-risk rows listed in summary.json (README: "the top 10 at-risk rows").
SUMMARY_TOP_N = 10
# Dimension names used in reason codes and first_to_run_out; metrics not listed use their name.
DIMENSION_NAMES: dict[str, str] = {
    CPU: "cpu",
    MEMORY: "memory",
    "disk_used_percent": "disk",
    "network_in_bytes": "network_in",
    "network_out_bytes": "network_out",
}
DAILY_COLUMNS: tuple[str, ...] = (
    "resource_id",
    "metric",
    "day",
    "p_breach_warning",
    "p_breach_critical",
)
_KEYS = list(SERIES_KEYS)
_DAY = pd.Timedelta(days=1)


@dataclass(frozen=True)
class RiskResult:
    """Everything the risk stage writes (see ``assess_risk``)."""

    risk_report: pd.DataFrame
    daily_breach: pd.DataFrame
    service_capacity: pd.DataFrame
    summary: dict[str, Any]
    breach_by_step: pd.DataFrame | None  # only when asked for (see ``assess_risk``)


def make_thresholds_for(
    settings: RiskSettings, service_of: Mapping[str, str], *, include_full: bool = True
) -> ThresholdsFor:
    """``(resource_id, metric) -> {warning, critical[, full]}`` with per-service overrides.

    ``full`` (100) is added for percentage metrics: it gives ``days_until_full``.
    """

    def thresholds_for(resource_id: str, metric: str) -> dict[str, float] | None:
        service = service_of.get(resource_id)
        levels = dict(
            settings.service_overrides.get(str(service), {}).get(metric)
            or settings.thresholds.get(metric)
            or {}
        )
        if include_full and metric in settings.percent_metrics:
            levels[FULL_LEVEL] = PERCENT_CEILING
        return levels or None

    return thresholds_for


def fan_points(fan: pd.DataFrame, levels: Mapping[float, str]) -> pd.DataFrame:
    """P10, P50, P90 per forecast row (interpolated when not stored)."""
    values = fan[list(levels.values())].to_numpy(dtype=float)
    out = fan[[*_KEYS, "timestamp"]].copy()
    for name, p in (("p10", 0.1), ("p50", 0.5), ("p90", 0.9)):
        out[name] = quantile_at(levels.keys(), values, p)
    return out


def _forecast_shape(points: pd.DataFrame) -> pd.DataFrame:
    """Per series: start, end, P50/P90 peaks, mean P10-P90 width, median trend per day."""
    grouped = points.groupby(_KEYS)
    shape = grouped.agg(
        forecast_start=("timestamp", "min"),
        forecast_end=("timestamp", "max"),
        peak_p50=("p50", "max"),
        peak_p90=("p90", "max"),
    )
    shape["mean_width"] = (
        (points["p90"] - points["p10"]).groupby([points["resource_id"], points["metric"]]).mean()
    )
    days = (points["timestamp"] - grouped["timestamp"].transform("min")) / _DAY
    dt = days - days.groupby([points["resource_id"], points["metric"]]).transform("mean")
    dy = points["p50"] - grouped["p50"].transform("mean")
    by = [points["resource_id"], points["metric"]]
    var = (dt * dt).groupby(by).sum()
    shape["trend_per_day"] = ((dt * dy).groupby(by).sum() / var.where(var > 0)).fillna(0.0)
    return shape.reset_index()


def _breach_summary(step: pd.DataFrame) -> pd.DataFrame:
    """Per series of a ``BreachTables.per_step``: the largest P(breach) of each standard level,
    the method and the ETAs (first crossings)."""
    out = step[_KEYS].drop_duplicates(ignore_index=True)
    for name in ("warning", "critical"):
        column = f"p_breach_{name}"
        if column in step.columns:
            worst = step.groupby(_KEYS)[column].max().rename(column).reset_index()
            out = out.merge(worst, on=_KEYS, how="left")
        else:
            out[column] = np.nan
    method = step.groupby(_KEYS)["method"].first().reset_index()
    out = out.merge(method, on=_KEYS, how="left")
    for level, prefix, probs in (
        ("critical", "eta", (0.1, 0.5, 0.9)),
        ("warning", "eta_warning", (0.1, 0.5, 0.9)),
        (FULL_LEVEL, "eta_full", (0.5,)),
    ):
        out = out.merge(first_crossings(step, level, probs, prefix=prefix), on=_KEYS, how="left")
    return out


def _series_table(
    points: pd.DataFrame,
    breach: pd.DataFrame,
    evidence: pd.DataFrame,
    inventory: pd.DataFrame,
    thresholds_for: ThresholdsFor,
) -> pd.DataFrame:
    """One row per series with forecast shape, probabilities, ETAs (``breach``: the
    ``_breach_summary`` of every series), history and inventory."""
    series = _forecast_shape(points)
    levels = [thresholds_for(r, m) or {} for r, m in series[_KEYS].itertuples(index=False)]
    series["warning_threshold"] = [lv.get("warning", np.nan) for lv in levels]
    series["critical_threshold"] = [lv.get("critical", np.nan) for lv in levels]
    series = series.merge(breach, on=_KEYS, how="left")
    series = series.merge(evidence, on=_KEYS, how="left")
    series["history_hours"] = series["history_hours"].fillna(0.0)
    for flag in ("saturated", "pegged_in_history"):
        series[flag] = series[flag].astype("boolean").fillna(False).astype(bool)
    series["too_short"] = series["too_short"].astype("boolean").fillna(True).astype(bool)
    return series.merge(
        inventory[["resource_id", "service", "instance_type"]], on="resource_id", how="left"
    )


def _reporting_lag(series: pd.DataFrame, settings: RiskSettings) -> pd.DataFrame:
    """last_observed (history, else the step before the forecast), reporting_lag_hours behind
    the fleet's latest observation and stopped_reporting (lag above the configured gap)."""
    out = series.copy()
    last = pd.to_datetime(out["last_observed"], utc=True)
    out["last_observed"] = last.fillna(out["forecast_start"] - settings.freq)
    lag = (out["last_observed"].max() - out["last_observed"]) / pd.Timedelta(hours=1)
    out["reporting_lag_hours"] = lag
    out["stopped_reporting"] = lag > settings.stopped_reporting_hours
    return out


def _classify(
    series: pd.DataFrame, settings: RiskSettings, forecast_start: pd.Timestamp
) -> pd.DataFrame:
    """Per series: act_by, days_until_full, headroom, metric score, finding and confidence."""
    out = _reporting_lag(series, settings)
    percent = out["metric"].isin(settings.percent_metrics).to_numpy()
    has_levels = out["critical_threshold"].notna().to_numpy()
    p_warn = out["p_breach_warning"].to_numpy(dtype=float)
    p_crit = out["p_breach_critical"].to_numpy(dtype=float)
    with np.errstate(invalid="ignore"):
        warn_low, warn_mid = p_warn >= 0.2, p_warn >= 0.5
        crit_high, crit_top = p_crit >= 0.2, p_crit >= 0.5

    # A series silent for longer than the configured gap stopped reporting (decommissioned?):
    # its ETAs describe a past that did not happen, so it never drives an action or a score.
    stopped = out["stopped_reporting"].to_numpy()
    lead = pd.Timedelta(days=settings.lead_time_days + settings.safety_margin_days)
    basis_eta = out["eta_p50"].fillna(out["eta_warning_p50"]).where(~stopped)
    out["act_by"] = basis_eta - lead
    out["act_by_basis"] = np.where(
        stopped | basis_eta.isna().to_numpy(),
        None,
        np.where(out["eta_p50"].notna(), "critical", "warning"),
    )
    act_now = (out["act_by"].notna() & (out["act_by"] <= forecast_start)).to_numpy()
    out["act_now"] = act_now
    full_eta = out["eta_full_p50"].where(percent, out["eta_p50"]).where(~stopped)
    # A live series that ends early may be due before the fleet's present: due now, not negative.
    out["days_until_full"] = ((full_eta - forecast_start) / _DAY).clip(lower=0.0)

    observed = out["observed_max"].to_numpy(dtype=float)
    peak = out["peak_p90"].to_numpy(dtype=float)
    ceiling = np.where(has_levels, out["critical_threshold"], PERCENT_CEILING)
    with np.errstate(divide="ignore", invalid="ignore"):
        relative = np.where(observed > 0, 100.0 * (observed - peak) / observed, np.nan)
    out["headroom_pct"] = np.where(percent, ceiling - peak, relative)
    out["headroom_basis"] = np.where(
        percent,
        np.where(has_levels, "critical_points", "ceiling_points"),
        "observed_max_pct",
    )
    # Growth past the observed peak is a shortage only for demand metrics (bytes moved,
    # requests, latency): free memory rising is good news, and a metric the run could not
    # classify has no known direction.
    demand = out["metric"].isin(DEMAND_METRICS).to_numpy()
    beyond_seen = (
        demand
        & ~has_levels
        & (np.nan_to_num(out["headroom_pct"], nan=1.0) < 0)
        & (out["trend_per_day"] > 0)
    ).to_numpy()

    # Only a critical ETA inside the lead time makes a series at risk; a warning ETA inside it
    # (a growing service that stays under critical) is under-provisioned, not an emergency.
    act_now_critical = act_now & (out["act_by_basis"] == "critical").to_numpy()
    score = np.select(
        [crit_top | act_now_critical, crit_high, warn_mid | act_now, warn_low], [4, 3, 2, 1], 0
    )
    out["metric_risk_score"] = np.where(
        stopped, 0, np.where(has_levels, score, beyond_seen.astype(int))
    )
    sizing_metric = out["metric"].isin([CPU, MEMORY]).to_numpy()
    at_risk = has_levels & (crit_top | act_now_critical) & ~stopped
    under = (
        (sizing_metric & (peak > settings.target_utilization))
        | (has_levels & (warn_mid | act_now))
        | out["saturated"].to_numpy()
        | beyond_seen
    ) & ~stopped
    # A ceiling hit in the history is demand the calm forecast may not show: never "over".
    over = (
        percent & (peak < settings.low_water_pct) & ~out["pegged_in_history"].to_numpy() & ~stopped
    )
    out["metric_finding"] = np.select(
        [stopped, at_risk, under, over],
        [STOPPED, "at_risk", "under_provisioned", "over_provisioned"],
        "optimized",
    )

    scale = np.where(percent, PERCENT_CEILING, np.fmax(observed, peak))
    with np.errstate(divide="ignore", invalid="ignore"):
        width = np.where(scale > 0, out["mean_width"].to_numpy(dtype=float) / scale, 0.0)
    sharpness = 1.0 - np.clip(np.nan_to_num(width, nan=1.0), 0.0, 1.0)
    history_factor = np.clip(out["history_hours"].to_numpy(dtype=float) / SHORT_HISTORY_HOURS, 0, 1)
    history_factor = np.where(
        out["too_short"], np.minimum(history_factor, TOO_SHORT_CONFIDENCE_CAP), history_factor
    )
    out["confidence"] = np.round(sharpness * history_factor, 3)
    out["metric_reason_codes"] = [_metric_reasons(row) for row in out.to_dict("records")]
    return out


def _metric_reasons(row: Mapping[str, Any]) -> str:
    """Reason codes of one series, the finding first (e.g. 'at_risk;breach_critical_p0.87')."""
    codes = [str(row["metric_finding"])]
    if row["stopped_reporting"]:
        # Its stale forecast's breach codes would read as a present risk: the finding says it all.
        return codes[0]
    p_crit, p_warn = row["p_breach_critical"], row["p_breach_warning"]
    if pd.notna(p_crit) and p_crit >= 0.2:
        codes.append(f"breach_critical_p{p_crit:.2f}")
    elif pd.notna(p_warn) and p_warn >= 0.2:
        codes.append(f"breach_warning_p{p_warn:.2f}")
    if row["act_now"]:
        codes.append("act_now")
    if row["saturated"]:
        codes.append(SATURATION_REASON)
    elif row["pegged_in_history"]:
        codes.append("pegged_in_history")
    if row["history_hours"] < SHORT_HISTORY_HOURS or row["too_short"]:
        codes.append("short_history")
    if row["reporting_lag_hours"] > 0:
        codes.append(f"reporting_lag_{row['reporting_lag_hours']:g}h")
    if pd.isna(row["critical_threshold"]):
        codes.append("no_threshold")
        if row["headroom_basis"] == "observed_max_pct" and row["headroom_pct"] < 0:
            codes.append("above_observed_peak")
    return ";".join(codes)


def _dimension(metric: str) -> str:
    return DIMENSION_NAMES.get(metric, metric)


def _run_out_candidates(series: pd.DataFrame) -> pd.DataFrame:
    """Live rows that may run out, ordered: earliest median critical ETA, tie -> higher P(crit)."""
    eligible = series["metric"].isin([*DIMENSION_NAMES]) | series["metric"].str.startswith(
        "network_"
    )
    plausible = series["eta_p10"].notna() | series["eta_warning_p10"].notna()
    order = [
        ("eta_p50", True),
        ("p_breach_critical", False),
        ("eta_p10", True),
        ("eta_warning_p50", True),
        ("p_breach_warning", False),
        ("eta_warning_p10", True),
        ("resource_id", True),
        ("metric", True),
    ]
    live = ~series["stopped_reporting"]
    return series[eligible & plausible & live].sort_values(
        [c for c, _ in order], ascending=[a for _, a in order], na_position="last"
    )


def first_to_run_out(series: pd.DataFrame, by: str) -> pd.DataFrame:
    """Per ``by`` group (resource_id or service): the metric (and resource) that runs out first.

    Only live metrics with a plausible crossing (critical or warning reached with P >= 0.1)
    count; groups without one get None.
    """
    ranked = _run_out_candidates(series).drop_duplicates(by, keep="first")
    out = ranked[[by, "metric"]].rename(columns={"metric": "first_to_run_out"})
    if by != "resource_id":
        out["first_to_run_out_resource"] = ranked["resource_id"]
    return out.reset_index(drop=True)


def _live_votes(series: pd.DataFrame) -> pd.DataFrame:
    """Live series that vote on a resource's finding: CPU, memory and metrics with thresholds.

    Dimensions without thresholds (other than CPU and memory) do not vote: with no known
    capacity, growth beyond the observed peak is not evidence that the instance is too small.
    They still raise the risk score to 1 and add their reason codes.
    """
    live = series[~series["stopped_reporting"]]
    return live[live["critical_threshold"].notna() | live["metric"].isin([CPU, MEMORY])]


def _unobserved_dimensions(series: pd.DataFrame) -> pd.Series:
    """Per resource with a live series: the sizing dimensions (cpu, memory) without one."""
    live = series[~series["stopped_reporting"]]
    seen = live.groupby("resource_id")["metric"].agg(set)
    return seen.map(lambda metrics: [_dimension(m) for m in (CPU, MEMORY) if m not in metrics])


def _resource_findings(series: pd.DataFrame) -> pd.Series:
    """Per resource: stopped_reporting when every series stopped, else at_risk >
    under_provisioned > over_provisioned > optimized over its live votes (``_live_votes``).

    over_provisioned needs every observed sizing dimension (CPU, memory with a live series)
    over-provisioned, and at least one observed: an unobserved dimension does not veto it.
    """
    votes = _live_votes(series)
    by = votes["resource_id"]
    finding = votes["metric_finding"]
    resources = pd.Index(sorted(series["resource_id"].unique()), name="resource_id")

    def flag(mask: pd.Series, how: str = "any") -> np.ndarray:
        grouped = mask.groupby(by).agg(how)
        return grouped.reindex(resources, fill_value=False).to_numpy(dtype=bool)

    sizing = votes["metric"].isin([CPU, MEMORY])
    over = flag(sizing) & flag((finding == "over_provisioned") | ~sizing, "all")
    stopped = series.groupby("resource_id")["stopped_reporting"].all().reindex(resources)
    labels = np.select(
        [
            stopped.to_numpy(dtype=bool),
            flag(finding == "at_risk"),
            flag(finding.isin(NEEDS_CAPACITY)),
            over,
        ],
        [STOPPED, "at_risk", "under_provisioned", "over_provisioned"],
        "optimized",
    )
    return pd.Series(labels, index=resources, name="finding")


def _sizing_demand(
    series: pd.DataFrame, inventory: pd.DataFrame, findings: pd.Series
) -> pd.DataFrame:
    """Per live resource: type, capacities, finding and per sizing dimension its peak demand
    (the forecast P90 peak, or the lookback's observed peak when higher; NaN when not
    observed), whether it is short (needs capacity) and pegged; see ``right_size``.

    Resources whose series all stopped reporting (decommissioned) are not sized: there is no
    current demand to size them for.
    """
    live = series[~series["stopped_reporting"]]
    columns = ["resource_id", "instance_type", "vcpu", "memory_gib", "hourly_price_usd"]
    columns += [c for c in ("capacity_issue",) if c in inventory.columns]
    demand = inventory[inventory["resource_id"].isin(set(live["resource_id"]))][columns].copy()
    ids = demand["resource_id"]
    demand["finding"] = ids.map(findings)
    for metric in (CPU, MEMORY):
        rows = live[live["metric"] == metric].set_index("resource_id")
        dim = _dimension(metric)
        short = rows["metric_finding"].isin(NEEDS_CAPACITY) | rows["saturated"]
        # Sized on the larger of the forecast P90 peak and the lookback's observed peak.
        peak = np.fmax(rows["peak_p90"], rows["lookback_peak"].fillna(rows["peak_p90"]))
        demand[f"{dim}_peak_p90"] = ids.map(peak)
        demand[f"{dim}_short"] = ids.isin(rows.index[short.to_numpy()])
        demand[f"{dim}_pegged"] = ids.isin(rows.index[rows["saturated"].to_numpy()])
    pegged = live["saturated"] | live["pegged_in_history"]
    demand["pegged"] = ids.isin(live.loc[pegged, "resource_id"])
    votes = _live_votes(series)
    elsewhere = votes[
        ~votes["metric"].isin([CPU, MEMORY]) & votes["metric_finding"].isin(NEEDS_CAPACITY)
    ]
    names = (
        elsewhere["metric"]
        .map(_dimension)
        .groupby(elsewhere["resource_id"])
        .agg(lambda dims: " and ".join(sorted(dims)))
    )
    demand["short_elsewhere"] = ids.map(names)
    return demand


def _dimension_rank(metric: str) -> int:
    names = list(DIMENSION_NAMES)
    return names.index(metric) if metric in names else len(names)


def _resource_reasons(series: pd.DataFrame, sizing: pd.DataFrame) -> pd.Series:
    """Per resource: every dimension's codes prefixed with its name, ``<dim>_not_observed`` for
    a sizing dimension without a live series, then the codes of the sizing note."""
    ordered = series.assign(_rank=series["metric"].map(_dimension_rank)).sort_values(
        ["resource_id", "_rank", "metric"]
    )
    prefixed = [
        ";".join(f"{_dimension(metric)}_{code}" for code in str(codes).split(";"))
        for metric, codes in zip(ordered["metric"], ordered["metric_reason_codes"], strict=True)
    ]
    reasons = pd.Series(prefixed, index=ordered.index).groupby(ordered["resource_id"]).agg(";".join)
    missing = _unobserved_dimensions(series).reindex(reasons.index)
    notes = sizing.set_index("resource_id")["sizing_note"].reindex(reasons.index)
    extra = [
        [f"{dim}_not_observed" for dim in (dims if isinstance(dims, list) else [])]
        + note_codes(note)
        for dims, note in zip(missing, notes, strict=True)
    ]
    joined = [";".join([r, *codes]) for r, codes in zip(reasons, extra, strict=True)]
    return pd.Series(joined, index=reasons.index, name="reason_codes")


def _per_resource(series: pd.DataFrame, findings: pd.Series, sizing: pd.DataFrame) -> pd.DataFrame:
    out = pd.concat(
        [
            findings,
            series.groupby("resource_id")["metric_risk_score"].max().rename("risk_score"),
            _resource_reasons(series, sizing),
        ],
        axis=1,
    ).reset_index(names="resource_id")
    out = out.merge(first_to_run_out(series, "resource_id"), on="resource_id", how="left")
    return out.merge(
        sizing[["resource_id", "sizing", "recommended_instance_type", "monthly_cost_delta_usd"]],
        on="resource_id",
        how="left",
    )


def _with_no_data_rows(
    report: pd.DataFrame,
    empty: pd.DataFrame,
    inventory: pd.DataFrame,
    thresholds_for: ThresholdsFor,
    forecast_start: pd.Timestamp,
) -> pd.DataFrame:
    """The report plus one row per series without data (``empty``: resource_id, metric):
    metric_finding ``no_data``, nothing scored, sized or planned. The resource columns come
    from the resource's other rows, else say ``no_data`` (unsized); every row of the resource
    names its dimensions without data in ``reason_codes`` (``memory_no_data``)."""
    if empty.empty:
        return report
    rows = empty.merge(inventory[["resource_id", "service", "instance_type"]], on=["resource_id"])
    levels = [thresholds_for(r, m) or {} for r, m in rows[_KEYS].itertuples(index=False)]
    rows = rows.assign(
        warning_threshold=[lv.get("warning", np.nan) for lv in levels],
        critical_threshold=[lv.get("critical", np.nan) for lv in levels],
        metric_finding=NO_DATA,
        metric_risk_score=0,
        metric_reason_codes=NO_DATA,
        act_now=False,
        saturated=False,
        pegged_in_history=False,
        history_hours=0.0,
        forecast_start=forecast_start,
        forecast_end=report["forecast_end"].max(),
    )
    shared = ["finding", "risk_score", "first_to_run_out", "sizing"]
    shared += ["recommended_instance_type", "monthly_cost_delta_usd", "reason_codes"]
    rows = rows.join(
        report.drop_duplicates("resource_id").set_index("resource_id")[shared], on="resource_id"
    )
    alone = rows["finding"].isna()
    rows.loc[alone, ["finding", "risk_score", "sizing"]] = [NO_DATA, 0, "unsized"]
    rows.loc[alone, "reason_codes"] = ""
    out = pd.concat([report, rows], ignore_index=True)
    dims = rows.assign(_rank=rows["metric"].map(_dimension_rank)).sort_values(["_rank", "metric"])
    codes = dims.groupby("resource_id")["metric"].agg(
        lambda metrics: ";".join(f"{_dimension(m)}_{NO_DATA}" for m in metrics)
    )
    extra = out["resource_id"].map(codes)
    out["reason_codes"] = [
        ";".join(part for part in (str(base), more) if part) if isinstance(more, str) else base
        for base, more in zip(out["reason_codes"].fillna(""), extra, strict=True)
    ]
    out["risk_score"] = out["risk_score"].astype("int64")
    return out


def _iso(value: Any) -> str | None:
    return None if pd.isna(value) else pd.Timestamp(value).isoformat()


def _number(value: Any, digits: int = 4) -> float | None:
    return None if pd.isna(value) else round(float(value), digits)


def _top_row(row: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "resource_id": row["resource_id"],
        "service": row["service"],
        "metric": row["metric"],
        "finding": row["finding"],
        "risk_score": int(row["risk_score"]),
        "metric_risk_score": int(row["metric_risk_score"]),
        "p_breach_warning": _number(row["p_breach_warning"]),
        "p_breach_critical": _number(row["p_breach_critical"]),
        "eta_p10": _iso(row["eta_p10"]),
        "eta_p50": _iso(row["eta_p50"]),
        "eta_p90": _iso(row["eta_p90"]),
        "act_by": _iso(row["act_by"]),
        "act_by_basis": row["act_by_basis"],
        "act_now": bool(row["act_now"]),
        "days_until_full": _number(row["days_until_full"], 2),
    }


def _summary(
    report: pd.DataFrame,
    capacity: pd.DataFrame,
    forecast_start: pd.Timestamp,
    settings: RiskSettings,
) -> dict[str, Any]:
    """JSON-ready counts, top risks and costs (counts and costs per resource, not per row).

    Only scored (live) resources and series count in risk scores, saturation, act_now and
    costs; resources that stopped reporting are counted and listed on their own. "At risk"
    is the at_risk finding; savings come from over-provisioned resources only.
    """
    resources = report.drop_duplicates("resource_id")
    scored = resources[~resources["finding"].isin(UNSCORED)]
    live_rows = report[~report["metric_finding"].isin(UNSCORED)]
    stopped = resources[resources["finding"] == STOPPED]
    no_data = report[report["metric_finding"] == NO_DATA].sort_values(_KEYS)
    top = report[report["metric_finding"] == "at_risk"].head(SUMMARY_TOP_N)
    deltas = scored["monthly_cost_delta_usd"]
    savings = deltas[(scored["finding"] == "over_provisioned") & (deltas < 0)]
    return {
        "generated_at": _iso(forecast_start),
        "forecast_start": _iso(forecast_start),
        "forecast_end": _iso(report["forecast_end"].max()),
        "last_observed": _iso(report["last_observed"].max()),
        "resources": len(resources),
        "scored_resources": len(scored),
        "series": len(report),
        "findings": {f: int((resources["finding"] == f).sum()) for f in FINDINGS},
        "risk_scores": {str(s): int((scored["risk_score"] == s).sum()) for s in range(5)},
        "saturated_series": int(live_rows["saturated"].sum()),
        "act_now_series": int(live_rows["act_now"].sum()),
        "stopped_series": int((report["metric_finding"] == STOPPED).sum()),
        "no_data_series": len(no_data),
        "top_at_risk": [_top_row(row) for row in top.to_dict("records")],
        "stopped_reporting": [
            {
                "resource_id": row["resource_id"],
                "service": row["service"],
                "last_observed": _iso(row["last_observed"]),
                "reporting_lag_hours": _number(row["reporting_lag_hours"], 2),
            }
            for row in stopped.sort_values("resource_id").to_dict("records")
        ],
        "no_data": no_data[_KEYS].to_dict("records"),
        # "+ 0.0" turns the -0.0 of an empty sum into 0.0 in the JSON.
        "total_monthly_savings_usd": round(float(-savings.sum()), 2) + 0.0,
        "total_monthly_cost_delta_usd": round(float(deltas.dropna().sum()), 2) + 0.0,
        "service_advice": {
            str(k): int(v) for k, v in capacity["advice"].value_counts().sort_index().items()
        },
        "service_monthly_cost_delta_usd": round(
            float(capacity["monthly_cost_delta_usd"].dropna().sum()), 2
        ),
        "assumptions": {
            "breach_by_t": "max(comonotone lower bound, mean(days as independent blocks, "
            "share of the last 4 weeks that reached the threshold)); "
            "see capforecast.risk.probability",
            "tails": "exponential upper tail beyond the outermost quantile, linear lower tail",
            "risk_score": "0 none, 1 P(warn)>=0.2, 2 P(warn)>=0.5, 3 P(crit)>=0.2, "
            "4 P(crit)>=0.5 or act_by passed",
            "act_by": f"median ETA of the critical level (act_by_basis = critical), else of the "
            f"warning level (warning), minus lead_time_days + safety_margin_days = "
            f"{settings.lead_time_days + settings.safety_margin_days:g} days",
            "stopped_reporting": f"last observation more than "
            f"{settings.stopped_reporting_hours:g} h before the fleet's latest",
            "now": "forecast start (not the wall clock)",
        },
    }


# The clean-history columns the risk stage reads (contracts.CLEAN_COLUMNS has more).
HISTORY_COLUMNS: tuple[str, ...] = ("timestamp", "resource_id", "metric", "value", "value_max")
# Series whose breach probabilities are computed at once (their fan x horizon x levels rows).
CHUNK_SERIES = 2000

# The history of a fleet: one frame, or parts each read when needed (every series' rows in one
# part), e.g. ``clean_history_parts``.
History = pd.DataFrame | Sequence[Callable[[], pd.DataFrame]] | None


def read_selected_forecasts(path: str | Path) -> pd.DataFrame:
    """The ``selected`` rows of forecasts.parquet (it also holds every candidate model's), with
    the columns ``assess_risk`` reads (keys, timestamp, quantiles).

    Read with a row filter, a sixth of the table with the default models; when no row matches,
    the whole table, so that ``assess_risk`` names the models it found instead.
    """
    names = pq.read_schema(path).names
    wanted = ["model", *SERIES_KEYS, "timestamp", *quantile_levels(names).values()]
    selected = pd.read_parquet(
        path,
        filters=[("model", "==", SELECTED_MODEL)],
        columns=[c for c in names if c in wanted],
    )
    return selected if len(selected) else pd.read_parquet(path)


def _read_history_file(path: str | Path) -> pd.DataFrame:
    present = set(pq.read_schema(path).names)
    return pd.read_parquet(path, columns=[c for c in HISTORY_COLUMNS if c in present])


def read_clean_history(paths: Iterable[str | Path]) -> pd.DataFrame:
    """The cleaned partitions' ``HISTORY_COLUMNS``, concatenated."""
    return pd.concat([_read_history_file(path) for path in paths], ignore_index=True)


def clean_history_parts(paths: Iterable[str | Path]) -> list[Callable[[], pd.DataFrame]]:
    """The cleaned partitions' ``HISTORY_COLUMNS`` as ``assess_risk`` history parts, each file
    read when its turn comes (a series never spans two partitions: the workflow's series index
    stops a run where one would)."""
    return [partial(_read_history_file, path) for path in paths]


@dataclass
class _FleetPass:
    """What ``assess_risk`` keeps of each group of series: small per-series tables, the daily
    breach table and the CPU/memory history the capacity plan sums over instances."""

    breach: list[pd.DataFrame] = field(default_factory=list)
    daily: list[pd.DataFrame] = field(default_factory=list)
    per_step: list[pd.DataFrame] = field(default_factory=list)
    aggregates: list[pd.DataFrame] = field(default_factory=list)
    sizing: list[pd.DataFrame] = field(default_factory=list)


def _history_parts(history: History) -> list[Callable[[], pd.DataFrame | None]]:
    if history is None or isinstance(history, pd.DataFrame):
        return [lambda: history]
    return list(history)


def _with_keys(frame: pd.DataFrame, keys: pd.MultiIndex) -> pd.DataFrame:
    return frame[pd.MultiIndex.from_frame(frame[_KEYS]).isin(keys)]


def _fleet_pass(
    fan: pd.DataFrame,
    history: History,
    setup: BreachSetup,
    rules: HistoryRules,
    samples: pd.DataFrame | None,
    keep_per_step: bool,
) -> _FleetPass:
    """Breach probabilities and history evidence, one history part and ``CHUNK_SERIES``
    series at a time: the fleet's forecast fan x horizon x levels and its history are never
    held at once. Every table is per series, so the result is the whole fleet's."""
    out = _FleetPass()
    fan_keys = pd.MultiIndex.from_frame(fan[_KEYS])
    covered = np.zeros(len(fan), dtype=bool)
    seen = pd.MultiIndex.from_tuples([], names=_KEYS)

    def breach(rows: pd.DataFrame, observed: pd.DataFrame | None) -> None:
        series = pd.MultiIndex.from_frame(rows[_KEYS]).unique()
        for start in range(0, len(series), CHUNK_SERIES):
            chunk = series[start : start + CHUNK_SERIES]
            tables = breach_tables(
                _with_keys(rows, chunk),
                setup,
                samples=None if samples is None else _with_keys(samples, chunk),
                history=None if observed is None else _with_keys(observed, chunk),
            )
            out.breach.append(_breach_summary(tables.per_step))
            out.daily.append(tables.daily)
            if keep_per_step:
                out.per_step.append(tables.per_step)

    for read in _history_parts(history):
        observed = clean_history(read(), rules.statistic)
        if observed.empty:
            continue
        keys = pd.MultiIndex.from_frame(observed[_KEYS]).unique()
        if keys.isin(seen).any():
            resource_id, metric = keys[keys.isin(seen)][0]
            raise ForecastInputError(
                f"history: resource '{resource_id}', metric '{metric}' is in two history parts"
            )
        seen = seen.append(keys)
        mine = fan_keys.isin(keys)
        covered |= mine
        if mine.any():
            breach(fan[mine], observed)
        out.aggregates.append(history_aggregates(observed, rules))
        sizing = observed[observed["metric"].isin([CPU, MEMORY])]
        out.sizing.append(sizing[["timestamp", *_KEYS, "value"]])
        del observed, sizing
    if not covered.all():
        breach(fan[~covered], None)
    return out


def _gathered(frames: list[pd.DataFrame], by: list[str], empty: pd.DataFrame) -> pd.DataFrame:
    """Per-part tables concatenated in the whole fleet's order (``by``; ``empty`` if none)."""
    if not frames:
        return empty
    out = pd.concat(frames, ignore_index=True)
    return out.sort_values(by, kind="stable", ignore_index=True)


def assess_risk(
    forecasts: pd.DataFrame,
    history: History,
    resources: pd.DataFrame,
    settings: RiskSettings,
    quality: pd.DataFrame | None = None,
    *,
    samples: pd.DataFrame | None = None,
    keep_breach_by_step: bool = False,
) -> RiskResult:
    """Risk report, daily breach table, service capacity plan and summary of a fleet.

    forecasts: forecasts.parquet (rows with model == "selected" are used; quantile columns
      'q0.1' style). history: cleaned hourly data (``contracts.CLEAN_COLUMNS``), one frame or
      parts read one at a time (``clean_history_parts``; a series in two parts is refused).
      resources: the resources table. settings: ``capforecast.settings.risk_settings`` of the
      validated config.
    quality: optional data_quality table (history_hours, pegged_fraction, too_short).
    samples: optional sample paths (resource_id, metric, timestamp, sample, value).
    keep_breach_by_step: gather the per-step breach probabilities of every forecast series
      (``RiskResult.breach_by_step``, else None): fleet x horizon rows that nothing written
      needs. The rest is computed ``CHUNK_SERIES`` series at a time.

    Raises ForecastInputError (empty forecasts, no selected rows, unknown instance type,
    resources absent from the table); thresholds were checked by ``validated_config``. A
    fleet without memory (or CPU) series is assessed on the
    dimensions it has; the reason codes name the missing one.
    """
    fan, levels = selected_forecasts(forecasts)
    inventory = resource_inventory(resources, set(map(str, fan["resource_id"])), settings.catalogue)
    fan["resource_id"] = fan["resource_id"].astype(str)
    # Series without data (every row quarantined: NaN forecasts) get a no_data row, no score.
    empty = all_nan_series(fan, list(levels.values()))
    fan = fan[~pd.MultiIndex.from_frame(fan[_KEYS]).isin(pd.MultiIndex.from_frame(empty))]
    if fan.empty:
        raise ForecastInputError("forecasts: every selected forecast is NaN (no series has data)")
    service_of = dict(zip(inventory["resource_id"], inventory["service"], strict=True))
    thresholds_for = make_thresholds_for(settings, service_of)
    rules = HistoryRules(
        percent_metrics=settings.percent_metrics,
        pegged_level=settings.pegged_level,
        freq=settings.freq,
        statistic=settings.statistic,
        min_history_hours=settings.min_history_hours,
    )
    setup = breach_setup(fan, levels, thresholds_for, samples)
    parts = _fleet_pass(fan, history, setup, rules, samples, keep_breach_by_step)
    none = clean_history(None, settings.statistic)
    evidence = evidence_flags(
        _gathered(parts.aggregates, _KEYS, history_aggregates(none, rules)), rules, quality
    )
    observed = _gathered(parts.sizing, [*_KEYS, "timestamp"], none)
    points = fan_points(fan, levels)
    forecast_start = points.groupby(_KEYS)["timestamp"].min().max()

    breach = pd.concat(parts.breach, ignore_index=True)
    series = _series_table(points, breach, evidence, inventory, thresholds_for)
    series = _classify(series, settings, forecast_start)
    findings = _resource_findings(series)
    sizing = right_size(
        _sizing_demand(series, inventory, findings),
        settings.catalogue,
        target_utilization=settings.target_utilization,
        buffer_pct=settings.buffer_pct,
        downsize_floor=settings.downsize_floor,
    )
    report = series.merge(_per_resource(series, findings, sizing), on="resource_id", how="left")
    report = _with_no_data_rows(report, empty, inventory, thresholds_for, forecast_start)
    report = report.sort_values(
        ["risk_score", "act_by", "resource_id", "metric"],
        ascending=[False, True, True, True],
        na_position="last",
        ignore_index=True,
    )[list(RISK_REPORT_COLUMNS)]

    live = series[~series["stopped_reporting"]]
    pegged = live.loc[live["saturated"], _KEYS].itertuples(index=False, name=None)
    live_keys = pd.MultiIndex.from_frame(live[_KEYS])
    # Whole services (current_instances counts every listed instance), if any instance forecast;
    # demand only from live series (a stopped instance has none).
    forecast_services = set(series["service"])
    capacity = service_capacity(
        points[pd.MultiIndex.from_frame(points[_KEYS]).isin(live_keys)],
        observed,
        inventory[inventory["service"].isin(forecast_services)],
        target_utilization=settings.target_utilization,
        buffer_pct=settings.buffer_pct,
        saturated=list(pegged),
    )
    capacity = capacity.merge(first_to_run_out(series, "service"), on="service", how="left")

    # The per-day heatmap shows scored series only.
    daily = _gathered(parts.daily, [*_KEYS, "day"], pd.DataFrame())
    daily = daily[pd.MultiIndex.from_frame(daily[_KEYS]).isin(live_keys)]
    daily = daily.reindex(columns=list(DAILY_COLUMNS)).reset_index(drop=True)
    by_step = _gathered(parts.per_step, [*_KEYS, "timestamp"], pd.DataFrame())
    return RiskResult(
        risk_report=report,
        daily_breach=daily,
        service_capacity=capacity,
        summary=_summary(report, capacity, forecast_start, settings),
        breach_by_step=by_step if keep_breach_by_step else None,
    )
