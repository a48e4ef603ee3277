"""From every model's backtest predictions to the leaderboard with an honest `selected` row.

Shared by the `leaderboard` rule and the accuracy benchmark so both score exactly alike.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from capforecast.forecast import backtest, calibration, metrics, selection, shards
from capforecast.forecast.fit import model_quantiles
from capforecast.forecast.models.base import ModelFn
from capforecast.settings import (
    BacktestSettings,
    ForecastSettings,
    ModelSettings,
    SelectionSettings,
    backtest_settings,
    forecast_settings,
    model_settings,
    selection_settings,
)


@dataclass(frozen=True)
class Evaluation:
    metrics: pd.DataFrame  # per model x series x window, `selected` included
    leaderboard: pd.DataFrame
    selection: pd.DataFrame  # final per-series choice (all windows), for the refit forecasts
    # Backtest predictions of `selected`, calibrated (None: not gathered, see evaluate_shards).
    selected_predictions: pd.DataFrame | None
    calibration: pd.DataFrame  # interval scaling fitted on all selected windows
    window_choices: pd.DataFrame  # which models each window of `selected` used


def backtest_models(
    history: pd.DataFrame,
    models: Mapping[str, ModelFn],
    *,
    backtest_cfg: BacktestSettings,
    forecast_cfg: ForecastSettings,
    models_cfg: ModelSettings,
    freq: str,
    bounds: Mapping[str, tuple[float, float | None]],
    n_jobs: int = 1,
    fleet_checked: bool = False,
) -> pd.DataFrame:
    """Run the configured rolling-origin backtest for each model; predictions concatenated.
    ``fleet_checked``: ``history`` is one shard of a checked fleet (``backtest.plan_backtest``)."""
    bt = backtest_cfg
    frames = [
        backtest.run_backtest(
            history,
            fn,
            name,
            windows=bt.windows,
            horizon=bt.horizon,
            step=bt.step,
            quantiles=model_quantiles(forecast_cfg),
            season=bt.season,
            bounds=bounds,
            n_jobs=n_jobs,
            model_cfg=models_cfg,
            selection_windows=bt.selection_windows,
            freq=freq,
            fleet_checked=fleet_checked,
        )
        for name, fn in models.items()
    ]
    out = pd.concat(frames, ignore_index=True)
    # Skipped series-windows of every model, kept for the caller (concat drops attrs).
    out.attrs["skipped"] = [row for frame in frames for row in frame.attrs.get("skipped", [])]
    return out


@dataclass(frozen=True)
class ShardSource:
    """One shard's inputs, read when needed: each pass over the fleet holds one shard at a time.

    ``predictions``: its backtest predictions (every candidate model); ``history``: its panel
    rows (``series_id, timestamp, y``), the MASE scale's data.
    """

    predictions: Callable[[], pd.DataFrame]
    history: Callable[[], pd.DataFrame]


def evaluate_backtests(
    predictions: pd.DataFrame,
    history: pd.DataFrame,
    *,
    backtest_cfg: BacktestSettings,
    forecast_cfg: ForecastSettings,
    selection_cfg: SelectionSettings,
    bounds: Mapping[str, tuple[float, float | None]],
    baseline: str = "seasonal_naive_daily",
) -> Evaluation:
    """Score all models, select per window without peeking, calibrate, and rank.

    ``history`` is the panel (series_id, timestamp, y) the MASE scale is computed from. The
    whole fleet as one shard of ``evaluate_shards``.
    """
    return evaluate_shards(
        [ShardSource(lambda: predictions, lambda: history)],
        backtest_cfg=backtest_cfg,
        forecast_cfg=forecast_cfg,
        selection_cfg=selection_cfg,
        bounds=bounds,
        baseline=baseline,
    )


def evaluate_shards(
    shards: Sequence[ShardSource],
    *,
    backtest_cfg: BacktestSettings,
    forecast_cfg: ForecastSettings,
    selection_cfg: SelectionSettings,
    bounds: Mapping[str, tuple[float, float | None]],
    baseline: str = "seasonal_naive_daily",
    keep_predictions: bool = True,
) -> Evaluation:
    """``evaluate_backtests`` over a fleet split into shards, with the same result.

    One shard in memory at a time: (1) score every candidate and collect the small fleet-wide
    tables selection needs (scores, window spans, available models); choose per window for the
    whole fleet; (2) combine each shard's ``selected`` predictions, set them aside on disk and
    keep what calibration pools over the fleet (coverage counts and residuals, one float per
    point and level); (3) calibrate each shard's ``selected`` with those (its series' own
    factors come from its own rows) and score it. Everything a choice depends on is fleet-wide
    and sorted, so the shards' order and sizes change nothing.

    ``keep_predictions=False`` leaves ``selected_predictions`` None instead of gathering the
    fleet's calibrated ``selected`` backtest (the leaderboard rule writes only small tables).
    """
    season, scored_quantiles = backtest_cfg.season, list(forecast_cfg.quantiles)
    score_frames, span_frames = [], []
    available: dict[int, list[pd.DataFrame]] = {}
    columns: list[str] = []
    for shard, predictions in _nonempty_predictions(shards):
        candidates = _candidates(predictions)
        score_frames.append(
            metrics.score_predictions(candidates, shard.history(), season, scored_quantiles)
        )
        span_frames.append(backtest.window_spans(candidates))
        for window, table in selection.available_by_window(candidates).items():
            available.setdefault(window, []).append(table)
        columns = columns or list(predictions.columns)
    scores = _sorted_scores(score_frames)
    plan = selection.plan_selection(
        scores,
        pd.concat(span_frames),
        {window: pd.concat(tables, ignore_index=True) for window, tables in available.items()},
        selection_cfg,
    )
    # The final forecasts are uncalibrated combinations: the scaling is fitted on the
    # uncalibrated backtest combinations, before those are calibrated window by window.
    # Selection windows hold the no-scores default, not a choice (see calibration).
    scaling = (
        calibration.StreamedCalibration(model_quantiles(forecast_cfg), bounds=bounds)
        if forecast_cfg.calibrate
        else None
    )
    selected_scores, kept = [], []
    with tempfile.TemporaryDirectory(prefix="capforecast-selected-") as spill:
        combined = []
        for shard, predictions in _nonempty_predictions(shards):
            frame = selection.combine_planned(_candidates(predictions), plan, selection_cfg)
            del predictions
            if frame.empty:
                continue
            frame = selection.order_selected(frame, columns)
            if scaling is not None:
                scaling.add(frame)
            path = Path(spill) / f"{len(combined)}.pickle"
            frame.to_pickle(path)
            combined.append((shard, path))
            del frame
        for shard, path in combined:
            selected = pd.read_pickle(path)
            if scaling is not None:
                selected = scaling.calibrate(selected)
            selected_scores.append(
                metrics.score_predictions(selected, shard.history(), season, scored_quantiles)
            )
            if keep_predictions:
                kept.append(selected)
    table = pd.DataFrame() if scaling is None else scaling.table()
    if combined:
        choices = selection.plan_choices(plan)
    else:  # nothing selected: the empty tables, with their columns
        selected, choices = selection.finish_selected([], plan, columns)
        if scaling is not None:
            selected = selected.assign(interval_scaled=False)
        history = shards[-1].history()
        selected_scores.append(
            metrics.score_predictions(selected, history, season, scored_quantiles)
        )
        kept = [selected]
    all_scores = pd.concat([scores, _sorted_scores(selected_scores)], ignore_index=True)
    return Evaluation(
        metrics=all_scores,
        leaderboard=metrics.leaderboard(all_scores, baseline=baseline),
        selection=selection.final_selection(scores, selection_cfg),
        selected_predictions=_gathered(kept) if keep_predictions else None,
        calibration=table,
        window_choices=choices,
    )


def _gathered(frames: Sequence[pd.DataFrame]) -> pd.DataFrame:
    """Shards' ``selected`` predictions in the order of the whole fleet's."""
    out = pd.concat(frames, ignore_index=True)
    out = out.sort_values(["series_id", "window", "timestamp"], kind="stable")
    return out.reset_index(drop=True)


def shard_sources(
    prediction_files: Iterable[str | Path],
    feature_files: Iterable[str | Path],
    groups: Mapping[str, tuple[Sequence[str], int]],
) -> list[ShardSource]:
    """The leaderboard's inputs grouped by shard, each read only when evaluated.

    ``prediction_files``: ``.../{group}/{shard}/{model}.parquet``; ``feature_files``:
    ``.../{partition}.parquet``; ``groups``: each shard group's partitions and shard count
    (``shards.shard_groups``: a partition of its own, or a pack of small partitions). A shard's
    history is its rows of its group's features, as its model jobs saw them.
    """
    features = {Path(f).stem: Path(f) for f in feature_files}
    by_shard: dict[tuple[str, int], list[Path]] = {}
    for path in map(Path, prediction_files):
        by_shard.setdefault((path.parent.parent.name, int(path.parent.name)), []).append(path)
    sources = []
    for (group, shard), paths in sorted(by_shard.items()):
        partitions, count = groups[group]
        files = [features[partition] for partition in partitions]
        sources.append(
            ShardSource(
                predictions=lambda paths=paths: shards.read_shards(paths),
                history=lambda f=files, k=shard, n=count: shards.load_shard(f, k, n)[
                    ["series_id", "timestamp", "y"]
                ],
            )
        )
    return sources


def series_metrics(feature_files: Iterable[str | Path]) -> pd.DataFrame:
    """``series_id, metric`` of every series (what ``panel.series_bounds`` needs), read from
    two columns of each partition's features."""
    frames = [
        pd.read_parquet(f, columns=["series_id", "metric"]).drop_duplicates("series_id")
        for f in feature_files
    ]
    frames = [f for f in frames if len(f)]
    if not frames:
        return pd.DataFrame(
            {"series_id": pd.Series(dtype=object), "metric": pd.Series(dtype=object)}
        )
    return pd.concat(frames, ignore_index=True)


def _nonempty_predictions(
    shards: Sequence[ShardSource],
) -> Iterator[tuple[ShardSource, pd.DataFrame]]:
    """Each shard with its predictions, read now; shards without any (every series hashed
    elsewhere, or all too short for a window) are passed over."""
    for shard in shards:
        predictions = shard.predictions()
        if not predictions.empty:
            yield shard, predictions
        del predictions  # not held while the next shard is read


def _candidates(predictions: pd.DataFrame) -> pd.DataFrame:
    return predictions[predictions["model"] != selection.SELECTED]


def _sorted_scores(frames: Sequence[pd.DataFrame]) -> pd.DataFrame:
    """Shards' scores in the order ``score_predictions`` gives for the whole fleet."""
    scores = pd.concat(frames, ignore_index=True)
    scores = scores.sort_values(["model", "series_id", "window"], kind="stable")
    return scores.reset_index(drop=True)


def leaderboard_with_peers(
    evaluation: Evaluation,
    peer_predictions: pd.DataFrame,
    history: pd.DataFrame,
    *,
    season: int,
    quantiles: list[float],
    baseline: str = "seasonal_naive_daily",
) -> pd.DataFrame:
    """The leaderboard with rows for peers that were backtested alongside but not selectable.

    Peers (``capforecast.forecast.models.peers``) are scored on the same windows and ranked
    against the same baseline; ``is_peer`` marks their rows.
    """
    peer_scores = metrics.score_predictions(peer_predictions, history, season, quantiles)
    return leaderboard_with_peer_scores(evaluation, peer_scores, baseline=baseline)


def leaderboard_with_peer_scores(
    evaluation: Evaluation, peer_scores: pd.DataFrame, *, baseline: str = "seasonal_naive_daily"
) -> pd.DataFrame:
    """``leaderboard_with_peers`` from the peers' per-window scores (``metrics.METRIC_COLUMNS``
    rows of ``metrics.score_predictions``), e.g. scores kept from an earlier run."""
    board = metrics.leaderboard(
        pd.concat([evaluation.metrics, peer_scores], ignore_index=True), baseline=baseline
    )
    board["is_peer"] = board["model"].isin(set(peer_scores["model"]))
    return board


def forecast_in_memory(
    panel: pd.DataFrame,
    cfg: Mapping[str, Any],
    models: list[str] | None = None,
    *,
    n_jobs: int = 1,
) -> tuple[Evaluation, pd.DataFrame]:
    """The forecast stage of the workflow in one call: backtest, select, refit, combine.

    ``panel`` is a feature panel (``series_id, resource_id, metric, timestamp, y``); ``cfg`` the
    validated config; ``models`` defaults to ``models.enabled``. Returns the evaluation and the
    final forecasts (``model = "selected"``, calibrated as the workflow does). For notebooks and
    tests that want the product's forecast without running Snakemake.
    """
    from capforecast.forecast.fit import fit_forecast
    from capforecast.forecast.models import MODEL_REGISTRY
    from capforecast.forecast.panel import series_bounds

    bt, fc, ms = (
        backtest_settings(cfg["backtest"]),
        forecast_settings(cfg["forecast"]),
        model_settings(cfg["models"]),
    )
    names = list(models or ms.enabled)
    history = panel[["series_id", "timestamp", "y"]]
    bounds = series_bounds(panel, cfg["etl"]["percent_metrics"])
    predictions = backtest_models(
        history,
        {name: MODEL_REGISTRY[name] for name in names},
        backtest_cfg=bt,
        forecast_cfg=fc,
        models_cfg=ms,
        freq=cfg["etl"]["freq"],
        bounds=bounds,
        n_jobs=n_jobs,
    )
    evaluation = evaluate_backtests(
        predictions,
        history,
        backtest_cfg=bt,
        forecast_cfg=fc,
        selection_cfg=selection_settings(cfg["selection"]),
        bounds=bounds,
    )
    candidates = {
        name: fit_forecast(
            name,
            panel,
            forecast_cfg=fc,
            backtest_cfg=bt,
            models_cfg=ms,
            percent_metrics=cfg["etl"]["percent_metrics"],
            freq=cfg["etl"]["freq"],
            n_jobs=n_jobs,
        )
        for name in names
    }
    selected = combine_selected(
        candidates, evaluation.selection, evaluation.calibration, fc, bounds=bounds
    )
    return evaluation, selected


def combine_selected(
    candidates: Mapping[str, pd.DataFrame],
    chosen: pd.DataFrame,
    calibration_table: pd.DataFrame,
    forecast_cfg: ForecastSettings,
    *,
    bounds: Mapping[str, tuple[float, float | None]],
) -> pd.DataFrame:
    """The ``selected`` final forecast: the chosen models combined, then calibrated."""
    selected = selection.combine_final_forecasts(candidates, chosen, bounds=bounds)
    if forecast_cfg.calibrate and len(calibration_table):
        selected = calibration.apply_interval_scaling(
            selected, calibration_table, model_quantiles(forecast_cfg), bounds=bounds
        )
    return selected
