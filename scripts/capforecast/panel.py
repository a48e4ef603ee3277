"""The model panel: one row per series x timestamp with the value to forecast.

Every forecaster, the backtest and the metrics read this shape
(``series_id, timestamp, y``), so it is built in one place from the cleaned hourly data.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import numpy as np
import pandas as pd

from capforecast.contracts import series_id as make_series_id
from capforecast.contracts import split_series_id
from capforecast.errors import ConfigError, InputDataError

PANEL_COLUMNS: tuple[str, ...] = ("series_id", "timestamp", "y")

# Which column of the cleaned data holds each forecast target (config forecast.target).
TARGET_COLUMNS: dict[str, str] = {"mean": "value", "max": "value_max"}

Bounds = dict[str, tuple[float, float | None]]


def to_panel(
    clean_or_features: pd.DataFrame, target: str = "mean", *, source: str = "clean data"
) -> pd.DataFrame:
    """Turn cleaned hourly long data into the model panel ``series_id, timestamp, y``.

    ``clean_or_features`` has the columns of ``contracts.CLEAN_COLUMNS`` (``timestamp,
    resource_id, metric, value, value_max, ...``) or already carries ``series_id`` instead of
    ``resource_id``/``metric``. ``y`` is ``value`` for target ``mean`` and ``value_max`` for
    target ``max``; NaN values (long gaps) are kept as NaN so models and metrics see the gap.
    Timestamps are returned as UTC; rows are sorted by series_id, timestamp.

    Raises ``ConfigError`` for an unknown target and ``InputDataError`` (naming ``source``)
    for a missing column or a duplicated series x timestamp.
    """
    if target not in TARGET_COLUMNS:
        raise ConfigError(
            "forecast.target", f"value {target!r} is invalid; allowed: {', '.join(TARGET_COLUMNS)}"
        )
    frame = clean_or_features
    value_column = TARGET_COLUMNS[target]
    if value_column not in frame.columns:
        raise InputDataError(source, f"needed for forecast target '{target}'", column=value_column)
    if "timestamp" not in frame.columns:
        raise InputDataError(source, "missing", column="timestamp")
    if "series_id" in frame.columns:
        ids = frame["series_id"].astype(str)
    else:
        for column in ("resource_id", "metric"):
            if column not in frame.columns:
                raise InputDataError(source, "missing (or give series_id)", column=column)
        ids = pd.Series(
            [
                make_series_id(str(r), str(m))
                for r, m in zip(frame["resource_id"], frame["metric"], strict=True)
            ],
            index=frame.index,
            dtype=object,
        )
    panel = pd.DataFrame(
        {
            "series_id": ids.to_numpy(dtype=object),
            "timestamp": pd.to_datetime(frame["timestamp"], utc=True).to_numpy(),
            "y": pd.to_numeric(frame[value_column], errors="coerce").to_numpy(dtype=float),
        }
    )
    panel["timestamp"] = pd.to_datetime(panel["timestamp"], utc=True)
    duplicated = panel.duplicated(["series_id", "timestamp"])
    if duplicated.any():
        row = int(np.flatnonzero(duplicated.to_numpy())[0])
        raise InputDataError(
            source,
            f"duplicate timestamp for series '{panel.at[row, 'series_id']}' "
            "(clean data has one row per series and bin)",
            column="timestamp",
            row=row,
        )
    return panel.sort_values(["series_id", "timestamp"], kind="stable").reset_index(drop=True)


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
    if "metric" in panel_meta.columns:
        pairs = panel_meta[["series_id", "metric"]].drop_duplicates("series_id")
        metric_by_series = dict(zip(pairs["series_id"], pairs["metric"], strict=True))
    else:
        metric_by_series = {s: metric_of(str(s)) for s in panel_meta["series_id"].unique()}
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
