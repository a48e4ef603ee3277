"""The model panel: one row per series x timestamp with the value to forecast.

Every forecaster, the backtest and the metrics read this shape
(``series_id, timestamp, y``), so it is built in one place from the cleaned hourly data.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import numpy as np
import pandas as pd

from capforecast.contracts import split_series_id
from capforecast.errors import InputDataError
from capforecast.forecast.models.base import series_blocks

PANEL_COLUMNS: tuple[str, ...] = ("series_id", "timestamp", "y")

Bounds = dict[str, tuple[float, float | None]]


def metric_of(series: str) -> str:
    """Metric part of a series id built by ``contracts.series_id`` ("resource|metric"; the
    resource id may itself contain "|", the metric never does)."""
    return split_series_id(series)[1]


def series_bounds(panel_meta: pd.DataFrame, percent_metrics: Iterable[str]) -> Bounds:
    """Physical bounds per series: (0, 100) for percentage metrics, (0, None) otherwise.

    ``panel_meta`` needs ``series_id``; its metric comes from a ``metric`` column when present,
    otherwise from the series id itself. Every metric in the fleet (utilisation, bytes, counts,
    latency) is non-negative, hence the lower bound 0.
    """
    if "series_id" not in panel_meta.columns:
        raise InputDataError("panel", "missing", column="series_id")
    percent = set(percent_metrics)
    # Series in order of first appearance, each with the metric of its first row.
    blocks = series_blocks(panel_meta["series_id"])
    if "metric" in panel_meta.columns:
        metrics = panel_meta["metric"].to_numpy()[blocks.rows(blocks.starts)]
        metric_by_series = dict(zip(blocks.ids, metrics, strict=True))
    else:
        metric_by_series = {s: metric_of(str(s)) for s in blocks.ids}
    return {
        str(sid): (0.0, 100.0 if metric in percent else None)
        for sid, metric in metric_by_series.items()
    }


def clip_to_bounds(
    frame: pd.DataFrame, columns: Iterable[str], bounds: Mapping[str, tuple[float, float | None]]
) -> pd.DataFrame:
    """Clip ``columns`` of a forecast frame to each row's series bounds (unknown series: as is)."""
    out = frame.copy()
    if not bounds:
        return out
    lower = out["series_id"].map(lambda s: bounds.get(s, (-np.inf, None))[0]).astype(float)
    upper = out["series_id"].map(
        lambda s: np.inf if bounds.get(s, (0.0, None))[1] is None else bounds[s][1]
    )
    upper = upper.astype(float)
    for column in columns:
        out[column] = out[column].clip(lower=lower, upper=upper)
    return out
