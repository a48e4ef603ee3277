"""Right-sizing on the forecast: the cheapest catalogue type that keeps the P90 peak under target.

Demand moves between instance types in capacity units: a P90 peak of ``u`` % on the current
type becomes ``u x current capacity / new capacity`` % on a candidate (per dimension: vCPU and
memory). This ignores per-core speed differences between families and the CPU credits of
burstable types (t3): treat a cross-family move as a starting point for a load test.

* over-provisioned: the P90 peak stays under ``risk.low_water_pct`` for the whole horizon on CPU
  *and* memory. Recommended: the cheapest type, across families, whose normalised CPU and memory
  peaks are at most ``risk.target_utilization``; kept as is when nothing adequate is cheaper.
* under-provisioned: the P90 peak of CPU or memory is above the target, or that dimension is at
  risk. Recommended: the cheapest type at least as large in both dimensions (so fixing one does
  not starve the other) and larger in one, that brings both peaks under target; when none does,
  the larger type with the lowest normalised peak (note: scale out as well).
* otherwise optimized: keep the current type.

``monthly_cost_delta_usd = (new - current hourly price) x 730``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from capforecast.errors import ForecastInputError

HOURS_PER_MONTH = 730.0
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


def _normalised(peak: float, current: float, candidates: np.ndarray) -> np.ndarray:
    return peak * current / candidates


def _recommend(
    resource: Mapping[str, Any],
    table: pd.DataFrame,
    *,
    target_utilization: float,
    low_water_pct: float,
) -> dict[str, Any]:
    cpu, memory = float(resource["cpu_peak_p90"]), float(resource["memory_peak_p90"])
    cpu_after = _normalised(cpu, float(resource["vcpu"]), table["vcpu"].to_numpy())
    memory_after = _normalised(
        memory, float(resource["memory_gib"]), table["memory_gib"].to_numpy()
    )
    adequate = (cpu_after <= target_utilization) & (memory_after <= target_utilization)
    price = float(resource["hourly_price_usd"])
    over = cpu < low_water_pct and memory < low_water_pct
    under = (
        cpu > target_utilization
        or memory > target_utilization
        or bool(resource.get("cpu_at_risk", False))
        or bool(resource.get("memory_at_risk", False))
    )
    choice: int | None = None
    note = ""
    if under:
        larger = (
            (table["vcpu"].to_numpy() >= float(resource["vcpu"]))
            & (table["memory_gib"].to_numpy() >= float(resource["memory_gib"]))
            & (table["instance_type"].to_numpy() != resource["instance_type"])
        )
        fits = np.flatnonzero(larger & adequate)
        if len(fits):
            choice = _cheapest(table, fits)
        elif larger.any():
            closest = np.flatnonzero(larger)
            worst = np.maximum(cpu_after, memory_after)[closest]
            choice = int(
                closest[np.lexsort((table["hourly_price_usd"].to_numpy()[closest], worst))[0]]
            )
            note = "no_adequate_type: still above target on the largest fit, scale out as well"
        else:
            note = "largest_type_in_catalogue: scale out instead"
    elif over:
        fits = np.flatnonzero(adequate)
        cheapest = _cheapest(table, fits) if len(fits) else None
        if cheapest is not None and table["hourly_price_usd"].iloc[cheapest] < price:
            choice = cheapest
        else:
            note = "no_cheaper_type: no cheaper catalogue type keeps the peak under target"
    sizing = "under_provisioned" if under else "over_provisioned" if over else "optimized"
    if choice is None:
        return {
            "sizing": sizing,
            "recommended_instance_type": resource["instance_type"],
            "recommended_hourly_price_usd": price,
            "monthly_cost_delta_usd": 0.0,
            "cpu_peak_p90_after": cpu,
            "memory_peak_p90_after": memory,
            "sizing_note": note,
        }
    new_price = float(table["hourly_price_usd"].iloc[choice])
    return {
        "sizing": sizing,
        "recommended_instance_type": table["instance_type"].iloc[choice],
        "recommended_hourly_price_usd": new_price,
        "monthly_cost_delta_usd": (new_price - price) * HOURS_PER_MONTH,
        "cpu_peak_p90_after": float(cpu_after[choice]),
        "memory_peak_p90_after": float(memory_after[choice]),
        "sizing_note": note,
    }


def _cheapest(table: pd.DataFrame, candidates: np.ndarray) -> int:
    """Cheapest candidate; ties go to the smaller type, then to the name (deterministic)."""
    keys = [table[c].to_numpy()[candidates] for c in ("instance_type", "memory_gib", "vcpu")]
    order = np.lexsort([*keys, table["hourly_price_usd"].to_numpy()[candidates]])
    return int(candidates[order[0]])


def right_size(
    demand: pd.DataFrame,
    catalogue: Mapping[str, Mapping[str, Any]],
    *,
    target_utilization: float,
    low_water_pct: float,
) -> pd.DataFrame:
    """One recommendation per resource (columns ``SIZING_COLUMNS``).

    demand: resource_id, instance_type, vcpu, memory_gib, hourly_price_usd, cpu_peak_p90,
      memory_peak_p90 (forecast P90 peak utilisation %, whole horizon) and optionally the bools
      cpu_at_risk, memory_at_risk. Rows lacking an instance type or one of the two peaks are
      returned as ``sizing = "unsized"`` with a note saying what is missing.
    """
    check_instance_types(demand, catalogue)
    table = catalogue_frame(catalogue)
    rows = []
    for resource in demand.to_dict("records"):
        missing = [
            name
            for name in ("instance_type", "cpu_peak_p90", "memory_peak_p90")
            if resource.get(name) is None or pd.isna(resource.get(name))
        ]
        if missing:
            note = (
                "instance_type_unknown: right-sizing needs an instance type"
                if "instance_type" in missing
                else f"{'_'.join(m.split('_')[0] for m in missing)}_forecast_missing"
            )
            rows.append(
                {"resource_id": resource["resource_id"], "sizing": "unsized", "sizing_note": note}
            )
            continue
        rows.append(
            {
                "resource_id": resource["resource_id"],
                **_recommend(
                    resource,
                    table,
                    target_utilization=target_utilization,
                    low_water_pct=low_water_pct,
                ),
            }
        )
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
