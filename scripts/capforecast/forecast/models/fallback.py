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
    SeriesBlocks,
    base_model_name,
    empty_forecast_frame,
    finalize_forecast,
    forecast_columns,
    forecast_frame,
    freq_step,
    last_timestamps,
    renumbered,
    series_blocks,
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


@dataclass(frozen=True)
class PanelProfile:
    """The ``SeriesProfile`` of every series of a history, as arrays (series in ``blocks``
    order: first appearance).

    first_obs: the ``blocks.grouped`` position of each series' first observation (its end when
    it has none).
    """

    blocks: SeriesBlocks
    n_obs: np.ndarray
    span: np.ndarray
    first_obs: np.ndarray
    is_constant: np.ndarray
    recently_constant: np.ndarray
    last_timestamp: pd.DatetimeIndex
    last_value: np.ndarray

    def series(self, i: int) -> SeriesProfile:
        """The profile of series ``i``."""
        return SeriesProfile(
            series_id=str(self.blocks.ids[i]),
            n_obs=int(self.n_obs[i]),
            span=int(self.span[i]),
            is_constant=bool(self.is_constant[i]),
            recently_constant=bool(self.recently_constant[i]),
            last_timestamp=self.last_timestamp[i],
            last_value=float(self.last_value[i]),
        )


def _single_values(low: np.ndarray, high: np.ndarray) -> np.ndarray:
    """Whether the observations whose extremes are ``low`` and ``high`` (NaN: none) are all one
    value: their range within ``1e-9`` of their largest magnitude (at least 1)."""
    with np.errstate(invalid="ignore"):
        scale = np.maximum(1.0, np.maximum(np.abs(low), np.abs(high)))
        return (high - low) <= 1e-9 * scale


def panel_profile(history: pd.DataFrame, freq: str = "1h") -> PanelProfile:
    """Observations, span, constancy, last timestamp and last value of every series, computed
    for the whole history at once (``profile_series`` gives them per series)."""
    blocks = series_blocks(history["series_id"])
    values = blocks.grouped(history["y"].to_numpy(dtype=float))
    starts, ends = blocks.starts, blocks.ends
    observed = ~np.isnan(values)
    positions = np.arange(len(values))
    counted = np.concatenate([[0], np.cumsum(observed)])
    n_obs = counted[ends] - counted[starts]
    first_obs = np.minimum.reduceat(np.where(observed, positions, len(values)), starts)
    last_obs = np.maximum.reduceat(np.where(observed, positions, -1), starts)
    has_data = n_obs > 0
    span = np.where(has_data, ends - first_obs, 0)
    is_constant = has_data & _single_values(
        np.fmin.reduceat(values, starts), np.fmax.reduceat(values, starts)
    )
    recent = steps_per(RECENT_CONSTANT_PERIOD, freq)
    recently_constant = np.zeros(len(blocks), dtype=bool)
    long_enough = np.flatnonzero(span >= recent)  # hence at least ``recent`` rows
    if long_enough.size:
        tail = values[ends[long_enough, None] - recent + np.arange(recent)]
        count = (~np.isnan(tail)).sum(axis=1)
        recently_constant[long_enough] = (
            (count >= recent // 2)
            & (count > 0)
            & _single_values(np.fmin.reduce(tail, axis=1), np.fmax.reduce(tail, axis=1))
        )
    return PanelProfile(
        blocks=blocks,
        n_obs=n_obs,
        span=span,
        first_obs=np.where(has_data, first_obs, ends),
        is_constant=is_constant,
        recently_constant=recently_constant,
        last_timestamp=last_timestamps(history, blocks),
        last_value=np.where(has_data, values[np.maximum(last_obs, 0)], np.nan),
    )


def profile_series(history: pd.DataFrame, freq: str = "1h") -> dict[str, SeriesProfile]:
    """Observations, span, constancy, last timestamp and last value of every series.

    ``history`` is on a regular ``freq`` grid (gaps are NaN rows), so the span of a series is its
    row count after its first observation.
    """
    if history.empty:
        return {}
    profile = panel_profile(history, freq)
    return {str(sid): profile.series(i) for i, sid in enumerate(profile.blocks.ids)}


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
    if profiles is None:
        profiles = profile_series(request.history, request.freq)
    items = list(profiles.values())
    models, flags = _route(
        np.array([p.n_obs for p in items], dtype=np.int64),
        np.array([p.span for p in items], dtype=np.int64),
        np.array([p.is_constant for p in items], dtype=bool),
        request,
        model_name,
    )
    return {
        sid: SeriesRoute(str(model), flag)
        for sid, model, flag in zip(profiles, models, flags, strict=True)
    }


def _route(
    n_obs: np.ndarray,
    span: np.ndarray,
    is_constant: np.ndarray,
    request: ForecastRequest,
    model_name: str,
) -> tuple[np.ndarray, np.ndarray]:
    """The model and flag (None = the requested model) of every series, as arrays.

    An all-NaN series goes to no model, a constant one to the flat forecast, any other to the
    first model of the chain it is long enough for (``has_history_for``).
    """
    if model_name not in FALLBACK_CHAIN:
        raise KeyError(f"unknown model '{model_name}'; known: {', '.join(FALLBACK_CHAIN)}")
    models = np.full(len(n_obs), NO_MODEL, dtype=object)
    flags = np.full(len(n_obs), FLAG_NO_DATA, dtype=object)
    models[is_constant & (n_obs > 0)] = NAIVE
    flags[is_constant & (n_obs > 0)] = FLAG_CONSTANT
    left = (n_obs > 0) & ~is_constant
    for rank, model in enumerate(FALLBACK_CHAIN[model_name]):
        needed = min_history_steps(model, request)
        chosen = left & (span >= needed) & (2 * n_obs >= needed)
        models[chosen] = model
        flags[chosen] = FLAG_TOO_SHORT if rank else None
        left &= ~chosen
    if left.any():
        raise RuntimeError(f"no model of {model_name}'s fallback chain fits; this is a bug")
    return models, flags


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

    Works on whole arrays (series codes from ``series_blocks``): per-series pandas objects
    cost more than the cheap models' forecasts themselves.
    """
    history = request.history
    if history.empty:
        return empty_forecast_frame(request.quantiles)
    profile = panel_profile(history, request.freq)
    blocks = profile.blocks
    models, flags = _route(profile.n_obs, profile.span, profile.is_constant, request, model_name)
    flat = (flags == FLAG_NO_DATA) | (flags == FLAG_CONSTANT)
    # Rows before a series' first observation carry no information: the cores never see them.
    started = blocks.positions() >= (profile.first_obs - blocks.starts)[blocks.codes]
    pieces: list[tuple[pd.DataFrame, np.ndarray]] = []
    if flat.any():
        pieces.append(_flat_forecasts(np.flatnonzero(flat), profile, models, flags, request))

    chain = FALLBACK_CHAIN[model_name]
    index_of = {str(sid): i for i, sid in enumerate(blocks.ids)}
    pending = np.flatnonzero(~flat)
    while pending.size:
        current, current_flags = models[pending], flags[pending]
        failed: list[int] = []
        for model in dict.fromkeys(current):
            members = pending[current == model]
            core = (cores or {}).get(model) or core_function(model)
            frame, row_series = _run_core(
                core, model, members, history, started, request, model_cfg, profile, index_of
            )
            if "model_used" not in frame.columns:
                label_of = np.empty(len(blocks), dtype=object)
                label_of[members] = [
                    model_used_label(model, flag) for flag in current_flags[current == model]
                ]
                frame = frame.assign(model_used=label_of[row_series])
            if len(frame):
                pieces.append((frame, row_series))
            produced = np.zeros(len(blocks), dtype=bool)
            produced[row_series] = True
            for i in members[~produced[members]]:
                models[i] = _next_usable(chain, model, profile.series(i), request)
                flags[i] = FLAG_MODEL_FAILED
                failed.append(int(i))
                logger.warning(
                    "%s could not forecast series %s; using %s", model, blocks.ids[i], models[i]
                )
        pending = np.array(failed, dtype=np.int64)

    out = pd.concat([frame for frame, _ in pieces], ignore_index=True)
    row_series = np.concatenate([rows for _, rows in pieces])
    # Series in input order; each piece already has every series' rows in timestamp order.
    order = np.argsort(row_series, kind="stable")
    if (np.diff(order) != 1).any():
        out = renumbered(out.take(order))
        row_series = row_series[order]
    pinned = profile.recently_constant & ~flat
    out = _pin_recent_constants(out, pinned[row_series], profile.last_value[row_series], request)
    columns = ["series_id", "timestamp", *forecast_columns(request.quantiles), "model_used"]
    _log_routing(model_name, out, row_series)
    return finalize_forecast(out[columns], request)


def _flat_forecasts(
    series: np.ndarray,
    profile: PanelProfile,
    models: np.ndarray,
    flags: np.ndarray,
    request: ForecastRequest,
) -> tuple[pd.DataFrame, np.ndarray]:
    """The flat forecasts of ``series``: their constant (NaN without data) for every step and
    every quantile (zero-width intervals), and each row's series."""
    level = np.where(flags[series] == FLAG_CONSTANT, profile.last_value[series], np.nan)
    values = np.repeat(level[:, None], request.horizon, axis=1)
    frame = forecast_frame(
        [str(sid) for sid in profile.blocks.ids[series]],
        profile.last_timestamp[series],
        values,
        {q: values for q in request.quantiles},
        request.freq,
    )
    labels = [model_used_label(m, f) for m, f in zip(models[series], flags[series], strict=True)]
    frame["model_used"] = np.repeat(np.array(labels, dtype=object), request.horizon)
    return frame, np.repeat(series, request.horizon)


def _pin_recent_constants(
    forecast: pd.DataFrame, pinned: np.ndarray, value: np.ndarray, request: ForecastRequest
) -> pd.DataFrame:
    """Median, mean and lower quantiles of the ``pinned`` rows (of recently constant series not
    already forecast flat) set to their series' constant ``value``.

    Upper quantiles keep the model's values (never below the constant), so a workload that
    resumes stays inside the upper tail. Such rows get ``FLAG_RECENTLY_CONSTANT`` in
    ``model_used``.
    """
    if not pinned.any():
        return forecast
    out = forecast.copy()
    value = value[pinned]
    out.loc[pinned, "mean"] = value
    for q in request.quantiles:
        column = quantile_column(q)
        current = out.loc[pinned, column].to_numpy(dtype=float)
        out.loc[pinned, column] = value if q <= 0.5 else np.fmax(current, value)
    labels = out.loc[pinned, "model_used"]
    relabelled = {
        label: model_used_label(base_model_name(label), FLAG_RECENTLY_CONSTANT)
        for label in labels.unique()
    }
    out.loc[pinned, "model_used"] = [relabelled[label] for label in labels]
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
    members: np.ndarray,
    history: pd.DataFrame,
    started: np.ndarray,
    request: ForecastRequest,
    model_cfg: ModelSettings,
    profile: PanelProfile,
    index_of: dict[str, int],
) -> tuple[pd.DataFrame, np.ndarray]:
    """Run one core on the series ``members`` (from their first observation) and check that it
    forecast each series it returned on the ``horizon`` steps continuing its grid.

    Returns the core's rows of ``members`` (a series it omitted has none) and each row's series.
    """
    blocks = profile.blocks
    selected = np.zeros(len(blocks), dtype=bool)
    selected[members] = True
    sub_history = renumbered(history.take(np.flatnonzero(started & selected[blocks.codes])))
    result = core(dataclasses.replace(request, history=sub_history), model_cfg)
    returned = series_blocks(result["series_id"])
    series = np.array([index_of[str(sid)] for sid in returned.ids], dtype=np.int64)
    lengths = returned.lengths
    step = freq_step(request.freq)
    steps_ahead = np.arange(len(result)) - np.repeat(returned.starts, lengths) + 1
    expected = profile.last_timestamp[series].repeat(lengths) + pd.to_timedelta(
        steps_ahead * step.value, unit="ns"
    )
    stamps = pd.DatetimeIndex(result["timestamp"])
    matches = np.asarray((stamps if returned.order is None else stamps[returned.order]) == expected)
    on_grid = np.ones(len(series), dtype=bool)
    if len(result):
        on_grid = np.logical_and.reduceat(matches, returned.starts)
    wrong = (lengths != request.horizon) | ~on_grid
    if wrong.any():
        i = int(np.argmax(wrong))
        sid = str(returned.ids[i])
        start = profile.last_timestamp[series[i]] + step
        raise RuntimeError(
            f"model {model} returned {lengths[i]} rows for series {sid} (expected "
            f"{request.horizon} continuing its grid from {start}); this is a bug"
        )
    row_series = series[returned.codes]
    keep = selected[row_series]
    if not keep.all():
        result, row_series = result.take(np.flatnonzero(keep)), row_series[keep]
    return result, row_series


def _log_routing(model_name: str, out: pd.DataFrame, row_series: np.ndarray) -> None:
    first_rows = np.flatnonzero(np.r_[True, row_series[1:] != row_series[:-1]])
    counts = pd.Series(out["model_used"].to_numpy()[first_rows]).value_counts()
    if len(counts) > 1 or (len(counts) == 1 and counts.index[0] != model_name):
        logger.info(
            "%s: series per model used: %s",
            model_name,
            ", ".join(f"{label}={n}" for label, n in counts.items()),
        )
