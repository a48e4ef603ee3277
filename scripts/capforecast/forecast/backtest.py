"""Rolling-origin backtest, identical for every model.

Windows follow statsforecast's ``cross_validation`` arithmetic, end-aligned per series: window
``k`` of a series cuts its history ``horizon + step * (windows - 1 - k)`` steps before that
series' own last timestamp. Series that stop early (decommissioned instances, or real data sets
whose files cover different months) are therefore scored on their own last windows instead of
being skipped. Each window's model call sees only rows with ``timestamp <= cutoff`` of each
series: the history is sliced before the model is called, so no model can peek at the actuals
it is scored on.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC
from typing import Any

import numpy as np
import pandas as pd

from capforecast.errors import ConfigError, ForecastInputError, InputDataError
from capforecast.forecast.models.base import (
    ForecastRequest,
    ModelFn,
    SeriesBlocks,
    finalize_forecast,
    forecast_columns,
    renumbered,
    series_blocks,
)
from capforecast.forecast.models.fallback import history_cap
from capforecast.settings import ModelSettings

LOGGER = logging.getLogger(__name__)

SKIPPED_COLUMNS: tuple[str, ...] = ("series_id", "window", "reason")
WINDOW_COLUMNS: tuple[str, ...] = (
    "window",
    "is_selection_window",
    "cutoff",
    "test_start",
    "test_end",
    "n_series",
)

# Reasons a series is left out of a window (recorded in the skipped table, never silent).
REASON_NOT_STARTED = "no history before the cutoff"
REASON_TOO_SHORT = "history shorter than min_train_points"
REASON_NO_ACTUALS = "no actuals in the test window"
REASON_MODEL_OMITTED = "model returned no forecast for this series"


def backtest_cutoffs(n: int, windows: int, horizon: int, step: int | None = None) -> list[int]:
    """Training lengths of the ``windows`` rolling-origin windows on a grid of ``n`` steps.

    Same arithmetic as statsforecast ``cross_validation(h=horizon, n_windows=windows,
    step_size=step)``: ``test_size = horizon + step * (windows - 1)`` and window ``k``
    (0 = earliest) trains on positions ``[0, c_k)`` and is tested on ``[c_k, c_k + horizon)``
    with ``c_k = n - horizon - step * (windows - 1 - k)``. The last window's test therefore ends
    exactly at ``n``. ``step`` defaults to ``horizon``, which gives ``n - K*H, ..., n - H``.
    With ``step < horizon`` consecutive test windows overlap.

    Raises ``ConfigError`` when the grid is too short for the earliest window to have any
    training data.
    """
    step = horizon if step is None else step
    if windows < 1:
        raise ConfigError("backtest.windows", f"must be at least 1, got {windows}")
    if horizon < 1:
        raise ConfigError("backtest.horizon", f"must be at least 1, got {horizon}")
    if step < 1:
        raise ConfigError("backtest.step", f"must be at least 1, got {step}")
    cutoffs = [n - horizon - step * (windows - 1 - k) for k in range(windows)]
    if cutoffs[0] < 1:
        needed = horizon + step * (windows - 1) + 1
        raise ConfigError(
            "backtest.windows",
            f"{windows} windows of horizon {horizon} and step {step} need at least {needed} "
            f"time steps of history; the panel has {n}",
        )
    return cutoffs


@dataclass(frozen=True)
class GridLayout:
    """Where each series is in a regular grid (``regular_grid``: sorted by series_id).

    Series ``i`` (``ids[i]``) is rows ``starts[i]:ends[i]``, the first at ``first[i]`` (UTC
    nanoseconds), one row per ``step`` nanoseconds.
    """

    ids: np.ndarray
    starts: np.ndarray
    ends: np.ndarray
    first: np.ndarray
    step: int

    @property
    def last(self) -> np.ndarray:
        """Each series' last timestamp (UTC nanoseconds)."""
        return self.first + (self.ends - self.starts - 1) * self.step


@dataclass(frozen=True)
class WindowRows:
    """A window of a plan in grid rows: each series' cutoff row (before its first row when it
    had not started) and whether it is scored."""

    cutoff_row: np.ndarray
    scored: np.ndarray


@dataclass(frozen=True)
class BacktestPlan:
    """Which series each window trains and scores, decided from the data alone.

    windows: one row per internal window (``WINDOW_COLUMNS``); timestamps are UTC.
    members: per window, the series scored in it.
    skipped: ``series_id, window, reason`` for every series left out of a window.
    grid: the panel on a regular grid per series (first to last timestamp, missing rows NaN).
    cutoffs: ``series_id, cutoff_<window>...``: each series' cutoff in every window.
    layout, rows: where each series is in ``grid``, and each window in grid rows (what
      ``run_backtest`` slices the grid by).
    """

    windows: pd.DataFrame
    members: dict[int, list[str]]
    skipped: pd.DataFrame
    grid: pd.DataFrame
    cutoffs: pd.DataFrame
    layout: GridLayout | None = field(default=None, repr=False, compare=False)
    rows: dict[int, WindowRows] = field(default_factory=dict, repr=False, compare=False)


def regular_grid(panel: pd.DataFrame, freq: str, *, source: str = "panel") -> pd.DataFrame:
    """Reindex each series onto a regular ``freq`` grid from its first to its last timestamp.

    Missing rows become NaN ``y`` (a gap the models already handle), which keeps the request
    contract "regular grid" true. Each series' timestamps must sit on the ``freq`` grid that ends
    at its own last timestamp.
    """
    return _regular_grid(panel, freq, source)[0]


def _regular_grid(panel: pd.DataFrame, freq: str, source: str) -> tuple[pd.DataFrame, GridLayout]:
    """``regular_grid`` and where each series is in it.

    Vectorised over the fleet (one reindex per series was the slowest part of a backtest of the
    cheap models): the series are the runs of ids (``series_blocks``), a sorted panel with every
    step of each series (a feature panel) is its own grid, any other is sorted once and its rows
    placed on the grid by position.
    """
    for column in ("series_id", "timestamp", "y"):
        if column not in panel.columns:
            raise InputDataError(source, "missing", column=column)
    if panel.empty:
        raise InputDataError(source, "has no rows")
    step = int(pd.Timedelta(freq).value)
    series_id = panel["series_id"]
    timestamp = _as_utc(panel["timestamp"])
    stamps = pd.DatetimeIndex(timestamp).as_unit("ns").asi8
    y = panel["y"].astype(float).to_numpy()
    blocks = series_blocks(series_id)
    if pd.isna(blocks.ids).any():
        row = int(np.flatnonzero(series_id.isna().to_numpy())[0])
        raise InputDataError(source, "missing series_id", column="series_id", row=row)
    by_id = np.argsort(blocks.ids)  # what pd.factorize(sort=True) orders them by
    ids = np.asarray(blocks.ids[by_id], dtype=object)
    # A feature panel is sorted and has every step of each series: then it is its own grid.
    steps = np.diff(stamps)
    between = blocks.starts[1:] - 1
    if blocks.order is None and (np.diff(by_id) == 1).all() and (stamps != pd.NaT.value).all():
        next_row = steps == step
        next_row[between] = True
        if next_row.all():
            grid = _grid_frame(np.repeat(ids, blocks.lengths), stamps, y)
            return grid, GridLayout(ids, blocks.starts, blocks.ends, stamps[blocks.starts], step)
    rank = np.empty_like(by_id)
    rank[by_id] = np.arange(len(by_id))
    codes = rank[blocks.codes]
    # By series, then timestamp (NaT first), stable: nothing to do for a sorted panel.
    rising = steps >= 0
    rising[between] = True
    if blocks.order is None and (np.diff(by_id) == 1).all() and rising.all():
        order = np.arange(len(codes))
        sorted_codes, sorted_stamps, sorted_y = codes, stamps, y
    else:
        order = np.lexsort((stamps, codes))
        sorted_codes, sorted_stamps, sorted_y = codes[order], stamps[order], y[order]
    first_row = np.flatnonzero(np.r_[True, sorted_codes[1:] != sorted_codes[:-1]])
    last_row = np.r_[first_row[1:], len(order)] - 1
    end = sorted_stamps[last_row]  # the latest timestamp (NaT only when all are)
    off_grid = (stamps == pd.NaT.value) | ((end[codes] - stamps) % step != 0)
    if off_grid.any():
        row = int(np.flatnonzero(off_grid)[0])
        series_end = end[codes[row]]
        shown = pd.NaT if series_end == pd.NaT.value else pd.Timestamp(series_end, tz="UTC")
        raise InputDataError(
            source,
            f"timestamp {timestamp.iloc[row]} is not on the {freq} grid ending at {shown}",
            column="timestamp",
            row=row,
        )
    repeated = (sorted_codes[1:] == sorted_codes[:-1]) & (sorted_stamps[1:] == sorted_stamps[:-1])
    if repeated.any():
        # The first row (in panel order) that repeats an earlier one: what frame.duplicated flags.
        row = int(order[1:][repeated].min())
        raise InputDataError(source, "duplicate series_id x timestamp", column="timestamp", row=row)
    starts = sorted_stamps[first_row]
    lengths = (end - starts) // step + 1
    offsets = np.r_[0, np.cumsum(lengths)[:-1]]
    values = np.full(int(lengths.sum()), np.nan)
    values[offsets[sorted_codes] + (sorted_stamps - starts[sorted_codes]) // step] = sorted_y
    grid_stamps = np.repeat(starts - offsets * step, lengths) + np.arange(len(values)) * step
    grid = _grid_frame(np.repeat(ids, lengths), grid_stamps, values)
    return grid, GridLayout(ids, offsets, offsets + lengths, starts, step)


def _grid_frame(series_ids: np.ndarray, stamps: np.ndarray, y: np.ndarray) -> pd.DataFrame:
    """The grid's columns (arrays of its own: not copied again)."""
    timestamps = pd.DatetimeIndex(stamps.view("M8[ns]")).tz_localize("UTC")
    return pd.DataFrame({"series_id": series_ids, "timestamp": timestamps, "y": y}, copy=False)


def _as_utc(timestamps: pd.Series) -> pd.Series:
    """``pd.to_datetime(timestamps, utc=True)``, which returns a column already in UTC
    nanoseconds as it is (checking it costs more than a cheap model's forecast)."""
    dtype = timestamps.dtype
    if isinstance(dtype, pd.DatetimeTZDtype) and dtype.unit == "ns" and dtype.tz is UTC:
        return timestamps
    return pd.to_datetime(timestamps, utc=True)


def plan_backtest(
    panel: pd.DataFrame,
    *,
    windows: int,
    horizon: int,
    step: int | None = None,
    selection_windows: int = 0,
    season: int = 24,
    freq: str = "1h",
    min_train_points: int | None = None,
    fleet_checked: bool = False,
) -> BacktestPlan:
    """Lay out the internal windows (selection windows first) and who is scored in each.

    Cutoffs follow ``backtest_cutoffs`` per series, end-aligned on each series' own last
    timestamp: window ``k`` cuts ``horizon + step * (internal - 1 - k)`` steps before it
    (``series_cutoffs``). A series is skipped for a window, with the reason recorded, when it
    has no data at or before its cutoff, fewer than ``min_train_points`` non-missing training
    values (default ``2 * season``, so the MASE scale rests on at least ``season`` seasonal
    differences), or no actual in the test window. The ``windows`` table reports the cutoff of
    the series that end last (the fleet's most recent windows).

    A panel whose longest series cannot hold the earliest window is a ConfigError naming
    ``backtest.windows``, unless ``fleet_checked``: the panel is one shard of a fleet whose
    longest series was checked (``history_check.check_fleet``), and its series are skipped
    window by window as they would be in the whole fleet's plan.
    """
    internal = selection_windows + windows
    min_points = 2 * season if min_train_points is None else min_train_points
    delta = pd.Timedelta(freq)
    grid, layout = _regular_grid(panel, freq, "panel")
    n = int(((layout.last - layout.first) // layout.step).max()) + 1
    try:
        # Only validates the arithmetic against the longest series; positions are per series.
        backtest_cutoffs(n, internal, horizon, step)
    except ConfigError as error:
        # A shard's longest series is not the fleet's (checked already): its series are
        # skipped window by window below, as in the fleet's plan.
        if not (fleet_checked and error.key == "backtest.windows"):
            if selection_windows:
                raise ConfigError(
                    "backtest.windows",
                    f"{error.problem} (windows + selection_windows = {internal})",
                ) from error
            raise

    index = pd.Index(layout.ids, name="series_id")
    last = pd.Series(pd.DatetimeIndex(layout.last.view("M8[ns]")).tz_localize("UTC"), index=index)
    cutoffs = series_cutoffs(last, internal, horizon, step, freq)
    keys = [str(sid) for sid in layout.ids]
    # Each series is regular from its first to its last timestamp: "at or before the cutoff" is
    # a range of its rows, and the observations in a range a difference of one running count.
    observed = np.r_[0, np.cumsum(~np.isnan(grid["y"].to_numpy()))]
    window_rows, members, skipped, rows = [], {}, [], {}
    latest_end = last.max()
    for window in range(internal):
        cutoff_row = layout.ends - 1 - _offset_steps(window, internal, horizon, step)
        late = cutoff_row < layout.starts
        # Not started: no training rows (and the test rows do not matter).
        last_train = np.maximum(cutoff_row, layout.starts - 1)
        n_train = observed[last_train + 1] - observed[layout.starts]
        test_end = np.clip(cutoff_row + horizon, layout.starts - 1, layout.ends - 1)
        n_test = observed[test_end + 1] - observed[last_train + 1]
        scored = ~late & (n_train >= min_points) & (n_test > 0)
        for i in np.flatnonzero(~scored):
            if late[i]:
                reason = REASON_NOT_STARTED
            elif n_train[i] < min_points:
                reason = f"{REASON_TOO_SHORT} ({int(n_train[i])} < {min_points})"
            else:
                reason = REASON_NO_ACTUALS
            skipped.append({"series_id": keys[i], "window": window, "reason": reason})
        members[window] = [keys[i] for i in np.flatnonzero(scored)]
        rows[window] = WindowRows(cutoff_row, scored)
        fleet_cutoff = latest_end - _offset_steps(window, internal, horizon, step) * delta
        window_rows.append(
            {
                "window": window,
                "is_selection_window": window < selection_windows,
                "cutoff": fleet_cutoff,
                "test_start": fleet_cutoff + delta,
                "test_end": fleet_cutoff + horizon * delta,
                "n_series": int(scored.sum()),
            }
        )
    return BacktestPlan(
        windows=pd.DataFrame(window_rows, columns=list(WINDOW_COLUMNS)),
        members=members,
        skipped=pd.DataFrame(skipped, columns=list(SKIPPED_COLUMNS)),
        grid=grid,
        cutoffs=cutoffs,
        layout=layout,
        rows=rows,
    )


def _offset_steps(window: int, internal: int, horizon: int, step: int | None) -> int:
    """Steps between a series' last timestamp and its cutoff in ``window``."""
    step = horizon if step is None else step
    return horizon + step * (internal - 1 - window)


def series_cutoffs(
    last_timestamps: pd.Series, internal: int, horizon: int, step: int | None, freq: str
) -> pd.DataFrame:
    """``series_id, cutoff_0 .. cutoff_{internal-1}``: each window's cutoff per series."""
    delta = pd.Timedelta(freq)
    out = pd.DataFrame({"series_id": last_timestamps.index.astype(str)})
    for window in range(internal):
        offset = _offset_steps(window, internal, horizon, step) * delta
        out[f"cutoff_{window}"] = (last_timestamps - offset).to_numpy()
    return out


def window_spans(predictions: pd.DataFrame) -> pd.DataFrame:
    """``cutoff`` and ``test_end`` (last forecast timestamp) per ``window, series_id``.

    Small (a row per series and window): the spans of several shards concatenated are the
    fleet's, so ``earlier_windows`` can be decided for the fleet without all its predictions.
    """
    return predictions.groupby(["window", "series_id"]).agg(
        cutoff=("cutoff", "first"), test_end=("timestamp", "max")
    )


def earlier_windows(predictions: pd.DataFrame, window: int) -> list[int]:
    """Windows before ``window`` whose actuals all precede ``window``'s cutoff, per series.

    Cutoffs are per series, so the check is too: a window ``v`` qualifies when, for every series
    forecast in both, v's last forecast timestamp is at or before w's cutoff of that series
    (with ``step < horizon`` the windows just before ``w`` overlap it and are left out).
    """
    return earlier_windows_in_spans(window_spans(predictions), window)


def earlier_windows_in_spans(spans: pd.DataFrame, window: int) -> list[int]:
    """``earlier_windows`` from ``window_spans`` (of one shard or of the whole fleet)."""
    if window not in spans.index.get_level_values("window"):
        return []
    current = spans.xs(window, level="window")["cutoff"]
    result = []
    for other in sorted(set(spans.index.get_level_values("window"))):
        if other >= window:
            continue
        ends = spans.xs(other, level="window")["test_end"]
        common = ends.index.intersection(current.index)
        if len(common) and (ends[common] <= current[common]).all():
            result.append(int(other))
    return result


def assert_no_peeking(
    used: pd.DataFrame, current: pd.DataFrame, window: int, purpose: str = "selection"
) -> None:
    """Every actual used for window ``window``'s choice precedes that series' cutoff."""
    if used.empty:
        return
    cutoffs = current.groupby("series_id")["cutoff"].first()
    last_used = used.groupby("series_id")["timestamp"].max()
    common = last_used.index.intersection(cutoffs.index)
    assert (last_used[common] <= cutoffs[common]).all(), (
        f"{purpose} for window {window} would use actuals after its cutoff"
    )


def _checked_forecast(
    forecast: pd.DataFrame,
    request: ForecastRequest,
    model_name: str,
    window: int,
    cutoffs: pd.Series,
) -> tuple[pd.DataFrame, SeriesBlocks, pd.Series]:
    """Validate a model's output against the ModelFn contract, then sort and clip it.

    Also returns the series of its rows and each row's cutoff (a row per row of the output).
    """
    needed = ["series_id", "timestamp", *forecast_columns(request.quantiles), "model_used"]
    missing = [c for c in needed if c not in forecast.columns]
    if missing:
        raise ForecastInputError(
            f"model '{model_name}' window {window}: forecast lacks columns {', '.join(missing)}"
        )
    out = forecast[needed].copy()
    out["timestamp"] = _as_utc(out["timestamp"])
    delta = pd.Timedelta(request.freq)
    blocks = series_blocks(out["series_id"])
    cutoff = pd.Series(cutoffs.reindex(blocks.ids).array.take(blocks.codes), index=out.index)
    stray = ~((out["timestamp"] > cutoff) & (out["timestamp"] <= cutoff + request.horizon * delta))
    if stray.any():
        row = out[stray].iloc[0]
        raise ForecastInputError(
            f"model '{model_name}' window {window}: forecast timestamp {row['timestamp']} of "
            f"{row['series_id']} is outside its test window after {cutoffs.get(row['series_id'])}"
        )
    # Same post-processing for every model, whatever it already did itself.
    return finalize_forecast(out, request), blocks, cutoff


def _ranges(starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """The positions ``starts[i]:ends[i]`` of every ``i``, one after the other."""
    lengths = ends - starts
    shifts = starts - np.r_[0, np.cumsum(lengths)[:-1]]
    return np.repeat(shifts, lengths) + np.arange(int(lengths.sum()))


def run_backtest(
    panel: pd.DataFrame,
    model_fn: ModelFn,
    model_name: str,
    *,
    windows: int,
    horizon: int,
    step: int | None = None,
    quantiles: Sequence[float] = (0.1, 0.5, 0.9),
    season: int = 24,
    bounds: Mapping[str, tuple[float, float | None]] | None = None,
    n_jobs: int = 1,
    model_cfg: ModelSettings,
    selection_windows: int = 0,
    freq: str = "1h",
    min_train_points: int | None = None,
    fleet_checked: bool = False,
) -> pd.DataFrame:
    """Backtest one model on rolling-origin windows and return its predictions.

    Internal windows = ``selection_windows + windows`` (see ``plan_backtest``); window 0 is the
    earliest and the first ``selection_windows`` are flagged ``is_selection_window`` (they only
    give the model choice of the first scored window earlier scores to use). For each window
    the model is called once on all its series with the history sliced to
    ``timestamp <= cutoff``.

    Returns one row per series x window x horizon step: ``model, series_id, window,
    is_selection_window, cutoff, timestamp, y, mean, <quantile columns>, model_used,
    fit_seconds`` where ``fit_seconds`` is that window's wall time divided evenly across its
    series. ``y`` is NaN where the series has no actual. Series left out of a window are listed
    in ``skipped_table(predictions)`` (``predictions.attrs["skipped"]``) with the reason.

    Every window gets the same ``ForecastRequest.fitted_models`` store (AutoETS searches its
    model form once per series, in its earliest window, and re-estimates that form's parameters
    in the later ones). Windows run earliest first, so whatever is reused was learnt from data
    before the current cutoff. ``fleet_checked``: ``panel`` is one shard (``plan_backtest``).

    The grid is sliced by row ranges (the plan's rows of each series and window), not by
    comparing every row's timestamp with its series' cutoff.
    """
    levels = tuple(sorted({float(q) for q in quantiles} | {0.5}))
    max_points = history_cap(
        model_name,
        model_cfg.max_history_hours,
        horizon=horizon,
        season=season,
        freq=freq,
    )
    plan = plan_backtest(
        panel,
        windows=windows,
        horizon=horizon,
        step=step,
        selection_windows=selection_windows,
        season=season,
        freq=freq,
        min_train_points=min_train_points,
        fleet_checked=fleet_checked,
    )
    grid, layout, window_rows = plan.grid, plan.layout, plan.rows
    grid_y = grid["y"].to_numpy()
    grid_stamps = pd.DatetimeIndex(grid["timestamp"]).asi8
    grid_index = {sid: i for i, sid in enumerate(plan.cutoffs["series_id"])}
    cutoff_table = plan.cutoffs.set_index("series_id")
    skipped = plan.skipped.to_dict("records")
    value_columns = forecast_columns(levels)
    fitted_models: dict[Any, Any] = {}
    frames, frame_series = [], []
    for spec in plan.windows.sort_values("window").itertuples(index=False):
        window = int(spec.window)
        series = plan.members[window]
        if not series:
            continue
        cutoffs = cutoff_table[f"cutoff_{window}"]
        scored_series = np.flatnonzero(window_rows[window].scored)
        last_row = window_rows[window].cutoff_row[scored_series]
        first_row = layout.starts[scored_series]
        if max_points is not None:
            first_row = np.maximum(first_row, last_row - max_points + 1)
        rows = _ranges(first_row, last_row + 1)
        # The leakage guard: the model never receives a row after its series' cutoff.
        series_cutoff = pd.DatetimeIndex(cutoffs).asi8[scored_series]
        assert (grid_stamps[rows] <= np.repeat(series_cutoff, last_row + 1 - first_row)).all()
        request = ForecastRequest(
            history=renumbered(grid.take(rows)),
            horizon=horizon,
            quantiles=levels,
            freq=freq,
            season=season,
            bounds={s: tuple(bounds[s]) for s in series if bounds and s in bounds},
            n_jobs=n_jobs,
            fitted_models=fitted_models,
        )
        started = time.perf_counter()
        raw = model_fn(request, model_cfg)
        elapsed = time.perf_counter() - started
        forecast, blocks, cutoff = _checked_forecast(raw, request, model_name, window, cutoffs)
        members = set(series)
        returned = [sid for sid in blocks.ids if sid in members]
        keep = np.isin(blocks.codes, [i for i, sid in enumerate(blocks.ids) if sid in members])
        if not keep.all():
            forecast, cutoff = forecast.take(np.flatnonzero(keep)), cutoff[keep]
        returned_set = set(returned)
        for sid in series:
            if sid not in returned_set:
                LOGGER.warning(
                    "%s window %d: %s: %s", model_name, window, sid, REASON_MODEL_OMITTED
                )
                skipped.append({"series_id": sid, "window": window, "reason": REASON_MODEL_OMITTED})
        row_series = np.array([grid_index[sid] for sid in blocks.ids], dtype=np.int64)
        row_series = row_series[blocks.codes][keep]
        scored = renumbered(forecast)
        scored["y"] = _actuals(scored["timestamp"], row_series, window_rows[window], layout, grid_y)
        scored["model"] = model_name
        scored["window"] = window
        scored["is_selection_window"] = bool(spec.is_selection_window)
        scored["cutoff"] = cutoff.array
        scored["fit_seconds"] = elapsed / len(series)
        frames.append(scored)
        frame_series.append(row_series)
    columns = [
        "model",
        "series_id",
        "window",
        "is_selection_window",
        "cutoff",
        "timestamp",
        "y",
        *value_columns,
        "model_used",
        "fit_seconds",
    ]
    if frames:
        predictions = pd.concat(frames, ignore_index=True)[columns]
        # By series_id, window, timestamp (stable), on integer keys: the series' grid order is
        # the sorted order of their ids.
        order = np.lexsort(
            (
                pd.DatetimeIndex(predictions["timestamp"]).as_unit("ns").asi8,
                predictions["window"].to_numpy(),
                np.concatenate(frame_series),
            )
        )
        predictions = renumbered(predictions.take(order))
    else:
        predictions = pd.DataFrame({c: pd.Series(dtype=float) for c in columns})
        predictions = predictions.sort_values(["series_id", "window", "timestamp"], kind="stable")
        predictions = predictions.reset_index(drop=True)
    predictions.attrs["skipped"] = skipped
    return predictions


def _actuals(
    timestamps: pd.Series,
    row_series: np.ndarray,
    window: WindowRows,
    layout: GridLayout,
    grid_y: np.ndarray,
) -> np.ndarray:
    """The actual of every forecast row: the grid's ``y`` of its series at its timestamp when
    that is after the series' cutoff (NaN otherwise, or off the grid)."""
    stamps = pd.DatetimeIndex(timestamps).as_unit("ns").asi8
    since_first = stamps - layout.first[row_series]
    row = layout.starts[row_series] + since_first // layout.step
    found = (
        (since_first % layout.step == 0)
        & (row > window.cutoff_row[row_series])
        & (row < layout.ends[row_series])
    )
    return np.where(found, grid_y[np.where(found, row, 0)], np.nan)


def skipped_table(predictions: pd.DataFrame) -> pd.DataFrame:
    """The ``series_id, window, reason`` rows ``run_backtest`` left out of its predictions."""
    records = predictions.attrs.get("skipped", [])
    return pd.DataFrame(list(records), columns=list(SKIPPED_COLUMNS))
