"""Model-ready panel: the forecast target per series on the regular grid, plus calendar columns."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from capforecast.contracts import series_id

FEATURE_COLUMNS: tuple[str, ...] = (
    "series_id",
    "resource_id",
    "metric",
    "timestamp",
    "y",
    "value_max",
    "is_filled",
    "is_gap",
    "hour",
    "dayofweek",
)


def build_features(clean: pd.DataFrame, target: str = "mean") -> pd.DataFrame:
    """Panel with ``y`` = hourly mean (or max) and calendar columns.

    Rows stay on the regular grid; long gaps keep ``y`` NaN and ``is_gap`` True so each model
    decides how to treat them (none are dropped here).
    """
    if target not in {"mean", "max"}:
        raise ValueError(f"forecast target must be 'mean' or 'max', got {target!r}")
    # One id per distinct (resource_id, metric), not per row.
    rid_codes, rid_names = pd.factorize(clean["resource_id"])
    met_codes, met_names = pd.factorize(clean["metric"])
    stamps = pd.DatetimeIndex(clean["timestamp"])
    fast = len(clean) > 0 and not ((rid_codes < 0).any() or (met_codes < 0).any() or stamps.hasnans)
    if fast:
        n_met = max(len(met_names), 1)
        pair = rid_codes.astype("int64") * n_met + met_codes
        pairs, row_pair = np.unique(pair, return_inverse=True)
        ids = np.array(
            [series_id(rid_names[p // n_met], met_names[p % n_met]) for p in pairs], dtype=object
        )
        row_ids = ids[row_pair]
    else:  # missing ids or times: the ids (and errors) of every row as they are
        row_ids = [
            series_id(r, m) for r, m in zip(clean["resource_id"], clean["metric"], strict=True)
        ]
    out = pd.DataFrame(
        {
            "series_id": row_ids,
            "resource_id": clean["resource_id"].astype(str),
            "metric": clean["metric"].astype(str),
            "timestamp": clean["timestamp"],
            "y": clean["value"] if target == "mean" else clean["value_max"],
            "value_max": clean["value_max"],
            "is_filled": clean["is_filled"].astype(bool),
            "is_gap": clean["is_gap"].astype(bool),
        }
    )
    out["hour"] = out["timestamp"].dt.hour.astype("int8")
    out["dayofweek"] = out["timestamp"].dt.dayofweek.astype("int8")
    if not fast:
        return out.sort_values(["series_id", "timestamp"], ignore_index=True)[list(FEATURE_COLUMNS)]
    # sort_values(["series_id", "timestamp"]) on integer keys (the ids' ranks); both sorts are
    # stable, so even tied rows keep the same order.
    rank = np.empty(len(ids), dtype="int64")
    rank[np.argsort(ids, kind="stable")] = np.arange(len(ids))
    order = np.lexsort((stamps.asi8, rank[row_pair]))
    return out.take(order).reset_index(drop=True)[list(FEATURE_COLUMNS)]


def panel_from_local_files(cfg: Mapping[str, Any]) -> pd.DataFrame:
    """Ingest, validate, resample and build features for every file of ``data.path`` in memory.

    The same steps as the workflow's per-partition rules, for notebooks, benchmarks and tests
    that want a model panel without running Snakemake; like the workflow, a series found in two
    files is an error (:mod:`capforecast.data.series_index`).
    """
    from capforecast.data import ingest, resample, series_index, validate
    from capforecast.settings import data_settings, etl_settings

    data, etl = data_settings(cfg["data"]), etl_settings(cfg["etl"])
    frames = []
    records = {}
    for path in ingest.list_input_files(data.path):
        result = ingest.ingest_file(path, data, etl)
        records[str(path)] = (path, result.series)
        kept = validate.validate_rows(result.raw, etl, path.name).kept
        clean = resample.resample_series(kept, etl)
        frames.append(build_features(clean, target=cfg["forecast"]["target"]))
    series_index.series_index(records)
    return pd.concat(frames, ignore_index=True)
