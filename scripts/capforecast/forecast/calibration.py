"""Conformal interval calibration of the selected forecast from backtest residuals.

Method (a multiplicative, per-quantile split-conformal correction around the median):

For every quantile level ``q != 0.5`` and every backtest point with actual ``y``, median ``m``
and quantile forecast ``Q_q``, the normalised residual is ``r = (y - m) / (Q_q - m)``. Scaling
the distance from the median by ``s`` gives ``Q'_q = m + s * (Q_q - m)``, and
``y <= Q'_q`` holds exactly when ``r <= s`` for upper levels (``Q_q > m``), while ``y >= Q'_q``
holds exactly when ``r <= s`` for lower ones (``Q_q < m``). So the factor that gives level ``q``
its nominal probability is the empirical ``p``-quantile of ``r`` with ``p = q`` for ``q > 0.5``
and ``p = 1 - q`` for ``q < 0.5``, taken with the split-conformal finite-sample level
``ceil((n + 1) p) / n``. ``s > 1`` widens, ``s < 1`` narrows; the median and the mean never move.

Factors are pooled over all series; a series with at least ``min_points`` usable points gets
its own factor, shrunk toward the pooled one in logs with a prior weight of ``prior_points``
points (a series' points come in windows of strongly autocorrelated errors, so its own quantile
of a few windows is noisy). Calibration only happens when the pooled P10-P90 coverage is
off nominal by more than ``tolerance`` (config ``forecast.calibrate``; 5 points): well-calibrated
forecasts are left exactly as they are. In the backtest, window ``w`` is calibrated with factors
fitted on earlier windows only (``calibrate_without_peeking``), so the leaderboard's
``selected`` row measures calibration honestly.

Why a factor that matches coverage, not one that minimises the quantile loss: the factor that
minimises the pinball loss of ``m + s * (Q_q - m)`` is the same quantile of ``r`` weighted by
each point's width ``|Q_q - m|`` (over its series-window's sum of ``|y|``, as WQL weighs it).
Tried on 2026-12-03 on the accuracy benchmark's tuning halves: on NAB it improved WQL relgm
(0.421 -> 0.414) by narrowing the intervals, and P10-P90 coverage fell from 0.772 to 0.605.
On Bitbrains nothing changed, because coverage there is within tolerance and no factor is
applied. Intervals that cover 60 % of the actuals as P10-P90 mislead the risk stage, so the
coverage-matching factor stays.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from capforecast.contracts import quantile_column
from capforecast.errors import ForecastInputError
from capforecast.forecast.backtest import (
    assert_no_peeking,
    earlier_windows,
    earlier_windows_in_spans,
    window_spans,
)
from capforecast.forecast.panel import clip_to_bounds

POOLED = "__pooled__"
SCALING_COLUMNS: tuple[str, ...] = (
    "series_id",
    "quantile",
    "scale",
    "n_points",
    "source",
    "coverage_before",
    "applied",
)
# Where a scaling row (a tuple in SCALING_COLUMNS order) holds its factor.
_SCALE = SCALING_COLUMNS.index("scale")
COVERAGE_TOLERANCE = 0.05
MIN_POINTS_PER_SERIES = 100
# Prior weight, in points, of the pooled factor in a series' own. Chosen on the tuning halves of
# the accuracy benchmark: on NAB's (six earlier day-ahead windows, at most 144 points a series)
# WQL relgm fell steadily as the weight grew (0.459 with the series' own factor alone, 0.441 at
# 50, 0.434 at 150, 0.431 at 500, 0.430 pooled alone) with P10-P90 coverage 0.748 -> 0.771;
# Bitbrains was unchanged (its coverage is within tolerance, nothing is scaled). 500 keeps a
# series with a long backtest (a year of week-ahead windows) mostly on its own factor.
FACTOR_PRIOR_POINTS = 500
# Bounds on a factor: a negative one would flip a quantile across the median, a zero one
# would collapse it onto the median for good (no later scaling could reopen it).
MIN_SCALE = 0.05
MAX_SCALE = 50.0
# Distances from the median below this are treated as zero width (nothing to scale).
_MIN_WIDTH = 1e-12


def _conformal_level(p: float, n: int) -> float:
    return min(1.0, math.ceil((n + 1) * p) / n)


def _scale_factor(residuals: np.ndarray, p: float) -> float:
    level = _conformal_level(p, len(residuals))
    factor = float(np.quantile(residuals, level, method="higher"))
    return float(np.clip(factor, MIN_SCALE, MAX_SCALE))


def _coverage_counts(frame: pd.DataFrame) -> tuple[int, int]:
    """(actuals inside ``[q0.1, q0.9]``, rows that have both): ``interval_coverage``'s parts,
    which add up over the parts of a table."""
    low, high = frame[quantile_column(0.1)], frame[quantile_column(0.9)]
    valid = frame["y"].notna() & low.notna() & high.notna()
    inside = (frame.loc[valid, "y"] >= low[valid]) & (frame.loc[valid, "y"] <= high[valid])
    return int(inside.sum()), int(valid.sum())


def _coverage(inside: int, valid: int) -> float:
    # k / n correctly rounded, exactly what the mean of n booleans with k True gives.
    return inside / valid if valid else float("nan")


def interval_coverage(frame: pd.DataFrame) -> float:
    """Share of actuals inside ``[q0.1, q0.9]`` over the rows that have both (NaN if none)."""
    return _coverage(*_coverage_counts(frame))


def _check_columns(frame: pd.DataFrame, quantiles: Sequence[float], what: str) -> list[str]:
    columns = [quantile_column(q) for q in quantiles]
    needed = ["series_id", quantile_column(0.5), *columns]
    missing = [c for c in dict.fromkeys(needed) if c not in frame.columns]
    if missing:
        raise ForecastInputError(f"{what} lacks columns {', '.join(missing)}")
    return columns


def _scaled_levels(quantiles: Sequence[float]) -> list[float]:
    """The levels a scaling fit gives factors for (every one but the median)."""
    if not {0.1, 0.9} <= {round(q, 9) for q in quantiles}:
        raise ForecastInputError("calibration needs the 0.1 and 0.9 quantiles")
    return sorted({float(q) for q in quantiles} - {0.5})


def _check_fit_input(predictions: pd.DataFrame, levels: Sequence[float]) -> None:
    _check_columns(predictions, [*levels, 0.5], "predictions")
    if "y" not in predictions.columns:
        raise ForecastInputError("predictions lack column y")


def _applied(coverage: float, tolerance: float) -> bool:
    """Whether a pooled P10-P90 coverage is off its nominal 0.8 by more than ``tolerance``."""
    return bool(np.isfinite(coverage) and abs(coverage - 0.8) > tolerance)


def _usable_residuals(predictions: pd.DataFrame, q: float) -> tuple[np.ndarray, np.ndarray]:
    """``(series_id, r)`` of the rows whose normalised residual at level ``q`` is usable."""
    median = predictions[quantile_column(0.5)].to_numpy(dtype=float)
    y = predictions["y"].to_numpy(dtype=float)
    width = predictions[quantile_column(q)].to_numpy(dtype=float) - median
    usable = np.isfinite(y) & np.isfinite(median) & (np.abs(width) > _MIN_WIDTH)
    usable &= np.sign(width) == (1.0 if q > 0.5 else -1.0)
    residuals = np.divide(y - median, width, out=np.full_like(y, np.nan), where=usable)
    return predictions["series_id"].to_numpy()[usable], residuals[usable]


def _tail_share(q: float) -> float:
    return q if q > 0.5 else 1.0 - q


def _pooled_row(q: float, residuals: np.ndarray, coverage: float, applied: bool) -> tuple:
    """The ``POOLED`` row of level ``q`` from the usable residuals of every series."""
    n_usable = len(residuals)
    pooled = _scale_factor(residuals, _tail_share(q)) if applied and n_usable else 1.0
    return (POOLED, q, pooled, n_usable, "pooled", coverage, applied and n_usable > 0)


def _series_rows(
    q: float,
    series: np.ndarray,
    residuals: np.ndarray,
    coverage: float,
    pooled: float,
    min_points: int,
    prior_points: float,
) -> list[tuple]:
    """Rows of level ``q`` for the series with at least ``min_points`` usable residuals, by id:
    each series' own factor shrunk toward ``pooled`` (log scale, prior weight ``prior_points``)."""
    frame = pd.DataFrame({"series_id": series, "r": residuals})
    rows = []
    for sid, part in frame.groupby("series_id", sort=True):
        n = len(part)
        if n >= min_points:
            own = _scale_factor(part["r"].to_numpy(), _tail_share(q))
            log_factor = (n * math.log(own) + prior_points * math.log(pooled)) / (n + prior_points)
            factor = float(np.clip(math.exp(log_factor), MIN_SCALE, MAX_SCALE))
            rows.append((sid, q, factor, n, "series", coverage, True))
    return rows


def fit_interval_scaling(
    predictions: pd.DataFrame,
    quantiles: Sequence[float],
    *,
    tolerance: float = COVERAGE_TOLERANCE,
    min_points: int = MIN_POINTS_PER_SERIES,
    prior_points: float = FACTOR_PRIOR_POINTS,
) -> pd.DataFrame:
    """Per-series and pooled factors scaling each quantile's distance from the median.

    ``predictions``: backtest rows of one model (``series_id, y, q0.5`` and the quantile
    columns). Returns ``SCALING_COLUMNS``: one ``POOLED`` row per level ``q != 0.5`` plus one row
    per series x level for series with at least ``min_points`` usable points
    (``source = "series"``, shrunk toward the pooled factor by ``prior_points``). When the
    pooled P10-P90 coverage is within ``tolerance`` of its nominal 0.8 (or cannot be measured),
    every factor is 1 and ``applied`` is False.
    """
    levels = _scaled_levels(quantiles)
    _check_fit_input(predictions, levels)
    coverage = interval_coverage(predictions)
    applied = _applied(coverage, tolerance)
    rows = []
    for q in levels:
        series, residuals = _usable_residuals(predictions, q)
        pooled = _pooled_row(q, residuals, coverage, applied)
        rows.append(pooled)
        if applied:
            rows.extend(
                _series_rows(
                    q, series, residuals, coverage, pooled[_SCALE], min_points, prior_points
                )
            )
    return pd.DataFrame(rows, columns=list(SCALING_COLUMNS))


def apply_interval_scaling(
    forecast: pd.DataFrame,
    table: pd.DataFrame,
    quantiles: Sequence[float],
    *,
    bounds: Mapping[str, tuple[float, float | None]] | None = None,
) -> pd.DataFrame:
    """Scale each quantile's distance from the median by the fitted factor.

    A series uses its own factor when the table has one, the pooled one otherwise (1 when the
    table has neither). A quantile that sits on its series' bound is never narrowed off it: it
    marks a mass of values at the bound (a CPU pegged at 100 %, an idle one at 0), and pulling it
    inside would put every pegged hour beyond it. Quantiles are then sorted across levels and
    clipped to ``bounds``; the median and ``mean`` are unchanged. Adds ``interval_scaled`` (True
    where a factor != 1 was applied).
    """
    levels = sorted({float(q) for q in quantiles} - {0.5})
    _check_columns(forecast, [*levels, 0.5], "forecast")
    out = forecast.copy()
    median = out[quantile_column(0.5)].to_numpy(dtype=float)
    on_bound = _bound_checker(out["series_id"], bounds)
    scaled_any = np.zeros(len(out), dtype=bool)
    for q in levels:
        rows = table[np.isclose(table["quantile"].astype(float), q)]
        own = rows[rows["series_id"] != POOLED].set_index("series_id")["scale"]
        pooled = rows.loc[rows["series_id"] == POOLED, "scale"]
        fallback = float(pooled.iloc[0]) if len(pooled) else 1.0
        factor = out["series_id"].map(own).fillna(fallback).to_numpy(dtype=float)
        column = quantile_column(q)
        factor = np.where((factor < 1.0) & on_bound(out[column].to_numpy(dtype=float)), 1.0, factor)
        out[column] = median + factor * (out[column].to_numpy(dtype=float) - median)
        scaled_any |= factor != 1.0
    columns = [quantile_column(q) for q in sorted({*levels, 0.5})]
    out[columns] = np.sort(out[columns].to_numpy(dtype=float), axis=1)
    if bounds:
        out = clip_to_bounds(out, columns, bounds)
    out["interval_scaled"] = scaled_any
    return out


def _bound_checker(
    series: pd.Series, bounds: Mapping[str, tuple[float, float | None]] | None
) -> Callable[[np.ndarray], np.ndarray]:
    """A test of which values lie on their row's series bound (lower or upper; none without
    ``bounds``), to within a relative 1e-9."""
    if not bounds:
        return lambda values: np.zeros(len(values), dtype=bool)
    codes, ids = pd.factorize(series)  # one lookup per series, not per row
    known = [bounds.get(s, (-np.inf, None)) for s in ids]
    lower = np.array([b[0] for b in known], dtype=float)[codes]
    upper = np.array([np.inf if b[1] is None else b[1] for b in known], dtype=float)[codes]

    def on_bound(values: np.ndarray) -> np.ndarray:
        with np.errstate(invalid="ignore"):
            at_lower = np.isfinite(lower) & np.isclose(values, lower, rtol=1e-9, atol=1e-9)
            at_upper = np.isfinite(upper) & np.isclose(values, upper, rtol=1e-9, atol=1e-9)
        return at_lower | at_upper

    return on_bound


def calibrate_without_peeking(
    predictions: pd.DataFrame,
    quantiles: Sequence[float],
    *,
    tolerance: float = COVERAGE_TOLERANCE,
    min_points: int = MIN_POINTS_PER_SERIES,
    prior_points: float = FACTOR_PRIOR_POINTS,
    bounds: Mapping[str, tuple[float, float | None]] | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Calibrate backtest predictions window by window with factors from earlier windows only.

    Window ``w`` uses the windows ``v < w`` whose actuals all lie at or before ``w``'s cutoff
    (asserted), except selection windows (``is_selection_window``): their ``selected`` forecast
    is the no-scores default (an equal-weight ensemble of every model), a different forecast from
    the later windows' choices, so its residuals say nothing about their intervals (on the
    synthetic fleet its coverage was far from theirs). A window with no
    usable earlier window stays as it is. Returns the calibrated
    predictions (same rows and columns plus ``interval_scaled``) and the fitted tables with a
    ``window`` column (the window they were applied to).
    """
    if predictions.empty:
        return predictions.assign(interval_scaled=False), pd.DataFrame(
            columns=[*SCALING_COLUMNS, "window"]
        )
    rows = predictions.reset_index(drop=True).assign(_row=np.arange(len(predictions)))
    calibrated, tables = [], []
    for window in sorted(rows["window"].unique()):
        current = rows[rows["window"] == window]
        past = rows[rows["window"].isin(earlier_windows(rows, window))]
        if "is_selection_window" in past.columns:
            past = past[~past["is_selection_window"].astype(bool)]
        if past.empty:
            calibrated.append(current.assign(interval_scaled=False))
            continue
        assert_no_peeking(past, current, window, purpose="calibration")
        table = fit_interval_scaling(
            past, quantiles, tolerance=tolerance, min_points=min_points, prior_points=prior_points
        )
        calibrated.append(apply_interval_scaling(current, table, quantiles, bounds=bounds))
        tables.append(table.assign(window=window))
    # Back to the caller's row order and index.
    out = pd.concat(calibrated).sort_values("_row", kind="stable").drop(columns="_row")
    out.index = predictions.index
    table = (
        pd.concat(tables, ignore_index=True)
        if tables
        else pd.DataFrame(columns=[*SCALING_COLUMNS, "window"])
    )
    return out, table


@dataclass
class _WindowStats:
    """What a scaling fit needs of one window's scored rows: coverage counts and, per level,
    the usable normalised residuals (one float each, not the predictions)."""

    rows: int = 0
    inside: int = 0
    valid: int = 0
    residuals: dict[float, list[np.ndarray]] = field(default_factory=dict)


@dataclass(frozen=True)
class _PooledFit:
    """A fit's fleet-wide part: its coverage, whether it applies, its ``POOLED`` rows."""

    coverage: float
    applied: bool
    rows: list[tuple]


class StreamedCalibration:
    """``calibrate_without_peeking`` and the ``fit_interval_scaling`` of every scored row (not
    a selection window) over a fleet fed shard by shard, with the same results.

    Every series lies in one shard. Pass 1, ``add`` each shard's uncalibrated predictions: kept
    are the window spans, the coverage counts and the usable residuals per window and level.
    Pass 2, ``calibrate`` each shard: its per-series factors come from its own rows, the pooled
    ones from every shard's residuals. ``table()`` after pass 2 is the fit of every scored row.
    """

    def __init__(
        self,
        quantiles: Sequence[float],
        *,
        tolerance: float = COVERAGE_TOLERANCE,
        min_points: int = MIN_POINTS_PER_SERIES,
        prior_points: float = FACTOR_PRIOR_POINTS,
        bounds: Mapping[str, tuple[float, float | None]] | None = None,
    ) -> None:
        self.quantiles = list(quantiles)
        self.levels = _scaled_levels(quantiles)
        self.tolerance, self.min_points, self.bounds = tolerance, min_points, bounds
        self.prior_points = prior_points
        self._stats: dict[int, _WindowStats] = {}
        self._spans: list[pd.DataFrame] = []
        self._windows: dict[int, tuple[list[int], _PooledFit]] | None = None
        self._final_fit: _PooledFit | None = None
        self._series_rows: dict[float, list[tuple]] = {q: [] for q in self.levels}

    def add(self, predictions: pd.DataFrame) -> None:
        """Pass 1: one shard's uncalibrated backtest predictions."""
        if self._windows is not None:
            raise RuntimeError("add() after calibrate(): every shard must be added first")
        if predictions.empty:
            return
        _check_fit_input(predictions, self.levels)
        self._spans.append(window_spans(predictions))
        scored = _scored_rows(predictions)
        for window, part in scored.groupby("window", sort=True):
            stats = self._stats.setdefault(int(window), _WindowStats())
            inside, valid = _coverage_counts(part)
            stats.rows, stats.inside, stats.valid = (
                stats.rows + len(part),
                stats.inside + inside,
                stats.valid + valid,
            )
            for q in self.levels:
                stats.residuals.setdefault(q, []).append(_usable_residuals(part, q)[1])

    def _pooled(self, windows: Sequence[int]) -> _PooledFit:
        """``fit_interval_scaling``'s coverage, decision and pooled rows for the scored rows of
        ``windows``."""
        stats = [self._stats[w] for w in windows if w in self._stats]
        coverage = _coverage(sum(s.inside for s in stats), sum(s.valid for s in stats))
        applied = _applied(coverage, self.tolerance)
        rows = []
        for q in self.levels:
            parts = [r for s in stats for r in s.residuals.get(q, [])]
            residuals = np.concatenate(parts) if parts else np.empty(0)
            rows.append(_pooled_row(q, residuals, coverage, applied))
        return _PooledFit(coverage, applied, rows)

    def _plan(self) -> dict[int, tuple[list[int], _PooledFit]]:
        """Per window whose earlier windows hold scored rows: those windows and their fit."""
        if self._windows is None:
            spans = pd.concat(self._spans) if self._spans else None
            self._windows = {}
            windows = [] if spans is None else sorted(spans.index.get_level_values("window"))
            for window in dict.fromkeys(windows):
                earlier = earlier_windows_in_spans(spans, window)
                if sum(self._stats[w].rows for w in earlier if w in self._stats):
                    self._windows[int(window)] = (earlier, self._pooled(earlier))
        return self._windows

    def _table(
        self, rows: pd.DataFrame, pooled: _PooledFit
    ) -> tuple[pd.DataFrame, dict[float, list[tuple]]]:
        """The scaling table of ``rows`` (scored rows of one shard) under a fleet-wide fit, and
        its per-series rows by level."""
        own: dict[float, list[tuple]] = {q: [] for q in self.levels}
        if pooled.applied:
            for q in self.levels:
                series, residuals = _usable_residuals(rows, q)
                own[q] = _series_rows(
                    q,
                    series,
                    residuals,
                    pooled.coverage,
                    pooled.rows[self.levels.index(q)][_SCALE],
                    self.min_points,
                    self.prior_points,
                )
        ordered = [row for i, q in enumerate(self.levels) for row in [pooled.rows[i], *own[q]]]
        return pd.DataFrame(ordered, columns=list(SCALING_COLUMNS)), own

    def calibrate(self, predictions: pd.DataFrame) -> pd.DataFrame:
        """Pass 2: one shard's predictions (as added) calibrated as ``calibrate_without_peeking``
        calibrates them in the whole fleet."""
        plan = self._plan()
        if predictions.empty:
            return predictions.assign(interval_scaled=False)
        _, own = self._table(_scored_rows(predictions), self._final())
        for q in self.levels:
            self._series_rows[q].extend(own[q])
        rows = predictions.reset_index(drop=True).assign(_row=np.arange(len(predictions)))
        calibrated = []
        for window in sorted(rows["window"].unique()):
            current = rows[rows["window"] == window]
            if int(window) not in plan:
                calibrated.append(current.assign(interval_scaled=False))
                continue
            earlier, pooled = plan[int(window)]
            past = _scored_rows(rows[rows["window"].isin(earlier)])
            assert_no_peeking(past, current, window, purpose="calibration")
            table, _ = self._table(past, pooled)
            calibrated.append(
                apply_interval_scaling(current, table, self.quantiles, bounds=self.bounds)
            )
        out = pd.concat(calibrated).sort_values("_row", kind="stable").drop(columns="_row")
        out.index = predictions.index
        return out

    def _final(self) -> _PooledFit:
        """The fit of every scored row (every window)."""
        if self._final_fit is None:
            self._final_fit = self._pooled(sorted(self._stats))
        return self._final_fit

    def table(self) -> pd.DataFrame:
        """``fit_interval_scaling`` of every scored row of the fleet; call after every shard
        went through ``calibrate``."""
        final = self._final()
        rows = []
        for i, q in enumerate(self.levels):
            rows.append(final.rows[i])
            rows.extend(sorted(self._series_rows[q], key=lambda row: row[0]))
        return pd.DataFrame(rows, columns=list(SCALING_COLUMNS))


def _scored_rows(predictions: pd.DataFrame) -> pd.DataFrame:
    """The rows whose residuals calibrate: not those of a selection window."""
    if "is_selection_window" not in predictions.columns:
        return predictions
    return predictions[~predictions["is_selection_window"].astype(bool)]
