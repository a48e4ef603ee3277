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

Factors are fitted per series when the series has at least ``min_points`` usable points and
pooled over all series otherwise. Calibration only happens when the pooled P10-P90 coverage is
off nominal by more than ``tolerance`` (config ``forecast.calibrate``; 5 points): well-calibrated
forecasts are left exactly as they are. In the backtest, window ``w`` is calibrated with factors
fitted on earlier windows only (``calibrate_without_peeking``), so the leaderboard's
``selected`` row measures calibration honestly.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from capforecast.contracts import quantile_column
from capforecast.errors import ForecastInputError
from capforecast.forecast.backtest import assert_no_peeking, earlier_windows
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
COVERAGE_TOLERANCE = 0.05
MIN_POINTS_PER_SERIES = 100
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
    min_points: int = MIN_POINTS_PER_SERIES,
) -> pd.DataFrame:
    """Per-series and pooled factors scaling each quantile's distance from the median.

    ``predictions``: backtest rows of one model (``series_id, y, q0.5`` and the quantile
    columns). Returns ``SCALING_COLUMNS``: one ``POOLED`` row per level ``q != 0.5`` plus one row
    per series x level for series with at least ``min_points`` usable points
    (``source = "series"``). When the pooled P10-P90 coverage is within ``tolerance`` of its
    nominal 0.8 (or cannot be measured), every factor is 1 and ``applied`` is False.
    """
    levels = sorted({float(q) for q in quantiles} - {0.5})
    if not {0.1, 0.9} <= {round(q, 9) for q in quantiles}:
        raise ForecastInputError("calibration needs the 0.1 and 0.9 quantiles")
    _check_columns(predictions, [*levels, 0.5], "predictions")
    if "y" not in predictions.columns:
        raise ForecastInputError("predictions lack column y")
    coverage = interval_coverage(predictions)
    applied = bool(np.isfinite(coverage) and abs(coverage - 0.8) > tolerance)
    rows = []
    median = predictions[quantile_column(0.5)].to_numpy(dtype=float)
    y = predictions["y"].to_numpy(dtype=float)
    series = predictions["series_id"].to_numpy()
    for q in levels:
        width = predictions[quantile_column(q)].to_numpy(dtype=float) - median
        usable = np.isfinite(y) & np.isfinite(median) & (np.abs(width) > _MIN_WIDTH)
        usable &= np.sign(width) == (1.0 if q > 0.5 else -1.0)
        residuals = np.divide(y - median, width, out=np.full_like(y, np.nan), where=usable)
        p = q if q > 0.5 else 1.0 - q
        n_usable = int(usable.sum())
        pooled = _scale_factor(residuals[usable], p) if applied and n_usable else 1.0
        rows.append((POOLED, q, pooled, n_usable, "pooled", coverage, applied and n_usable > 0))
        if not applied:
            continue
        frame = pd.DataFrame({"series_id": series[usable], "r": residuals[usable]})
        for sid, part in frame.groupby("series_id", sort=True):
            if len(part) >= min_points:
                factor = _scale_factor(part["r"].to_numpy(), p)
                rows.append((sid, q, factor, len(part), "series", coverage, True))
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
    table has neither). Quantiles are then sorted across levels and clipped to ``bounds``; the
    median and ``mean`` are unchanged. Adds ``interval_scaled`` (True where a factor != 1 was
    applied).
    """
    levels = sorted({float(q) for q in quantiles} - {0.5})
    _check_columns(forecast, [*levels, 0.5], "forecast")
    out = forecast.copy()
    median = out[quantile_column(0.5)].to_numpy(dtype=float)
    scaled_any = np.zeros(len(out), dtype=bool)
    for q in levels:
        rows = table[np.isclose(table["quantile"].astype(float), q)]
        own = rows[rows["series_id"] != POOLED].set_index("series_id")["scale"]
        pooled = rows.loc[rows["series_id"] == POOLED, "scale"]
        fallback = float(pooled.iloc[0]) if len(pooled) else 1.0
        factor = out["series_id"].map(own).fillna(fallback).to_numpy(dtype=float)
        column = quantile_column(q)
        out[column] = median + factor * (out[column].to_numpy(dtype=float) - median)
        scaled_any |= factor != 1.0
    columns = [quantile_column(q) for q in sorted({*levels, 0.5})]
    out[columns] = np.sort(out[columns].to_numpy(dtype=float), axis=1)
    if bounds:
        out = clip_to_bounds(out, columns, bounds)
    out["interval_scaled"] = scaled_any
    return out


def calibrate_without_peeking(
    predictions: pd.DataFrame,
    quantiles: Sequence[float],
    *,
    tolerance: float = COVERAGE_TOLERANCE,
    min_points: int = MIN_POINTS_PER_SERIES,
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
        table = fit_interval_scaling(past, quantiles, tolerance=tolerance, min_points=min_points)
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
