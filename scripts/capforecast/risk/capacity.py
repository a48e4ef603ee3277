"""What the history says about each series, and how many instances each service needs.

History evidence (per resource x metric)
    * ``observed_max``: the largest hourly value seen (the statistic the forecast predicts:
      ``value`` for ``forecast.target = mean``, ``value_max`` for ``max``). Byte metrics have no
      known capacity, so their headroom is measured against it.
    * ``history_hours``: span from the first to the last observed bin, plus one bin (the quality
      table's ``history_hours`` wins when given).
    * ``saturated``: a percentage series pegged at its ceiling, where the true demand is unknown
      and the forecast is only a lower bound. It is flagged when, over the last
      ``RECENT_WINDOW_HOURS`` of the series, at least ``PEGGED_SHARE`` of the hourly means are
      at or above ``etl.pegged_level``, or the hourly maximum stays at or above that level for
      ``PEGGED_RUN_HOURS`` consecutive bins. Series without history fall back to the quality
      table's ``pegged_fraction``.
    * ``pegged_in_history``: a percentage series whose hourly maximum reached ``etl.pegged_level``
      in at least ``PEGGED_SHARE`` of its observed hours over the whole history (or whose
      quality-table ``pegged_fraction`` is that high). Its forecast may be calm, but the
      instance has hit its ceiling before: it is never called over-provisioned or shrunk.
    * ``last_observed``: the last bin with a value; how far it lies behind the fleet's latest
      tells a live series from one that stopped reporting.

Service capacity (per service)
    Demand in capacity units: ``sum over instances of utilisation % x instance capacity / 100``
    (vCPU for CPU, GiB for memory), per forecast timestep, then the peak over the horizon.
    Summing each instance's P90 gives the P90 of the sum only when instances move together
    (the same comonotone assumption as the breach probabilities); for instances behind one load
    balancer this is close and otherwise errs high, i.e. towards more capacity.
    ``required = ceil(peak P90 x (1 + buffer / 100) / (capacity x target / 100))``, rounded
    once: a service whose buffered peak is exactly at target needs no extra instance.
    Instances without a live CPU/memory forecast (stopped reporting) add no demand; the note
    counts them. A service with a pegged instance is never told to scale in (``hold``, note).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd

from capforecast.contracts import SERVICE_CAPACITY_COLUMNS
from capforecast.data.capacity import capacity_issues
from capforecast.errors import ForecastInputError
from capforecast.risk.rightsizing import HOURS_PER_MONTH

RECENT_WINDOW_HOURS = 168
# Right-sizing never goes below the highest hourly value of this lookback (as AWS Compute
# Optimizer sizes on its lookback maximum): a forecast median that has drifted low (an idle
# week) must not shrink a VM below what it used a few weeks ago.
LOOKBACK_PEAK_HOURS = 4 * 168
PEGGED_SHARE = 0.1
PEGGED_RUN_HOURS = 6
SATURATION_REASON = "demand_hidden_by_ceiling"
CPU = "cpu_utilization"
MEMORY = "memory_utilization"
# dimension -> (metric, per-instance capacity column, unit used in column names)
SIZING_DIMENSIONS: dict[str, tuple[str, str, str]] = {
    "cpu": (CPU, "vcpu", "vcpu"),
    "memory": (MEMORY, "memory_gib", "gib"),
}
_HISTORY_REQUIRED = ("timestamp", "resource_id", "metric", "value")
# Instance counts are rounded up with this slack so 3.0000000001 (float noise) stays 3.
_CEIL_SLACK = 1e-9


@dataclass(frozen=True)
class HistoryRules:
    """The settings history evidence depends on."""

    percent_metrics: frozenset[str]
    pegged_level: float
    freq: pd.Timedelta
    statistic: str  # forecast.target: which hourly statistic the forecast predicts
    min_history_hours: float


def _ceil(x: float) -> int:
    return math.ceil(x - _CEIL_SLACK)


def clean_history(history: pd.DataFrame | None, statistic: str) -> pd.DataFrame:
    """Observed bins only (finite value), UTC timestamps, sorted; value_max defaults to value."""
    columns = [*_HISTORY_REQUIRED, "value_max"]
    if history is None or len(history) == 0:
        return pd.DataFrame({c: pd.Series(dtype="float64") for c in columns}).astype(
            {"timestamp": "datetime64[ns, UTC]", "resource_id": object, "metric": object}
        )
    missing = [c for c in _HISTORY_REQUIRED if c not in history.columns]
    if missing:
        raise ForecastInputError(f"history: missing column(s) {', '.join(missing)}")
    frame = history[[c for c in columns if c in history.columns]].copy()
    if "value_max" not in frame.columns:
        frame["value_max"] = frame["value"]
    frame["timestamp"] = pd.to_datetime(frame["timestamp"], utc=True)
    frame["value_max"] = frame["value_max"].fillna(frame["value"])
    if statistic == "max":
        frame["value"] = frame["value_max"]
    frame = frame[np.isfinite(frame["value"].to_numpy(dtype=float))]
    return frame.sort_values(["resource_id", "metric", "timestamp"], ignore_index=True)


def _longest_runs(frame: pd.DataFrame, flag: pd.Series, freq: pd.Timedelta) -> pd.Series:
    """Longest run of consecutive flagged bins per series (a missing bin breaks a run)."""
    series_change = (frame["resource_id"] != frame["resource_id"].shift()) | (
        frame["metric"] != frame["metric"].shift()
    )
    step_break = frame["timestamp"].diff() != freq
    new_run = series_change | step_break | ~flag | ~flag.shift(fill_value=False)
    run_id = new_run.cumsum()
    lengths = flag.groupby(run_id).transform("sum")
    return lengths.where(flag, 0).groupby([frame["resource_id"], frame["metric"]]).max()


def history_evidence(
    observed: pd.DataFrame,
    rules: HistoryRules,
    quality: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """Per series: observed_max, lookback_peak (max of the last ``LOOKBACK_PEAK_HOURS``),
    last_observed, history_hours, recent_pegged_share,
    longest_pegged_run_hours, pegged_history_share, too_short, saturated, pegged_in_history
    (see the module docstring).

    observed: ``clean_history(history, rules.statistic)``.
    """
    return evidence_flags(history_aggregates(observed, rules), rules, quality)


def history_aggregates(observed: pd.DataFrame, rules: HistoryRules) -> pd.DataFrame:
    """The part of ``history_evidence`` each series' own history gives, one row per series
    sorted by key: a fleet's is its parts' concatenated (each series wholly in one part)."""
    frame = observed
    keys = ["resource_id", "metric"]
    step_hours = rules.freq / pd.Timedelta(hours=1)
    grouped = frame.groupby(keys)
    out = grouped.agg(
        observed_max=("value", "max"),
        first=("timestamp", "min"),
        last_observed=("timestamp", "max"),
    ).reset_index()
    out["history_hours"] = (out["last_observed"] - out["first"]) / pd.Timedelta(
        hours=1
    ) + step_hours
    at_ceiling = frame["value_max"] >= rules.pegged_level
    history_share = at_ceiling.groupby([frame["resource_id"], frame["metric"]]).mean()
    last = frame.groupby(keys)["timestamp"].transform("max")
    recent = frame[frame["timestamp"] > last - pd.Timedelta(hours=RECENT_WINDOW_HOURS)]
    share = (
        (recent["value"] >= rules.pegged_level).groupby([recent["resource_id"], recent["metric"]])
    ).mean()
    runs = _longest_runs(
        recent.reset_index(drop=True),
        (recent["value_max"] >= rules.pegged_level).reset_index(drop=True),
        rules.freq,
    )
    lookback = frame[frame["timestamp"] > last - pd.Timedelta(hours=LOOKBACK_PEAK_HOURS)]
    lookback_peak = lookback.groupby(keys)["value"].max().rename("lookback_peak").reset_index()
    out = out.merge(lookback_peak, on=keys, how="left")
    out = out.merge(share.rename("recent_pegged_share").reset_index(), on=keys, how="left")
    out = out.merge(runs.rename("longest_pegged_run_hours").reset_index(), on=keys, how="left")
    out["longest_pegged_run_hours"] = out["longest_pegged_run_hours"].astype(float) * step_hours
    out = out.merge(history_share.rename("pegged_history_share").reset_index(), on=keys, how="left")
    return out.drop(columns=["first"])


def evidence_flags(
    aggregates: pd.DataFrame, rules: HistoryRules, quality: pd.DataFrame | None = None
) -> pd.DataFrame:
    """``history_evidence`` from the fleet's ``history_aggregates``: the quality table's
    values where it has them, then too_short, saturated and pegged_in_history."""
    out = aggregates.copy()
    out["pegged_fraction"] = np.nan
    out["too_short"] = out["history_hours"] < rules.min_history_hours
    if quality is not None and len(quality):
        out = _apply_quality(out, quality)
    is_percent = out["metric"].isin(rules.percent_metrics)
    pegged = (
        (out["recent_pegged_share"] >= PEGGED_SHARE)
        | (out["longest_pegged_run_hours"] >= PEGGED_RUN_HOURS)
        # Quality fallback only where the history itself is absent.
        | (out["recent_pegged_share"].isna() & (out["pegged_fraction"] >= PEGGED_SHARE))
    )
    out["saturated"] = (is_percent & pegged).astype(bool)
    pegged_before = (out["pegged_history_share"] >= PEGGED_SHARE) | (
        out["pegged_fraction"] >= PEGGED_SHARE
    )
    out["pegged_in_history"] = (is_percent & pegged_before).astype(bool)
    return out


def _apply_quality(evidence: pd.DataFrame, quality: pd.DataFrame) -> pd.DataFrame:
    """Take history_hours, pegged_fraction and too_short from the quality table where present."""
    keys = ["resource_id", "metric"]
    wanted = [c for c in ("history_hours", "pegged_fraction", "too_short") if c in quality.columns]
    if not wanted or not set(keys) <= set(quality.columns):
        return evidence
    # A series split across input files has several quality rows: keep its longest history.
    table = quality[[*keys, *wanted]].groupby(keys, as_index=False).max()
    table = table.rename(columns={c: f"quality_{c}" for c in wanted})
    out = evidence.merge(table, on=keys, how="outer")
    for column in wanted:
        quality_values = out.pop(f"quality_{column}")
        if column == "too_short":
            out[column] = quality_values.astype("boolean").fillna(out[column]).fillna(False)
        else:
            out[column] = pd.to_numeric(quality_values, errors="coerce").fillna(out[column])
    out["too_short"] = out["too_short"].astype(bool)
    return out


def _per_instance_sum(frame: pd.DataFrame, value: str, capacity: Mapping[str, float]) -> pd.Series:
    """sum over instances of value % x capacity / 100, per timestamp (NaN-free instances only)."""
    scaled = frame[value] * frame["resource_id"].map(capacity) / 100.0
    return scaled.groupby(frame["timestamp"]).sum(min_count=1)


def _modal_type(types: Iterable[str]) -> str:
    counts = pd.Series(list(types)).value_counts()
    top = counts[counts == counts.max()].index
    return sorted(map(str, top))[0]


def service_capacity(
    points: pd.DataFrame,
    observed: pd.DataFrame,
    inventory: pd.DataFrame,
    *,
    target_utilization: float,
    buffer_pct: float,
    saturated: Iterable[tuple[str, str]] = (),
) -> pd.DataFrame:
    """Instance counts each service needs for its forecast P90 peak demand.

    points: resource_id, metric, timestamp, p50, p90 (forecast utilisation %, selected model).
    observed: ``clean_history`` output (its ``value`` is the forecast statistic).
    inventory: the resources table with vcpu, memory_gib, hourly_price_usd filled in.
    saturated: (resource_id, metric) pairs whose demand is hidden by the ceiling.

    The recommendation is never silently below what the observed historical peak needed:
    ``below_observed_peak`` says so and the note explains it. A service with a pegged
    (saturated) instance is never told to scale in: its demand is hidden by the ceiling.
    """
    service_of = dict(zip(inventory["resource_id"], inventory["service"], strict=True))
    sizing_metrics = [dim[0] for dim in SIZING_DIMENSIONS.values()]

    def by_service(frame: pd.DataFrame) -> dict[str, pd.DataFrame]:
        frame = frame[frame["metric"].isin(sizing_metrics)]
        return dict(list(frame.groupby(frame["resource_id"].map(service_of), sort=False)))

    forecast_groups, observed_groups = by_service(points), by_service(observed)
    empty_points, empty_observed = points.iloc[:0], observed.iloc[:0]
    pegged = set(saturated)
    rows = []
    for service, members in inventory.groupby("service", sort=True):
        rows.append(
            _one_service(
                str(service),
                members,
                forecast_groups.get(service, empty_points),
                observed_groups.get(service, empty_observed),
                target_utilization=target_utilization,
                buffer_pct=buffer_pct,
                pegged={k for k in pegged if service_of.get(k[0]) == service},
            )
        )
    return pd.DataFrame(rows).reindex(columns=list(SERVICE_CAPACITY_COLUMNS))


def _one_service(
    service: str,
    members: pd.DataFrame,
    points: pd.DataFrame,
    observed: pd.DataFrame,
    *,
    target_utilization: float,
    buffer_pct: float,
    pegged: set[tuple[str, str]],
) -> dict[str, object]:
    row: dict[str, object] = {"service": service, "current_instances": len(members)}
    typed = members[members["instance_type"].notna()]
    # An instance whose capacity is impossible or unknown (0 vCPU, say) has no demand in vCPU or
    # GiB: it is left out of the plan, and the note names it.
    issues = capacity_issues(typed)
    sized = typed[issues.isna().to_numpy()]
    row["instances_with_forecasts"] = int(points["resource_id"].nunique())
    notes: list[str] = []
    silent = len(members) - row["instances_with_forecasts"]
    if silent > 0:
        notes.append(
            f"{silent} instance(s) without a live CPU or memory forecast (stopped reporting or"
            " not observed): no demand counted for them"
        )
    for code, group in typed.groupby(issues, sort=True):
        ids = sorted(map(str, group["resource_id"]))
        shown = ", ".join(ids[:5]) + (", ..." if len(ids) > 5 else "")
        notes.append(f"{code}: {len(ids)} instance(s) left out of the plan ({shown})")
    if sized.empty:
        row.update(
            instance_type=None, advice="unknown", recommended_instances=np.nan, saturated=False
        )
        notes.append(
            "no instance type: capacity in vCPU/GiB unknown, no instance count advice"
            if typed.empty
            else "no instance with a usable capacity: no instance count advice"
        )
        row["note"] = "; ".join(notes)
        return row
    unit_type = _modal_type(sized["instance_type"])
    unit = sized[sized["instance_type"] == unit_type].iloc[0]
    row["instance_type"] = unit_type
    if sized["instance_type"].nunique() > 1:
        notes.append(f"mixed instance types: counts are in units of {unit_type}")
    if len(sized) < len(members):
        notes.append(f"{len(members) - len(sized)} instance(s) without instance type ignored")
    needed: dict[str, int] = {}
    observed_need: dict[str, int] = {}
    for dim, (metric, capacity_column, unit_name) in SIZING_DIMENSIONS.items():
        per_instance = float(unit[capacity_column])
        row[f"{capacity_column}_per_instance"] = per_instance
        if not per_instance > 0:
            notes.append(f"{capacity_column} of {unit_type} is {per_instance:g}: {dim} not sized")
            continue
        capacity = dict(zip(sized["resource_id"], sized[capacity_column], strict=True))
        fc = points[(points["metric"] == metric) & points["resource_id"].isin(capacity)]
        hist = observed[(observed["metric"] == metric) & observed["resource_id"].isin(capacity)]
        peak50 = _per_instance_sum(fc, "p50", capacity).max() if len(fc) else np.nan
        peak90 = _per_instance_sum(fc, "p90", capacity).max() if len(fc) else np.nan
        seen = _per_instance_sum(hist, "value", capacity).max() if len(hist) else np.nan
        row[f"{dim}_peak_demand_p50_{unit_name}"] = peak50
        row[f"{dim}_peak_demand_p90_{unit_name}"] = peak90
        row[f"{dim}_observed_peak_{unit_name}"] = seen
        per_unit = per_instance * target_utilization / 100.0
        if np.isfinite(peak90):
            needed[dim] = max(1, _ceil(peak90 * (1.0 + buffer_pct / 100.0) / per_unit))
        else:
            notes.append(f"no {metric} forecasts: {dim} not sized")
        if np.isfinite(seen):
            observed_need[dim] = _ceil(seen / per_unit)
        row[f"{dim}_required_instances"] = needed.get(dim, np.nan)
    if any(key[1] in (CPU, MEMORY) for key in pegged):
        row["saturated"] = True
        notes.append(f"{SATURATION_REASON}: pegged instances, true demand and count are higher")
    else:
        row["saturated"] = False
    if not needed:
        row.update(recommended_instances=np.nan, advice="unknown", binding_dimension=None)
        row["note"] = "; ".join(notes)
        return row
    binding = max(needed, key=lambda d: (needed[d], d == "cpu"))
    recommended = needed[binding]
    if row["saturated"] and recommended < len(members):
        # The forecast of a pegged instance is a lower bound: fewer instances would do harm.
        recommended = len(members)
        notes.append("no scale-in while instances are pegged: hold and investigate the demand")
    at_observed_peak = max(observed_need.values()) if observed_need else np.nan
    below = bool(np.isfinite(at_observed_peak) and recommended < at_observed_peak)
    if below:
        notes.append(
            f"below observed peak: the historical peak needed {int(at_observed_peak)} instance(s)"
            f" at {target_utilization:g} % target; the forecast expects less demand"
        )
    delta = recommended - len(members)
    row.update(
        recommended_instances=recommended,
        binding_dimension=binding,
        observed_peak_instances=at_observed_peak,
        below_observed_peak=below,
        advice="scale_out" if delta > 0 else "scale_in" if delta < 0 else "hold",
        instance_delta=delta,
        monthly_cost_delta_usd=delta * float(unit["hourly_price_usd"]) * HOURS_PER_MONTH,
        note="; ".join(notes),
    )
    return row
