"""Per-series model choice: the best model, or a backtest-weighted ensemble of the top models.

Strategies (config ``selection``):

- ``best``: per series, the model with the lowest mean ``metric`` (``mase`` or ``wql``) over
  the windows used; weight 1.
- ``ensemble``: per series, the ``top_k`` models by mean ``metric`` with inverse-error weights
  ``w_i = (1 / e_i) / sum_j (1 / e_j)``; models with error exactly 0 share all the weight. The
  quantiles are combined level by level as weighted averages (Vincentisation), then sorted
  across levels so they never cross.

Fallbacks, always recorded in a ``reason`` column: a series without any score in ``metric``
(e.g. WQL undefined on an all-zero series) is ranked on the other metric; a series with no
score at all gets the default, an equal-weight ensemble of every model that forecast it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from capforecast.backtest import assert_no_peeking, earlier_windows
from capforecast.contracts import quantile_column
from capforecast.errors import ConfigError, ForecastInputError
from capforecast.metrics import quantile_levels
from capforecast.panel import clip_to_bounds

SELECTED = "selected"

CHOICE_COLUMNS: tuple[str, ...] = (
    "window",
    "series_id",
    "model",
    "weight",
    "metric_value",
    "n_windows",
    "reason",
    "unavailable_models",
)
SELECTION_COLUMNS: tuple[str, ...] = (
    "series_id",
    "model",
    "weight",
    "metric_value",
    "n_windows",
    "reason",
    "unavailable_models",
)

REASON_SCORED = "backtest_scores"
REASON_OTHER_METRIC = "scored_on_other_metric"
REASON_DEFAULT = "no_scores_equal_weight"

_OTHER_METRIC = {"mase": "wql", "wql": "mase"}
_DEFAULTS = {"strategy": "ensemble", "metric": "wql", "top_k": 3}


def selection_settings(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """Strategy, metric and top_k from a whole config or just its ``selection`` section."""
    section = cfg.get("selection", cfg) if isinstance(cfg, Mapping) else {}
    settings = {key: section.get(key, default) for key, default in _DEFAULTS.items()}
    if settings["strategy"] not in ("best", "ensemble"):
        raise ConfigError(
            "selection.strategy",
            f"value {settings['strategy']!r} is invalid; allowed: best, ensemble",
        )
    if settings["metric"] not in _OTHER_METRIC:
        raise ConfigError(
            "selection.metric", f"value {settings['metric']!r} is invalid; allowed: mase, wql"
        )
    if int(settings["top_k"]) < 1:
        raise ConfigError("selection.top_k", f"must be at least 1, got {settings['top_k']}")
    settings["top_k"] = int(settings["top_k"])
    return settings


def rank_weights(scores: pd.DataFrame, strategy: str, top_k: int) -> pd.DataFrame:
    """Weights per series from ``series_id, model, metric_value, n_windows`` (lower = better).

    ``best`` keeps the lowest score (ties: first model name); ``ensemble`` keeps the ``top_k``
    lowest with inverse-error weights (zero errors share the weight equally). Weights of a
    series sum to 1. Rows with NaN scores are ignored.
    """
    ranked = scores.dropna(subset=["metric_value"]).sort_values(
        ["series_id", "metric_value", "model"], kind="stable"
    )
    keep = 1 if strategy == "best" else top_k
    ranked = ranked.groupby("series_id", sort=False).head(keep).copy()
    is_zero = ranked["metric_value"] <= 0
    any_zero = is_zero.groupby(ranked["series_id"]).transform("any")
    with np.errstate(divide="ignore"):
        raw = np.where(any_zero, is_zero.astype(float), 1.0 / ranked["metric_value"])
    ranked["weight"] = raw
    ranked["weight"] = ranked["weight"] / ranked.groupby("series_id")["weight"].transform("sum")
    return ranked.reset_index(drop=True)


def choose_models(
    scored: pd.DataFrame, available: pd.DataFrame, settings: Mapping[str, Any]
) -> pd.DataFrame:
    """Weights per series from past scores, restricted to the models that can be used.

    ``scored``: metrics rows (``series_id, model, mase, wql``) of the windows allowed to count.
    ``available``: ``series_id, model`` pairs that have forecasts to combine. Returns
    ``SELECTION_COLUMNS``; ``unavailable_models`` names scored models that had to be passed over
    because they did not forecast the series.
    """
    metric = settings["metric"]
    pairs = available[["series_id", "model"]].drop_duplicates()
    out, done = [], set()
    for name, reason in ((metric, REASON_SCORED), (_OTHER_METRIC[metric], REASON_OTHER_METRIC)):
        if scored.empty:
            break
        scores = (
            scored.groupby(["series_id", "model"])[name]
            .agg(metric_value="mean", n_windows="count")
            .reset_index()
        )
        scores = scores[(scores["n_windows"] > 0) & ~scores["series_id"].isin(done)]
        usable = scores.merge(pairs, on=["series_id", "model"], how="inner")
        weights = rank_weights(usable, settings["strategy"], settings["top_k"])
        if weights.empty:
            continue
        passed_over = scores.merge(pairs, on=["series_id", "model"], how="left", indicator=True)
        passed_over = passed_over[passed_over["_merge"] == "left_only"]
        missing = passed_over.groupby("series_id")["model"].agg(lambda m: ",".join(sorted(m)))
        weights["reason"] = reason
        weights["unavailable_models"] = weights["series_id"].map(missing).fillna("")
        out.append(weights)
        done |= set(weights["series_id"])
    rest = pairs[~pairs["series_id"].isin(done)].copy()
    if not rest.empty:
        rest["weight"] = 1.0 / rest.groupby("series_id")["model"].transform("count")
        rest["metric_value"] = np.nan
        rest["n_windows"] = 0
        rest["reason"] = REASON_DEFAULT
        rest["unavailable_models"] = ""
        out.append(rest)
    if not out:
        return pd.DataFrame(columns=list(SELECTION_COLUMNS))
    chosen = pd.concat(out, ignore_index=True)[list(SELECTION_COLUMNS)]
    chosen["n_windows"] = chosen["n_windows"].astype(int)
    return chosen.sort_values(["series_id", "weight", "model"], ascending=[True, False, True])


def combine_weighted(
    forecasts: pd.DataFrame, weights: pd.DataFrame, keys: Sequence[str]
) -> pd.DataFrame:
    """Weighted average of ``mean`` and every quantile column across models, per ``keys`` row.

    ``forecasts`` has ``model`` plus ``keys`` and value columns; ``weights`` has ``series_id,
    model, weight``. Each output value is normalised by the weights of the models that have it,
    so a model missing a timestamp does not pull the average to 0. Quantiles are sorted across
    levels afterwards. ``model_used`` lists the components' ``model_used`` by weight;
    ``fit_seconds`` (when present) is summed, since the combination needs every component fit.
    """
    q_columns = [quantile_column(q) for q in quantile_levels(forecasts)]
    value_columns = ["mean", *q_columns]
    merged = forecasts.merge(weights[["series_id", "model", "weight"]], on=["series_id", "model"])
    grouped_keys = list(keys)
    combined = {}
    for column in value_columns:
        values = merged[column].astype(float)
        numerator = (values * merged["weight"]).groupby([merged[k] for k in keys]).sum(min_count=1)
        denominator = (merged["weight"] * values.notna()).groupby([merged[k] for k in keys]).sum()
        combined[column] = numerator / denominator.where(denominator > 0)
    out = pd.DataFrame(combined)
    extra = {}
    if "y" in merged.columns:
        extra["y"] = ("y", "first")
    if "fit_seconds" in merged.columns:
        extra["fit_seconds"] = ("fit_seconds", "sum")
    for column in ("is_selection_window", "cutoff"):
        if column in merged.columns and column not in grouped_keys:
            extra[column] = (column, "first")
    if extra:
        out = out.join(merged.groupby(grouped_keys).agg(**extra))
    label_source = merged.sort_values(["weight", "model"], ascending=[False, True])
    used = label_source.get("model_used", label_source["model"]).astype(str)
    out = out.join(
        used.groupby([label_source[k] for k in keys])
        .agg(lambda s: "+".join(dict.fromkeys(s)))
        .rename("model_used")
    )
    out = out.reset_index()
    if q_columns:
        out[q_columns] = np.sort(out[q_columns].to_numpy(dtype=float), axis=1)
    out.insert(0, "model", SELECTED)
    return out


def select_without_peeking(
    metrics: pd.DataFrame, predictions: pd.DataFrame, cfg: Mapping[str, Any]
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Model ``selected`` predictions for every internal window, each chosen without peeking.

    The choice for window ``w`` uses only the scores of windows ``v < w`` whose test actuals
    all lie at or before ``w``'s cutoff (with ``step < horizon`` the windows just before ``w``
    overlap its cutoff and are left out); this is asserted on the predictions' timestamps.
    Windows without such earlier scores (always window 0; with ``backtest.selection_windows
    >= 1`` it is not scored) use the documented default: an equal-weight ensemble of every
    model that forecast the series. Only models that forecast the series in window ``w`` take
    part; the others are named in ``unavailable_models``.

    Returns ``(selected_predictions, choices)``: predictions in the ``run_backtest`` layout
    with ``model = "selected"`` and ``choices`` with ``CHOICE_COLUMNS``.
    """
    settings = selection_settings(cfg)
    candidates = predictions[predictions["model"] != SELECTED]
    history = metrics[metrics["model"] != SELECTED]
    selected, choices = [], []
    for window in sorted(candidates["window"].unique()):
        earlier = earlier_windows(candidates, window)
        current = candidates[candidates["window"] == window]
        assert_no_peeking(candidates[candidates["window"].isin(earlier)], current, window)
        weights = choose_models(
            history[history["window"].isin(earlier)], current[["series_id", "model"]], settings
        )
        combined = combine_weighted(current, weights, ["series_id", "window", "timestamp"])
        selected.append(combined)
        choices.append(weights.assign(window=window))
    columns = [c for c in predictions.columns if c != "model"]
    if not selected:
        return (
            pd.DataFrame(columns=list(predictions.columns)),
            pd.DataFrame(columns=list(CHOICE_COLUMNS)),
        )
    selected_predictions = pd.concat(selected, ignore_index=True)
    ordered = ["model", *[c for c in columns if c in selected_predictions.columns]]
    selected_predictions = selected_predictions[ordered].sort_values(
        ["series_id", "window", "timestamp"], kind="stable"
    )
    choice_table = pd.concat(choices, ignore_index=True)[list(CHOICE_COLUMNS)]
    return selected_predictions.reset_index(drop=True), choice_table.reset_index(drop=True)


def final_selection(metrics: pd.DataFrame, cfg: Mapping[str, Any]) -> pd.DataFrame:
    """Per-series choice for the final forecast from all backtest windows (``SELECTION_COLUMNS``).

    Uses every internal window, selection windows included (more evidence; nothing is scored
    after it). Every model with a metrics row for a series is a candidate. The rule writes the
    result to ``results/backtest/selection.parquet``.
    """
    settings = selection_settings(cfg)
    history = metrics[metrics["model"] != SELECTED]
    chosen = choose_models(history, history[["series_id", "model"]], settings)
    return chosen.reset_index(drop=True)


def combine_final_forecasts(
    forecasts_by_model: Mapping[str, pd.DataFrame],
    selection: pd.DataFrame,
    *,
    bounds: Mapping[str, tuple[float, float | None]] | None = None,
) -> pd.DataFrame:
    """The ``model = "selected"`` forecast from each model's final forecast and the selection.

    For each series, the selected models' forecasts are averaged with their weights (one model
    with weight 1 under ``best``), quantile level by quantile level, then sorted and clipped to
    ``bounds``. When a selected model has no forecast for a series, the weights are renormalised
    over the selected models that have one; when none has (or the series is not in the
    selection), every model that forecast the series gets equal weight. Both cases set
    ``selection_fallback`` and explain it in ``fallback_reason``.
    """
    frames = []
    for model, frame in forecasts_by_model.items():
        if frame is None or frame.empty:
            continue
        frames.append(frame.assign(model=model))
    if not frames:
        raise ForecastInputError("no model forecasts to combine")
    levels = quantile_levels(frames[0])
    q_columns = [quantile_column(q) for q in levels]
    for frame in frames:
        lacking = [c for c in ["series_id", "timestamp", "mean", *q_columns] if c not in frame]
        if lacking:
            raise ForecastInputError(
                f"forecast of model '{frame['model'].iloc[0]}' lacks columns {', '.join(lacking)}"
            )
    keep = ["model", "series_id", "timestamp", "mean", *q_columns, "model_used"]
    stacked = pd.concat(
        [f.assign(model_used=f.get("model_used", f["model"]))[keep] for f in frames],
        ignore_index=True,
    )
    available = stacked[["series_id", "model"]].drop_duplicates()
    chosen = selection[selection["weight"] > 0][["series_id", "model", "weight"]]
    usable = chosen.merge(available, on=["series_id", "model"], how="inner")
    usable["weight"] = usable["weight"] / usable.groupby("series_id")["weight"].transform("sum")
    missing = chosen.merge(available, on=["series_id", "model"], how="left", indicator=True)
    missing = missing[missing["_merge"] == "left_only"]
    missing_text = missing.groupby("series_id")["model"].agg(lambda m: ",".join(sorted(m)))
    rest = available[~available["series_id"].isin(usable["series_id"])].copy()
    rest["weight"] = 1.0 / rest.groupby("series_id")["model"].transform("count")
    weights = pd.concat([usable, rest], ignore_index=True)

    out = combine_weighted(stacked, weights, ["series_id", "timestamp"])
    in_selection = set(chosen["series_id"])
    reasons = {}
    for sid in out["series_id"].unique():
        if sid not in in_selection:
            reasons[sid] = "series not in selection: equal weight of available models"
        elif sid in set(rest["series_id"]):
            reasons[sid] = (
                f"no forecast from selected models {missing_text.get(sid, '')}: "
                "equal weight of available models"
            )
        elif sid in missing_text.index:
            reasons[sid] = f"no forecast from selected models {missing_text[sid]}: renormalised"
    out["fallback_reason"] = out["series_id"].map(reasons).fillna("")
    out["selection_fallback"] = out["fallback_reason"] != ""
    if bounds:
        out = clip_to_bounds(out, ["mean", *q_columns], bounds)
    columns = ["model", "series_id", "timestamp", "mean", *q_columns, "model_used"]
    return (
        out[[*columns, "selection_fallback", "fallback_reason"]]
        .sort_values(["series_id", "timestamp"], kind="stable")
        .reset_index(drop=True)
    )
