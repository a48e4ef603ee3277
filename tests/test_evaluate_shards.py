"""The leaderboard evaluated shard by shard equals the whole-fleet evaluation, exactly.

On the real NAB series with cheap models: scores, leaderboard, final selection, the calibrated
`selected` backtest, the calibration table and the per-window choices must not depend on how
the fleet is cut into shards, nor on the shards' order, and must equal what the whole-table
steps (select, fit the scaling, calibrate without peeking, score) give on the whole fleet.
"""

from __future__ import annotations

import hashlib

import pandas as pd
import pytest

from capforecast.config import load_config
from capforecast.contracts import quantile_column
from capforecast.data.features import panel_from_local_files
from capforecast.forecast import calibration, metrics, selection
from capforecast.forecast.evaluate import (
    Evaluation,
    ShardSource,
    backtest_models,
    evaluate_backtests,
    evaluate_shards,
)
from capforecast.forecast.fit import model_quantiles
from capforecast.forecast.models import MODEL_REGISTRY
from capforecast.forecast.panel import series_bounds
from capforecast.settings import (
    backtest_settings,
    forecast_settings,
    model_settings,
    selection_settings,
)

MODELS = ["seasonal_naive_daily", "seasonal_naive_weekly", "predict_linear", "seasonal_median"]


@pytest.fixture(scope="module")
def backtest(project_root, nab_dir):
    cfg = load_config(project_root / "config" / "config.yaml", project_root / "config" / "nab.yaml")
    cfg["data"]["path"] = str(nab_dir)
    cfg["backtest"].update(windows=3, horizon=24, season=24, step=None)
    panel = panel_from_local_files(cfg)
    history = panel[["series_id", "timestamp", "y"]]
    bounds = series_bounds(panel, cfg["etl"]["percent_metrics"])
    stage = dict(
        backtest_cfg=backtest_settings(cfg["backtest"]),
        forecast_cfg=forecast_settings(cfg["forecast"]),
    )
    predictions = backtest_models(
        history,
        {name: MODEL_REGISTRY[name] for name in MODELS},
        **stage,
        models_cfg=model_settings(cfg["models"]),
        freq=cfg["etl"]["freq"],
        bounds=bounds,
    )
    settings = dict(stage, selection_cfg=selection_settings(cfg["selection"]), bounds=bounds)
    return predictions, history, settings


def shards_of(predictions, history, n_shards):
    def shard_of(series_id: str) -> int:
        return int(hashlib.sha256(series_id.encode()).hexdigest(), 16) % n_shards

    ids = sorted(history["series_id"].unique())
    groups = [[s for s in ids if shard_of(s) == k] for k in range(n_shards)]
    groups = [g for g in groups if g]
    return [
        ShardSource(
            lambda g=g: predictions[predictions["series_id"].isin(g)].reset_index(drop=True),
            lambda g=g: history[history["series_id"].isin(g)].reset_index(drop=True),
        )
        for g in groups
    ]


@pytest.mark.parametrize("n_shards", [2, 5])
@pytest.mark.parametrize("reverse", [False, True])
def test_shard_by_shard_equals_the_whole_fleet(backtest, n_shards, reverse):
    predictions, history, settings = backtest
    whole = evaluate_backtests(predictions, history, **settings)
    shards = shards_of(predictions, history, n_shards)
    assert len(shards) > 1
    parts = evaluate_shards(shards[::-1] if reverse else shards, **settings)
    assert whole.selected_predictions["model"].eq("selected").all()
    assert len(whole.calibration), "calibration must be exercised"
    for field in (
        "metrics",
        "leaderboard",
        "selection",
        "selected_predictions",
        "calibration",
        "window_choices",
    ):
        pd.testing.assert_frame_equal(
            getattr(parts, field).reset_index(drop=True),
            getattr(whole, field).reset_index(drop=True),
            obj=field,
        )


FIELDS = ("metrics", "leaderboard", "selection", "calibration", "window_choices")


def whole_table_evaluation(
    predictions, history, *, backtest_cfg, forecast_cfg, selection_cfg, bounds
) -> Evaluation:
    """The leaderboard's steps on the whole fleet at once, with the whole-table functions."""
    season, quantiles = backtest_cfg.season, list(forecast_cfg.quantiles)
    candidates = predictions[predictions["model"] != selection.SELECTED]
    scores = metrics.score_predictions(candidates, history, season, quantiles)
    selected, choices = selection.select_without_peeking(scores, predictions, selection_cfg)
    table = pd.DataFrame()
    if forecast_cfg.calibrate:
        levels = model_quantiles(forecast_cfg)
        scored = selected[~selected["is_selection_window"].astype(bool)]
        table = calibration.fit_interval_scaling(scored, levels)
        selected, _ = calibration.calibrate_without_peeking(selected, levels, bounds=bounds)
    all_scores = pd.concat(
        [scores, metrics.score_predictions(selected, history, season, quantiles)],
        ignore_index=True,
    )
    return Evaluation(
        metrics=all_scores,
        leaderboard=metrics.leaderboard(all_scores),
        selection=selection.final_selection(scores, selection_cfg),
        selected_predictions=selected,
        calibration=table,
        window_choices=choices,
    )


def narrowed(predictions: pd.DataFrame, factor: float) -> pd.DataFrame:
    """Every model's quantiles pulled towards its median: the `selected` intervals then cover
    far less than 80 % and calibration widens them."""
    out = predictions.copy()
    median = out[quantile_column(0.5)]
    for column in [c for c in out.columns if c.startswith("q") and c != quantile_column(0.5)]:
        out[column] = median + factor * (out[column] - median)
    return out


@pytest.mark.parametrize("factor", [None, 0.3])
@pytest.mark.parametrize("n_shards", [1, 4])
def test_shards_equal_the_whole_table_steps(backtest, factor, n_shards):
    predictions, history, settings = backtest
    if factor is not None:
        predictions = narrowed(predictions, factor)
    whole = whole_table_evaluation(predictions, history, **settings)
    if factor is not None:
        assert whole.calibration["applied"].all(), "calibration must be applied"
        assert whole.selected_predictions["interval_scaled"].any()
    shards = shards_of(predictions, history, n_shards)
    parts = evaluate_shards(shards, **settings)
    for field in (*FIELDS, "selected_predictions"):
        pd.testing.assert_frame_equal(
            getattr(parts, field).reset_index(drop=True),
            getattr(whole, field).reset_index(drop=True),
            obj=field,
        )
    # What the leaderboard rule asks for: the same tables, the fleet's backtest not gathered.
    lean = evaluate_shards(shards[::-1], **settings, keep_predictions=False)
    assert lean.selected_predictions is None
    for field in FIELDS:
        pd.testing.assert_frame_equal(getattr(lean, field), getattr(parts, field), obj=field)
