"""Prophet, one model per series, fitted in parallel worker processes.

Settings come from the ``models.prophet`` config section:

* growth ``logistic``: saturating growth with ``cap`` = the series' upper bound (100 for
  percentages) and ``floor`` = its lower bound; an unbounded series has no cap and gets linear.
  ``auto`` (the default) is logistic only for a bounded series whose history actually approaches
  the cap (its 90th percentile reaches ``logistic_min_share`` of it) and linear otherwise. Prophet
  fits the logistic trend on ``(y - floor) / (cap - floor)``: a CPU series idling at 0.1 % then
  lives in [0, 0.001], where the trend and seasonality priors are far too loose: logistic growth
  with cap 100 gave two such NAB series several times the WQL of linear growth.
* trend changepoints: ``n_changepoints`` (50) over the first ``changepoint_range`` (0.98) of the
  history with ``changepoint_prior_scale`` 0.5. Prophet's defaults (25 over the first 80 %, 0.05)
  cannot follow a level shift in the last two days of a ten-day history, the most common event in
  cloud metrics (deploys, resizes, scaling).
* daily seasonality with ``daily_fourier_order`` (11) Fourier pairs: Prophet's default of 4 is
  too smooth for hourly data with one-hour spikes (e.g. a cron job); 11 is the highest order
  24 hourly points per day resolve without a degenerate term.
* weekly seasonality ``auto``: on only with at least two full weeks of observed values (forced
  on shorter histories, it fits a weekly cycle it has not seen twice); yearly seasonality off
  (histories are weeks long).
* holidays: the config's list of ``{name, date, lower_window, upper_window}``.
* quantiles: empirical quantiles of ``uncertainty_samples`` posterior predictive samples (trend
  changes + observation noise); ``mean`` is Prophet's ``yhat``.

How these settings compare with ``Prophet()`` on its defaults (the ``prophet_default`` peer):
the README's measured tables ("Forecast accuracy on real fleets", ``make bench-accuracy``).

Series are fitted ``n_jobs`` at a time in forked workers (``pool.py``). A series whose fit
fails is left out of the output, so the fallback chain forecasts it and flags it
``fallback: model_failed``.
"""

from __future__ import annotations

import logging
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from capforecast.forecast.models.base import (
    ForecastRequest,
    future_timestamps,
    quantile_frame,
    steps_per,
)
from capforecast.forecast.models.fallback import forecast_with_fallback
from capforecast.forecast.models.pool import map_in_processes
from capforecast.settings import ModelSettings, ProphetSettings

if TYPE_CHECKING:
    from prophet import Prophet

logger = logging.getLogger(__name__)

# The share of the history that must lie below the level compared with the cap (growth "auto").
LOGISTIC_LEVEL_QUANTILE = 0.9
INDEX_FILE = "index.json"


@dataclass(frozen=True)
class ProphetTask:
    """Everything one worker needs to fit and forecast one series (picklable)."""

    series_id: str
    ds: np.ndarray  # naive UTC datetime64 of the history
    y: np.ndarray
    future_ds: np.ndarray  # naive UTC datetime64 of the forecast steps
    quantiles: tuple[float, ...]
    growth: str
    cap: float | None
    floor: float
    daily_fourier_order: int  # 0 = no daily seasonality
    weekly_seasonality: bool
    n_changepoints: int
    changepoint_range: float
    changepoint_prior_scale: float
    holidays: tuple[tuple[str, str, int, int], ...]
    interval_width: float
    uncertainty_samples: int
    keep_model: bool


@dataclass(frozen=True)
class ProphetResult:
    """A worker's answer: forecasts and, when asked, the model as JSON; or an error."""

    series_id: str
    mean: np.ndarray | None
    quantile_values: dict[float, np.ndarray] | None
    model_json: str | None
    fit_seconds: float
    error: str | None = None


@dataclass
class ProphetRun:
    """Forecasts of the series that fitted, their models (JSON) and seconds per fit."""

    forecasts: pd.DataFrame
    model_json: dict[str, str] = field(default_factory=dict)
    fit_seconds: dict[str, float] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)


def prophet_forecast_and_models(
    request: ForecastRequest, model_cfg: ModelSettings
) -> tuple[pd.DataFrame, dict[str, Prophet]]:
    """Forecasts (as ``prophet``) plus the fitted model of every series Prophet forecast."""
    from prophet.serialize import model_from_json

    captured: dict[str, str] = {}

    def core_keeping_models(sub: ForecastRequest, cfg: ModelSettings) -> pd.DataFrame:
        run = run_prophet(sub, cfg, keep_models=True)
        captured.update(run.model_json)
        return run.forecasts

    frame = forecast_with_fallback(
        request, model_cfg, "prophet", cores={"prophet": core_keeping_models}
    )
    return frame, {sid: model_from_json(text) for sid, text in captured.items()}


def save_prophet_models(models: dict[str, Prophet], directory: str | Path) -> list[Path]:
    """Write each model as JSON (``prophet.serialize.model_to_json``) plus ``index.json``.

    File names are the series ids made filesystem-safe; ``index.json`` maps series id -> file,
    so ids that differ only in unsafe characters still round-trip.
    """
    import json

    from prophet.serialize import model_to_json

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    index: dict[str, str] = {}
    paths: list[Path] = []
    for i, (sid, model) in enumerate(sorted(models.items())):
        name = f"{i:05d}_{re.sub(r'[^A-Za-z0-9._-]+', '_', sid)[:80]}.json"
        path = directory / name
        path.write_text(model_to_json(model))
        index[sid] = name
        paths.append(path)
    (directory / INDEX_FILE).write_text(json.dumps(index, indent=1, sort_keys=True))
    return paths


def load_prophet_models(directory: str | Path) -> dict[str, Prophet]:
    """Read models written by ``save_prophet_models``."""
    import json

    from prophet.serialize import model_from_json

    directory = Path(directory)
    index = json.loads((directory / INDEX_FILE).read_text())
    return {sid: model_from_json((directory / name).read_text()) for sid, name in index.items()}


def prophet_core(request: ForecastRequest, model_cfg: ModelSettings) -> pd.DataFrame:
    """Forecasts of the series whose fit succeeded (the fallback handles the others)."""
    return run_prophet(request, model_cfg, keep_models=False).forecasts


def run_prophet(
    request: ForecastRequest, model_cfg: ModelSettings, keep_models: bool
) -> ProphetRun:
    """Fit and forecast every series of ``request`` (no routing), ``request.n_jobs`` at a time."""
    tasks = build_tasks(request, model_cfg.prophet, keep_models)
    started = time.perf_counter()
    results = map_in_processes(fit_and_forecast_one, tasks, request.n_jobs)
    elapsed = time.perf_counter() - started
    run = ProphetRun(forecasts=pd.DataFrame())
    last_timestamps = request.history.groupby("series_id", sort=False)["timestamp"].last()
    frames = []
    for task, result in zip(tasks, results, strict=True):
        if result.error is not None:
            run.failed[task.series_id] = result.error
            logger.warning("prophet failed on series %s: %s", task.series_id, result.error)
            continue
        # From the input grid (Prophet saw naive UTC copies of these).
        timestamps = future_timestamps(
            last_timestamps[task.series_id], request.horizon, request.freq
        )
        frames.append(
            quantile_frame(task.series_id, timestamps, result.mean, result.quantile_values)
        )
        run.fit_seconds[task.series_id] = result.fit_seconds
        if result.model_json is not None:
            run.model_json[task.series_id] = result.model_json
    if frames:
        run.forecasts = pd.concat(frames, ignore_index=True)
    else:
        run.forecasts = pd.DataFrame(columns=["series_id", "timestamp", "mean"])
    if run.fit_seconds:
        logger.info(
            "prophet: %d series in %.1f s wall, %.2f s per fit (median), %d failed",
            len(run.fit_seconds),
            elapsed,
            float(np.median(list(run.fit_seconds.values()))),
            len(run.failed),
        )
    return run


def build_tasks(
    request: ForecastRequest, prophet_cfg: ProphetSettings, keep_models: bool
) -> list[ProphetTask]:
    """One task per series, with growth and seasonality decided per series."""
    weekly_steps = steps_per("7D", request.freq)
    holidays = tuple((h.name, h.date, h.lower_window, h.upper_window) for h in prophet_cfg.holidays)
    weekly_setting = prophet_cfg.weekly_seasonality
    daily_order = prophet_cfg.daily_fourier_order if prophet_cfg.daily_seasonality else 0
    tasks = []
    for sid, group in request.history.groupby("series_id", sort=False):
        sid = str(sid)
        lower, upper = request.bounds.get(sid, (0.0, None))
        growth = choose_growth(
            prophet_cfg.growth,
            group["y"].to_numpy(dtype=float),
            lower,
            upper,
            prophet_cfg.logistic_min_share,
        )
        weekly = weekly_setting == "on" or (
            weekly_setting == "auto" and int(group["y"].notna().sum()) >= 2 * weekly_steps
        )
        last = group["timestamp"].iloc[-1]
        future = future_timestamps(last, request.horizon, request.freq)
        tasks.append(
            ProphetTask(
                series_id=sid,
                ds=_naive_utc(pd.DatetimeIndex(group["timestamp"])),
                y=group["y"].to_numpy(dtype=float),
                future_ds=_naive_utc(future),
                quantiles=tuple(request.quantiles),
                growth=growth,
                cap=float(upper) if growth == "logistic" and upper is not None else None,
                floor=float(lower),
                daily_fourier_order=daily_order,
                weekly_seasonality=weekly,
                n_changepoints=prophet_cfg.n_changepoints,
                changepoint_range=prophet_cfg.changepoint_range,
                changepoint_prior_scale=prophet_cfg.changepoint_prior_scale,
                holidays=holidays,
                interval_width=prophet_cfg.interval_width,
                uncertainty_samples=prophet_cfg.uncertainty_samples,
                keep_model=keep_models,
            )
        )
    return tasks


def fit_and_forecast_one(task: ProphetTask) -> ProphetResult:
    """Worker: fit Prophet on one series, forecast, sample quantiles (runs in a subprocess)."""
    _silence_stan_logging()
    from prophet import Prophet
    from prophet.serialize import model_to_json

    started = time.perf_counter()
    try:
        history = pd.DataFrame({"ds": task.ds, "y": task.y}).dropna(subset=["y"])
        model = Prophet(
            growth=task.growth,
            # Prophet takes the Fourier order in place of True; False switches the cycle off.
            daily_seasonality=task.daily_fourier_order if task.daily_fourier_order > 0 else False,
            weekly_seasonality=task.weekly_seasonality,
            # Prophet itself lowers this when the history has fewer points in its range.
            n_changepoints=task.n_changepoints,
            changepoint_range=task.changepoint_range,
            changepoint_prior_scale=task.changepoint_prior_scale,
            yearly_seasonality=False,
            holidays=_holiday_frame(task.holidays),
            interval_width=task.interval_width,
            uncertainty_samples=task.uncertainty_samples,
        )
        future = pd.DataFrame({"ds": task.future_ds})
        if task.growth == "logistic":
            history = history.assign(cap=task.cap, floor=task.floor)
            future = future.assign(cap=task.cap, floor=task.floor)
        model.fit(history)
        fit_seconds = time.perf_counter() - started
        # Seeded so that repeated runs give the same intervals.
        np.random.seed(0)
        samples = model.predictive_samples(future)["yhat"]
        # yhat without a second sampling pass: predict() skips intervals with 0 samples.
        model.uncertainty_samples = 0
        mean = model.predict(future)["yhat"].to_numpy(dtype=float)
        model.uncertainty_samples = task.uncertainty_samples
        quantile_values = {q: np.quantile(samples, q, axis=1) for q in task.quantiles}
        model_json = model_to_json(model) if task.keep_model else None
    except Exception as exc:  # reported: the series is flagged and forecast by the fallback
        return ProphetResult(
            task.series_id, None, None, None, time.perf_counter() - started, _one_line(exc)
        )
    return ProphetResult(task.series_id, mean, quantile_values, model_json, fit_seconds)


def choose_growth(
    setting: str,
    y: np.ndarray,
    lower: float,
    upper: float | None,
    min_share: float,
) -> str:
    """Prophet growth for one series: ``linear``, ``logistic`` or ``flat``.

    ``logistic`` needs a cap, so an unbounded series (``upper`` None) gets ``linear``. ``auto``
    is logistic only when the series' 90th percentile reaches ``lower + min_share * (upper -
    lower)`` (saturation is then a real possibility within the horizon) and linear otherwise.
    """
    if setting not in ("auto", "logistic"):
        return setting
    if upper is None:
        return "linear"
    if setting == "logistic":
        return "logistic"
    observed = y[np.isfinite(y)]
    if observed.size == 0:
        return "linear"
    level = float(np.quantile(observed, LOGISTIC_LEVEL_QUANTILE))
    return "logistic" if level >= lower + min_share * (upper - lower) else "linear"


def _naive_utc(timestamps: pd.DatetimeIndex) -> np.ndarray:
    # Prophet refuses tz-aware ds; UTC wall time keeps the grid and the daily cycle in UTC.
    if timestamps.tz is not None:
        timestamps = timestamps.tz_convert("UTC").tz_localize(None)
    return timestamps.to_numpy()


def _holiday_frame(holidays: tuple[tuple[str, str, int, int], ...]) -> pd.DataFrame | None:
    if not holidays:
        return None
    return pd.DataFrame(
        {
            "holiday": [h[0] for h in holidays],
            "ds": pd.to_datetime([h[1] for h in holidays]),
            "lower_window": [h[2] for h in holidays],
            "upper_window": [h[3] for h in holidays],
        }
    )


def _silence_stan_logging() -> None:
    # cmdstanpy installs its own INFO handler (and level DEBUG) on a logger without handlers,
    # e.g. in a fresh worker process; a NullHandler prevents that, the level drops INFO chatter.
    for name in ("cmdstanpy", "prophet"):
        named = logging.getLogger(name)
        named.setLevel(logging.WARNING)
        if not any(isinstance(h, logging.NullHandler) for h in named.handlers):
            named.addHandler(logging.NullHandler())


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return f"{type(exc).__name__}: {text}"[:300]
