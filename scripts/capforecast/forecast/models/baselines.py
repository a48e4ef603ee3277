"""Baselines: seasonal naive (daily, weekly), last-value naive and Prometheus-style predict_linear.

Interval conventions (documented because the risk stage reads the quantiles):

* Seasonal naive with season ``m``: the point forecast repeats the last observed season. Its
  quantiles are statsforecast's SeasonalNaive intervals exactly: normal, centred on the point
  forecast, with ``sigma = sqrt(sum(e_t^2) / (n - m))`` over the in-sample seasonal errors
  ``e_t = y_t - y_{t-m}``, scaled by ``sqrt(k)`` where ``k`` is the number of seasons ahead
  (``k = ceil(h / m)``). It is the reference every ``*_relgm`` is measured against, so it is the
  one users know (and the one the forecasting issue's peer table used); an empirical error
  distribution in place of the normal one had a lower WQL on the NAB fixture and made every
  ratio look worse than the same models measured elsewhere.
* Last-value naive (the end of every fallback chain): the same with ``m = 1`` (a random walk,
  scaled by ``sqrt(h)``).
* predict_linear: ordinary least squares over the last ``predict_linear_window_hours`` of history
  (what Prometheus' ``predict_linear`` does), extrapolated; quantiles are normal with the OLS
  prediction standard error ``s * sqrt(1 + 1/n + (x0 - mean(x))^2 / Sxx)``, which widens with the
  horizon.
"""

from __future__ import annotations

from statistics import NormalDist

import numpy as np
import pandas as pd

from capforecast.forecast.models.base import (
    ForecastRequest,
    fill_missing_rows,
    forecast_by_length,
    steps_per,
)
from capforecast.settings import ModelSettings


def seasonal_naive_values(
    y: np.ndarray, season: int, horizon: int, quantiles: tuple[float, ...]
) -> tuple[np.ndarray, dict[float, np.ndarray]]:
    """Point forecast and quantiles of a seasonal naive forecast of the gap-free array ``y``.

    ``y`` needs at least one full season; with exactly one there are no seasonal errors and the
    intervals have zero width. A 2-D ``y`` is a row per series of one length, forecast
    together (results a row per series).
    """
    if y.ndim == 1:
        point, quantile_values = seasonal_naive_values(y[None, :], season, horizon, quantiles)
        return point[0], {q: values[0] for q, values in quantile_values.items()}
    n = y.shape[1]
    steps = np.arange(horizon)
    point = y[:, n - season + (steps % season)]
    errors = y[:, season:] - y[:, :-season]
    seasons_ahead = steps // season + 1
    scale = np.sqrt(seasons_ahead)
    if errors.shape[1] == 0:
        return point, {q: point.copy() for q in quantiles}
    sigma = np.sqrt(np.sum(errors**2, axis=1) / errors.shape[1])[:, None]
    normal = NormalDist()
    return point, {q: point + normal.inv_cdf(q) * sigma * scale for q in quantiles}


def linear_trend_values(
    y: np.ndarray, window: int, horizon: int, quantiles: tuple[float, ...]
) -> tuple[np.ndarray, dict[float, np.ndarray]]:
    """OLS line over the last ``window`` positions of ``y`` (NaN allowed), extrapolated.

    Uses the valid points inside the window; when fewer than three are valid, the last three
    valid points of the whole array instead (at least two valid points are required).
    Returns the point forecast for positions ``len(y) .. len(y) + horizon - 1`` and normal
    quantiles from the OLS prediction interval.
    """
    positions = np.arange(len(y), dtype=float)
    valid = ~np.isnan(y)
    in_window = valid & (positions >= len(y) - window)
    if in_window.sum() < 3:
        in_window = valid & (np.cumsum(valid[::-1])[::-1] <= 3)
    point, quantile_values = _lines(
        positions[in_window], y[None, in_window], len(y), horizon, quantiles
    )
    return point[0], {q: values[0] for q, values in quantile_values.items()}


def linear_trend_rows(
    y: np.ndarray, window: int, horizon: int, quantiles: tuple[float, ...]
) -> tuple[np.ndarray, dict[float, np.ndarray]]:
    """``linear_trend_values`` of every row of the 2-D ``y`` (series of one length): the rows
    whose window is complete (the usual case) share their positions and are fitted together."""
    n = y.shape[1]
    points = min(window, n)
    complete = ~np.isnan(y[:, n - points :]).any(axis=1) if points >= 3 else np.zeros(len(y), bool)
    point = np.empty((len(y), horizon))
    quantile_values = {q: np.empty((len(y), horizon)) for q in quantiles}
    rows = np.flatnonzero(complete)
    if rows.size:
        x = np.arange(n - points, n, dtype=float)
        fitted, fitted_quantiles = _lines(x, y[rows, n - points :], n, horizon, quantiles)
        point[rows] = fitted
        for q in quantiles:
            quantile_values[q][rows] = fitted_quantiles[q]
    for row in np.flatnonzero(~complete):
        point[row], one = linear_trend_values(y[row], window, horizon, quantiles)
        for q in quantiles:
            quantile_values[q][row] = one[q]
    return point, quantile_values


def _lines(
    x: np.ndarray, v: np.ndarray, n: int, horizon: int, quantiles: tuple[float, ...]
) -> tuple[np.ndarray, dict[float, np.ndarray]]:
    """OLS lines through the values ``v`` (a row per series) at positions ``x`` (at least two),
    extrapolated to positions ``n .. n + horizon - 1``, with normal prediction quantiles."""
    v = np.ascontiguousarray(v, dtype=float)
    count = x.size
    x_mean = float(x.mean())
    sxx = float(((x - x_mean) ** 2).sum())
    v_mean = v.mean(axis=1)[:, None]
    slope = (((x - x_mean) * (v - v_mean)).sum(axis=1) / sxx)[:, None]
    intercept = v_mean - slope * x_mean
    future_x = np.arange(n, n + horizon, dtype=float)
    point = intercept + slope * future_x
    residuals = v - (intercept + slope * x)
    if count > 2:
        sigma = np.sqrt((residuals**2).sum(axis=1) / (count - 2))[:, None]
    else:
        sigma = np.zeros((len(v), 1))
    std_error = sigma * np.sqrt(1.0 + 1.0 / count + (future_x - x_mean) ** 2 / sxx)
    normal = NormalDist()
    return point, {q: point + normal.inv_cdf(q) * std_error for q in quantiles}


def naive_core(request: ForecastRequest, model_cfg: ModelSettings) -> pd.DataFrame:
    """Last value, with random-walk quantiles from the one-step changes."""
    return forecast_by_length(
        request,
        lambda y: seasonal_naive_values(
            fill_missing_rows(y), 1, request.horizon, request.quantiles
        ),
    )


def seasonal_naive_daily_core(request: ForecastRequest, model_cfg: ModelSettings) -> pd.DataFrame:
    return _seasonal_naive_core(request, steps_per("1D", request.freq))


def seasonal_naive_weekly_core(request: ForecastRequest, model_cfg: ModelSettings) -> pd.DataFrame:
    return _seasonal_naive_core(request, steps_per("7D", request.freq))


def _seasonal_naive_core(request: ForecastRequest, season: int) -> pd.DataFrame:
    # Gaps take the value one season earlier: a missing day of the last week is repeated from
    # the week before, not replaced by a straight line.
    return forecast_by_length(
        request,
        lambda y: seasonal_naive_values(
            fill_missing_rows(y, season), season, request.horizon, request.quantiles
        ),
    )


def predict_linear_core(request: ForecastRequest, model_cfg: ModelSettings) -> pd.DataFrame:
    hours = model_cfg.predict_linear_window_hours
    window = max(2, steps_per(f"{hours}h", request.freq))
    return forecast_by_length(
        request, lambda y: linear_trend_rows(y, window, request.horizon, request.quantiles)
    )
