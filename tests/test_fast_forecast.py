"""The forecast framework on whole arrays gives, byte for byte, what its per-series code gave.

Backtests, routing (``forecast_with_fallback``), ``finalize_forecast``, ``trim_history``, the
final fit and the cheap models' cores now work on series codes and numpy arrays over a whole
panel. The per-series pandas code they replaced is kept here as the reference, and every
output is compared with it (``assert_frame_equal`` with ``check_exact`` and the float columns'
bits) on panels with gaps, missing rows, constant, recently constant, too short and all-NaN
series, series that end early or start late, unsorted rows and several windows.
"""

from __future__ import annotations

import dataclasses
import logging
import warnings
from statistics import NormalDist

import numpy as np
import pandas as pd
import pytest
from test_fast_paths import reference_fill

from capforecast.config import validated_config
from capforecast.contracts import FLAG_NO_DATA, model_used_label, quantile_column
from capforecast.errors import ConfigError, InputDataError
from capforecast.forecast import backtest, fit
from capforecast.forecast.models import MODEL_REGISTRY
from capforecast.forecast.models.base import (
    FLAG_CONSTANT,
    FLAG_MODEL_FAILED,
    FLAG_RECENTLY_CONSTANT,
    FLAG_TOO_SHORT,
    ForecastRequest,
    base_model_name,
    fill_missing,
    fill_missing_rows,
    finalize_forecast,
    forecast_columns,
    future_timestamps,
    quantile_frame,
    series_blocks,
    sort_by_series,
    steps_per,
    trim_history,
)
from capforecast.forecast.models.baselines import (
    naive_core,
    predict_linear_core,
    seasonal_naive_daily_core,
    seasonal_naive_weekly_core,
)
from capforecast.forecast.models.fallback import (
    FALLBACK_CHAIN,
    NO_MODEL,
    RECENT_CONSTANT_PERIOD,
    SeriesProfile,
    SeriesRoute,
    core_function,
    forecast_with_fallback,
    has_history_for,
    history_cap,
    profile_series,
    route_series,
)
from capforecast.forecast.models.profiles import seasonal_median_core
from capforecast.forecast.models.specs import NAIVE
from capforecast.forecast.panel import series_bounds
from capforecast.settings import backtest_settings, forecast_settings, model_settings

START = pd.Timestamp("2026-01-01", tz="UTC")
# The fast set and the two slower statsforecast models.
MODELS = [
    "seasonal_naive_daily",
    "seasonal_naive_weekly",
    "predict_linear",
    "seasonal_median",
    "theta",
    "autoets",
    "mstl",
]
CFG = validated_config({})
MODEL_CFG = model_settings(CFG["models"])
QUANTILES = fit.model_quantiles(forecast_settings(CFG["forecast"]))


# ---------------------------------------------------------------------------------------------
# Panels


def series(sid: str, values, start: pd.Timestamp = START) -> pd.DataFrame:
    stamps = pd.date_range(start, periods=len(values), freq="h")
    return pd.DataFrame({"series_id": sid, "timestamp": stamps, "y": np.asarray(values, float)})


def odd_panel(seed: int = 0, days: int = 32, shuffled: bool = False) -> pd.DataFrame:
    """Every kind of series routing and the backtest treat specially, hourly, ``days`` long."""
    rng = np.random.default_rng(seed)
    n = days * 24

    def wave(m: int, level: float, amplitude: float) -> np.ndarray:
        t = np.arange(m)
        return level + amplitude * np.sin(2 * np.pi * t / 24) + rng.normal(0, 1, m) + 0.01 * t

    late = START + pd.Timedelta(hours=n - 30)
    start_late, end_early = min(300, n // 2), min(100, n // 3)
    parts = [
        series(f"r{i}|cpu_utilization", np.clip(wave(n, 40 + 20 * i, 8), 0, 100)) for i in (0, 1, 2)
    ]
    parts += [
        series("bytes|network_in", 1e6 * np.abs(wave(n, 5, 2))),
        series("short30|cpu_utilization", wave(30, 50, 8), late),
        series("short60|cpu_utilization", wave(60, 50, 8)),
        series("short200|cpu_utilization", wave(200, 50, 8), START + pd.Timedelta(hours=n - 200)),
        series("constant|cpu_utilization", np.full(n, 42.0)),
        series("zero|disk_used", np.zeros(n)),
        series("nan|cpu_utilization", np.full(n, np.nan)),
        series("nan48|cpu_utilization", np.full(48, np.nan), START + pd.Timedelta(hours=n - 48)),
        series(
            "late_start|cpu_utilization",
            wave(n - start_late, 20, 4),
            START + pd.Timedelta(hours=start_late),
        ),
        series("early_end|network_out", np.abs(wave(n - end_early, 20, 4))),
        series("negative|latency", wave(n, 0, 3)),
        series("almost_constant|cpu_utilization", 1.0 + 1e-12 * (np.arange(n) % 2)),
    ]
    leading = np.full(n, np.nan)
    leading[-min(100, n) :] = wave(min(100, n), 30, 5)
    parts.append(series("leading_nan|cpu_utilization", leading))
    idle = wave(n, 60, 10)
    idle[-60:] = 0.0
    parts.append(series("idle|cpu_utilization", idle))
    stuck = wave(n, 60, 10)
    stuck[-30:] = 77.5
    stuck[-5] = np.nan
    parts.append(series("stuck|cpu_utilization", stuck))
    for window in range(3):  # constant at the end of one window's history only
        held = wave(n, 60, 10)
        held[n - 168 * window - 60 : n - 168 * window - 20] = 12.0
        parts.append(series(f"held{window}|cpu_utilization", held))
    gappy = wave(n, 50, 10)
    gappy[rng.random(n) < 0.2] = np.nan
    gappy[n - 200 : n - 170] = np.nan
    parts.append(series("gappy|cpu_utilization", gappy).loc[rng.random(n) > 0.1])
    few = np.full(n, np.nan)
    few[rng.choice(n, 40, replace=False)] = rng.normal(5, 1, 40)
    parts.append(series("few|cpu_utilization", few))
    spiky = np.abs(wave(n, 50, 10))
    spiky[rng.random(n) < 0.02] = 1e4
    parts.append(series("spiky|requests", spiky))
    panel = pd.concat(parts, ignore_index=True)
    if shuffled:
        panel = panel.sample(frac=1.0, random_state=seed).reset_index(drop=True)
    return panel


def small_panel(seed: int = 1) -> pd.DataFrame:
    """A few odd series for the slower statsforecast models."""
    keep = ["r0|cpu_utilization", "short60|cpu_utilization", "constant|cpu_utilization"]
    keep += ["nan|cpu_utilization", "idle|cpu_utilization", "gappy|cpu_utilization"]
    keep += ["late_start|cpu_utilization", "few|cpu_utilization"]
    panel = odd_panel(seed)
    return panel[panel["series_id"].isin(keep)].reset_index(drop=True)


def with_keys(panel: pd.DataFrame) -> pd.DataFrame:
    parts = panel["series_id"].str.split("|")
    return panel.assign(resource_id=parts.str[0], metric=parts.str[1])


def assert_same(got: pd.DataFrame, expected: pd.DataFrame) -> None:
    """Same rows, order, dtypes and values, down to the bits of every float."""
    pd.testing.assert_frame_equal(got, expected, check_exact=True)
    for column in got.columns:
        if got[column].dtype == np.float64:
            bits = got[column].to_numpy().view(np.int64)
            np.testing.assert_array_equal(bits, expected[column].to_numpy().view(np.int64))


# ---------------------------------------------------------------------------------------------
# The reference: the per-series code the framework had before it worked on whole arrays


def reference_finalize(frame: pd.DataFrame, request: ForecastRequest) -> pd.DataFrame:
    cols = [quantile_column(q) for q in request.quantiles]
    out = frame.copy()
    values = np.sort(out[cols].to_numpy(dtype=float), axis=1)
    out[cols] = values
    if request.bounds:
        lower_of = {sid: float(low) for sid, (low, _) in request.bounds.items()}
        upper_of = {sid: float(high or np.inf) for sid, (_, high) in request.bounds.items()}
        lower = out["series_id"].map(lower_of).fillna(0.0).astype(float)
        upper = out["series_id"].map(upper_of).fillna(np.inf).astype(float)
        for col in [*cols, "mean"]:
            out[col] = out[col].clip(lower=lower, upper=upper)
    return out


def reference_trim(history: pd.DataFrame, max_points: int | None) -> pd.DataFrame:
    if max_points is None:
        return history
    position_from_end = history.groupby("series_id", sort=False).cumcount(ascending=False)
    return history[position_from_end < max_points].reset_index(drop=True)


def _single_value(valid: np.ndarray) -> bool:
    return bool(valid.size > 0 and np.ptp(valid) <= 1e-9 * max(1.0, float(np.max(np.abs(valid)))))


def reference_profiles(history: pd.DataFrame, freq: str = "1h") -> dict[str, SeriesProfile]:
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


def reference_routes(
    request: ForecastRequest, model_name: str, profiles: dict[str, SeriesProfile]
) -> dict[str, SeriesRoute]:
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


def reference_pin(forecast, profiles, routes, quantiles):
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


def reference_forecast_with_fallback(request, model_cfg, model_name, cores=None):
    history = request.history
    profiles = reference_profiles(history, request.freq)
    routes = reference_routes(request, model_name, profiles)
    started = history["y"].notna().groupby(history["series_id"], sort=False).cummax()
    trimmed = history.loc[started.to_numpy()].reset_index(drop=True)
    pieces = []
    for sid, route in routes.items():
        if route.flag in (FLAG_NO_DATA, FLAG_CONSTANT):
            profile = profiles[sid]
            value = profile.last_value if route.flag == FLAG_CONSTANT else float("nan")
            stamps = future_timestamps(profile.last_timestamp, request.horizon, request.freq)
            level = np.full(request.horizon, value, dtype=float)
            frame = quantile_frame(sid, stamps, level, {q: level for q in request.quantiles})
            pieces.append(frame.assign(model_used=model_used_label(route.model, route.flag)))
    pending = {sid: r for sid, r in routes.items() if r.flag not in (FLAG_NO_DATA, FLAG_CONSTANT)}
    chain = FALLBACK_CHAIN[model_name]
    while pending:
        by_model: dict[str, list[str]] = {}
        for sid, route in pending.items():
            by_model.setdefault(route.model, []).append(sid)
        next_pending = {}
        for model, sids in by_model.items():
            core = (cores or {}).get(model) or core_function(model)
            sub = trimmed.loc[trimmed["series_id"].isin(sids)].reset_index(drop=True)
            result = core(dataclasses.replace(request, history=sub), model_cfg)
            produced = {}
            for sid, frame in result.groupby("series_id", sort=False):
                expected = future_timestamps(
                    profiles[sid].last_timestamp, request.horizon, request.freq
                )
                assert len(frame) == request.horizon
                assert (pd.DatetimeIndex(frame["timestamp"]) == expected).all()
                produced[str(sid)] = frame.reset_index(drop=True)
            for sid in sids:
                if sid in produced:
                    frame = produced[sid]
                    if "model_used" not in frame.columns:
                        frame = frame.assign(model_used=model_used_label(model, pending[sid].flag))
                    pieces.append(frame)
                    continue
                later = chain[chain.index(model) + 1 :] if model in chain else (NAIVE,)
                replacement = next(m for m in later if has_history_for(m, profiles[sid], request))
                next_pending[sid] = SeriesRoute(replacement, FLAG_MODEL_FAILED)
        pending = next_pending
    out = pd.concat(pieces, ignore_index=True)
    order = {sid: i for i, sid in enumerate(profiles)}
    out = (
        out.assign(_order=out["series_id"].map(order))
        .sort_values(["_order", "timestamp"], kind="stable")
        .drop(columns="_order")
        .reset_index(drop=True)
    )
    out = reference_pin(out, profiles, routes, request.quantiles)
    columns = ["series_id", "timestamp", *forecast_columns(request.quantiles), "model_used"]
    return reference_finalize(out[columns], request)


def reference_plan(panel, windows, horizon, step, selection_windows, season, freq="1h"):
    internal = selection_windows + windows
    min_points = 2 * season
    delta = pd.Timedelta(freq)
    grid = backtest.regular_grid(panel, freq)  # itself checked against a per-series reindex
    ends = grid.groupby("series_id")["timestamp"].agg(["min", "max"])
    cutoffs = backtest.series_cutoffs(ends["max"], internal, horizon, step, freq)
    grid = grid.merge(cutoffs, on="series_id", how="left")
    members, skipped = {}, []
    latest_end = ends["max"].max()
    for window in range(internal):
        cutoff = grid[f"cutoff_{window}"]
        in_train = grid["timestamp"] <= cutoff
        in_test = (grid["timestamp"] > cutoff) & (grid["timestamp"] <= cutoff + horizon * delta)
        has_y = grid["y"].notna()
        train_points = grid[in_train & has_y].groupby("series_id").size()
        test_points = grid[in_test & has_y].groupby("series_id").size()
        per_series = cutoffs.set_index("series_id")[f"cutoff_{window}"]
        keys = ends.index.astype(str)
        late = (ends["min"].to_numpy() > per_series.reindex(keys).to_numpy()).tolist()
        n_train = train_points.reindex(ends.index, fill_value=0).astype(int).tolist()
        n_test = test_points.reindex(ends.index, fill_value=0).astype(int).tolist()
        scored = []
        for sid, is_late, train_n, test_n in zip(keys, late, n_train, n_test, strict=True):
            if is_late:
                reason = backtest.REASON_NOT_STARTED
            elif train_n < min_points:
                reason = f"{backtest.REASON_TOO_SHORT} ({train_n} < {min_points})"
            elif test_n == 0:
                reason = backtest.REASON_NO_ACTUALS
            else:
                scored.append(sid)
                continue
            skipped.append({"series_id": sid, "window": window, "reason": reason})
        members[window] = scored
    numbers = np.arange(internal)
    offsets = [backtest._offset_steps(w, internal, horizon, step) * delta for w in numbers]
    cutoff = latest_end - pd.TimedeltaIndex(offsets)  # of the series that end last
    table = {"window": numbers, "is_selection_window": numbers < selection_windows}
    table.update(cutoff=cutoff, test_start=cutoff + delta, test_end=cutoff + horizon * delta)
    return backtest.BacktestPlan(
        windows=pd.DataFrame({**table, "n_series": [len(members[w]) for w in numbers]}),
        members=members,
        skipped=pd.DataFrame(skipped, columns=list(backtest.SKIPPED_COLUMNS)),
        grid=grid[["series_id", "timestamp", "y"]],
        cutoffs=cutoffs,
    )


def reference_backtest(panel, model_fn, model_name, *, windows, horizon, step, quantiles,
                       season, bounds, model_cfg, selection_windows):  # fmt: skip
    levels = tuple(sorted({float(q) for q in quantiles} | {0.5}))
    cap = history_cap(
        model_name, model_cfg.max_history_hours, horizon=horizon, season=season, freq="1h"
    )
    plan = reference_plan(panel, windows, horizon, step, selection_windows, season)
    grid = plan.grid
    cutoff_table = plan.cutoffs.set_index("series_id")
    skipped = plan.skipped.to_dict("records")
    fitted_models: dict = {}
    frames = []
    table = plan.windows
    for window, selection in zip(table["window"], table["is_selection_window"], strict=True):
        members = plan.members[window]
        cutoffs = cutoff_table[f"cutoff_{window}"]
        if not members:
            continue
        cutoff = grid["series_id"].map(cutoffs)
        history = grid[grid["series_id"].isin(members) & (grid["timestamp"] <= cutoff)]
        request = ForecastRequest(
            history=reference_trim(history.reset_index(drop=True), cap),
            horizon=horizon,
            quantiles=levels,
            season=season,
            bounds={s: tuple(bounds[s]) for s in members if s in bounds},
            fitted_models=fitted_models,
        )
        raw = model_fn(request, model_cfg)
        needed = ["series_id", "timestamp", *forecast_columns(levels), "model_used"]
        out = raw[needed].copy()
        out["timestamp"] = pd.to_datetime(out["timestamp"], utc=True)
        forecast = reference_finalize(out, request)
        forecast = forecast[forecast["series_id"].isin(members)]
        returned = set(forecast["series_id"])
        for sid in members:
            if sid not in returned:
                skipped.append(
                    {"series_id": sid, "window": window, "reason": backtest.REASON_MODEL_OMITTED}
                )
        actuals = grid[grid["series_id"].isin(members) & (grid["timestamp"] > cutoff)]
        scored = forecast.merge(actuals, on=["series_id", "timestamp"], how="left")
        scored["model"] = model_name
        scored["window"] = int(window)
        scored["is_selection_window"] = bool(selection)
        scored["cutoff"] = scored["series_id"].map(cutoffs)
        frames.append(scored)
    columns = ["model", "series_id", "window", "is_selection_window", "cutoff", "timestamp", "y"]
    predictions = pd.concat(frames, ignore_index=True)[
        [*columns, *forecast_columns(levels), "model_used"]
    ]
    predictions = predictions.sort_values(["series_id", "window", "timestamp"], kind="stable")
    predictions = predictions.reset_index(drop=True)
    predictions.attrs["skipped"] = skipped
    return predictions


def reference_fit(model_name, panel, *, horizon, season, max_hours, percent_metrics):
    cap = history_cap(model_name, max_hours, horizon=horizon, season=season, freq="1h")
    if cap is not None:
        panel = panel.sort_values(["series_id", "timestamp"], ignore_index=True)
        panel = reference_trim(panel, cap)
    request = ForecastRequest(
        history=panel[["series_id", "timestamp", "y"]].reset_index(drop=True),
        horizon=horizon,
        quantiles=QUANTILES,
        season=season,
        bounds=series_bounds(panel, percent_metrics),
    )
    forecast = MODEL_REGISTRY[model_name](request, MODEL_CFG)
    meta = panel.drop_duplicates("series_id")[["series_id", "resource_id", "metric"]]
    out = forecast.merge(meta, on="series_id", how="left", validate="many_to_one")
    out.insert(0, "model", model_name)
    return out


def reference_rows(request, forecast, fill=True, fill_season=None) -> pd.DataFrame:
    """A core as it was: ``forecast(y)`` per series, a frame per series, concatenated."""
    frames = []
    for sid, group in request.history.groupby("series_id", sort=False):
        y = group["y"].to_numpy(dtype=float)
        point, values = forecast(reference_fill(y, fill_season) if fill else y)
        stamps = future_timestamps(group["timestamp"].iloc[-1], request.horizon, request.freq)
        frames.append(quantile_frame(str(sid), stamps, point, values))
    return pd.concat(frames, ignore_index=True)


def reference_seasonal_naive(y, season, horizon, quantiles):
    n = len(y)
    steps = np.arange(horizon)
    point = y[n - season + (steps % season)]
    errors = y[season:] - y[:-season]
    scale = np.sqrt(steps // season + 1)
    if errors.size == 0:
        return point, {q: point.copy() for q in quantiles}
    sigma = float(np.sqrt(np.sum(errors**2) / errors.size))
    return point, {q: point + NormalDist().inv_cdf(q) * sigma * scale for q in quantiles}


def reference_linear(y, window, horizon, quantiles):
    positions = np.arange(len(y), dtype=float)
    valid = ~np.isnan(y)
    in_window = valid & (positions >= len(y) - window)
    if in_window.sum() < 3:
        in_window = valid & (np.cumsum(valid[::-1])[::-1] <= 3)
    x, v = positions[in_window], y[in_window]
    n = x.size
    x_mean = float(x.mean())
    sxx = float(((x - x_mean) ** 2).sum())
    slope = float(((x - x_mean) * (v - v.mean())).sum() / sxx)
    intercept = float(v.mean()) - slope * x_mean
    future_x = np.arange(len(y), len(y) + horizon, dtype=float)
    point = intercept + slope * future_x
    residuals = v - (intercept + slope * x)
    sigma = float(np.sqrt((residuals**2).sum() / (n - 2))) if n > 2 else 0.0
    std_error = sigma * np.sqrt(1.0 + 1.0 / n + (future_x - x_mean) ** 2 / sxx)
    return point, {q: point + NormalDist().inv_cdf(q) * std_error for q in quantiles}


def reference_lagged_median(y, season, seasons, lead):
    n = len(y)
    stack = np.full((seasons, n), np.nan)
    for d in range(seasons):
        shift = season * (lead + d)
        if shift < n:
            stack[d, shift:] = y[: n - shift]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmedian(stack, axis=0)


def reference_seasonal_median(y, season, seasons, horizon, quantiles, error_seasons):
    n = len(y)
    steps = np.arange(horizon)
    slots = n - season + (steps % season)
    profile = reference_lagged_median(np.append(y, np.full(season, np.nan)), season, seasons, 1)
    profile = profile[n:]
    fallback = float(np.nanmedian(y[-season * seasons :])) if np.isfinite(y).any() else 0.0
    profile = np.where(np.isfinite(profile), profile, fallback)
    point = profile[slots - (n - season)]
    leads = steps // season + 1
    quantile_values = {q: point.copy() for q in quantiles}
    for lead in np.unique(leads):
        errors = y - reference_lagged_median(y, season, seasons, int(lead))
        errors = errors[-season * error_seasons :]
        errors = errors[np.isfinite(errors)]
        if errors.size < season:
            continue
        levels = np.quantile(errors, [*quantiles, 0.5])
        at = leads == lead
        for q, level in zip(quantiles, levels[:-1], strict=True):
            quantile_values[q][at] = point[at] + (level - levels[-1])
    return point, quantile_values


def reference_core(name: str, request: ForecastRequest) -> pd.DataFrame:
    horizon, quantiles = request.horizon, request.quantiles
    if name == "naive":
        return reference_rows(request, lambda y: reference_seasonal_naive(y, 1, horizon, quantiles))
    if name.startswith("seasonal_naive"):
        season = steps_per("1D" if name.endswith("daily") else "7D", request.freq)
        return reference_rows(
            request,
            lambda y: reference_seasonal_naive(y, season, horizon, quantiles),
            fill_season=season,
        )
    if name == "predict_linear":
        window = max(2, steps_per(f"{MODEL_CFG.predict_linear_window_hours}h", request.freq))
        return reference_rows(
            request, lambda y: reference_linear(y, window, horizon, quantiles), fill=False
        )
    settings = MODEL_CFG.seasonal_median
    return reference_rows(
        request,
        lambda y: reference_seasonal_median(
            y, 24, settings.seasons, horizon, quantiles, settings.error_seasons
        ),
        fill=False,
    )


# ---------------------------------------------------------------------------------------------
# The helpers


@pytest.mark.parametrize("shuffled", [False, True])
def test_series_blocks_are_groupby_in_order_of_appearance(shuffled):
    panel = odd_panel(3, days=6, shuffled=shuffled)
    blocks = series_blocks(panel["series_id"])
    groups = list(panel.groupby("series_id", sort=False))
    assert list(blocks.ids) == [sid for sid, _ in groups]
    assert (blocks.order is None) == (not shuffled)
    y = blocks.grouped(panel["y"].to_numpy())
    for start, end, (_, group) in zip(blocks.starts, blocks.ends, groups, strict=True):
        np.testing.assert_array_equal(y[start:end], group["y"].to_numpy())
    positions = panel.groupby("series_id", sort=False).cumcount().to_numpy()
    np.testing.assert_array_equal(blocks.positions(), positions)
    np.testing.assert_array_equal(blocks.ids[blocks.codes], panel["series_id"].to_numpy())
    # A series in two runs is one series.
    split = pd.Series(["b", "b", "a", "b"])
    assert list(series_blocks(split).ids) == ["b", "a"]
    assert len(series_blocks(split.iloc[:0])) == 0


@pytest.mark.parametrize("shuffled", [False, True])
@pytest.mark.parametrize("max_points", [None, 1, 30, 10_000])
def test_trim_history_is_a_groupby_cumcount(shuffled, max_points):
    panel = odd_panel(4, days=6, shuffled=shuffled)
    assert_same(trim_history(panel, max_points), reference_trim(panel, max_points))


def test_sort_by_series_is_sort_values():
    panel = with_keys(odd_panel(5, days=6))
    for frame in (panel, panel.iloc[::-1], panel.sample(frac=1.0, random_state=1), panel[5:]):
        expected = frame.sort_values(["series_id", "timestamp"], ignore_index=True)
        assert_same(sort_by_series(frame), expected)


def test_a_sorted_complete_panel_is_its_own_grid():
    complete = odd_panel(15, days=6)
    complete = complete[~complete["series_id"].str.startswith("gappy")]
    complete = complete.sort_values(["series_id", "timestamp"], ignore_index=True)
    shuffled = complete.sample(frac=1.0, random_state=2)  # the general path
    assert_same(backtest.regular_grid(complete, "1h"), backtest.regular_grid(shuffled, "1h"))
    gaps = complete.drop(index=[3, 500])
    assert_same(backtest.regular_grid(gaps, "1h"), backtest.regular_grid(gaps[::-1], "1h"))


def reference_bounds(panel_meta: pd.DataFrame, percent: set[str]) -> dict:
    if "metric" in panel_meta.columns:
        pairs = panel_meta[["series_id", "metric"]].drop_duplicates("series_id")
        metric_by_series = dict(zip(pairs["series_id"], pairs["metric"], strict=True))
    else:
        ids = panel_meta["series_id"].unique()
        metric_by_series = {s: str(s).rsplit("|", 1)[1] for s in ids}
    return {str(s): (0.0, 100.0 if m in percent else None) for s, m in metric_by_series.items()}


def test_series_bounds_are_per_first_row():
    panel = with_keys(odd_panel(16, days=6, shuffled=True))
    percent = set(CFG["etl"]["percent_metrics"])
    for frame in (panel, panel.drop(columns="metric"), panel.iloc[:0]):
        got = series_bounds(frame, percent)
        assert got == reference_bounds(frame, percent)
        assert list(got) == list(reference_bounds(frame, percent))


def test_finalize_forecast_is_the_per_row_sort_and_clip():
    rng = np.random.default_rng(6)
    quantiles = (0.05, 0.1, 0.5, 0.9, 0.95)
    ids = np.repeat([f"s{i}" for i in range(12)], 7)
    frame = pd.DataFrame(
        {"series_id": ids, "timestamp": START, "mean": rng.normal(0, 60, ids.size)}
    )
    for q in quantiles:
        frame[quantile_column(q)] = rng.normal(0, 80, ids.size)
    frame.loc[rng.random(ids.size) < 0.1, ["mean", "q0.5", "q0.9"]] = np.nan
    frame.loc[3, "q0.1"] = -np.inf
    frame["model_used"] = "x"
    frame.index = rng.permutation(ids.size) + 100  # not a range
    bounds = {"s0": (0.0, 100.0), "s1": (0.0, None), "s2": (5.0, 0), "s3": (0.0, 100.0)}
    for chosen in (bounds, {}, {"other": (0.0, 1.0)}):
        request = ForecastRequest(pd.DataFrame(), horizon=7, quantiles=quantiles, bounds=chosen)
        assert_same(finalize_forecast(frame, request), reference_finalize(frame, request))


@pytest.mark.parametrize("season", [None, 1, 3, 24])
def test_fill_missing_rows_fills_each_row_as_fill_missing(season):
    rng = np.random.default_rng(7)
    values = rng.normal(size=(60, 50))
    values[rng.random(values.shape) < rng.random((60, 1))] = np.nan
    values[:, :5][rng.random((60, 5)) < 0.5] = np.nan
    rows = fill_missing_rows(values, season)
    for row, filled in zip(values, rows, strict=True):
        np.testing.assert_array_equal(filled, fill_missing(row, season))
        np.testing.assert_array_equal(filled, reference_fill(row, season))


def test_profiles_and_routes_are_the_per_series_ones():
    history = odd_panel(8).sort_values(["series_id", "timestamp"], ignore_index=True)
    request = ForecastRequest(history=history, horizon=168, quantiles=QUANTILES)
    profiles = profile_series(history)
    expected = reference_profiles(history)
    assert list(profiles) == list(expected)
    for sid, profile in profiles.items():
        assert profile == expected[sid] or (
            np.isnan(profile.last_value)
            and dataclasses.replace(profile, last_value=0.0)
            == dataclasses.replace(expected[sid], last_value=0.0)
        )
    assert sum(p.recently_constant for p in profiles.values()) >= 3
    for model in (*MODELS, "prophet", "autogluon"):
        assert route_series(request, model) == reference_routes(request, model, expected)


# ---------------------------------------------------------------------------------------------
# The cheap models' cores, routing, backtests and final fits


def core_request(seed: int, horizon: int, max_points: int | None, min_rows: int) -> ForecastRequest:
    """A request as routing hands it to a core: series with at least ``min_rows`` rows from
    their first observation on (and not constant), capped to their last ``max_points``."""
    panel = odd_panel(seed, shuffled=seed % 2 == 1)
    panel = panel[panel["y"].notna().groupby(panel["series_id"]).cummax()]
    grid = backtest.regular_grid(panel, "1h")
    rows = grid.groupby("series_id")["y"].transform("size")
    varies = grid.groupby("series_id")["y"].transform("std") > 0
    grid = grid[(rows >= min_rows) & varies].reset_index(drop=True)
    history = trim_history(grid, None if max_points is None else max(max_points, min_rows))
    return ForecastRequest(history=history, horizon=horizon, quantiles=QUANTILES)


CORES = {
    "naive": naive_core,
    "seasonal_naive_daily": seasonal_naive_daily_core,
    "seasonal_naive_weekly": seasonal_naive_weekly_core,
    "predict_linear": predict_linear_core,
    "seasonal_median": seasonal_median_core,
}


@pytest.mark.parametrize("name", CORES)
@pytest.mark.parametrize(("seed", "max_points"), [(0, 336), (1, None), (2, 100)])
def test_cheap_cores_on_whole_matrices_are_the_per_series_forecasts(name, seed, max_points):
    min_rows = {"naive": 1, "predict_linear": 3, "seasonal_naive_weekly": 336}.get(name, 48)
    request = core_request(seed, 48 if seed == 2 else 168, max_points, min_rows)
    assert request.history["y"].isna().any()
    assert_same(CORES[name](request, MODEL_CFG), reference_core(name, request))


@pytest.mark.parametrize("name", MODELS)
def test_forecast_with_fallback_routes_as_per_series(name):
    slow = name in ("autoets", "mstl", "theta")
    panel = small_panel() if slow else odd_panel(9)
    history = panel.sort_values(["series_id", "timestamp"], ignore_index=True)
    history = trim_history(history, 336 if slow else None)  # MSTL on four weeks is weekly
    bounds = series_bounds(history, CFG["etl"]["percent_metrics"])
    request = ForecastRequest(history=history, horizon=168, quantiles=QUANTILES, bounds=bounds)
    got = forecast_with_fallback(request, MODEL_CFG, name)
    assert_same(got, reference_forecast_with_fallback(request, MODEL_CFG, name))
    assert got["model_used"].str.contains("constant_recently").any()


def test_series_a_core_omits_fall_back_as_per_series(caplog):
    history = odd_panel(10).sort_values(["series_id", "timestamp"], ignore_index=True)
    request = ForecastRequest(history=history, horizon=24, quantiles=QUANTILES)

    def every_other(sub: ForecastRequest, cfg) -> pd.DataFrame:
        out = seasonal_naive_daily_core(sub, cfg)
        kept = sorted(set(out["series_id"]))[::2]
        # In another order of series than the request's.
        return pd.concat([out[out["series_id"] == sid] for sid in reversed(kept)])

    cores = {"seasonal_naive_weekly": every_other}
    with caplog.at_level(logging.WARNING):
        got = forecast_with_fallback(request, MODEL_CFG, "seasonal_naive_weekly", cores)
    expected = reference_forecast_with_fallback(request, MODEL_CFG, "seasonal_naive_weekly", cores)
    assert_same(got, expected)
    assert got["model_used"].str.contains("model_failed").any()


def run(module, panel, name, overrides, reference):
    cfg = validated_config(overrides)
    bt = backtest_settings(cfg["backtest"])
    models = model_settings(cfg["models"])
    kwargs = dict(
        windows=bt.windows,
        horizon=bt.horizon,
        step=bt.step,
        quantiles=QUANTILES,
        season=bt.season,
        bounds=series_bounds(panel, cfg["etl"]["percent_metrics"]),
        model_cfg=models,
        selection_windows=bt.selection_windows,
    )
    if reference:
        return reference_backtest(panel, MODEL_REGISTRY[name], name, **kwargs)
    out = module.run_backtest(panel, MODEL_REGISTRY[name], name, fleet_checked=True, **kwargs)
    return out.drop(columns="fit_seconds")


BACKTESTS = {
    "default": {},
    "overlapping": {
        "backtest": {"horizon": 24, "step": 12, "windows": 3, "selection_windows": 2},
        "models": {"max_history_hours": None},
    },
}


# Not AutoETS and MSTL on the whole history in six windows: minutes (weekly MSTL).
@pytest.mark.parametrize(
    ("name", "setting"),
    [(n, s) for s in BACKTESTS for n in MODELS if s == "default" or n not in ("autoets", "mstl")],
)
def test_backtests_are_the_per_series_backtests(name, setting):
    overrides = BACKTESTS[setting]
    slow = name in ("autoets", "mstl", "theta")
    panel = small_panel() if slow else odd_panel(11, shuffled=True)
    got = run(backtest, panel, name, overrides, reference=False)
    expected = run(backtest, panel, name, overrides, reference=True)
    assert_same(got, expected)
    assert got.attrs == expected.attrs
    assert len(got.attrs["skipped"]) > 0


@pytest.mark.parametrize("name", MODELS)
def test_final_fits_are_the_per_series_fits(name):
    panel = with_keys(small_panel() if name in ("autoets", "mstl", "theta") else odd_panel(12))
    panel = panel.sort_values(["series_id", "timestamp"], ignore_index=True)
    settings = dict(
        forecast_cfg=forecast_settings(CFG["forecast"]),
        backtest_cfg=backtest_settings(CFG["backtest"]),
    )
    got = fit.fit_forecast(
        name,
        panel,
        **settings,
        models_cfg=MODEL_CFG,
        percent_metrics=CFG["etl"]["percent_metrics"],
    ).drop(columns="fit_seconds")
    expected = reference_fit(
        name,
        panel,
        horizon=CFG["forecast"]["horizon"],
        season=CFG["backtest"]["season"] or 24,
        max_hours=MODEL_CFG.max_history_hours,
        percent_metrics=CFG["etl"]["percent_metrics"],
    )
    assert_same(got, expected)
    assert {"none (no_data)", "naive (constant)"} <= set(got["model_used"])


def test_plans_are_the_per_series_plans():
    for seed in range(4):
        panel = odd_panel(seed, days=12, shuffled=seed % 2 == 1)
        for windows, horizon, step, selection in [(3, 24, None, 1), (2, 24, 12, 2), (5, 30, 7, 0)]:
            got = backtest.plan_backtest(
                panel,
                windows=windows,
                horizon=horizon,
                step=step,
                selection_windows=selection,
                fleet_checked=True,
            )
            expected = reference_plan(
                panel,
                windows=windows,
                horizon=horizon,
                step=step,
                selection_windows=selection,
                season=24,
            )
            assert got.members == expected.members
            for table in ("windows", "skipped", "grid", "cutoffs"):
                assert_same(getattr(got, table), getattr(expected, table))


def reference_grid_error(panel: pd.DataFrame, freq: str) -> InputDataError | None:
    """The error the grid's checks raised, row by row in panel order."""
    frame = panel[["series_id", "timestamp", "y"]].copy()
    frame["timestamp"] = pd.to_datetime(frame["timestamp"], utc=True)
    end = frame.groupby("series_id")["timestamp"].transform("max")
    off_grid = ((end - frame["timestamp"]) % pd.Timedelta(freq)) != pd.Timedelta(0)
    if off_grid.any():
        row = int(np.flatnonzero(off_grid.to_numpy())[0])
        stamp, last = frame["timestamp"].iloc[row], end.iloc[row]
        problem = f"timestamp {stamp} is not on the {freq} grid ending at {last}"
        return InputDataError("panel", problem, column="timestamp", row=row)
    duplicated = frame.duplicated(["series_id", "timestamp"])
    if duplicated.any():
        row = int(np.flatnonzero(duplicated.to_numpy())[0])
        problem = "duplicate series_id x timestamp"
        return InputDataError("panel", problem, column="timestamp", row=row)
    return None


def test_grid_checks_report_the_rows_they_did():
    base = odd_panel(13, days=6, shuffled=True)
    off = base.copy()
    off.loc[[40, 7], "timestamp"] += pd.Timedelta(minutes=30)
    repeated = pd.concat([base, base.iloc[[30, 5, 30]]], ignore_index=True)
    missing = base.copy()
    missing["timestamp"] = missing["timestamp"].astype(object)
    missing.loc[[9], "timestamp"] = pd.NaT
    everywhere = repeated.copy()
    everywhere.loc[len(base) + 1, "timestamp"] += pd.Timedelta(minutes=1)
    for panel in (off, repeated, missing, everywhere):
        expected = reference_grid_error(panel, "1h")
        with pytest.raises(InputDataError) as raised:
            backtest.regular_grid(panel, "1h")
        assert str(raised.value) == str(expected)
    assert reference_grid_error(base, "1h") is None


def test_a_too_short_shard_still_fails_unless_the_fleet_was_checked():
    panel = odd_panel(14, days=6)
    with pytest.raises(ConfigError, match=r"backtest\.windows"):
        backtest.plan_backtest(panel, windows=3, horizon=72, selection_windows=1)
    plan = backtest.plan_backtest(
        panel, windows=3, horizon=72, selection_windows=1, fleet_checked=True
    )
    expected = reference_plan(
        panel, windows=3, horizon=72, step=None, selection_windows=1, season=24
    )
    assert plan.windows["n_series"].tolist()[0] == 0
    assert plan.members == expected.members
    assert_same(plan.skipped, expected.skipped)


# ---------------------------------------------------------------------------------------------
# Theta's simulated intervals


def fitted_statsforecast_models() -> list:
    from statsforecast.models import AutoETS, AutoTheta, Theta

    rng = np.random.default_rng(17)
    models = []
    for k in range(24):
        n = int(rng.integers(60, 400))
        t = np.arange(n)
        y = 50 + 10 * np.sin(2 * np.pi * t / 24) + rng.normal(0, 2 + k % 3, n) + 0.02 * k * t
        if k % 6 == 5:
            y = np.full(n, 7.0) + 1e-9 * (t % 2)  # (almost) constant
        template = [
            Theta(season_length=24),
            AutoTheta(season_length=24),
            Theta(season_length=24, decomposition_type="additive"),
            AutoETS(season_length=24, model="AZN"),
        ][k % 4]
        models.append(template.fit(y))
    return models


@pytest.mark.parametrize("horizon", [168, 24, 1])
def test_theta_intervals_simulated_together_are_statsforecasts(horizon):
    from capforecast.forecast.models.stats import predict_many

    models = fitted_statsforecast_models()
    levels = [50, 80, 90, 96]
    np.random.seed(5)
    expected = [model.predict(h=horizon, level=levels) for model in models]
    state = np.random.get_state()
    np.random.seed(6)
    got = predict_many(models, horizon, levels)
    for one, other in zip(np.random.get_state(), state, strict=True):
        np.testing.assert_array_equal(one, other)  # the random state statsforecast leaves
    for output, reference in zip(got, expected, strict=True):
        assert list(output) == list(reference)
        for key, values in reference.items():
            assert output[key].dtype == values.dtype
            np.testing.assert_array_equal(output[key].view(np.uint8), values.view(np.uint8))
    assert predict_many(models[:2], horizon, [])[0].keys() == {"mean"}


def test_theta_in_worker_processes_is_theta_in_one():
    rng = np.random.default_rng(18)
    n = 100
    parts = [
        series(
            f"s{k:02d}|cpu_utilization", 50 + 10 * np.sin(np.arange(n) / 4) + rng.normal(0, 3, n)
        )
        for k in range(70)  # enough for the process pool (stats._MIN_SERIES_FOR_POOL)
    ]
    history = pd.concat(parts, ignore_index=True)
    request = ForecastRequest(history=history, horizon=24, quantiles=QUANTILES)
    one = MODEL_REGISTRY["theta"](request, MODEL_CFG)
    two = MODEL_REGISTRY["theta"](dataclasses.replace(request, n_jobs=2), MODEL_CFG)
    assert_same(two, one)
