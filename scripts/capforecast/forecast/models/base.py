"""The contract every forecaster follows, so backtests, selection and final fits treat all alike."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from capforecast.contracts import quantile_column
from capforecast.settings import ModelSettings


@dataclass(frozen=True)
class ForecastRequest:
    """Everything a model needs to forecast a panel of series.

    history: columns ``series_id, timestamp, y`` on a regular grid at ``freq`` (sorted by
      series_id, timestamp; timestamps tz-aware UTC). ``y`` may be NaN inside long gaps.
    horizon: steps to forecast after each series' last timestamp.
    quantiles: sorted, in (0, 1); always contains 0.5.
    season: season length in steps (24 for hourly data with a daily cycle).
    bounds: per series_id (lower, upper) physical bounds; upper None = unbounded.
    n_jobs: cores the model may use.
    fitted_models: None = fit every series from scratch. A dict (owned by one model's backtest
      run) lets a model keep what it learnt about a series in an earlier, earlier-cutoff window
      (AutoETS: the model form its search chose, so later windows only re-estimate parameters).
      It was learnt before an earlier cutoff, hence before this one: nothing leaks.
    """

    history: pd.DataFrame
    horizon: int
    quantiles: tuple[float, ...]
    freq: str = "1h"
    season: int = 24
    bounds: dict[str, tuple[float, float | None]] = field(default_factory=dict)
    n_jobs: int = 1
    fitted_models: dict[Any, Any] | None = None


# Output of every model: series_id, timestamp, mean, one column per quantile
# (contracts.quantile_column), and ``model_used`` (the model that actually produced the row,
# different from the requested one when a series was too short and fell back).
ModelFn = Callable[[ForecastRequest, ModelSettings], pd.DataFrame]


def forecast_columns(quantiles: tuple[float, ...] | list[float]) -> list[str]:
    return ["mean", *[quantile_column(q) for q in quantiles]]


def future_timestamps(last: pd.Timestamp, horizon: int, freq: str) -> pd.DatetimeIndex:
    return pd.date_range(last, periods=horizon + 1, freq=freq)[1:]


def finalize_forecast(frame: pd.DataFrame, request: ForecastRequest) -> pd.DataFrame:
    """Make quantiles monotone (sort across levels) and clip to physical bounds.

    Returns a new frame; its other columns are ``frame``'s own (not copied, never written to).
    """
    cols = [quantile_column(q) for q in request.quantiles]
    values = np.sort(frame[cols].to_numpy(dtype=float), axis=1)
    out = frame.copy(deep=False)
    if request.bounds:
        # A series without bounds is clipped at 0 below and not above; an upper bound of None
        # (or 0) means unbounded. Looked up per series, not per row: this runs on every forecast.
        lower, upper = _row_bounds(frame["series_id"], request.bounds)
        values = _clip(values, lower[:, None], upper[:, None])
        mean = frame["mean"]
        if mean.dtype == np.float64:
            out["mean"] = _clip(mean.to_numpy(), lower, upper)
        else:
            index = mean.index
            out["mean"] = mean.clip(pd.Series(lower, index=index), pd.Series(upper, index=index))
    out[cols] = values
    return out


def _row_bounds(
    series_id: pd.Series, bounds: dict[str, tuple[float, float | None]]
) -> tuple[np.ndarray, np.ndarray]:
    """Lower and upper bound of every row (0 and +inf for a series without bounds)."""
    blocks = series_blocks(series_id)
    lower = np.full(len(blocks), np.nan)
    upper = np.full(len(blocks), np.nan)
    for i, sid in enumerate(blocks.ids):
        if sid in bounds:
            low, high = bounds[sid]
            lower[i], upper[i] = float(low), float(high or np.inf)
    lower[np.isnan(lower)] = 0.0
    upper[np.isnan(upper)] = np.inf
    return lower[blocks.codes], upper[blocks.codes]


def _clip(values: np.ndarray, lower: np.ndarray, upper: np.ndarray) -> np.ndarray:
    """What pandas' ``clip`` with per-row bounds gives (NaN stays NaN; pandas compares the
    unclipped values with each bound, as here), on float arrays."""
    missing = np.isnan(values)
    clipped = np.where((values >= lower) | missing, values, lower)
    return np.where((values <= upper) | missing, clipped, upper)


# ---------------------------------------------------------------------------------------------
# Helpers shared by the model modules (added with the models; the contract above is unchanged).
# ---------------------------------------------------------------------------------------------

# Flags appended to ``model_used`` as "<model> (<flag>)" (contracts.model_used_label) so a reader
# sees why a series was not forecast by the requested model; FLAG_NO_DATA is in contracts.
FALLBACK = "fallback"
FLAG_TOO_SHORT = f"{FALLBACK}: too_short"
FLAG_MODEL_FAILED = f"{FALLBACK}: model_failed"
FLAG_CONSTANT = "constant"
FLAG_RECENTLY_CONSTANT = "constant_recently"


def fell_back(model_used: str) -> bool:
    """Whether a ``model_used`` label (or several joined by ``+``/``;``) records a fallback."""
    return f"({FALLBACK}:" in str(model_used)


def base_model_name(model_used: str) -> str:
    """The model part of a ``model_used`` label: ``"naive (constant)"`` -> ``"naive"``."""
    return model_used.split(" (", 1)[0]


def steps_per(period: str, freq: str) -> int:
    """Whole grid steps of ``freq`` in ``period`` (``steps_per("1D", "1h") == 24``), at least 1."""
    return max(1, round(pd.Timedelta(period) / pd.Timedelta(_as_timedelta_string(freq))))


def freq_step(freq: str) -> pd.Timedelta:
    """One step of the ``freq`` grid (``"1h"`` or ``"h"``: one hour)."""
    return pd.Timedelta(_as_timedelta_string(freq))


def _as_timedelta_string(freq: str) -> str:
    # pandas offset aliases "1h"/"5min" are also Timedelta strings; a bare unit ("h") is not.
    return freq if freq[:1].isdigit() else f"1{freq}"


def fill_missing(values: np.ndarray, season: int | None = None) -> np.ndarray:
    """A gap-free copy of ``values`` for models that need a regular grid.

    With ``season``, a missing value first takes the value one season earlier (then two, ...),
    so a day-long gap in an hourly series with a daily cycle keeps its cycle instead of becoming
    a straight line; what is left (gaps in the first season) is interpolated linearly, then the
    edge values are carried outwards. An all-NaN input stays all NaN.
    """
    return fill_missing_rows(np.asarray(values, dtype=float)[None, :], season)[0]


def fill_missing_rows(values: np.ndarray, season: int | None = None) -> np.ndarray:
    """``fill_missing`` of every row of the 2-D ``values`` (a copy), the seasonal filling done
    for all rows at once."""
    filled = np.array(values, dtype=float)
    if season and 0 < season < filled.shape[1]:
        while True:
            # Position t takes t - season, for every t at once; a gap longer than a season fills
            # over several rounds.
            source = filled[:, :-season]
            usable = np.isnan(filled[:, season:]) & ~np.isnan(source)
            if not usable.any():
                break
            filled[:, season:][usable] = source[usable]
    for row in np.flatnonzero(np.isnan(filled).any(axis=1)):
        _interpolate_edges(filled[row])
    return filled


def _interpolate_edges(values: np.ndarray) -> np.ndarray:
    """Linear interpolation inside, edge values carried outwards; all-NaN stays all-NaN."""
    missing = np.isnan(values)
    if not missing.any() or missing.all():
        return values
    positions = np.arange(values.size)
    present = ~missing
    values[missing] = np.interp(positions[missing], positions[present], values[present])
    return values


def quantile_frame(
    series_id: str,
    timestamps: pd.DatetimeIndex,
    mean: np.ndarray,
    quantile_values: dict[float, np.ndarray],
) -> pd.DataFrame:
    """One series' forecast in the contract layout (without ``model_used``)."""
    data: dict[str, Any] = {
        "series_id": series_id,
        "timestamp": timestamps,
        "mean": np.asarray(mean, dtype=float),
    }
    for q, values in quantile_values.items():
        data[quantile_column(q)] = np.asarray(values, dtype=float)
    return pd.DataFrame(data)


@dataclass(frozen=True)
class SeriesBlocks:
    """Where the rows of each series of a frame are, worked out once from its ``series_id``.

    Series come in order of first appearance, each with its rows in frame order: what
    ``groupby("series_id", sort=False)`` gives, without a pandas object per series.

    ids: one ``series_id`` per series. codes: the series (index into ``ids``) of every row.
    order: row positions grouped by series; None when each series' rows are already contiguous
      (a frame sorted by series_id), so that ``grouped(values)`` is ``values`` itself.
    starts, ends: series ``i`` is ``grouped(values)[starts[i]:ends[i]]``.
    """

    ids: np.ndarray
    codes: np.ndarray
    order: np.ndarray | None
    starts: np.ndarray
    ends: np.ndarray

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def lengths(self) -> np.ndarray:
        return self.ends - self.starts

    def grouped(self, values: np.ndarray) -> np.ndarray:
        """``values`` (one per row, frame order) with each series' rows together."""
        return values if self.order is None else values[self.order]

    def rows(self, grouped_positions: np.ndarray) -> np.ndarray:
        """Frame row positions of positions in ``grouped`` order."""
        return grouped_positions if self.order is None else self.order[grouped_positions]

    def positions(self) -> np.ndarray:
        """Every row's position within its series (0 = its first row), in frame order."""
        grouped = np.arange(len(self.codes)) - np.repeat(self.starts, self.lengths)
        if self.order is None:
            return grouped
        out = np.empty_like(grouped)
        out[self.order] = grouped
        return out


def series_blocks(series_id: pd.Series | np.ndarray) -> SeriesBlocks:
    """The ``SeriesBlocks`` of a ``series_id`` column (a missing id is a series of its own).

    A frame sorted by series_id (every request, grid and forecast here) has each series in one
    run of rows: the runs are found by comparing neighbours, far cheaper than hashing every row
    (``pd.factorize``), which is what any other frame gets.
    """
    values = series_id.to_numpy() if isinstance(series_id, pd.Series) else np.asarray(series_id)
    n = len(values)
    if n == 0:
        none = np.zeros(0, dtype=np.int64)
        return SeriesBlocks(np.asarray(values, dtype=object), none, None, none, none)
    change = np.ones(n, dtype=bool)
    change[1:] = values[1:] != values[:-1]
    heads = np.flatnonzero(change)
    if len(pd.unique(values[heads])) == len(heads):
        return SeriesBlocks(
            ids=np.asarray(values[heads], dtype=object),
            codes=np.cumsum(change) - 1,
            order=None,
            starts=heads,
            ends=np.append(heads[1:], n),
        )
    codes, ids = pd.factorize(values, sort=False, use_na_sentinel=False)
    counts = np.bincount(codes, minlength=len(ids))
    ends = np.cumsum(counts)
    return SeriesBlocks(
        ids=np.asarray(ids, dtype=object),
        codes=codes.astype(np.int64),
        order=np.argsort(codes, kind="stable"),
        starts=ends - counts,
        ends=ends,
    )


def iter_series(history: pd.DataFrame) -> Iterator[tuple[str, np.ndarray, pd.Timestamp]]:
    """``(series_id, y, last timestamp)`` per series, in order of first appearance.

    What ``groupby("series_id", sort=False)`` gives, without a DataFrame per series (which
    costs more than a baseline's whole forecast).
    """
    if history.empty:
        return
    blocks = series_blocks(history["series_id"])
    y = blocks.grouped(history["y"].to_numpy(dtype=float))
    last = history["timestamp"].iloc[blocks.rows(blocks.ends - 1)]
    for sid, start, end, stamp in zip(blocks.ids, blocks.starts, blocks.ends, last, strict=True):
        yield str(sid), y[start:end], stamp


def last_timestamps(history: pd.DataFrame, blocks: SeriesBlocks) -> pd.DatetimeIndex:
    """The timestamp of each series' last row (``blocks`` of ``history``), series order."""
    return pd.DatetimeIndex(history["timestamp"].array.take(blocks.rows(blocks.ends - 1)))


SeriesMatrixForecast = Callable[[np.ndarray], tuple[np.ndarray, dict[float, np.ndarray]]]


def forecast_by_length(request: ForecastRequest, forecast: SeriesMatrixForecast) -> pd.DataFrame:
    """The contract frame (without ``model_used``) of ``forecast`` on every series of ``request``.

    ``forecast(y) -> (point, {q: values})`` forecasts the series of one length together: ``y``
    is ``(series, steps)``, the results ``(series, horizon)``. Series come out in order of first
    appearance, as from ``iter_series``. A model's arithmetic on whole matrices costs a fraction
    of the same numpy calls made series by series.
    """
    history = request.history
    if history.empty:
        return empty_forecast_frame(request.quantiles).drop(columns="model_used")
    blocks = series_blocks(history["series_id"])
    y = blocks.grouped(history["y"].to_numpy(dtype=float))
    shape = (len(blocks), request.horizon)
    mean = np.empty(shape)
    values = {q: np.empty(shape) for q in request.quantiles}
    lengths = blocks.lengths
    for length in np.unique(lengths):
        members = np.flatnonzero(lengths == length)
        point, quantile_values = forecast(y[blocks.starts[members, None] + np.arange(length)])
        mean[members] = point
        for q in request.quantiles:
            values[q][members] = quantile_values[q]
    ids = [str(sid) for sid in blocks.ids]
    return forecast_frame(ids, last_timestamps(history, blocks), mean, values, request.freq)


def forecast_frame(
    series_ids: np.ndarray | list[str],
    last: pd.DatetimeIndex | list[pd.Timestamp],
    mean: np.ndarray,
    quantile_values: dict[float, np.ndarray],
    freq: str,
) -> pd.DataFrame:
    """The contract layout (without ``model_used``) of ``mean`` and ``quantile_values``, each
    ``(series, horizon)``: the forecast of series ``i`` for the steps after ``last[i]``."""
    horizon = mean.shape[1]
    step = freq_step(freq)
    lasts = pd.DatetimeIndex(last).as_unit("ns")
    offsets = pd.TimedeltaIndex(np.arange(1, horizon + 1) * step).as_unit("ns")
    data: dict[str, Any] = {
        "series_id": np.repeat(np.asarray(series_ids, dtype=object), horizon),
        "timestamp": lasts.repeat(horizon) + np.tile(offsets, len(lasts)),
        "mean": np.asarray(mean, dtype=float).ravel(),
    }
    for q, values in quantile_values.items():
        data[quantile_column(q)] = np.asarray(values, dtype=float).ravel()
    return pd.DataFrame(data)


class ForecastRows:
    """Per-series forecasts collected as arrays and turned into one contract frame at the end.

    Building a DataFrame (and a date range) per series costs more than most models' fits on
    hourly data; this builds the columns once. Rows come out in the order series were added.
    """

    def __init__(self, horizon: int, freq: str, quantiles: tuple[float, ...] | list[float]):
        self.horizon = horizon
        self.freq = freq
        self.quantiles = tuple(quantiles)
        self.series_ids: list[str] = []
        self.last_timestamps: list[pd.Timestamp] = []
        self.means: list[np.ndarray] = []
        self.quantile_values: dict[float, list[np.ndarray]] = {q: [] for q in self.quantiles}

    def add(
        self,
        series_id: str,
        last_timestamp: pd.Timestamp,
        mean: np.ndarray,
        quantile_values: dict[float, np.ndarray],
    ) -> None:
        """One series' forecast for the ``horizon`` steps after ``last_timestamp``."""
        self.series_ids.append(series_id)
        self.last_timestamps.append(pd.Timestamp(last_timestamp))
        self.means.append(np.asarray(mean, dtype=float))
        for q in self.quantiles:
            self.quantile_values[q].append(np.asarray(quantile_values[q], dtype=float))

    def frame(self) -> pd.DataFrame:
        """The contract layout (without ``model_used``): series_id, timestamp, mean, quantiles."""
        if not self.series_ids:
            return empty_forecast_frame(self.quantiles).drop(columns="model_used")
        shape = (len(self.series_ids), self.horizon)
        return forecast_frame(
            self.series_ids,
            self.last_timestamps,
            np.concatenate(self.means).reshape(shape),
            {q: np.concatenate(v).reshape(shape) for q, v in self.quantile_values.items()},
            self.freq,
        )


def empty_forecast_frame(quantiles: tuple[float, ...] | list[float]) -> pd.DataFrame:
    """A zero-row forecast with the contract columns (for empty inputs)."""
    frame = pd.DataFrame(
        {
            "series_id": pd.Series(dtype=object),
            "timestamp": pd.Series(dtype="datetime64[ns, UTC]"),
            **{col: pd.Series(dtype=float) for col in forecast_columns(quantiles)},
            "model_used": pd.Series(dtype=object),
        }
    )
    return frame


def renumbered(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` (a new frame its caller owns) with a fresh range index, set in place:
    ``reset_index(drop=True)`` would copy every column again."""
    frame.index = pd.RangeIndex(len(frame))
    return frame


def trim_history(history: pd.DataFrame, max_points: int | None) -> pd.DataFrame:
    """Keep the last ``max_points`` rows of each series (``models.max_history_hours``).

    ``history`` is sorted by series_id, timestamp on a regular grid, so the last rows are the
    most recent steps. Old history adds fit time more than accuracy for week-ahead forecasts.
    """
    if max_points is None:
        return history
    blocks = series_blocks(history["series_id"])
    rows_after = blocks.lengths[blocks.codes] - 1 - blocks.positions()
    return renumbered(history.take(np.flatnonzero(rows_after < max_points)))


def sort_by_series(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame.sort_values(["series_id", "timestamp"], ignore_index=True)``, without the sort
    when the frame is in that order already (a feature panel, a grid): then ``frame`` itself
    when its index is a range already (no copy), else with a new one."""
    if not frame.empty:
        blocks = series_blocks(frame["series_id"])
        heads = blocks.ids
        stamps = frame["timestamp"]
        if (
            blocks.order is None
            and all(isinstance(sid, str) for sid in heads)
            and all(a < b for a, b in itertools.pairwise(heads))
            and pd.api.types.is_datetime64_any_dtype(stamps.dtype)
            and not stamps.isna().any()
        ):
            ns = pd.DatetimeIndex(stamps).as_unit("ns").asi8
            rising = np.diff(ns) >= 0
            rising[blocks.starts[1:] - 1] = True
            if rising.all():
                if frame.index.equals(pd.RangeIndex(len(frame))):
                    return frame
                return frame.reset_index(drop=True)
    return frame.sort_values(["series_id", "timestamp"], ignore_index=True)
