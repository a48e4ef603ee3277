"""Forecast accuracy per series x window x model, and the leaderboard across models.

Scale-free metrics only (MASE, WQL, relative geometric means), because the fleet mixes
percentages with byte counts: a pooled error would let the byte-scale series decide everything.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np
import pandas as pd

from capforecast.contracts import quantile_column
from capforecast.errors import ForecastInputError
from capforecast.forecast.models.base import fell_back

METRIC_COLUMNS: tuple[str, ...] = (
    "model",
    "series_id",
    "window",
    "is_selection_window",
    "cutoff",
    "n_points",
    "mae",
    "scale",
    "mase",
    "wql",
    "coverage_p10_p90",
    "bias",
    "fit_seconds",
    "model_used",
    "flags",
)

LEADERBOARD_COLUMNS: tuple[str, ...] = (
    "model",
    "mase_mean",
    "mase_median",
    "mase_relgm",
    "wql_mean",
    "wql_median",
    "wql_relgm",
    "coverage_p10_p90",
    "bias_mean",
    "fit_seconds",
    "n_series",
    "n_windows",
    "n_scores",
    "n_flagged",
    "n_fallback",
    "mase_relgm_series",
    "wql_relgm_series",
)

# A flat training window has a seasonal-naive MAE of 0; MASE then divides by this share of the
# series level instead (and the score is flagged "zero_scale").
SCALE_EPSILON_RELATIVE = 1e-3
# ... or by this when the level itself is 0 (an all-zero training window).
SCALE_EPSILON_ABSOLUTE = 1e-9
# Ratios to the baseline are clipped to [RELGM_CLIP, 1 / RELGM_CLIP] so that one perfect (0)
# or hopeless (baseline 0) series cannot send the geometric mean to 0 or infinity.
RELGM_CLIP = 1e-3

FLAG_ZERO_SCALE = "zero_scale"
FLAG_NO_SCALE = "no_scale"
FLAG_ZERO_ACTUALS = "zero_actuals"
FLAG_NO_ACTUALS = "no_actuals"
FLAG_NAN_FORECAST = "nan_forecast"

_QUANTILE_COLUMN = re.compile(r"^q(\d*\.?\d+(?:e-?\d+)?)$")


def quantile_levels(frame: pd.DataFrame) -> tuple[float, ...]:
    """Sorted quantile levels of a forecast frame, read from its ``q0.1``-style columns."""
    levels = [float(m.group(1)) for c in frame.columns if (m := _QUANTILE_COLUMN.match(str(c)))]
    return tuple(sorted(levels))


def pinball_loss(y: np.ndarray, forecast: np.ndarray, q: float) -> np.ndarray:
    """Quantile (pinball) loss of ``forecast`` as the ``q`` quantile of ``y``, elementwise."""
    diff = y - forecast
    return np.maximum(q * diff, (q - 1.0) * diff)


def _interval_columns(quantiles: Sequence[float]) -> tuple[str, str] | None:
    """The P10 and P90 columns when both levels are forecast."""
    has = {round(float(q), 9) for q in quantiles}
    if 0.1 in has and 0.9 in has:
        return quantile_column(0.1), quantile_column(0.9)
    return None


def seasonal_scales(
    panel: pd.DataFrame, cutoffs: pd.DataFrame, season: int, freq: str = "1h"
) -> pd.DataFrame:
    """In-sample seasonal-naive MAE and mean |y| of each series' training data up to a cutoff.

    ``cutoffs`` has ``series_id, cutoff``; the returned frame adds ``scale`` (mean of
    ``|y_t - y_{t-season}|`` over pairs with both values present and ``t <= cutoff``, NaN when
    there is no such pair) and ``level`` (mean ``|y|`` over the same training data). Lags are
    matched by timestamp, so missing rows never pair unrelated values.
    """
    lag = pd.Timedelta(freq) * season
    values = panel[["series_id", "timestamp", "y"]].copy()
    values["timestamp"] = pd.to_datetime(values["timestamp"], utc=True).astype(
        "datetime64[ns, UTC]"
    )
    lagged = values.rename(columns={"y": "y_lag"})
    lagged["timestamp"] = lagged["timestamp"] + lag
    values = values.merge(lagged, on=["series_id", "timestamp"], how="left")
    values = values.sort_values(["series_id", "timestamp"], kind="stable")
    diff = (values["y"] - values["y_lag"]).abs()
    grouped = values.assign(
        d_sum=diff.fillna(0.0),
        d_n=diff.notna().astype(float),
        a_sum=values["y"].abs().fillna(0.0),
        a_n=values["y"].notna().astype(float),
    ).groupby("series_id", sort=False)
    for column in ("d_sum", "d_n", "a_sum", "a_n"):
        values[column] = grouped[column].cumsum()
    keys = cutoffs[["series_id", "cutoff"]].drop_duplicates().copy()
    keys["cutoff"] = pd.to_datetime(keys["cutoff"], utc=True).astype("datetime64[ns, UTC]")
    matched = pd.merge_asof(
        keys.sort_values("cutoff"),
        values.sort_values("timestamp")[["series_id", "timestamp", "d_sum", "d_n", "a_sum", "a_n"]],
        left_on="cutoff",
        right_on="timestamp",
        by="series_id",
        direction="backward",
    )
    matched["scale"] = matched["d_sum"] / matched["d_n"].where(matched["d_n"] > 0)
    matched["level"] = matched["a_sum"] / matched["a_n"].where(matched["a_n"] > 0)
    return matched[["series_id", "cutoff", "scale", "level"]]


def score_predictions(
    predictions: pd.DataFrame,
    panel: pd.DataFrame,
    season: int,
    quantiles: Sequence[float],
    *,
    freq: str = "1h",
) -> pd.DataFrame:
    """Score backtest predictions: one row per model x series x window (``METRIC_COLUMNS``).

    Points where ``y`` is missing are not scored; points with an actual but a missing forecast
    are not scored either and the score is flagged ``nan_forecast``.

    - ``mase`` = MAE of the ``mean`` column / ``scale``, the in-sample seasonal-naive MAE
      (lag ``season``) of that window's training data (panel rows up to the cutoff). A zero
      scale (flat training data) is replaced by ``SCALE_EPSILON_RELATIVE`` x mean |y| and flagged
      ``zero_scale``; no seasonal pair at all gives NaN, flagged ``no_scale``.
    - ``wql`` = mean over quantile levels of ``2 * sum_t pinball_q / sum_t |y|`` (NaN and
      flagged ``zero_actuals`` when all actuals are 0).
    - ``coverage_p10_p90`` = share of actuals inside ``[q0.1, q0.9]`` (NaN without those levels).
    - ``bias`` = ``mean(q0.5 - y) / mean|y|`` (positive = over-forecast).
    - ``fit_seconds`` = the series' share of the window's fit time.
    """
    levels = tuple(sorted({float(q) for q in quantiles}))
    q_columns = [quantile_column(q) for q in levels]
    needed = ["model", "series_id", "window", "cutoff", "y", "mean", *q_columns]
    missing = [c for c in needed if c not in predictions.columns]
    if missing:
        raise ForecastInputError(f"predictions lack columns {', '.join(missing)}")
    if quantile_column(0.5) not in q_columns:
        raise ForecastInputError("quantiles must include 0.5 (the median used for bias)")
    rows = predictions.copy()
    if "is_selection_window" not in rows.columns:
        rows["is_selection_window"] = False
    if "fit_seconds" not in rows.columns:
        rows["fit_seconds"] = np.nan
    if "model_used" not in rows.columns:
        rows["model_used"] = rows["model"]
    y = rows["y"].to_numpy(dtype=float)
    forecasts = rows[["mean", *q_columns]].to_numpy(dtype=float)
    has_actual = ~np.isnan(y)
    valid = has_actual & ~np.isnan(forecasts).any(axis=1)
    y0 = np.where(valid, y, 0.0)
    row_values = {
        "n_points": valid.astype(float),
        "n_nan_forecast": (has_actual & ~valid).astype(float),
        "abs_err": np.where(valid, np.abs(rows["mean"].to_numpy(dtype=float) - y), 0.0),
        "abs_y": np.abs(y0),
        "median_err": np.where(valid, rows[quantile_column(0.5)].to_numpy(dtype=float) - y, 0.0),
    }
    for q, column in zip(levels, q_columns, strict=True):
        loss = pinball_loss(y, rows[column].to_numpy(dtype=float), q)
        row_values[f"pinball_{column}"] = np.where(valid, loss, 0.0)
    interval = _interval_columns(levels)
    if interval is not None:
        low, high = (rows[c].to_numpy(dtype=float) for c in interval)
        row_values["covered"] = np.where(valid, (y >= low) & (y <= high), False).astype(float)
    keys = ["model", "series_id", "window"]
    work = rows[keys].assign(**row_values)
    sums = work.groupby(keys, sort=True).sum()
    firsts = rows.groupby(keys, sort=True).agg(
        is_selection_window=("is_selection_window", "first"),
        cutoff=("cutoff", "first"),
        fit_seconds=("fit_seconds", "first"),
        model_used=("model_used", lambda s: ";".join(sorted({str(v) for v in s.dropna()}))),
    )
    out = firsts.join(sums).reset_index()
    out["cutoff"] = pd.to_datetime(out["cutoff"], utc=True).astype("datetime64[ns, UTC]")
    scales = seasonal_scales(panel, out[["series_id", "cutoff"]], season, freq)
    out = out.merge(scales, on=["series_id", "cutoff"], how="left")

    n = out["n_points"].where(out["n_points"] > 0)
    out["mae"] = out["abs_err"] / n
    zero_scale = out["scale"].notna() & (out["scale"] <= 0)
    fallback = (SCALE_EPSILON_RELATIVE * out["level"]).where(
        out["level"] > 0, SCALE_EPSILON_ABSOLUTE
    )
    out["scale"] = out["scale"].where(~zero_scale, fallback)
    out["mase"] = out["mae"] / out["scale"]
    sum_abs_y = out["abs_y"].where(out["abs_y"] > 0)
    pinball = [f"pinball_{c}" for c in q_columns]
    out["wql"] = (2.0 * out[pinball].div(sum_abs_y, axis=0)).mean(axis=1, skipna=False)
    out["coverage_p10_p90"] = out["covered"] / n if interval is not None else np.nan
    out["bias"] = (out["median_err"] / n) / (out["abs_y"] / n).where(out["abs_y"] > 0)

    flags = pd.DataFrame(
        {
            FLAG_ZERO_SCALE: zero_scale,
            FLAG_NO_SCALE: out["scale"].isna(),
            FLAG_NO_ACTUALS: out["n_points"] == 0,
            FLAG_ZERO_ACTUALS: (out["n_points"] > 0) & (out["abs_y"] == 0),
            FLAG_NAN_FORECAST: out["n_nan_forecast"] > 0,
        }
    )
    out["flags"] = [";".join(flags.columns[row]) for row in flags.to_numpy()]
    out["n_points"] = out["n_points"].astype(int)
    out["is_selection_window"] = out["is_selection_window"].astype(bool)
    return out[list(METRIC_COLUMNS)]


def relative_geometric_mean(
    metrics: pd.DataFrame, column: str, model: str, baseline: str
) -> tuple[float, int]:
    """Geometric mean over series of (model's mean ``column`` / baseline's mean ``column``).

    Only series x windows scored for both models count (so a model is never compared on
    windows the baseline skipped, or the reverse). Per-series ratios: both means 0 -> 1 (a tie);
    otherwise the ratio is clipped to ``[RELGM_CLIP, 1 / RELGM_CLIP]``. Series missing for
    either model, or NaN there, are left out. Returns ``(value, number of series used)``;
    ``(nan, 0)`` when nothing is comparable. Below 1 = better than the baseline.
    """
    keys = ["series_id", "window"]
    mine = metrics.loc[metrics["model"] == model, [*keys, column]]
    base = metrics.loc[metrics["model"] == baseline, [*keys, column]]
    paired = mine.merge(base, on=keys, suffixes=("_model", "_base")).dropna()
    if paired.empty:
        return float("nan"), 0
    per_series = paired.groupby("series_id")[[f"{column}_model", f"{column}_base"]].mean()
    num, den = per_series[f"{column}_model"], per_series[f"{column}_base"]
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where((num == 0) & (den == 0), 1.0, num / den)
    ratio = np.clip(ratio, RELGM_CLIP, 1.0 / RELGM_CLIP)
    return float(np.exp(np.mean(np.log(ratio)))), len(per_series)


def leaderboard(
    metrics: pd.DataFrame, baseline: str = "seasonal_naive_daily", sort_by: str = "wql_relgm"
) -> pd.DataFrame:
    """One row per model over the scored (non-selection) windows (``LEADERBOARD_COLUMNS``).

    Means and medians are over series x windows; ``*_relgm`` is
    ``relative_geometric_mean`` against ``baseline`` (NaN when the baseline was not run);
    ``coverage_p10_p90`` is the pooled share of actuals inside P10-P90; ``fit_seconds`` is the
    total fit time over the scored windows; ``n_flagged`` counts scores with any flag;
    ``n_fallback`` counts scores (series x window) where the model, or for ``selected`` one of
    its components, handed the series to a simpler model (``model_used`` says which and why).
    """
    scored = metrics[~metrics["is_selection_window"].astype(bool)]
    rows = []
    for model, part in scored.groupby("model", sort=True):
        mase_relgm, mase_series = relative_geometric_mean(scored, "mase", str(model), baseline)
        wql_relgm, wql_series = relative_geometric_mean(scored, "wql", str(model), baseline)
        points = part["n_points"].where(part["coverage_p10_p90"].notna(), 0)
        covered = (part["coverage_p10_p90"].fillna(0.0) * points).sum()
        rows.append(
            {
                "model": model,
                "mase_mean": part["mase"].mean(),
                "mase_median": part["mase"].median(),
                "mase_relgm": mase_relgm,
                "wql_mean": part["wql"].mean(),
                "wql_median": part["wql"].median(),
                "wql_relgm": wql_relgm,
                "coverage_p10_p90": covered / points.sum() if points.sum() > 0 else np.nan,
                "bias_mean": part["bias"].mean(),
                "fit_seconds": part["fit_seconds"].sum(),
                "n_series": part["series_id"].nunique(),
                "n_windows": part["window"].nunique(),
                "n_scores": len(part),
                "n_flagged": int((part["flags"].fillna("") != "").sum()),
                "n_fallback": int(part["model_used"].fillna("").map(fell_back).sum()),
                "mase_relgm_series": mase_series,
                "wql_relgm_series": wql_series,
            }
        )
    board = pd.DataFrame(rows, columns=list(LEADERBOARD_COLUMNS))
    if sort_by in board.columns:
        board = board.sort_values([sort_by, "model"], na_position="last", kind="stable")
    return board.reset_index(drop=True)
