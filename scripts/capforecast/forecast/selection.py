"""Per-series model choice: the best model, or a robust ensemble of the top models.

A series' own backtest windows are few (one to four) and noisy, so models are ranked on a score
that borrows strength from the whole fleet (config ``selection``):

1. Relative log score: in every series x window, each model's ``metric`` (``mase`` or ``wql``,
   both scale-free) divided by the median of all models' values there, in logs and clipped to
   ``[log RELGM_CLIP, -log RELGM_CLIP]`` (both 0 counts as a tie). Series and windows of
   different difficulty then weigh alike, and an occasional 0 cannot dominate a mean.
2. Shrinkage: a model's score on a series is ``(n * series_mean + k * fleet_mean) / (n + k)``
   where ``series_mean`` is its mean relative log score over the series' ``n`` windows and
   ``fleet_mean`` its mean over every series x window that may be used. A number ``shrinkage``
   is ``k`` for every pair: with one window of evidence and ``k`` 1 the series and the fleet
   count half each, and the more windows a series has, the more its own record decides.
   ``shrinkage: auto`` (the default) estimates ``k`` per series x model by empirical Bayes, as
   the ratio of the noise of one window's score to the real spread of the model between series:
   ``k = s2 / tau2``. ``s2`` is the variance of the model's scores across the series' windows,
   smoothed toward the model's fleet-wide within-series variance with ``PRIOR_VARIANCE_WINDOWS``
   pseudo-windows (two or three windows alone say little about a variance); ``tau2`` is the
   variance of the model's series means across series less their mean sampling noise. A series
   where the model wins or loses consistently keeps its own record; one whose windows disagree
   falls back on the fleet.
3. Ranking: ``best`` keeps the lowest score; ``ensemble`` the ``top_k`` lowest. Models whose
   forecast for the series came from the same underlying model (``model_used``, e.g. a weekly
   seasonal naive that fell back to the daily one on a short history) count once: the better
   ranked is kept, since a model combined with a copy of itself is no ensemble.
4. Combination (``combination``): ``median`` (default) takes, level by level, the unweighted
   median of the chosen models' forecasts, so one model that breaks down on a series cannot drag
   the result (weights are then ``1 / k`` and only record membership); ``mean`` takes a weighted
   average with weights ``exp(-score)`` (inverse geometric relative error), normalised. Quantile
   levels are combined one by one (Vincentisation) and then sorted so they never cross.

Why not simpler: per-series inverse-error averaging ranks on the noise of one to three windows
and lets failing models into the average (it did worse than the best single model on the NAB
fixture); dropping the shrinkage or combining by ``mean`` lost most of the gain, and a mixture of
the chosen distributions in place of averaging their quantiles gave too wide intervals. Tried on
2026-12-03 and not adopted: a geometric-mean centre in step 1 (each value first clipped to within
``1 / RELGM_CLIP`` of the median). It was level or better on MASE on the three tuning halves
(NAB 0.725 -> 0.719, Bitbrains H = 24 0.734 -> 0.732, H = 168 0.882 -> 0.882), but 0.4-1.4 %
worse on every held-out half (0.840 -> 0.843, 0.804 -> 0.815, 0.837 -> 0.847). What it would
have bought is steadiness when the pool changes: on the NAB tuning half, leaving out one
rarely chosen model (prophet, predict_linear or the weekly naive) makes ``selected``'s MASE
relgm 8-9 % worse with the median centre, 0.6-3.9 % with the geometric mean, so a change to
``models.enabled`` is a setting to benchmark, not a free speed-up. Current numbers: the README's
measured tables (leaderboard and "Forecast accuracy on real fleets").

Fallbacks, always recorded in a ``reason`` column: a series without any score in ``metric``
(e.g. WQL undefined on an all-zero series) is ranked on the other metric; a series with no
score at all gets the default, an equal-weight ensemble (combined the same way) of every
distinct model that forecast it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from capforecast.contracts import quantile_column
from capforecast.errors import ForecastInputError
from capforecast.forecast.backtest import (
    assert_no_peeking,
    earlier_windows_in_spans,
    window_spans,
)
from capforecast.forecast.metrics import RELGM_CLIP, quantile_levels
from capforecast.forecast.models.base import base_model_name
from capforecast.forecast.panel import clip_to_bounds
from capforecast.settings import SelectionSettings

SELECTED = "selected"

SELECTION_COLUMNS: tuple[str, ...] = (
    "series_id",
    "model",
    "weight",
    "metric_value",
    "score",
    "n_windows",
    "reason",
    "unavailable_models",
    "combination",
)
# The per-window choices of the backtest: the same, for each window.
CHOICE_COLUMNS: tuple[str, ...] = ("window", *SELECTION_COLUMNS)

REASON_SCORED = "backtest_scores"
REASON_OTHER_METRIC = "scored_on_other_metric"
REASON_DEFAULT = "no_scores_equal_weight"

COMBINATIONS: tuple[str, ...] = ("median", "mean")
_OTHER_METRIC = {"mase": "wql", "wql": "mase"}

AUTO_SHRINKAGE = "auto"
# Chosen on the tuning halves of the accuracy benchmark, where `auto` beat the fixed weight 10
# on MASE relgm in all three settings (NAB H = 24: 0.730 -> 0.725, Bitbrains H = 24: 0.751 ->
# 0.734, H = 168: 0.893 -> 0.882) with WQL within 0.005 or better; 2, 4 and 8 pseudo-windows
# were within 0.005 of each other everywhere.
PRIOR_VARIANCE_WINDOWS = 4.0
# Bounds on the estimated prior weight, in windows: below 0.5 one window would outweigh the
# fleet two to one; above 50 the series' record no longer matters at any realistic window count.
MIN_PRIOR_WEIGHT, MAX_PRIOR_WEIGHT = 0.5, 50.0
# A floor on tau2 (log scale): models that look the same on every series get the largest weight.
_MIN_BETWEEN_VARIANCE = 1e-3


def relative_log_scores(scored: pd.DataFrame, column: str) -> pd.DataFrame:
    """``series_id, window, model, value, relative``: each model's log score vs the median model.

    ``relative = log(value / m)`` with ``m`` the median of ``column`` over the models scored in
    that series x window, clipped to ``[log RELGM_CLIP, -log RELGM_CLIP]``; 0 where both are 0.
    Rows with NaN in ``column`` are left out.
    """
    rows = scored[["series_id", "window", "model", column]].dropna(subset=[column])
    rows = rows.rename(columns={column: "value"}).reset_index(drop=True)
    if rows.empty:
        return rows.assign(relative=pd.Series(dtype=float))
    centre = rows.groupby(["series_id", "window"])["value"].transform("median")
    value, centre = rows["value"].to_numpy(dtype=float), centre.to_numpy(dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where((value == 0) & (centre == 0), 1.0, value / centre)
    # A positive value over a zero median is infinitely worse: the clip's upper end.
    ratio = np.nan_to_num(ratio, nan=1.0, posinf=1.0 / RELGM_CLIP)
    rows["relative"] = np.log(np.clip(ratio, RELGM_CLIP, 1.0 / RELGM_CLIP))
    return rows


def empirical_bayes_weights(per_series: pd.DataFrame) -> np.ndarray:
    """Prior weight ``k`` of the fleet mean per row of ``model, n_windows, series_mean,
    series_var`` (one row per series x model; ``series_var`` NaN with one window): see the
    module doc, ``shrinkage: auto``."""
    model, n = per_series["model"], per_series["n_windows"].to_numpy(dtype=float)
    spread = per_series["series_var"]
    within = spread[per_series["n_windows"] >= 2].groupby(model).mean()
    # A model never scored twice on one series borrows the other models' variance.
    fallback = float(within.mean()) if within.notna().any() else 1.0
    model_within = model.map(within).fillna(fallback).to_numpy(dtype=float)
    own_df = np.maximum(n - 1.0, 0.0)
    own = np.nan_to_num(spread.to_numpy(dtype=float))
    noise = (own_df * own + PRIOR_VARIANCE_WINDOWS * model_within) / (
        own_df + PRIOR_VARIANCE_WINDOWS
    )
    sampling = pd.Series(noise / n, index=per_series.index).groupby(model).mean()
    between = per_series.groupby("model")["series_mean"].var(ddof=1) - sampling
    # One series alone gives no spread: its fleet mean is its own mean, so any weight will do.
    between = between.fillna(_MIN_BETWEEN_VARIANCE).clip(lower=_MIN_BETWEEN_VARIANCE)
    weight = noise / model.map(between).to_numpy(dtype=float)
    return np.clip(weight, MIN_PRIOR_WEIGHT, MAX_PRIOR_WEIGHT)


def shrunk_scores(scored: pd.DataFrame, column: str, shrinkage: float | str) -> pd.DataFrame:
    """``series_id, model, metric_value, n_windows, score`` from per-window metrics rows.

    ``metric_value`` is the plain mean of ``column`` over the series' windows (for reading);
    ``score`` is the relative log score shrunk toward the model's fleet-wide mean with prior
    weight ``shrinkage`` (a number, or ``"auto"``: estimated per series x model; module doc).
    """
    relative = relative_log_scores(scored, column)
    columns = ["series_id", "model", "metric_value", "n_windows", "score"]
    if relative.empty:
        return pd.DataFrame(columns=columns)
    per_series = (
        relative.groupby(["series_id", "model"])
        .agg(
            metric_value=("value", "mean"),
            n_windows=("value", "count"),
            series_mean=("relative", "mean"),
            series_var=("relative", "var"),
        )
        .reset_index()
    )
    fleet = relative.groupby("model")["relative"].mean()
    prior = per_series["model"].map(fleet).to_numpy(dtype=float)
    n = per_series["n_windows"].to_numpy(dtype=float)
    if shrinkage == AUTO_SHRINKAGE:
        weight = empirical_bayes_weights(per_series)
    else:
        weight = np.full(len(per_series), float(shrinkage))
    own = per_series["series_mean"].to_numpy(dtype=float)
    per_series["score"] = (n * own + weight * prior) / (n + weight)
    return per_series[columns]


def rank_weights(
    scores: pd.DataFrame, strategy: str, top_k: int, combination: str = "median"
) -> pd.DataFrame:
    """Chosen models and weights per series from ``series_id, model, score`` (lower = better).

    ``best`` keeps the lowest score (ties: first model name), ``ensemble`` the ``top_k`` lowest.
    With a ``used`` column (the underlying model of each forecast), a model whose ``used`` equals
    that of a better-ranked one is passed over. Weights of a series sum to 1: equal under
    ``median``, proportional to ``exp(-score)`` under ``mean``. Rows with NaN scores are ignored.
    """
    ranked = scores.dropna(subset=["score"]).sort_values(
        ["series_id", "score", "model"], kind="stable"
    )
    if "used" in ranked.columns:
        ranked = ranked.drop_duplicates(["series_id", "used"])
    keep = 1 if strategy == "best" else top_k
    ranked = ranked.groupby("series_id", sort=False).head(keep).copy()
    if combination == "median":
        raw = np.ones(len(ranked))
    else:
        best = ranked.groupby("series_id")["score"].transform("min")
        raw = np.exp(-(ranked["score"] - best).to_numpy(dtype=float))
    ranked["weight"] = raw
    ranked["weight"] = ranked["weight"] / ranked.groupby("series_id")["weight"].transform("sum")
    return ranked.reset_index(drop=True)


def underlying_models(predictions: pd.DataFrame) -> pd.DataFrame:
    """``series_id, model, used``: the model that actually produced each model's forecast.

    ``used`` is the base name of ``model_used`` (``"seasonal_naive_daily (fallback: too_short)"``
    -> ``seasonal_naive_daily``), several joined by ``+`` when they differ across rows (or across
    the ``;``-joined labels of a metrics table); the model name when ``model_used`` is absent.
    """
    pairs = predictions[["series_id", "model"]].copy()
    labels = predictions["model_used"] if "model_used" in predictions else predictions["model"]
    pairs["label"] = labels.fillna(predictions["model"]).astype(str)
    used = pairs.groupby(["series_id", "model"])["label"].agg(
        lambda s: "+".join(
            sorted({base_model_name(part.strip()) for text in s for part in text.split(";")})
        )
    )
    return used.rename("used").reset_index()


def choose_models(
    scored: pd.DataFrame, available: pd.DataFrame, settings: SelectionSettings
) -> pd.DataFrame:
    """Models and weights per series from past scores, among the models that can be used.

    ``scored``: metrics rows (``series_id, window, model, mase, wql``) of the windows allowed to
    count. ``available``: ``series_id, model`` pairs that have forecasts to combine, optionally
    with ``used`` (see ``underlying_models``) so that copies of one model count once. Returns
    ``SELECTION_COLUMNS``; ``unavailable_models`` names scored models that had to be passed over
    because they did not forecast the series.
    """
    metric, combination = settings.metric, settings.combination
    pairs = available.drop_duplicates(["series_id", "model"])
    if "used" not in pairs.columns:
        pairs = pairs.assign(used=pairs["model"])
    pairs = pairs[["series_id", "model", "used"]]
    out, done = [], set()
    for name, reason in ((metric, REASON_SCORED), (_OTHER_METRIC[metric], REASON_OTHER_METRIC)):
        if scored.empty:
            break
        scores = shrunk_scores(scored, name, settings.shrinkage)
        scores = scores[~scores["series_id"].isin(done)]
        usable = scores.merge(pairs, on=["series_id", "model"], how="inner")
        weights = rank_weights(usable, settings.strategy, settings.top_k, combination)
        if weights.empty:
            continue
        passed_over = scores.merge(pairs, on=["series_id", "model"], how="left", indicator=True)
        passed_over = passed_over[passed_over["_merge"] == "left_only"]
        missing = passed_over.groupby("series_id")["model"].agg(lambda m: ",".join(sorted(m)))
        weights["reason"] = reason
        weights["unavailable_models"] = weights["series_id"].map(missing).fillna("")
        out.append(weights)
        done |= set(weights["series_id"])
    rest = pairs[~pairs["series_id"].isin(done)].sort_values(["series_id", "model"])
    rest = rest.drop_duplicates(["series_id", "used"]).copy()
    if not rest.empty:
        rest["weight"] = 1.0 / rest.groupby("series_id")["model"].transform("count")
        rest["metric_value"] = np.nan
        rest["score"] = np.nan
        rest["n_windows"] = 0
        rest["reason"] = REASON_DEFAULT
        rest["unavailable_models"] = ""
        out.append(rest)
    if not out:
        return pd.DataFrame(columns=list(SELECTION_COLUMNS))
    chosen = pd.concat(out, ignore_index=True).assign(combination=combination)
    chosen = chosen[list(SELECTION_COLUMNS)]
    chosen["n_windows"] = chosen["n_windows"].astype(int)
    return chosen.sort_values(["series_id", "weight", "model"], ascending=[True, False, True])


def combine_weighted(
    forecasts: pd.DataFrame,
    weights: pd.DataFrame,
    keys: Sequence[str],
    combination: str = "mean",
) -> pd.DataFrame:
    """Combine ``mean`` and every quantile column across models, per ``keys`` row.

    ``forecasts`` has ``model`` plus ``keys`` and value columns; ``weights`` has ``series_id,
    model, weight``. ``combination="mean"``: weighted average, normalised by the weights of the
    models that have the value, so a model missing a timestamp does not pull the average to 0.
    ``"median"``: unweighted median of the models listed in ``weights`` (missing values
    skipped; with two models, their average). Quantiles are sorted across levels afterwards.
    ``model_used`` lists the components' ``model_used`` by weight; ``fit_seconds`` (when
    present) is summed, since the combination needs every component fit.
    """
    if combination not in COMBINATIONS:
        raise ForecastInputError(
            f"unknown combination {combination!r}; known: {', '.join(COMBINATIONS)}"
        )
    q_columns = [quantile_column(q) for q in quantile_levels(forecasts)]
    value_columns = ["mean", *q_columns]
    merged = forecasts.merge(weights[["series_id", "model", "weight"]], on=["series_id", "model"])
    grouped_keys = list(keys)
    combined = {}
    for column in value_columns:
        values = merged[column].astype(float)
        if combination == "median":
            combined[column] = values.groupby([merged[k] for k in keys]).median()
            continue
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


@dataclass(frozen=True)
class WindowChoice:
    """How ``selected`` is made in one backtest window: from which earlier windows' scores
    (``earlier``) and with which models and weights per series (``weights``)."""

    window: int
    earlier: list[int]
    weights: pd.DataFrame


def plan_selection(
    metrics: pd.DataFrame,
    spans: pd.DataFrame,
    available: Mapping[int, pd.DataFrame],
    settings: SelectionSettings,
) -> list[WindowChoice]:
    """Every window's choice, from small fleet-wide tables only.

    ``metrics``: the candidates' scores (``score_predictions``); ``spans``: their
    ``backtest.window_spans``; ``available``: per window, ``underlying_models`` of the
    candidates that forecast it. Each table can be built shard by shard and concatenated, so a
    fleet is selected without holding all its predictions.
    """
    history = metrics[metrics["model"] != SELECTED]
    plan = []
    for window in sorted(available):
        earlier = earlier_windows_in_spans(spans, window)
        weights = choose_models(
            history[history["window"].isin(earlier)], available[window], settings
        )
        plan.append(WindowChoice(int(window), earlier, weights))
    return plan


def combine_planned(
    candidates: pd.DataFrame, plan: Sequence[WindowChoice], settings: SelectionSettings
) -> pd.DataFrame:
    """``selected`` predictions of the series in ``candidates`` (a shard or the fleet).

    Asserts, on these predictions' own timestamps, that no choice used an actual after the
    cutoff of the window it was made for.
    """
    frames = []
    for choice in plan:
        current = candidates[candidates["window"] == choice.window]
        if current.empty:
            continue
        assert_no_peeking(
            candidates[candidates["window"].isin(choice.earlier)], current, choice.window
        )
        frames.append(
            combine_weighted(
                current,
                choice.weights,
                ["series_id", "window", "timestamp"],
                settings.combination,
            )
        )
    if not frames:
        return pd.DataFrame()
    return pd.concat(frames, ignore_index=True)


def finish_selected(
    frames: Sequence[pd.DataFrame], plan: Sequence[WindowChoice], columns: Sequence[str]
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The ``selected`` predictions of every shard in the ``run_backtest`` layout (``columns``
    are the candidates'), sorted, and the choices table (``CHOICE_COLUMNS``)."""
    frames = [f for f in frames if not f.empty]
    if not frames:
        return pd.DataFrame(columns=list(columns)), pd.DataFrame(columns=list(CHOICE_COLUMNS))
    return order_selected(pd.concat(frames, ignore_index=True), columns), plan_choices(plan)


def order_selected(selected: pd.DataFrame, columns: Sequence[str]) -> pd.DataFrame:
    """``combine_planned`` output in the ``run_backtest`` layout (``columns`` are the
    candidates'), sorted by series, window and timestamp (one row each: a shard's rows sort
    alike on their own)."""
    ordered = ["model", *[c for c in columns if c != "model" and c in selected.columns]]
    selected = selected[ordered].sort_values(["series_id", "window", "timestamp"], kind="stable")
    return selected.reset_index(drop=True)


def plan_choices(plan: Sequence[WindowChoice]) -> pd.DataFrame:
    """The choices table (``CHOICE_COLUMNS``) of a selection plan."""
    choices = pd.concat(
        [choice.weights.assign(window=choice.window) for choice in plan], ignore_index=True
    )[list(CHOICE_COLUMNS)]
    return choices.reset_index(drop=True)


def available_by_window(candidates: pd.DataFrame) -> dict[int, pd.DataFrame]:
    """``underlying_models`` of the candidates, per window they forecast."""
    return {
        int(window): underlying_models(candidates[candidates["window"] == window])
        for window in sorted(candidates["window"].unique())
    }


def select_without_peeking(
    metrics: pd.DataFrame, predictions: pd.DataFrame, settings: SelectionSettings
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Model ``selected`` predictions for every internal window, each chosen without peeking.

    The choice for window ``w`` uses only the scores of windows ``v < w`` whose test actuals
    all lie at or before ``w``'s cutoff (with ``step < horizon`` the windows just before ``w``
    overlap its cutoff and are left out); this is asserted on the predictions' timestamps.
    Windows without such earlier scores (always window 0; with ``backtest.selection_windows
    >= 1`` it is not scored) use the documented default: an equal-weight ensemble of every
    distinct model that forecast the series. Only models that forecast the series in window
    ``w`` take part; the others are named in ``unavailable_models``. Copies of one underlying
    model in window ``w`` (``model_used``) count once.

    Returns ``(selected_predictions, choices)``: predictions in the ``run_backtest`` layout
    with ``model = "selected"`` and ``choices`` with ``CHOICE_COLUMNS``. The same steps run
    shard by shard in ``capforecast.forecast.evaluate.evaluate_shards``.
    """
    candidates = predictions[predictions["model"] != SELECTED]
    plan = plan_selection(
        metrics, window_spans(candidates), available_by_window(candidates), settings
    )
    return finish_selected(
        [combine_planned(candidates, plan, settings)], plan, list(predictions.columns)
    )


def final_selection(metrics: pd.DataFrame, settings: SelectionSettings) -> pd.DataFrame:
    """Per-series choice for the final forecast from all backtest windows (``SELECTION_COLUMNS``).

    Uses every internal window, selection windows included (more evidence; nothing is scored
    after it). Every model with a metrics row for a series is a candidate; copies of one
    underlying model are recognised from the ``model_used`` of each series' latest window (the
    one closest to the final fit). The ``combination`` column tells ``combine_final_forecasts``
    how to combine. The rule writes the result to ``results/backtest/selection.parquet``.
    """
    history = metrics[metrics["model"] != SELECTED]
    latest = history[history["window"] == history.groupby("series_id")["window"].transform("max")]
    chosen = choose_models(history, underlying_models(latest), settings)
    return chosen.reset_index(drop=True)


def combine_final_forecasts(
    forecasts_by_model: Mapping[str, pd.DataFrame],
    selection: pd.DataFrame,
    *,
    bounds: Mapping[str, tuple[float, float | None]] | None = None,
) -> pd.DataFrame:
    """The ``model = "selected"`` forecast from each model's final forecast and the selection.

    For each series, the selected models' forecasts are combined quantile level by quantile
    level as the selection's ``combination`` column says (``median``: their median; ``mean``:
    their weighted average; one model under ``best``), then
    sorted and clipped to ``bounds``. When a selected model has no forecast for a series, the
    weights are renormalised over the selected models that have one; when none has (or the
    series is not in the selection), every model that forecast the series gets equal weight.
    Both cases set ``selection_fallback`` and explain it in ``fallback_reason``.
    """
    if "combination" not in selection.columns:
        raise ForecastInputError("selection: no 'combination' column (rerun the leaderboard rule)")
    recorded = selection["combination"].dropna()
    # An empty selection (no model forecast any series): every series gets equal weights.
    combination = str(recorded.iloc[0]) if len(recorded) else "mean"
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

    out = combine_weighted(stacked, weights, ["series_id", "timestamp"], combination)
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
