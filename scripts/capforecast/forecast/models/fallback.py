"""Odd series: route short, constant and empty series so that every model forecasts every series.

Each public model function calls ``forecast_with_fallback``. It profiles every series, sends

* an all-NaN series to no model: NaN rows flagged ``"none (no_data)"``;
* a constant series to a flat forecast with zero-width intervals, flagged ``"naive (constant)"``;
* a series too short for the requested model down that model's ``FALLBACK_CHAIN`` to the first
  simpler model it is long enough for, flagged ``"<model> (fallback: too_short)"``;
* a series a model could not fit (the model omitted it from its output, e.g. a Stan failure in
  Prophet) to the next model of the chain, flagged ``"<model> (fallback: model_failed)"``.

The model "cores" (``*_core`` functions in the model modules) therefore only see series they can
handle, trimmed of leading NaNs; interior and trailing NaNs remain for the core to treat.
No series is ever dropped: the output has ``horizon`` rows for every input ``series_id``.
"""

from __future__ import annotations

import dataclasses
import importlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from capforecast.contracts import FLAG_NO_DATA, model_used_label, quantile_column
from capforecast.forecast.models.base import (
    FLAG_CONSTANT,
    FLAG_MODEL_FAILED,
    FLAG_RECENTLY_CONSTANT,
    FLAG_TOO_SHORT,
    ForecastRequest,
    base_model_name,
    empty_forecast_frame,
    finalize_forecast,
    forecast_columns,
    future_timestamps,
    quantile_frame,
    steps_per,
)
from capforecast.forecast.models.specs import NAIVE, ROUTABLE, HistorySteps, fallback_chain
from capforecast.settings import ModelSettings

logger = logging.getLogger(__name__)

NO_MODEL = "none"
# A series whose observations over this last period all have one value (an instance idling at
# exactly 0 % since it was drained, a gauge stuck at one reading) keeps that value as its median:
# models fitted on its older, varying history forecast movement that has stopped. On the tuning
# half of the Bitbrains development set, 90 % of the hours of the week after such a day kept the
# value exactly (so it is the median of what follows), but 46 % of those weeks left it at some
# point: the upper quantiles stay the model's, so a resumed workload is inside the forecast's P90.
RECENT_CONSTANT_PERIOD = "1D"

# Requested model -> models tried in order; the first one the series is long enough for wins.
# "naive" (last value) needs a single observation, so every chain ends somewhere. From the specs.
FALLBACK_CHAIN: dict[str, tuple[str, ...]] = {name: fallback_chain(name) for name in ROUTABLE}

CoreFn = Callable[[ForecastRequest, dict[str, Any]], pd.DataFrame]


@dataclass(frozen=True)
class SeriesProfile:
    """What routing needs to know about one series."""

    series_id: str
    n_obs: int  # non-NaN observations
    span: int  # grid steps from the first observation to the end (gaps included)
    is_constant: bool  # every observation has the same value
    recently_constant: bool  # the observations of the last RECENT_CONSTANT_PERIOD have one value
    last_timestamp: pd.Timestamp
    last_value: float  # last non-NaN value (NaN when the series has none)


@dataclass(frozen=True)
class SeriesRoute:
    """The model that will forecast a series and why (``flag`` None = the requested model)."""

    model: str
    flag: str | None


def core_function(model: str) -> CoreFn:
    """The core forecaster of ``model`` (imported on first use)."""
    return spec_function(ROUTABLE[model].core)


def spec_function(reference: str) -> Callable[..., Any]:
    """The function a spec names as ``module:function`` (its module imported on first use)."""
    module_name, _, function_name = reference.partition(":")
    return getattr(importlib.import_module(module_name), function_name)


def _single_value(valid: np.ndarray) -> bool:
    return bool(valid.size > 0 and np.ptp(valid) <= 1e-9 * max(1.0, float(np.max(np.abs(valid)))))


def profile_series(history: pd.DataFrame, freq: str = "1h") -> dict[str, SeriesProfile]:
    """Observations, span, constancy, last timestamp and last value of every series.

    ``history`` is on a regular ``freq`` grid (gaps are NaN rows), so the span of a series is its
    row count after its first observation.
    """
    recent = steps_per(RECENT_CONSTANT_PERIOD, freq)
    profiles: dict[str, SeriesProfile] = {}
    for sid, group in history.groupby("series_id", sort=False):
        values = group["y"].to_numpy(dtype=float)
        observed = ~np.isnan(values)
        valid = values[observed]
        span = int(len(values) - np.argmax(observed)) if valid.size else 0
        tail = values[-recent:]
        tail = tail[~np.isnan(tail)]
        profiles[str(sid)] = SeriesProfile(
            series_id=str(sid),
            n_obs=int(valid.size),
            span=span,
            is_constant=_single_value(valid),
            recently_constant=span >= recent and tail.size >= recent // 2 and _single_value(tail),
            last_timestamp=group["timestamp"].iloc[-1],
            last_value=float(valid[-1]) if valid.size else float("nan"),
        )
    return profiles


def has_history_for(model: str, profile: SeriesProfile, request: ForecastRequest) -> bool:
    """Whether a series is long enough for ``model``: its span (gaps included) covers what the
    model needs and at least half of that is observed.

    Counting observations alone sent every series with one day-long gap in its last two weeks
    from the weekly seasonal naive to the daily one (and the final AutoGluon fit to its
    fallback); the models fill gaps themselves (``fill_missing``), so the span is what matters.
    """
    needed = min_history_steps(model, request)
    return profile.span >= needed and 2 * profile.n_obs >= needed


def min_history_steps(model: str, request: ForecastRequest) -> int:
    """Grid steps of history a series needs before ``model`` is used for it (its spec's
    ``min_history``: two seasons for the seasonal models, two weeks for the weekly seasonal
    naive, three days for Prophet and AutoGluon, and for AutoGluon also the ``2 * horizon + 1``
    it needs to hold out one validation window)."""
    steps = HistorySteps(
        daily=steps_per("1D", request.freq),
        weekly=steps_per("7D", request.freq),
        season=request.season,
        horizon=request.horizon,
    )
    return ROUTABLE[model].min_history(steps)


def history_cap(
    model: str, max_hours: float | None, *, horizon: int, season: int, freq: str
) -> int | None:
    """Most recent grid steps ``model`` sees (``models.max_history_hours``; None = all).

    Never fewer than the model needs: AutoGluon's ``2 * horizon + 1`` for a 168-step final
    forecast is 337 hourly steps, one more than the default two weeks, and trimming below it
    would silently hand every series to the fallback.
    """
    if max_hours is None:
        return None
    points = steps_per(f"{max_hours}h", freq)
    probe = ForecastRequest(
        history=pd.DataFrame(), horizon=horizon, quantiles=(0.5,), freq=freq, season=season
    )
    needed = min_history_steps(model, probe) if model in FALLBACK_CHAIN else 0
    return max(points, needed)


def route_series(
    request: ForecastRequest,
    model_name: str,
    profiles: dict[str, SeriesProfile] | None = None,
) -> dict[str, SeriesRoute]:
    """Decide, per series, which model forecasts it when ``model_name`` is requested."""
    if model_name not in FALLBACK_CHAIN:
        raise KeyError(f"unknown model '{model_name}'; known: {', '.join(FALLBACK_CHAIN)}")
    if profiles is None:
        profiles = profile_series(request.history, request.freq)
    routes: dict[str, SeriesRoute] = {}
    for sid, profile in profiles.items():
        if profile.n_obs == 0:
            routes[sid] = SeriesRoute(NO_MODEL, FLAG_NO_DATA)
        elif profile.is_constant:
            routes[sid] = SeriesRoute(NAIVE, FLAG_CONSTANT)
        else:
            chosen = next(
                m for m in FALLBACK_CHAIN[model_name] if has_history_for(m, profile, request)
            )
            routes[sid] = SeriesRoute(chosen, None if chosen == model_name else FLAG_TOO_SHORT)
    return routes


def trim_leading_missing(history: pd.DataFrame) -> pd.DataFrame:
    """Drop each series' rows before its first observation (they carry no information)."""
    started = history["y"].notna().groupby(history["series_id"], sort=False).cummax()
    return history.loc[started.to_numpy()].reset_index(drop=True)


def flat_forecast(profile: SeriesProfile, request: ForecastRequest, value: float) -> pd.DataFrame:
    """``value`` for every step and every quantile (zero-width intervals)."""
    timestamps = future_timestamps(profile.last_timestamp, request.horizon, request.freq)
    level = np.full(request.horizon, value, dtype=float)
    return quantile_frame(
        profile.series_id, timestamps, level, {q: level for q in request.quantiles}
    )


def forecast_with_fallback(
    request: ForecastRequest,
    model_cfg: ModelSettings,
    model_name: str,
    cores: dict[str, CoreFn] | None = None,
) -> pd.DataFrame:
    """Forecast every series of ``request`` with ``model_name``, routing odd series.

    ``cores`` replaces the core of some models (e.g. one that also keeps the fitted models).
    Returns the contract frame (``series_id, timestamp, mean, q..., model_used``), ``horizon``
    rows per input series, in input order, passed through ``finalize_forecast``.
    """
    history = request.history
    if history.empty:
        return empty_forecast_frame(request.quantiles)
    profiles = profile_series(history, request.freq)
    routes = route_series(request, model_name, profiles)
    trimmed = trim_leading_missing(history)

    pieces: list[pd.DataFrame] = []
    for sid, route in routes.items():
        if route.flag == FLAG_NO_DATA:
            frame = flat_forecast(profiles[sid], request, float("nan"))
        elif route.flag == FLAG_CONSTANT:
            frame = flat_forecast(profiles[sid], request, profiles[sid].last_value)
        else:
            continue
        pieces.append(frame.assign(model_used=model_used_label(route.model, route.flag)))

    pending = {sid: r for sid, r in routes.items() if r.flag not in (FLAG_NO_DATA, FLAG_CONSTANT)}
    chain = FALLBACK_CHAIN[model_name]
    while pending:
        by_model: dict[str, list[str]] = {}
        for sid, route in pending.items():
            by_model.setdefault(route.model, []).append(sid)
        next_pending: dict[str, SeriesRoute] = {}
        for model, sids in by_model.items():
            core = (cores or {}).get(model) or core_function(model)
            produced = _run_core(core, model, sids, trimmed, request, model_cfg, profiles)
            for sid in sids:
                if sid in produced:
                    frame = produced[sid]
                    if "model_used" not in frame.columns:
                        frame = frame.assign(model_used=model_used_label(model, pending[sid].flag))
                    pieces.append(frame)
                    continue
                replacement = _next_usable(chain, model, profiles[sid], request)
                next_pending[sid] = SeriesRoute(replacement, FLAG_MODEL_FAILED)
                logger.warning(
                    "%s could not forecast series %s; using %s",
                    model,
                    sid,
                    next_pending[sid].model,
                )
        pending = next_pending

    out = pd.concat(pieces, ignore_index=True)
    order = {sid: i for i, sid in enumerate(profiles)}
    out = (
        out.assign(_order=out["series_id"].map(order))
        .sort_values(["_order", "timestamp"], kind="stable")
        .drop(columns="_order")
        .reset_index(drop=True)
    )
    out = pin_recent_constants(out, profiles, routes, request.quantiles)
    columns = ["series_id", "timestamp", *forecast_columns(request.quantiles), "model_used"]
    _log_routing(model_name, out)
    return finalize_forecast(out[columns], request)


def pin_recent_constants(
    forecast: pd.DataFrame,
    profiles: dict[str, SeriesProfile],
    routes: dict[str, SeriesRoute],
    quantiles: tuple[float, ...],
) -> pd.DataFrame:
    """Median, mean and lower quantiles of recently constant series set to their constant.

    Upper quantiles keep the model's values (never below the constant), so a workload that
    resumes stays inside the upper tail. Such rows get ``FLAG_RECENTLY_CONSTANT`` in
    ``model_used``. Series already forecast flat (constant, no data) are left as they are.
    """
    pinned = {
        sid: profile.last_value
        for sid, profile in profiles.items()
        if profile.recently_constant and routes[sid].flag not in (FLAG_NO_DATA, FLAG_CONSTANT)
    }
    if not pinned:
        return forecast
    out = forecast.copy()
    rows = out["series_id"].isin(list(pinned))
    value = out.loc[rows, "series_id"].map(pinned).to_numpy(dtype=float)
    out.loc[rows, "mean"] = value
    for q in quantiles:
        column = quantile_column(q)
        current = out.loc[rows, column].to_numpy(dtype=float)
        out.loc[rows, column] = value if q <= 0.5 else np.fmax(current, value)
    out.loc[rows, "model_used"] = [
        model_used_label(base_model_name(label), FLAG_RECENTLY_CONSTANT)
        for label in out.loc[rows, "model_used"]
    ]
    return out


def _next_usable(
    chain: tuple[str, ...], model: str, profile: SeriesProfile, request: ForecastRequest
) -> str:
    """The first model after ``model`` in ``chain`` that the series is long enough for."""
    if model == NAIVE:
        raise RuntimeError("the last-value naive forecast failed; this is a bug")
    later = chain[chain.index(model) + 1 :] if model in chain else (NAIVE,)
    return next(m for m in later if has_history_for(m, profile, request))


def _run_core(
    core: CoreFn,
    model: str,
    sids: list[str],
    trimmed: pd.DataFrame,
    request: ForecastRequest,
    model_cfg: ModelSettings,
    profiles: dict[str, SeriesProfile],
) -> dict[str, pd.DataFrame]:
    """Run one core on a subset of series and check its output per series."""
    sub_history = trimmed.loc[trimmed["series_id"].isin(sids)].reset_index(drop=True)
    sub_request = dataclasses.replace(request, history=sub_history)
    result = core(sub_request, model_cfg)
    produced: dict[str, pd.DataFrame] = {}
    for sid, frame in result.groupby("series_id", sort=False):
        sid = str(sid)
        expected = future_timestamps(profiles[sid].last_timestamp, request.horizon, request.freq)
        if (
            len(frame) != request.horizon
            or not (pd.DatetimeIndex(frame["timestamp"]) == expected).all()
        ):
            raise RuntimeError(
                f"model {model} returned {len(frame)} rows for series {sid} (expected "
                f"{request.horizon} continuing its grid from {expected[0]}); this is a bug"
            )
        produced[sid] = frame.reset_index(drop=True)
    return produced


def _log_routing(model_name: str, out: pd.DataFrame) -> None:
    counts = out.drop_duplicates("series_id")["model_used"].value_counts()
    if len(counts) > 1 or (len(counts) == 1 and counts.index[0] != model_name):
        logger.info(
            "%s: series per model used: %s",
            model_name,
            ", ".join(f"{label}={n}" for label, n in counts.items()),
        )
