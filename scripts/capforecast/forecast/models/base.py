"""The contract every forecaster follows, so backtests, selection and final fits treat all alike."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from capforecast.contracts import quantile_column
from capforecast.settings import ModelSettings


@dataclass(frozen=True)
class ForecastRequest:
    """Everything a model needs to forecast a panel of series.

    history: columns ``series_id, timestamp, y`` on a regular grid at ``freq`` (sorted by
      series_id, timestamp; timestamps tz-aware UTC). ``y`` may be NaN inside long gaps.
    horizon: steps to forecast after each series' last timestamp.
    quantiles: sorted, in (0, 1); always contains 0.5.
    season: season length in steps (24 for hourly data with a daily cycle).
    bounds: per series_id (lower, upper) physical bounds; upper None = unbounded.
    n_jobs: cores the model may use.
    fitted_models: None = fit every series from scratch. A dict (owned by one model's backtest
      run) lets a model keep what it learnt about a series in an earlier, earlier-cutoff window
      (AutoETS: the model form its search chose, so later windows only re-estimate parameters).
      It was learnt before an earlier cutoff, hence before this one: nothing leaks.
    """

    history: pd.DataFrame
    horizon: int
    quantiles: tuple[float, ...]
    freq: str = "1h"
    season: int = 24
    bounds: dict[str, tuple[float, float | None]] = field(default_factory=dict)
    n_jobs: int = 1
    fitted_models: dict[Any, Any] | None = None


# Output of every model: series_id, timestamp, mean, one column per quantile
# (contracts.quantile_column), and ``model_used`` (the model that actually produced the row,
# different from the requested one when a series was too short and fell back).
ModelFn = Callable[[ForecastRequest, ModelSettings], pd.DataFrame]


def forecast_columns(quantiles: tuple[float, ...] | list[float]) -> list[str]:
    return ["mean", *[quantile_column(q) for q in quantiles]]


def future_timestamps(last: pd.Timestamp, horizon: int, freq: str) -> pd.DatetimeIndex:
    return pd.date_range(last, periods=horizon + 1, freq=freq)[1:]


def finalize_forecast(frame: pd.DataFrame, request: ForecastRequest) -> pd.DataFrame:
    """Make quantiles monotone (sort across levels) and clip to physical bounds."""
    cols = [quantile_column(q) for q in request.quantiles]
    out = frame.copy()
    values = np.sort(out[cols].to_numpy(dtype=float), axis=1)
    out[cols] = values
    if request.bounds:
        lower = out["series_id"].map(lambda s: request.bounds.get(s, (0.0, None))[0]).astype(float)
        upper = (
            out["series_id"]
            .map(lambda s: request.bounds.get(s, (0.0, None))[1] or np.inf)
            .astype(float)
        )
        for col in [*cols, "mean"]:
            out[col] = out[col].clip(lower=lower, upper=upper)
    return out


# ---------------------------------------------------------------------------------------------
# Helpers shared by the model modules (added with the models; the contract above is unchanged).
# ---------------------------------------------------------------------------------------------

# Flags appended to ``model_used`` as "<model> (<flag>)" (contracts.model_used_label) so a reader
# sees why a series was not forecast by the requested model; FLAG_NO_DATA is in contracts.
FALLBACK = "fallback"
FLAG_TOO_SHORT = f"{FALLBACK}: too_short"
FLAG_MODEL_FAILED = f"{FALLBACK}: model_failed"
FLAG_CONSTANT = "constant"
FLAG_RECENTLY_CONSTANT = "constant_recently"


def fell_back(model_used: str) -> bool:
    """Whether a ``model_used`` label (or several joined by ``+``/``;``) records a fallback."""
    return f"({FALLBACK}:" in str(model_used)


def base_model_name(model_used: str) -> str:
    """The model part of a ``model_used`` label: ``"naive (constant)"`` -> ``"naive"``."""
    return model_used.split(" (", 1)[0]


def steps_per(period: str, freq: str) -> int:
    """Whole grid steps of ``freq`` in ``period`` (``steps_per("1D", "1h") == 24``), at least 1."""
    return max(1, round(pd.Timedelta(period) / pd.Timedelta(_as_timedelta_string(freq))))


def _as_timedelta_string(freq: str) -> str:
    # pandas offset aliases "1h"/"5min" are also Timedelta strings; a bare unit ("h") is not.
    return freq if freq[:1].isdigit() else f"1{freq}"


def fill_missing(values: np.ndarray, season: int | None = None) -> np.ndarray:
    """A gap-free copy of ``values`` for models that need a regular grid.

    With ``season``, a missing value first takes the value one season earlier (then two, ...),
    so a day-long gap in an hourly series with a daily cycle keeps its cycle instead of becoming
    a straight line; what is left (gaps in the first season) is interpolated linearly, then the
    edge values are carried outwards. An all-NaN input stays all NaN.
    """
    filled = np.asarray(values, dtype=float).copy()
    if season and 0 < season < len(filled):
        missing = np.isnan(filled)
        while missing.any():
            # Position t takes t - season; a gap longer than a season fills over several rounds.
            candidates = np.flatnonzero(missing)
            candidates = candidates[candidates >= season]
            source = filled[candidates - season]
            usable = ~np.isnan(source)
            if not usable.any():
                break
            filled[candidates[usable]] = source[usable]
            missing = np.isnan(filled)
    series = pd.Series(filled)
    return series.interpolate(method="linear").ffill().bfill().to_numpy()


def quantile_frame(
    series_id: str,
    timestamps: pd.DatetimeIndex,
    mean: np.ndarray,
    quantile_values: dict[float, np.ndarray],
) -> pd.DataFrame:
    """One series' forecast in the contract layout (without ``model_used``)."""
    data: dict[str, Any] = {
        "series_id": series_id,
        "timestamp": timestamps,
        "mean": np.asarray(mean, dtype=float),
    }
    for q, values in quantile_values.items():
        data[quantile_column(q)] = np.asarray(values, dtype=float)
    return pd.DataFrame(data)


def empty_forecast_frame(quantiles: tuple[float, ...] | list[float]) -> pd.DataFrame:
    """A zero-row forecast with the contract columns (for empty inputs)."""
    frame = pd.DataFrame(
        {
            "series_id": pd.Series(dtype=object),
            "timestamp": pd.Series(dtype="datetime64[ns, UTC]"),
            **{col: pd.Series(dtype=float) for col in forecast_columns(quantiles)},
            "model_used": pd.Series(dtype=object),
        }
    )
    return frame


def trim_history(history: pd.DataFrame, max_points: int | None) -> pd.DataFrame:
    """Keep the last ``max_points`` rows of each series (``models.max_history_hours``).

    ``history`` is sorted by series_id, timestamp on a regular grid, so the last rows are the
    most recent steps. Old history adds fit time more than accuracy for week-ahead forecasts.
    """
    if max_points is None:
        return history
    position_from_end = history.groupby("series_id", sort=False).cumcount(ascending=False)
    return history[position_from_end < max_points].reset_index(drop=True)
