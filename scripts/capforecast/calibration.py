"""Conformal calibration of the selected forecast's quantiles from backtest residuals.

Two methods; ``residual`` is the default.

``residual`` (normalised split-conformal quantiles around the median): every backtest point with
actual ``y``, median ``m`` and P10-P90 width ``w = Q_0.9 - Q_0.1`` gives a normalised residual
``r = (y - m) / w``. Each quantile level ``q`` (the median included) becomes
``Q'_q = m + w * R_q`` where ``R_q`` is the empirical ``q``-quantile of the series' own
normalised residuals: the value minimising the pinball loss at ``q`` over those residuals. The
forecast's own width carries the shape over the horizon (intervals of a 7-day final forecast
still widen with the lead time, although the residuals come from 24-step backtests); the
residuals set the spread, the asymmetry and the centre. Series whose widths are zero (constant
forecasts) use unnormalised residuals (``w = 1``, unit ``absolute``). A level needs at least one
expected residual beyond it (``n * min(q, 1 - q) >= 1``, e.g. 50 points for q = 0.02); rarer
levels, and series with fewer than ``min_points`` residuals, use the quantile of the normalised
residuals pooled over all series. ``mean`` never moves; the median does, by the median residual
(on intermittent series, mostly zeros with bursts, the median of ``y`` sits far below a mean-like
median forecast).

``scale`` (the earlier method, kept for comparison): a multiplicative factor per level ``q !=
0.5`` on the distance from the median, ``Q'_q = m + s * (Q_q - m)``, with ``s`` the
split-conformal quantile (level ``ceil((n + 1) p) / n``, ``p = max(q, 1 - q)``) of
``(y - m) / (Q_q - m)``: per series with ``min_points`` points, pooled otherwise, and applied only
when the pooled P10-P90 coverage is off nominal by more than ``tolerance`` (5 points).

Why ``residual``: on the NAB fixture (19 series, 3 scored windows) it lowered the selected
forecast's WQL, relative to seasonal naive, from ~0.68 to ~0.64 at a P10-P90 coverage of ~0.78;
``scale`` could only widen or narrow symmetric intervals and left skewed series (CPU pinned near
a floor, bursty byte counts) badly served. In the backtest, window ``w`` is calibrated with
residuals of earlier windows only (``calibrate_without_peeking``), so the leaderboard's
``selected`` row measures calibration honestly.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from capforecast.backtest import assert_no_peeking, earlier_windows
from capforecast.contracts import quantile_column
from capforecast.errors import ConfigError, ForecastInputError
from capforecast.panel import clip_to_bounds

POOLED = "__pooled__"
METHOD_RESIDUAL = "residual"
METHOD_SCALE = "scale"
METHODS: tuple[str, ...] = (METHOD_RESIDUAL, METHOD_SCALE)
UNIT_WIDTH = "width"
UNIT_ABSOLUTE = "absolute"
SCALING_COLUMNS: tuple[str, ...] = (
    "series_id",
    "quantile",
    "method",
    "scale",
    "offset",
    "unit",
    "n_points",
    "source",
    "coverage_before",
    "applied",
)
COVERAGE_TOLERANCE = 0.05
# scale: points a series needs for its own factors.
MIN_POINTS_PER_SERIES = 100
# residual: residuals a series needs for its own quantiles (one 24-step backtest window).
MIN_RESIDUALS_PER_SERIES = 24
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


def interval_coverage(frame: pd.DataFrame) -> float:
    """Share of actuals inside ``[q0.1, q0.9]`` over the rows that have both (NaN if none)."""
    low, high = frame[quantile_column(0.1)], frame[quantile_column(0.9)]
    valid = frame["y"].notna() & low.notna() & high.notna()
    if not valid.any():
        return float("nan")
    inside = (frame.loc[valid, "y"] >= low[valid]) & (frame.loc[valid, "y"] <= high[valid])
    return float(inside.mean())


def _check_method(method: str) -> None:
    if method not in METHODS:
        raise ConfigError(
            "calibration method", f"value {method!r} is invalid; allowed: {', '.join(METHODS)}"
        )


def _check_columns(frame: pd.DataFrame, quantiles: Sequence[float], what: str) -> list[str]:
    columns = [quantile_column(q) for q in quantiles]
    needed = ["series_id", quantile_column(0.5), *columns]
    missing = [c for c in dict.fromkeys(needed) if c not in frame.columns]
    if missing:
        raise ForecastInputError(f"{what} lacks columns {', '.join(missing)}")
    return columns


def fit_interval_scaling(
    predictions: pd.DataFrame,
    quantiles: Sequence[float],
    *,
    tolerance: float = COVERAGE_TOLERANCE,
    min_points: int | None = None,
    method: str = METHOD_RESIDUAL,
) -> pd.DataFrame:
    """Calibration table (``SCALING_COLUMNS``) fitted on backtest rows of one model.

    ``predictions`` needs ``series_id, y, q0.5`` and the quantile columns (``q0.1`` and ``q0.9``
    always). ``method="residual"``: one ``POOLED`` row per level (median included) and one row
    per series x level for series with at least ``min_points`` usable residuals (default
    ``MIN_RESIDUALS_PER_SERIES``); ``offset`` is the normalised residual quantile, ``unit`` says
    whether it multiplies the P10-P90 width or is absolute; ``applied`` is True whenever there
    are residuals. ``method="scale"``: factors for levels ``!= 0.5`` (``min_points`` default
    ``MIN_POINTS_PER_SERIES``), all 1 with ``applied`` False when the pooled P10-P90 coverage is
    within ``tolerance`` of 0.8 (or cannot be measured).
    """
    _check_method(method)
    if not {0.1, 0.9} <= {round(float(q), 9) for q in quantiles}:
        raise ForecastInputError("calibration needs the 0.1 and 0.9 quantiles")
    levels = sorted({float(q) for q in quantiles} | {0.5})
    _check_columns(predictions, levels, "predictions")
    if "y" not in predictions.columns:
        raise ForecastInputError("predictions lack column y")
    if method == METHOD_SCALE:
        return _fit_scale(
            predictions,
            [q for q in levels if q != 0.5],
            tolerance,
            MIN_POINTS_PER_SERIES if min_points is None else min_points,
        )
    return _fit_residual(
        predictions, levels, MIN_RESIDUALS_PER_SERIES if min_points is None else min_points
    )


def _fit_scale(
    predictions: pd.DataFrame, levels: list[float], tolerance: float, min_points: int
) -> pd.DataFrame:
    coverage = interval_coverage(predictions)
    applied = bool(np.isfinite(coverage) and abs(coverage - 0.8) > tolerance)
    rows = []
    median = predictions[quantile_column(0.5)].to_numpy(dtype=float)
    y = predictions["y"].to_numpy(dtype=float)
    series = predictions["series_id"].to_numpy()

    def row(sid: str, q: float, scale: float, n: int, source: str, used: bool) -> tuple:
        return (sid, q, METHOD_SCALE, scale, np.nan, "", n, source, coverage, used)

    for q in levels:
        width = predictions[quantile_column(q)].to_numpy(dtype=float) - median
        usable = np.isfinite(y) & np.isfinite(median) & (np.abs(width) > _MIN_WIDTH)
        usable &= np.sign(width) == (1.0 if q > 0.5 else -1.0)
        residuals = np.divide(y - median, width, out=np.full_like(y, np.nan), where=usable)
        p = q if q > 0.5 else 1.0 - q
        n_usable = int(usable.sum())
        pooled = _scale_factor(residuals[usable], p) if applied and n_usable else 1.0
        rows.append(row(POOLED, q, pooled, n_usable, "pooled", applied and n_usable > 0))
        if not applied:
            continue
        frame = pd.DataFrame({"series_id": series[usable], "r": residuals[usable]})
        for sid, part in frame.groupby("series_id", sort=True):
            if len(part) >= min_points:
                factor = _scale_factor(part["r"].to_numpy(), p)
                rows.append(row(str(sid), q, factor, len(part), "series", True))
    return pd.DataFrame(rows, columns=list(SCALING_COLUMNS))


def _normalised_residuals(predictions: pd.DataFrame) -> pd.DataFrame:
    """``series_id, r, unit`` for rows with an actual, a median and a P10-P90 width.

    A series whose widths are all positive is normalised by them (unit ``width``); a series
    with any zero width keeps absolute residuals (unit ``absolute``).
    """
    median = predictions[quantile_column(0.5)].to_numpy(dtype=float)
    width = (predictions[quantile_column(0.9)] - predictions[quantile_column(0.1)]).to_numpy(
        dtype=float
    )
    y = predictions["y"].to_numpy(dtype=float)
    frame = pd.DataFrame(
        {"series_id": predictions["series_id"].astype(str).to_numpy(), "e": y - median, "w": width}
    )
    frame = frame[np.isfinite(frame["e"]) & np.isfinite(frame["w"])]
    positive = (frame["w"] > _MIN_WIDTH).groupby(frame["series_id"]).transform("all")
    frame["unit"] = np.where(positive, UNIT_WIDTH, UNIT_ABSOLUTE)
    frame["r"] = np.where(positive, frame["e"] / frame["w"].where(positive, 1.0), frame["e"])
    return frame[["series_id", "r", "unit"]]


def _enough_for_level(n: int, q: float) -> bool:
    return n * min(q, 1.0 - q) >= 1.0


def _fit_residual(predictions: pd.DataFrame, levels: list[float], min_points: int) -> pd.DataFrame:
    coverage = interval_coverage(predictions)
    residuals = _normalised_residuals(predictions)
    rows = []
    pooled_r = residuals.loc[residuals["unit"] == UNIT_WIDTH, "r"].to_numpy()
    pooled = {q: float(np.quantile(pooled_r, q)) if pooled_r.size else np.nan for q in levels}
    for q in levels:
        has = bool(pooled_r.size)
        n_pooled = int(pooled_r.size)
        rows.append(
            (POOLED, q, METHOD_RESIDUAL, np.nan, pooled[q], UNIT_WIDTH, n_pooled, "pooled")
            + (coverage, has)
        )
    for sid, part in residuals.groupby("series_id", sort=True):
        n, unit = len(part), str(part["unit"].iloc[0])
        if n < min_points:
            continue
        values = part["r"].to_numpy()
        for q in levels:
            if _enough_for_level(n, q):
                offset, source = float(np.quantile(values, q)), "series"
            elif unit == UNIT_WIDTH and np.isfinite(pooled[q]):
                offset, source = pooled[q], "pooled_tail"
            else:
                # Absolute residuals cannot borrow the pooled (width-normalised) tail: use the
                # series' most extreme residual on that side.
                offset = float(values.min() if q < 0.5 else values.max())
                source = "series_extreme"
            rows.append((sid, q, METHOD_RESIDUAL, np.nan, offset, unit, n, source, coverage, True))
    return pd.DataFrame(rows, columns=list(SCALING_COLUMNS))


def apply_interval_scaling(
    forecast: pd.DataFrame,
    table: pd.DataFrame,
    quantiles: Sequence[float],
    *,
    bounds: Mapping[str, tuple[float, float | None]] | None = None,
) -> pd.DataFrame:
    """Calibrate ``forecast``'s quantile columns with a ``fit_interval_scaling`` table.

    Residual rows: ``Q'_q = m + offset * w`` (``w`` = the forecast's own P10-P90 width at that
    row, or 1 for unit ``absolute``), from the series' own row or else the pooled one; levels
    the table lacks stay as they are. Scale rows (also tables without a ``method`` column):
    ``Q'_q = m + factor * (Q_q - m)`` with the series' own factor or else the pooled one (1
    without either); the median stays. ``m`` is the forecast's median before calibration;
    ``mean`` never changes. Quantiles are then sorted across levels and clipped to ``bounds``.
    Adds ``interval_scaled`` (True where any quantile changed).
    """
    levels = sorted({float(q) for q in quantiles} | {0.5})
    _check_columns(forecast, levels, "forecast")
    out = forecast.copy()
    columns = [quantile_column(q) for q in levels]
    before = out[columns].to_numpy(dtype=float).copy()
    median = out[quantile_column(0.5)].to_numpy(dtype=float)
    width = (out[quantile_column(0.9)] - out[quantile_column(0.1)]).to_numpy(dtype=float)
    series = out["series_id"].astype(str)
    method = table["method"] if "method" in table.columns else pd.Series(METHOD_SCALE, table.index)
    for q in levels:
        rows = table[np.isclose(table["quantile"].astype(float), q)]
        residual = rows[method.loc[rows.index] == METHOD_RESIDUAL]
        scale = rows[method.loc[rows.index] == METHOD_SCALE]
        column = quantile_column(q)
        if len(residual):
            own = residual[residual["series_id"] != POOLED].set_index("series_id")
            pooled = residual[residual["series_id"] == POOLED]
            offset = series.map(own["offset"]).astype(float)
            unit = series.map(own["unit"]).fillna(UNIT_WIDTH)
            if len(pooled) and np.isfinite(float(pooled["offset"].iloc[0])):
                offset = offset.fillna(float(pooled["offset"].iloc[0]))
            multiplier = np.where(unit.to_numpy() == UNIT_ABSOLUTE, 1.0, width)
            new = median + offset.to_numpy(dtype=float) * multiplier
            out[column] = np.where(np.isfinite(new), new, out[column].to_numpy(dtype=float))
        elif len(scale) and q != 0.5:
            own_scale = scale[scale["series_id"] != POOLED].set_index("series_id")["scale"]
            pooled_scale = scale.loc[scale["series_id"] == POOLED, "scale"]
            fallback = float(pooled_scale.iloc[0]) if len(pooled_scale) else 1.0
            factor = series.map(own_scale).fillna(fallback).to_numpy(dtype=float)
            out[column] = median + factor * (out[column].to_numpy(dtype=float) - median)
    out[columns] = np.sort(out[columns].to_numpy(dtype=float), axis=1)
    if bounds:
        out = clip_to_bounds(out, columns, bounds)
    after = out[columns].to_numpy(dtype=float)
    changed = (after != before) & ~(np.isnan(after) & np.isnan(before))
    out["interval_scaled"] = changed.any(axis=1)
    return out


def calibrate_without_peeking(
    predictions: pd.DataFrame,
    quantiles: Sequence[float],
    *,
    tolerance: float = COVERAGE_TOLERANCE,
    min_points: int | None = None,
    bounds: Mapping[str, tuple[float, float | None]] | None = None,
    method: str = METHOD_RESIDUAL,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Calibrate backtest predictions window by window with tables from earlier windows only.

    Window ``w`` uses the windows ``v < w`` whose actuals all lie at or before ``w``'s cutoff
    (asserted); the earliest window has none and stays as it is. Returns the calibrated
    predictions (same rows and columns plus ``interval_scaled``) and the fitted tables with a
    ``window`` column (the window they were applied to).
    """
    _check_method(method)
    if predictions.empty:
        return predictions.assign(interval_scaled=False), pd.DataFrame(
            columns=[*SCALING_COLUMNS, "window"]
        )
    rows = predictions.reset_index(drop=True).assign(_row=np.arange(len(predictions)))
    calibrated, tables = [], []
    for window in sorted(rows["window"].unique()):
        current = rows[rows["window"] == window]
        past = rows[rows["window"].isin(earlier_windows(rows, window))]
        if past.empty:
            calibrated.append(current.assign(interval_scaled=False))
            continue
        assert_no_peeking(past, current, window, purpose="calibration")
        table = fit_interval_scaling(
            past, quantiles, tolerance=tolerance, min_points=min_points, method=method
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
