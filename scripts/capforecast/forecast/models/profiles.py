"""Seasonal median: the median of the same hour over recent days, with empirical lead-time errors.

Point forecast for step ``h`` (``m`` steps per season, ``D`` seasons, ``n`` the history length):
``median(y[n - m + (h mod m) - m*d] for d in 0..D-1)``, NaN-aware, so gaps need no filling and
one-off bursts or dips cannot move it (a seasonal naive repeats them). With a daily season and
``D = 7`` every weekday votes once, so a week that ends on an idle Sunday is not forecast as idle.

Quantiles come from the model's own errors at each lead: for lead ``L`` seasons ahead (step ``h``
is ``L = h // m + 1`` seasons ahead of the profile's newest season), the errors
``y_t - profile_L(t)`` over the last ``error_seasons`` seasons of history, where
``profile_L(t)`` is the same median taken ``L`` seasons before ``t``. Their quantiles, centred on
their median, are added to the point forecast, so the intervals widen exactly as much as this
model's errors did at that lead (no normal assumption, no extrapolated variance growth).
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd

from capforecast.forecast.models.base import (
    ForecastRequest,
    future_timestamps,
    quantile_frame,
    steps_per,
)
from capforecast.settings import ModelSettings


def _lagged_median(y: np.ndarray, season: int, seasons: int, lead: int) -> np.ndarray:
    """``out[t] = nanmedian(y[t - season*(lead + d)] for d in 0..seasons-1)`` (NaN before)."""
    n = len(y)
    stack = np.full((seasons, n), np.nan)
    for d in range(seasons):
        shift = season * (lead + d)
        if shift < n:
            stack[d, shift:] = y[: n - shift]
    return _nanmedian(stack, axis=0)


def _nanmedian(values: np.ndarray, axis: int | None = None) -> np.ndarray:
    """``np.nanmedian`` without the all-NaN warning (all-NaN slices are NaN; callers handle it)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=RuntimeWarning)
        return np.nanmedian(values, axis=axis)


def seasonal_median_values(
    y: np.ndarray,
    season: int,
    seasons: int,
    horizon: int,
    quantiles: tuple[float, ...],
    error_seasons: int,
) -> tuple[np.ndarray, dict[float, np.ndarray]]:
    """Point forecast and quantiles for one series ``y`` (NaN allowed) on a regular grid."""
    n = len(y)
    steps = np.arange(horizon)
    slots = n - season + (steps % season)
    # Slot s of the profile is the median of y[n - season + s - season * d], d < seasons.
    profile = _lagged_median(np.append(y, np.full(season, np.nan)), season, seasons, 1)[n:]
    fallback = float(np.nanmedian(y[-season * seasons :])) if np.isfinite(y).any() else 0.0
    profile = np.where(np.isfinite(profile), profile, fallback)
    point = profile[slots - (n - season)]
    leads = steps // season + 1
    quantile_values = {q: point.copy() for q in quantiles}
    window = season * error_seasons
    for lead in np.unique(leads):
        errors = y - _lagged_median(y, season, seasons, int(lead))
        errors = errors[-window:]
        errors = errors[np.isfinite(errors)]
        if errors.size < season:
            continue
        levels = np.quantile(errors, [*quantiles, 0.5])
        centre = levels[-1]
        at = leads == lead
        for q, level in zip(quantiles, levels[:-1], strict=True):
            quantile_values[q][at] = point[at] + (level - centre)
    return point, quantile_values


def seasonal_median_core(request: ForecastRequest, model_cfg: ModelSettings) -> pd.DataFrame:
    settings = model_cfg.seasonal_median
    season = steps_per("1D", request.freq)
    frames = []
    for sid, group in request.history.groupby("series_id", sort=False):
        point, quantile_values = seasonal_median_values(
            group["y"].to_numpy(dtype=float),
            season,
            settings.seasons,
            request.horizon,
            request.quantiles,
            settings.error_seasons,
        )
        timestamps = future_timestamps(group["timestamp"].iloc[-1], request.horizon, request.freq)
        frames.append(quantile_frame(str(sid), timestamps, point, quantile_values))
    return pd.concat(frames, ignore_index=True)
