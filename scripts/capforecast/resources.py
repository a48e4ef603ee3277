"""The resources table: one row per resource seen in the data, never a silent omission."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import pandas as pd

from capforecast.contracts import RESOURCE_COLUMNS

UNASSIGNED_SERVICE = "unassigned"


def complete_resources(resources: pd.DataFrame | None, seen: Iterable[str]) -> pd.DataFrame:
    """Add a row for every resource in the data that the table does not describe.

    Those rows get service 'unassigned' and no instance type, so the risk stage can still
    forecast them and says explicitly that right-sizing needs an instance type.
    Resources in the table but absent from the data are kept (they may be new).
    """
    base = (
        resources[list(RESOURCE_COLUMNS)].copy()
        if resources is not None
        else pd.DataFrame({c: pd.Series(dtype="object") for c in RESOURCE_COLUMNS})
    )
    missing = sorted(set(map(str, seen)) - set(base["resource_id"].astype(str)))
    extra = pd.DataFrame(
        {
            "resource_id": missing,
            "service": UNASSIGNED_SERVICE,
            "instance_type": None,
            "vcpu": np.nan,
            "memory_gib": np.nan,
            "region": None,
            "hourly_price_usd": np.nan,
        }
    )
    out = pd.concat([base, extra], ignore_index=True) if len(extra) else base
    for col in ("vcpu", "memory_gib", "hourly_price_usd"):
        out[col] = pd.to_numeric(out[col], errors="coerce").astype("float64")
    for col in ("resource_id", "service", "instance_type", "region"):
        out[col] = out[col].astype("object").where(out[col].notna(), None)
    return out.sort_values("resource_id", ignore_index=True)
