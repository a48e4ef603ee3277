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

import numpy as np
import pandas as pd

from capforecast.forecast.models.base import (
    ForecastRequest,
    ForecastRows,
    iter_series,
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
    return _nanmedian_columns(stack)


def _nanmedian_columns(values: np.ndarray) -> np.ndarray:
    """``np.nanmedian(values, axis=0)`` of a 2-D array; all-NaN columns are NaN, silently.

    Sorting once (NaN sorts last) and reading the middle of each column's valid values gives the
    same numbers as ``np.nanmedian``, whose masked-array path for small arrays made this
    model several times slower than the seasonal naive.
    """
    missing = np.isnan(values)
    if not missing.any():
        return np.median(values, axis=0)
    ordered = np.sort(values, axis=0)
    count = values.shape[0] - missing.sum(axis=0)
    columns = np.arange(values.shape[1])
    low = ordered[np.maximum((count - 1) // 2, 0), columns]
    high = ordered[np.maximum(count // 2, 0), columns]
    return np.where(count > 0, (low + high) / 2, np.nan)


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
    rows = ForecastRows(request.horizon, request.freq, request.quantiles)
    for sid, y, last in iter_series(request.history):
        point, quantile_values = seasonal_median_values(
            y,
            season,
            settings.seasons,
            request.horizon,
            request.quantiles,
            settings.error_seasons,
        )
        rows.add(sid, last, point, quantile_values)
    return rows.frame()
