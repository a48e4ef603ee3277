"""The leaderboard evaluated shard by shard equals the whole-fleet evaluation, exactly.

On the real NAB series with cheap models: scores, leaderboard, final selection, the calibrated
`selected` backtest, the calibration table and the per-window choices must not depend on how
the fleet is cut into shards, nor on the shards' order.
"""

from __future__ import annotations

import hashlib

import pandas as pd
import pytest

from capforecast.config import load_config
from capforecast.data.features import panel_from_local_files
from capforecast.forecast.evaluate import (
    ShardSource,
    backtest_models,
    evaluate_backtests,
    evaluate_shards,
)
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
