"""Right-sizing on the forecast: which catalogue type to move a resource to, if any.

Demand moves between instance types in capacity units: a P90 peak of ``u`` % on the current
type becomes ``u x current capacity / new capacity`` % on a candidate (per dimension: vCPU and
memory; the catalogue has no network capacity, so network never sizes a type). This ignores
per-core speed differences between families and the CPU credits of burstable types (t3): treat
a cross-family move as a starting point for a load test.

A candidate *fits* when, on every observed dimension, its peak plus ``risk.buffer_pct``
headroom stays at or under ``risk.target_utilization``: ``after x (1 + buffer / 100) <= target``.
The peak is the forecast P90 peak, or the highest hourly value of the last four weeks when that
is higher (``capforecast.risk.capacity.LOOKBACK_PEAK_HOURS``): a forecast that drifted low must
not shrink a VM below what it used recently (on the Bitbrains decision backtest, a 511 GiB VM
forecast at 0.1 % memory was moved to 8 GiB although it had used 2.3 %, i.e. 147 % of the new
type).
A dimension without a live series (not observed, e.g. memory without the CloudWatch agent)
never shrinks: candidates keep at least its current capacity.

The decision follows the resource's finding from the risk stage, never the other way round:

* ``upsize``: a dimension is short (at risk, under-provisioned or pegged at its ceiling).
  Candidates are at least as large in *every* dimension, strictly larger in each short one and
  not cheaper; the cheapest that fits wins, else the one closest to fitting (note
  ``no_adequate_type``: scale out as well). A pegged dimension's forecast is a lower bound of
  its demand (``demand_hidden_by_ceiling``): it must grow even when the forecast would fit.
* ``hold``: the resource needs capacity (or was pegged in its history) but no type change is
  recommended: no larger type in the catalogue, or the shortage is in a dimension an instance
  type does not set (e.g. disk). Never a smaller or cheaper type.
* ``downsize``: the resource is over-provisioned (every observed dimension): the cheapest type
  that fits and keeps at least ``risk.downsize_floor`` of the current vCPU and memory, when it
  is cheaper than the current one; else ``keep`` (``no_cheaper_type``, or
  ``downsize_step_limited`` when only a bigger cut would be cheaper). A workload can outgrow
  months of history: on the Bitbrains decision backtest a 511 GiB VM whose memory stayed under
  1 % for a month (under 2.3 % for three) used 104 GiB the week after a cut; one halving at a
  time, re-measured in between, bounds what such a surprise costs.
* ``keep``: anything else. ``unsized``: an impossible or unknown capacity in the resources table
  (``capacity_impossible`` / ``capacity_unknown``, see :mod:`capforecast.data.capacity`), no
  instance type, or neither CPU nor memory observed.

``monthly_cost_delta_usd = (new - current hourly price) x 730``. ``sizing_note`` holds
``code: explanation`` parts joined by ``"; "``; the codes also go to the reason codes.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from capforecast.data.capacity import capacity_note
from capforecast.errors import ForecastInputError

HOURS_PER_MONTH = 730.0
# Sizing dimension -> capacity column of the resources table and the catalogue, and its unit.
DIMENSIONS: dict[str, tuple[str, str]] = {"cpu": ("vcpu", "vCPU"), "memory": ("memory_gib", "GiB")}
# Resource findings that must never lead to a smaller or cheaper type.
NEEDS_CAPACITY: frozenset[str] = frozenset({"at_risk", "under_provisioned"})
SIZING_COLUMNS: tuple[str, ...] = (
    "resource_id",
    "sizing",
    "recommended_instance_type",
    "recommended_hourly_price_usd",
    "monthly_cost_delta_usd",
    "cpu_peak_p90_after",
    "memory_peak_p90_after",
    "sizing_note",
)
# Fits are compared with this slack so that a peak landing exactly on the target fits.
_FIT_SLACK = 1e-9


def catalogue_frame(catalogue: Mapping[str, Mapping[str, Any]]) -> pd.DataFrame:
    """The catalogue as a table: instance_type, vcpu, memory_gib, hourly_price_usd, family."""
    rows = [
        {
            "instance_type": name,
            "vcpu": float(entry["vcpu"]),
            "memory_gib": float(entry["memory_gib"]),
            "hourly_price_usd": float(entry["hourly_price_usd"]),
            "family": entry.get("family", str(name).split(".")[0]),
        }
        for name, entry in catalogue.items()
    ]
    return pd.DataFrame(
        rows, columns=["instance_type", "vcpu", "memory_gib", "hourly_price_usd", "family"]
    )


def check_instance_types(resources: pd.DataFrame, catalogue: Mapping[str, Any]) -> None:
    """Raise ForecastInputError for the first resource whose instance type is not catalogued.

    Resources without an instance type (None) are allowed: they are reported as unsized.
    """
    typed = resources[resources["instance_type"].notna()]
    unknown = typed[~typed["instance_type"].isin(list(catalogue))]
    if len(unknown):
        first = unknown.iloc[0]
        raise ForecastInputError(
            f"resources: resource '{first['resource_id']}' has instance type "
            f"'{first['instance_type']}', which is not in the catalogue "
            f"(known: {', '.join(sorted(catalogue))}); add it under 'catalogue' in the config"
        )


def _flag(resource: Mapping[str, Any], name: str) -> bool:
    value = resource.get(name)
    return bool(value) if value is not None and not pd.isna(value) else False


def _observed_peaks(resource: Mapping[str, Any]) -> dict[str, float]:
    """P90 peak per observed dimension (a missing or NaN peak means the dimension is unseen)."""
    peaks = {}
    for dim in DIMENSIONS:
        value = resource.get(f"{dim}_peak_p90")
        if value is not None and not pd.isna(value):
            peaks[dim] = float(value)
    return peaks


def _unsized_reason(resource: Mapping[str, Any], peaks: Mapping[str, float]) -> str | None:
    # A capacity problem found at ingest comes first: its code is the resource's quality flag.
    flagged = resource.get("capacity_issue")
    if isinstance(flagged, str) and flagged:
        return capacity_note(resource) or flagged
    if resource.get("instance_type") is None or pd.isna(resource.get("instance_type")):
        return "instance_type_unknown: right-sizing needs an instance type"
    unusable = capacity_note(resource)
    if unusable is not None:
        return unusable
    if not peaks:
        return "no_cpu_or_memory_forecast: neither CPU nor memory is observed"
    return None


class _Candidates:
    """The catalogue seen from one resource: capacities, prices and P90 peaks after a move."""

    def __init__(
        self, resource: Mapping[str, Any], table: pd.DataFrame, peaks: Mapping[str, float]
    ) -> None:
        self.table = table
        self.price = table["hourly_price_usd"].to_numpy()
        self.current_price = float(resource["hourly_price_usd"])
        self.capacity = {dim: table[column].to_numpy() for dim, (column, _) in DIMENSIONS.items()}
        self.current = {dim: float(resource[column]) for dim, (column, _) in DIMENSIONS.items()}
        self.after = {
            dim: peak * self.current[dim] / self.capacity[dim] for dim, peak in peaks.items()
        }
        self.other = table["instance_type"].to_numpy() != resource["instance_type"]

    def worst_buffered(self, buffer_pct: float) -> np.ndarray:
        """Largest P90 peak plus buffer over the observed dimensions, per candidate."""
        return np.maximum.reduce(list(self.after.values())) * (1.0 + buffer_pct / 100.0)

    def fits(self, target_utilization: float, buffer_pct: float) -> np.ndarray:
        return self.worst_buffered(buffer_pct) <= target_utilization + _FIT_SLACK

    def at_least_current(self, dims: Any) -> np.ndarray:
        return np.logical_and.reduce([self.capacity[d] >= self.current[d] for d in dims])

    def at_least_share(self, dims: Any, share: float) -> np.ndarray:
        return np.logical_and.reduce([self.capacity[d] >= share * self.current[d] for d in dims])

    def larger_in(self, dims: Any) -> np.ndarray:
        return np.logical_and.reduce([self.capacity[d] > self.current[d] for d in dims])


def _cheapest(table: pd.DataFrame, candidates: np.ndarray) -> int:
    """Cheapest candidate; ties go to the smaller type, then to the name (deterministic)."""
    keys = [table[c].to_numpy()[candidates] for c in ("instance_type", "memory_gib", "vcpu")]
    order = np.lexsort([*keys, table["hourly_price_usd"].to_numpy()[candidates]])
    return int(candidates[order[0]])


def _upsize(
    options: _Candidates, short: list[str], target_utilization: float, buffer_pct: float
) -> tuple[int | None, list[str]]:
    """Larger in every short dimension, no smaller in any, never cheaper; cheapest that fits."""
    larger = (
        options.other
        & options.at_least_current(DIMENSIONS)
        & options.larger_in(short)
        & (options.price >= options.current_price)
    )
    fits = np.flatnonzero(larger & options.fits(target_utilization, buffer_pct))
    if len(fits):
        return _cheapest(options.table, fits), []
    closest = np.flatnonzero(larger)
    if not len(closest):
        names = " and ".join(short)
        return None, [f"largest_type_in_catalogue: no type has more {names}; scale out instead"]
    worst = options.worst_buffered(buffer_pct)[closest]
    choice = int(closest[np.lexsort((options.price[closest], worst))[0]])
    return choice, ["no_adequate_type: still above target on the largest fit, scale out as well"]


def _downsize(
    options: _Candidates,
    unobserved: list[str],
    target_utilization: float,
    buffer_pct: float,
    downsize_floor: float,
) -> tuple[int | None, list[str]]:
    """Cheapest type that fits, keeps every unobserved dimension and at least ``downsize_floor``
    of every observed one, if cheaper than now."""
    notes = [
        f"{dim}_not_shrunk: {dim} is not observed; candidates keep at least the current"
        f" {options.current[dim]:g} {DIMENSIONS[dim][1]}"
        for dim in unobserved
    ]
    adequate = options.fits(target_utilization, buffer_pct)
    if unobserved:
        adequate &= options.at_least_current(unobserved)
    cheaper = adequate & (options.price < options.current_price)
    fits = np.flatnonzero(cheaper & options.at_least_share(DIMENSIONS, downsize_floor))
    if not len(fits):
        reason = (
            f"downsize_step_limited: cheaper types that fit keep less than {downsize_floor:g}"
            " of the current vCPU or memory; shrink in steps, re-measuring between them"
            if cheaper.any()
            else "no_cheaper_type: no cheaper catalogue type keeps the peak plus buffer under"
            " target"
        )
        return None, [*notes, reason]
    return _cheapest(options.table, fits), notes


def _hold_notes(resource: Mapping[str, Any], finding: str) -> list[str]:
    """Why a resource that must not shrink keeps its type."""
    if finding in NEEDS_CAPACITY:
        where = str(resource.get("short_elsewhere") or "a dimension without catalogue capacity")
        return [
            f"capacity_needed_elsewhere: {where} needs capacity an instance type does not set;"
            " type kept, never smaller"
        ]
    return ["pegged_no_downsize: pegged at the ceiling in its history; type kept, never smaller"]


def _recommend(
    resource: Mapping[str, Any],
    table: pd.DataFrame,
    peaks: Mapping[str, float],
    *,
    target_utilization: float,
    buffer_pct: float,
    downsize_floor: float,
) -> dict[str, Any]:
    options = _Candidates(resource, table, peaks)
    finding = str(resource.get("finding") or "optimized")
    short = [dim for dim in DIMENSIONS if _flag(resource, f"{dim}_short")]
    pegged = [dim for dim in short if _flag(resource, f"{dim}_pegged")]
    protected = finding in NEEDS_CAPACITY or bool(short) or _flag(resource, "pegged")
    unobserved = [dim for dim in DIMENSIONS if dim not in peaks]
    choice: int | None = None
    notes: list[str] = [
        f"{dim}_pegged_upsize: {dim} demand is hidden by the ceiling, its forecast is a lower"
        " bound; re-measure after the change"
        for dim in pegged
    ]
    if short:
        sizing = "upsize"
        choice, more = _upsize(options, short, target_utilization, buffer_pct)
        notes += more
        if choice is None:
            sizing = "hold"
    elif protected:
        sizing = "hold"
        notes += _hold_notes(resource, finding)
    elif finding == "over_provisioned":
        choice, more = _downsize(
            options, unobserved, target_utilization, buffer_pct, downsize_floor
        )
        notes += more
        sizing = "keep" if choice is None else "downsize"
    else:
        sizing = "keep"
    new_type = resource["instance_type"] if choice is None else table["instance_type"].iloc[choice]
    new_price = options.current_price if choice is None else float(options.price[choice])
    after = {
        f"{dim}_peak_p90_after": (
            float(options.after[dim][choice])
            if choice is not None and dim in options.after
            else peaks.get(dim, np.nan)
        )
        for dim in DIMENSIONS
    }
    return {
        "sizing": sizing,
        "recommended_instance_type": new_type,
        "recommended_hourly_price_usd": new_price,
        "monthly_cost_delta_usd": (new_price - options.current_price) * HOURS_PER_MONTH,
        **after,
        "sizing_note": "; ".join(notes),
    }


def note_codes(note: Any) -> list[str]:
    """The codes of a ``sizing_note`` (the part before ':' of each '; '-separated part)."""
    if note is None or pd.isna(note) or not str(note):
        return []
    return [part.split(":", 1)[0].strip() for part in str(note).split("; ")]


def right_size(
    demand: pd.DataFrame,
    catalogue: Mapping[str, Mapping[str, Any]],
    *,
    target_utilization: float,
    buffer_pct: float,
    downsize_floor: float,
) -> pd.DataFrame:
    """One recommendation per resource (columns ``SIZING_COLUMNS``; see the module docstring).

    demand, one row per resource: resource_id, instance_type, vcpu, memory_gib,
      hourly_price_usd, finding (the risk stage's resource finding), cpu_peak_p90 and
      memory_peak_p90 (forecast P90 peak utilisation %, NaN when the dimension is not
      observed), and optionally the bools cpu_short / memory_short (the dimension is at risk,
      under-provisioned or pegged), cpu_pegged / memory_pegged (its demand is hidden by the
      ceiling), pegged (any dimension of the resource pegged now or in its history) and the
      text short_elsewhere (dimensions short outside the catalogue, for the note).
    """
    check_instance_types(demand, catalogue)
    table = catalogue_frame(catalogue)
    rows = []
    for resource in demand.to_dict("records"):
        peaks = _observed_peaks(resource)
        unsized = _unsized_reason(resource, peaks)
        if unsized is not None:
            unsized_row = {"sizing": "unsized", "sizing_note": unsized}
            rows.append({"resource_id": resource["resource_id"], **unsized_row})
            continue
        recommendation = _recommend(
            resource,
            table,
            peaks,
            target_utilization=target_utilization,
            buffer_pct=buffer_pct,
            downsize_floor=downsize_floor,
        )
        rows.append({"resource_id": resource["resource_id"], **recommendation})
    return pd.DataFrame(rows).reindex(columns=list(SIZING_COLUMNS))


def resource_inventory(
    resources: pd.DataFrame, forecast_resources: set[str], catalogue: Mapping[str, Any]
) -> pd.DataFrame:
    """Resources table checked against the forecasts and the catalogue, capacities filled in.

    Raises ForecastInputError when a forecast resource has no row, a resource is listed twice,
    or an instance type is not in the catalogue. vcpu, memory_gib and hourly_price_usd missing
    from the table are taken from the catalogue; a missing service becomes 'unassigned'.
    """
    needed = ["resource_id", "service", "instance_type"]
    missing = [c for c in needed if resources is None or c not in resources.columns]
    if missing:
        raise ForecastInputError(f"resources: missing column(s) {', '.join(missing)}")
    table = resources.copy()
    for column in ("vcpu", "memory_gib", "hourly_price_usd"):
        if column not in table.columns:
            table[column] = np.nan
        table[column] = pd.to_numeric(table[column], errors="coerce").astype(float)
    table["resource_id"] = table["resource_id"].astype(str)
    dupes = table["resource_id"][table["resource_id"].duplicated()]
    if len(dupes):
        raise ForecastInputError(f"resources: resource '{dupes.iloc[0]}' is listed twice")
    absent = sorted(forecast_resources - set(table["resource_id"]))
    if absent:
        shown = ", ".join(f"'{r}'" for r in absent[:5])
        raise ForecastInputError(
            f"resources: {len(absent)} forecast resource(s) have no row in the resources table "
            f"({shown}{', ...' if len(absent) > 5 else ''})"
        )
    table["instance_type"] = table["instance_type"].where(
        table["instance_type"].notna() & (table["instance_type"].astype(str) != ""), None
    )
    check_instance_types(table, catalogue)
    table["service"] = table["service"].where(table["service"].notna(), "unassigned").astype(str)
    for column in ("vcpu", "memory_gib", "hourly_price_usd"):
        from_catalogue = table["instance_type"].map(
            lambda t, c=column: float(catalogue[t][c]) if t is not None else np.nan
        )
        table[column] = table[column].fillna(from_catalogue)
    return table
