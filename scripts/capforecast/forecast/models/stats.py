"""statsforecast models: AutoETS, AutoTheta, Theta and MSTL over all series at once.

Quantiles come from statsforecast prediction intervals: quantile ``q < 0.5`` is the lower end of
the central ``100 - 200 q`` % interval (``<model>-lo-<level>``), ``q > 0.5`` the upper end of the
``200 q - 100`` % interval (``<model>-hi-<level>``), and ``q = 0.5`` the point forecast (the
intervals are symmetric around it). statsforecast refuses NaN, so gaps are filled (linear, then
edge values carried) before fitting. statsforecast is imported inside the functions so that
importing this module stays cheap.

MSTL settings (measured on the NAB fixture, see ``mstl_core``): the STL fits are robust
(``stl_kwargs={"robust": True}``) and the deseasonalised series is forecast by the standard
Theta method. Cloud metrics carry one-off spikes and dips (a 26e6-byte burst on a 2e5-byte series,
a 10-hour drop from 90 % to 25 % CPU); a least-squares STL smears them into the seasonal
profile, which then repeats them every day. Robust STL leaves them in the remainder, where the
default trend forecaster (AutoETS) extrapolated them wildly on one series (270x seasonal naive's
WQL); Theta did not. Relative geometric mean MASE / WQL against seasonal naive: least-squares
STL + AutoETS 0.99 / 0.96, robust STL + AutoTheta 0.75 / 0.70, robust STL + Theta 0.68 / 0.68
in a sixth of AutoTheta's trend-fit time.

Cost per model: the README's "Forecasting speed" table (``make bench-speed``); a full AutoETS
search is the most expensive of these fits. A backtest fits every series once per window, so
AutoETS searches its model form only in a series' earliest window and re-estimates that form's
parameters in the later ones (``ForecastRequest.fitted_models``; no less accurate on NAB than a
search in every window). statsforecast's ``cross_validation(refit=False)``, which keeps the
earliest window's parameters as well, was measured and rejected: clearly worse WQL on NAB,
whose series change regime (accuracy: the README's "Forecast accuracy on real fleets").
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import math
from collections.abc import Callable
from functools import partial
from statistics import NormalDist
from typing import Any

import numpy as np
import pandas as pd

from capforecast.contracts import model_used_label
from capforecast.forecast.models.base import (
    ForecastRequest,
    ForecastRows,
    fill_missing,
    iter_series,
    steps_per,
)
from capforecast.forecast.models.pool import map_chunks_in_processes
from capforecast.settings import ModelSettings

logger = logging.getLogger(__name__)

# statsforecast's ETS refuses seasons above 24: longer seasons get a non-seasonal ETS, flagged
# in model_used.
MAX_ETS_SEASON = 24
ALIAS = "model"  # statsforecast column prefix for whichever model runs
# Error and trend part of the AutoETS search: additive errors, any trend. On the NAB fixture
# additive errors were more accurate than the full "ZZZ" search, in a third of the time:
# multiplicative errors are unstable on metrics with near-zero troughs and one-off bursts. The
# accuracy benchmark runs the untouched AutoETS as a peer (the README's "Forecast accuracy on
# real fleets" table).
# The season part is decided by the seasonality test (``has_seasonality``), not by AIC: with 24
# seasonal states to pay for, AIC picked flat non-seasonal forms for most of the clearly daily
# synthetic fleet. On NAB the test costs AutoETS alone a little accuracy and `selected` nothing.
ETS_SEARCH = "AZ"
# models.intervals: "empirical" = quantile shape from each series' in-sample residuals (see
# series_quantiles); "conformal" = statsforecast's ConformalIntervals (residuals of its own
# rolling-origin refits at the forecast horizon); "normal" = statsforecast's own intervals (what
# the peers in capforecast.forecast.models.peers use).
INTERVAL_METHODS = ("empirical", "conformal", "normal")
# ConformalIntervals windows: up to this many, at least two, as the history allows.
CONFORMAL_WINDOWS = 3
MIN_RESIDUALS = 48
# A weekly STL component needs several weekly cycles to separate from the trend, and costs
# several times the daily-only fit: below four weeks of history (so never under the default
# 2-week models.max_history_hours) MSTL is daily-only.
MSTL_WEEKLY_MIN_WEEKS = 4
# Passed to every STL fit of MSTL: robust fitting down-weights one-off spikes and dips.
MSTL_STL_KWARGS: dict[str, Any] = {"robust": True}


def interval_levels(quantiles: tuple[float, ...]) -> dict[float, tuple[str, float | int]]:
    """Map each quantile to the statsforecast interval side and level that gives it.

    ``0.1 -> ("lo", 80)``, ``0.95 -> ("hi", 90)``, ``0.5 -> ("mean", 0)``. Levels are rounded
    (``100 - 200 * 0.1`` is 79.99999999999999 in floating point) and kept as ``int`` when whole,
    because statsforecast names its columns with ``str(level)``.
    """
    return dict(_interval_levels(tuple(quantiles)))


@functools.lru_cache(maxsize=64)
def _interval_levels(quantiles: tuple[float, ...]) -> dict[float, tuple[str, float | int]]:
    # Worked out once per set of quantiles: np.isclose costs more than reading a fitted Theta.
    mapping: dict[float, tuple[str, float | int]] = {}
    for q in quantiles:
        if np.isclose(q, 0.5):
            mapping[q] = ("mean", 0)
            continue
        level = round(abs(200.0 * q - 100.0), 6)
        mapping[q] = ("lo" if q < 0.5 else "hi", int(level) if level.is_integer() else level)
    return mapping


def autoets_core(request: ForecastRequest, model_cfg: ModelSettings) -> pd.DataFrame:
    if request.season > MAX_ETS_SEASON:
        frame = statsforecast_forecast(
            request, _ets_for_series(1), model_cfg.intervals, "autoets_nonseasonal"
        )
        return frame.assign(model_used=model_used_label("autoets", "nonseasonal: season > 24"))
    return statsforecast_forecast(
        request, _ets_for_series(request.season), model_cfg.intervals, "autoets"
    )


def _ets_for_series(season: int) -> Callable[[np.ndarray, str | None], Any]:
    """The AutoETS to fit on a series: its earlier window's form, or a search over ETS_SEARCH
    with the season part decided by the seasonality test (see ETS_SEARCH)."""
    from statsforecast.models import AutoETS

    def choose(y: np.ndarray, form: str | None) -> Any:
        if form is not None:
            return with_model_form(AutoETS(season_length=season, alias=ALIAS), form)
        season_part = "A" if has_seasonality(y, season) else "N"
        return AutoETS(season_length=season, model=ETS_SEARCH + season_part, alias=ALIAS)

    return choose


def autotheta_core(request: ForecastRequest, model_cfg: ModelSettings) -> pd.DataFrame:
    from statsforecast.models import AutoTheta

    model = AutoTheta(season_length=request.season, alias=ALIAS)
    return statsforecast_forecast(request, model, model_cfg.intervals)


def theta_core(request: ForecastRequest, model_cfg: ModelSettings) -> pd.DataFrame:
    """The standard Theta method (statsforecast ``Theta``: theta = 2, classical decomposition
    when the seasonality test passes): AutoTheta's accuracy on NAB at a tenth of its cost."""
    from statsforecast.models import Theta

    model = Theta(season_length=request.season, alias=ALIAS)
    return statsforecast_forecast(request, model, model_cfg.intervals)


def mstl_core(request: ForecastRequest, model_cfg: ModelSettings) -> pd.DataFrame:
    """MSTL with seasons ``[season, week]`` for series with four weeks of data, else ``[season]``.

    Robust STL (outliers down-weighted in the seasonal fit) and the standard Theta method as the
    trend forecaster; see the module docstring for why.
    """
    from statsforecast.models import MSTL, Theta

    weekly = steps_per("7D", request.freq)
    lengths = request.history.groupby("series_id", sort=False).size()
    enough = lengths >= MSTL_WEEKLY_MIN_WEEKS * weekly
    with_weekly = set(lengths.index[enough]) if weekly > request.season else set()
    frames = []
    for seasons, chosen in (
        ([request.season, weekly], request.history["series_id"].isin(with_weekly)),
        ([request.season], ~request.history["series_id"].isin(with_weekly)),
    ):
        if chosen.any():
            sub = _replace_history(request, request.history.loc[chosen])
            model = MSTL(
                season_length=seasons,
                trend_forecaster=Theta(),
                stl_kwargs=dict(MSTL_STL_KWARGS),
                alias=ALIAS,
            )
            frames.append(statsforecast_forecast(sub, model, model_cfg.intervals))
    return pd.concat(frames, ignore_index=True)


def _replace_history(request: ForecastRequest, history: pd.DataFrame) -> ForecastRequest:
    return dataclasses.replace(request, history=history.reset_index(drop=True))


def has_seasonality(y: np.ndarray, season: int) -> bool:
    """The 90 % autocorrelation test statsforecast's Theta uses: |r_m| / se(r_m) > z_0.95."""
    if season < 4 or len(y) < 2 * season or np.nanstd(y) == 0:
        return False
    from statsmodels.tsa.stattools import acf

    r = acf(y, nlags=season, fft=False)[1:]
    se = np.sqrt((1 + 2 * np.sum(r[:-1] ** 2)) / len(y))
    return bool(abs(r[-1]) / se > NormalDist().inv_cdf(0.95))


def statsforecast_forecast(
    request: ForecastRequest,
    model: Any,
    intervals: str,
    cache_key: str | None = None,
) -> pd.DataFrame:
    """Fit ``model`` on every series of the request and read the requested quantiles.

    ``model`` is a statsforecast model, or a function ``(y, form) -> model`` choosing one per
    series, where ``form`` is what the series chose in an earlier window of a backtest
    (``request.fitted_models`` under ``cache_key``; None otherwise): the model search then runs
    once per series and later windows only re-estimate that form's parameters. Quantiles
    follow ``intervals`` (one of ``INTERVAL_METHODS``; see ``series_quantiles``).
    """
    history = request.history
    cache = request.fitted_models if cache_key is not None else None
    ids, jobs = [], []
    last_timestamps = []
    for sid, values, last in iter_series(history):
        y = fill_missing(values, request.season)
        form = cache.get((cache_key, sid)) if cache is not None else None
        template = model if hasattr(model, "fit") else model(y, form)
        ids.append(sid)
        jobs.append((template, y))
        last_timestamps.append(last)
    if intervals not in INTERVAL_METHODS:
        raise ValueError(f"unknown interval method {intervals!r}; known: {INTERVAL_METHODS}")
    shape = intervals
    fit_many = partial(
        _run_many, horizon=request.horizon, quantiles=request.quantiles, intervals=shape
    )
    outputs = map_chunks_in_processes(
        fit_many, jobs, request.n_jobs, min_items=_MIN_SERIES_FOR_POOL
    )
    rows = ForecastRows(request.horizon, request.freq, request.quantiles)
    for sid, last, (form, mean, quantile_values) in zip(ids, last_timestamps, outputs, strict=True):
        if cache is not None:
            cache[(cache_key, sid)] = form
        # Timestamps regenerated from the input grid, so they continue it exactly.
        rows.add(sid, last, mean, quantile_values)
    return rows.frame()


def series_quantiles(
    fitted: Any,
    y: np.ndarray,
    horizon: int,
    quantiles: tuple[float, ...],
    intervals: str,
    output: dict[str, np.ndarray] | None = None,
) -> tuple[np.ndarray, dict[float, np.ndarray]]:
    """Point forecast and quantiles of one fitted statsforecast model.

    statsforecast's intervals are normal: ``mean + z_q * sigma_h``. Cloud metrics have
    heavy-tailed errors (mostly small, now and then a burst or a level shift), for which a
    normal fitted to the squared residuals is far too wide at P10/P90 and too narrow at
    P2/P98. With ``intervals="empirical"`` the shape comes from the series' own in-sample
    residuals and the growth over the horizon from the model:
    ``Q_q(h) = mean(h) + e_q * sigma_h / sigma_1``, where ``e_q`` is the ``q`` quantile of the
    residuals, and the point forecast is ``Q_0.5``: the model's mean moved by the median
    residual. Skewed metrics (mostly near a floor, now and then a burst) pull a least-squares
    fit above most of their values; the median is the point forecast with the least absolute
    error (AutoETS MASE relgm on the Bitbrains tuning half at H = 24: 1.11 with the mean, 0.89
    with the median). With fewer than ``MIN_RESIDUALS`` residuals, or a zero-width model
    interval, the normal intervals are kept. ``"conformal"`` and ``"normal"`` return the
    model's own intervals (conformal ones when it was fitted with ``ConformalIntervals``).
    ``output``: what ``predict_many`` gave for ``fitted`` (predicted here when None).
    """
    mapping = interval_levels(quantiles)
    levels = sorted({level for side, level in mapping.values() if side != "mean"})
    if output is None:
        output = predict_many([fitted], horizon, levels)[0]
    mean = np.asarray(output["mean"], dtype=float)
    normal = {
        q: mean.copy() if side == "mean" else np.asarray(output[f"{side}-{level}"], dtype=float)
        for q, (side, level) in mapping.items()
    }
    if intervals != "empirical" or not levels:
        return mean, normal
    residuals = y - np.asarray(fitted.predict_in_sample()["fitted"], dtype=float)
    residuals = residuals[np.isfinite(residuals)]
    # sigma_h from every level's half-width (Theta's intervals are simulated, so one level alone
    # is noisy from step to step).
    half_widths = [
        (np.asarray(output[f"hi-{level}"], dtype=float) - mean)
        / NormalDist().inv_cdf(0.5 + level / 200.0)
        for level in levels
    ]
    sigma = np.mean(half_widths, axis=0)
    if residuals.size < MIN_RESIDUALS or not sigma[0] > 0 or not np.isfinite(sigma).all():
        return mean, normal
    growth = sigma / sigma[0]
    shifts = np.quantile(residuals, list(quantiles))  # one partition for every level
    values = {q: mean + growth * float(shift) for q, shift in zip(quantiles, shifts, strict=True)}
    return values.get(0.5, mean), values


def predict_many(
    fitted: list[Any], horizon: int, levels: list[float | int]
) -> list[dict[str, np.ndarray]]:
    """``model.predict(h=horizon, level=levels or None)`` of every fitted model, the same
    numbers and the same global random state after each.

    A Theta model (statsforecast ``AutoTheta``, ``Theta``) without conformal intervals reads its
    intervals from 200 paths it simulates step by step (``compute_pi_samples``, seeded 0),
    then one ``np.quantile`` of them per interval end: together more than half of a Theta
    forecast. Here the paths of all such models are simulated together (``theta_paths``: the
    same arithmetic on a row per model), sorted once, and each end read from the sorted paths
    of all of them (the same order statistics and interpolation).
    """
    from statsforecast.models import AutoTheta

    together = [
        i
        for i, model in enumerate(fitted)
        if levels
        and type(model).predict is AutoTheta.predict
        and model.prediction_intervals is None
        and _simulated_together(model.model_)
    ]
    ends: dict[int, dict[str, np.ndarray]] = {}
    after = None  # the global random state compute_pi_samples leaves
    for start in range(0, len(together), _PATH_BATCH):
        batch = together[start : start + _PATH_BATCH]
        paths, after = theta_paths([fitted[i].model_ for i in batch], horizon)
        paths.sort(axis=2)
        # As forecast_theta's np.quantile(samples, q, axis=1) per model, for the whole batch.
        read = {}
        for level in levels:
            low = (100 - level) / 200
            read[f"lo-{level}"] = np.quantile(paths, low, axis=2, overwrite_input=True)
            read[f"hi-{level}"] = np.quantile(
                paths, low + level / 100, axis=2, overwrite_input=True
            )
        for row, i in enumerate(batch):
            ends[i] = {key: values[row] for key, values in read.items()}
    outputs = []
    for i, model in enumerate(fitted):
        if i not in ends:
            outputs.append(model.predict(h=horizon, level=levels or None))
            continue
        np.random.set_state(after)
        outputs.append(_theta_intervals(model, horizon, ends[i]))
    return outputs


# Theta models whose paths are simulated together: 200 x horizon float32 values each.
_PATH_BATCH = 128
_PATHS = 200


def _simulated_together(found: dict[str, Any]) -> bool:
    """Whether ``theta_paths`` reproduces ``compute_pi_samples`` for this fitted Theta: its
    numbers are the numpy types the step-by-step arithmetic was written for (a Python float
    alpha or mean would make numpy compute some steps in float32 there)."""
    par = found.get("par", {})
    states = found.get("states")
    return (
        type(par.get("alpha")) is np.float64
        and type(found.get("mean_y")) is np.float64
        and type(par.get("theta")) in (float, np.float64)
        and type(found.get("n")) is int
        and isinstance(states, np.ndarray)
        and states.dtype == np.float64
        and states.ndim == 2
        and len(states) > 0
    )


def theta_paths(found: list[dict[str, Any]], horizon: int) -> tuple[np.ndarray, Any]:
    """``statsforecast.theta.compute_pi_samples`` of several fitted Theta models at once.

    Returns the paths ``(models, horizon, 200)`` (float32, what each call returns) and the
    global random state a call leaves. Each step is that function's arithmetic with a row per
    model: the same operations on the same float64 and float32 values, the powers of
    ``1 - alpha`` taken one by one as there, and the same normal draws (every call seeds the
    global generator with 0, so every model gets the same standard normals, scaled by its
    sigma as ``np.random.normal(scale=sigma)`` scales them).
    """
    count = len(found)
    smoothed = np.empty((count, 1))
    level_a, level_b, mean_y = np.empty((count, 1)), np.empty((count, 1)), np.empty((count, 1))
    alpha, weight = np.empty((count, 1)), np.empty((count, 1))
    sigma, position = np.empty((count, 1)), np.empty((count, 1))
    powers = np.empty((count, horizon + 1))
    for row, model in enumerate(found):
        last = model["states"][-1]
        smoothed[row], level_a[row], level_b[row] = last[0], last[2], last[3]
        mean_y[row] = model["mean_y"]
        a, theta, n = model["par"]["alpha"], model["par"]["theta"], model["n"]
        alpha[row], weight[row] = a, (1 - 1 / theta)
        sigma[row] = np.std(model["residuals"][3:], ddof=1)
        position[row] = n
        powers[row] = [(1 - a) ** i for i in range(n, n + horizon + 1)]
    generator = np.random.RandomState(0)
    draws = generator.standard_normal((horizon, _PATHS))
    samples = np.empty((count, horizon, _PATHS), dtype=np.float32)
    for step in range(horizon):
        i = position + step
        samples[:, step] = smoothed + weight * (
            level_a * powers[:, step : step + 1]
            + level_b * (1 - powers[:, step + 1 : step + 2]) / alpha
        )
        samples[:, step] += 0.0 + sigma * draws[step]
        current = samples[:, step]
        smoothed = alpha * current + (1 - alpha) * smoothed
        mean_y = (i * mean_y + current) / (i + 1)
        level_b = ((i - 1) * level_b + 6 * (current - mean_y) / (i + 1)) / (i + 2)
        level_a = mean_y - level_b * (i + 2) / 2
    return samples, generator.get_state()


def _theta_intervals(
    fitted: Any, horizon: int, ends: dict[str, np.ndarray]
) -> dict[str, np.ndarray]:
    """statsforecast's Theta forecast with intervals, from the ``ends`` of its intervals read
    from its simulated paths."""
    found = fitted.model_
    output = fitted.predict(h=horizon)
    if found.get("decompose", False):
        # As statsforecast's forecast_theta: the seasonal forecast repeated over the horizon.
        seasonal = np.asarray(found["seas_forecast"]["mean"])
        seasonal = np.tile(seasonal, math.ceil(horizon / seasonal.size))[:horizon]
        multiplicative = found["decomposition_type"] == "multiplicative"
        ends = {
            key: values * seasonal if multiplicative else values + seasonal
            for key, values in ends.items()
        }
    return {**output, **ends}


# Starting a process pool costs more than fitting a few series; below this many series one
# process is faster.
_MIN_SERIES_FOR_POOL = 64


def _run_many(
    jobs: list[tuple[Any, np.ndarray]],
    horizon: int,
    quantiles: tuple[float, ...],
    intervals: str,
) -> list[tuple[str | None, np.ndarray, dict[float, np.ndarray]]]:
    """Fit a copy of each job's template on its ``y``; the chosen forms and the forecasts
    travel back. Every model is fitted first, then all are predicted (``predict_many``)."""
    fits = []
    for template, y in jobs:
        model = template.new()
        shape = intervals
        if intervals == "conformal":
            shape = _use_conformal_intervals(model, len(y), horizon)
        fits.append((model.fit(y=y), y, shape))
    mapping = interval_levels(quantiles)
    levels = sorted({level for side, level in mapping.values() if side != "mean"})
    outputs = predict_many([fitted for fitted, _, _ in fits], horizon, levels)
    results = []
    for (fitted, y, shape), output in zip(fits, outputs, strict=True):
        mean, values = series_quantiles(fitted, y, horizon, quantiles, shape, output)
        results.append((model_form(fitted), mean, values))
    return results


def _use_conformal_intervals(model: Any, n: int, horizon: int) -> str:
    """Give ``model`` statsforecast's ConformalIntervals when the history holds two windows of
    ``horizon`` after two seasons of training; otherwise the series keeps empirical quantiles.
    Returns the interval method the series ends up with."""
    from statsforecast.utils import ConformalIntervals

    lengths = getattr(model, "season_length", 1)
    season = max(lengths) if isinstance(lengths, list) else int(lengths or 1)
    windows = min(CONFORMAL_WINDOWS, (n - 2 * season) // horizon)
    if windows < 2:
        return "empirical"
    model.prediction_intervals = ConformalIntervals(n_windows=windows, h=horizon)
    return "conformal"


def model_form(fitted: Any) -> str | None:
    """The form a fitted AutoETS chose: its components, e.g. ``"AAAD"`` (error, trend, season,
    damped) or ``"ANAN"``; None for other models."""
    found = getattr(fitted, "model_", None)  # a dict for ETS and Theta, a frame for MSTL
    components = found.get("components") if isinstance(found, dict) else None
    return components if isinstance(components, str) else None


def with_model_form(template: Any, form: str) -> Any:
    """A copy of the AutoETS ``template`` restricted to ``form`` (see ``model_form``)."""
    from statsforecast.models import AutoETS

    # AutoETS takes error, trend and season as ``model`` and the damping separately.
    return AutoETS(
        season_length=template.season_length,
        model=form[:3],
        damped=form[3:4] == "D" if form[1] != "N" else None,
        alias=template.alias,
    )
