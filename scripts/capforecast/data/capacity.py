"""Which resources have a capacity (vCPU, memory) the risk stage can size with.

Real resources tables list impossible machines: the Bitbrains development set has three VMs with
0 vCPU and 0 GiB (bb-vm050, bb-vm196, bb-vm197). A size of 0, a negative or an infinite size is
``capacity_impossible``; a resource listed with no size at all (no vcpu / memory_gib and no
catalogued instance type to look them up) is ``capacity_unknown``. Such a resource keeps its
forecasts and risk findings, but gets no right-sizing and no place in its service's capacity
plan: its demand in vCPU or GiB cannot be known. Ingest records the code per resource
(``capacity_issue`` in ``results/resources.parquet``), the quality table flags the resource's
series with it and the risk report gives it as a reason code.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

CAPACITY_IMPOSSIBLE = "capacity_impossible"
CAPACITY_UNKNOWN = "capacity_unknown"
CAPACITY_ISSUES: tuple[str, ...] = (CAPACITY_IMPOSSIBLE, CAPACITY_UNKNOWN)
# Capacity columns of the resources table and their units.
CAPACITY_UNITS: dict[str, str] = {"vcpu": "vCPU", "memory_gib": "GiB"}


def _capacities(table: pd.DataFrame) -> pd.DataFrame:
    columns = {
        column: pd.to_numeric(table[column], errors="coerce")
        if column in table.columns
        else pd.Series(np.nan, index=table.index)
        for column in CAPACITY_UNITS
    }
    return pd.DataFrame(columns, index=table.index).astype("float64")


def capacity_issues(table: pd.DataFrame) -> pd.Series:
    """Per row of a resources table: ``capacity_impossible`` (a vcpu or memory_gib of 0 or
    less, or infinite), ``capacity_unknown`` (one of them missing), else None."""
    sizes = _capacities(table)
    values = sizes.to_numpy()
    with np.errstate(invalid="ignore"):
        impossible = ((values <= 0) | np.isinf(values)).any(axis=1)
    unknown = np.isnan(values).any(axis=1)
    codes = np.select([impossible, unknown], [CAPACITY_IMPOSSIBLE, CAPACITY_UNKNOWN], "")
    return pd.Series(np.where(codes == "", None, codes), index=table.index, dtype=object)


def capacity_note(resource: Mapping[str, Any]) -> str | None:
    """``code: explanation`` for one resource (a resources-table row as a mapping) whose
    capacity cannot size anything, else None."""
    row = pd.DataFrame([{column: resource.get(column) for column in CAPACITY_UNITS}])
    code = capacity_issues(row).iloc[0]
    if code is None:
        return None
    sizes = _capacities(row).iloc[0]
    given = " and ".join(
        f"{sizes[column]:g} {unit}" if pd.notna(sizes[column]) else f"no {unit}"
        for column, unit in CAPACITY_UNITS.items()
    )
    return f"{code}: the resources table gives {given}; no right-sizing, no capacity plan"
