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
    forecast_by_length,
    steps_per,
)
from capforecast.settings import ModelSettings


def _lagged_median(y: np.ndarray, season: int, seasons: int, lead: int) -> np.ndarray:
    """``out[..., t] = nanmedian(y[..., t - season*(lead + d)] for d in 0..seasons-1)`` (NaN
    before), along the last axis of ``y`` (one series, or a row per series)."""
    n = y.shape[-1]
    stack = np.full((seasons, *y.shape), np.nan)
    for d in range(seasons):
        shift = season * (lead + d)
        if shift < n:
            stack[d, ..., shift:] = y[..., : n - shift]
    return _nanmedian_columns(stack)


def _nanmedian_columns(values: np.ndarray) -> np.ndarray:
    """``np.nanmedian(values, axis=0)``; all-NaN columns are NaN, silently.

    Sorting once (NaN sorts last) and reading the middle of each column's valid values gives the
    same numbers as ``np.nanmedian``, whose masked-array path for small arrays made this
    model several times slower than the seasonal naive.
    """
    missing = np.isnan(values)
    if not missing.any():
        return np.median(values, axis=0)
    ordered = np.sort(values, axis=0)
    count = values.shape[0] - missing.sum(axis=0)
    low = np.take_along_axis(ordered, np.maximum((count - 1) // 2, 0)[None], axis=0)[0]
    high = np.take_along_axis(ordered, np.maximum(count // 2, 0)[None], axis=0)[0]
    return np.where(count > 0, (low + high) / 2, np.nan)


def seasonal_median_values(
    y: np.ndarray,
    season: int,
    seasons: int,
    horizon: int,
    quantiles: tuple[float, ...],
    error_seasons: int,
) -> tuple[np.ndarray, dict[float, np.ndarray]]:
    """Point forecast and quantiles for one series ``y`` (NaN allowed) on a regular grid.

    A 2-D ``y`` is a row per series of one length, forecast together (results a row per
    series): the medians of all rows taken at once, and the error quantiles of rows with as
    many errors (and no gaps among them) too.
    """
    if y.ndim == 1:
        point, quantile_values = seasonal_median_values(
            y[None, :], season, seasons, horizon, quantiles, error_seasons
        )
        return point[0], {q: values[0] for q, values in quantile_values.items()}
    n = y.shape[1]
    steps = np.arange(horizon)
    slots = n - season + (steps % season)
    # Slot s of the profile is the median of y[n - season + s - season * d], d < seasons.
    padded = np.concatenate([y, np.full((len(y), season), np.nan)], axis=1)
    profile = _lagged_median(padded, season, seasons, 1)[:, n:]
    for row in np.flatnonzero(~np.isfinite(profile).all(axis=1)):
        values = y[row]
        fallback = (
            float(np.nanmedian(values[-season * seasons :])) if np.isfinite(values).any() else 0.0
        )
        profile[row] = np.where(np.isfinite(profile[row]), profile[row], fallback)
    point = profile[:, slots - (n - season)]
    leads = steps // season + 1
    quantile_values = {q: point.copy() for q in quantiles}
    levels_of = [*quantiles, 0.5]
    window = season * error_seasons
    for lead in np.unique(leads):
        errors = (y - _lagged_median(y, season, seasons, int(lead)))[:, -window:]
        finite = np.isfinite(errors)
        levels = np.full((len(y), len(levels_of)), np.nan)
        count = finite.sum(axis=1)
        width = errors.shape[1]
        enough = count >= season
        # The first lead * season errors have no lagged median: in a series without gaps the
        # finite errors are the last ``count``, and rows with the same count are read together.
        suffix = (finite == (np.arange(width) >= (width - count)[:, None])).all(axis=1)
        for last in np.unique(count[suffix & enough]):
            rows = np.flatnonzero(suffix & enough & (count == last))
            levels[rows] = np.quantile(errors[rows, width - last :], levels_of, axis=1).T
        for row in np.flatnonzero(enough & ~suffix):
            levels[row] = np.quantile(errors[row][finite[row]], levels_of)
        rows = np.flatnonzero(enough)
        at = np.flatnonzero(leads == lead)
        centre = levels[rows, -1]
        for i, q in enumerate(quantiles):
            shift = (levels[rows, i] - centre)[:, None]
            quantile_values[q][np.ix_(rows, at)] = point[np.ix_(rows, at)] + shift
    return point, quantile_values


def seasonal_median_core(request: ForecastRequest, model_cfg: ModelSettings) -> pd.DataFrame:
    settings = model_cfg.seasonal_median
    season = steps_per("1D", request.freq)
    return forecast_by_length(
        request,
        lambda y: seasonal_median_values(
            y,
            season,
            settings.seasons,
            request.horizon,
            request.quantiles,
            settings.error_seasons,
        ),
    )
