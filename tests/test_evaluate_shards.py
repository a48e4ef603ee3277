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
    shard_sources,
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


def test_shard_sources_map_groups_to_their_partitions_features(tmp_path):
    """The leaderboard's sources: a prediction file `<group>/<shard>/<model>.parquet` is scored
    against its group's feature files, a partition's hash shard or a pack's partitions all
    together (capforecast.forecast.shards.shard_groups)."""
    from capforecast.forecast import shards as cf_shards

    features = tmp_path / "features"
    features.mkdir()
    series = {"big": [f"big-{k}|cpu" for k in range(6)], "a": ["a-0|cpu"], "b": ["b-0|cpu"]}
    for partition, ids in series.items():
        pd.DataFrame(
            {
                "series_id": ids,
                "resource_id": "i-1",
                "metric": "cpu",
                "timestamp": pd.Timestamp("2026-01-01", tz="UTC"),
                "y": 1.0,
            }
        ).to_parquet(features / f"{partition}.parquet")
    groups = {"big": (["big"], 2), "pack.0": [["a", "b"], 1]}
    predictions = tmp_path / "shards"
    files = [
        predictions / group / str(shard) / f"{model}.parquet"
        for group, shard in (("pack.0", 0), ("big", 0), ("big", 1))
        for model in ("theta", "predict_linear")
    ]
    for path in files:
        path.parent.mkdir(parents=True, exist_ok=True)
        pd.DataFrame({"series_id": [path.parent.parent.name], "model": [path.stem]}).to_parquet(
            path
        )
    sources = shard_sources(files, sorted(features.glob("*.parquet")), groups)
    # Sorted by (group, shard); each reads its own two prediction files.
    histories = [set(source.history()["series_id"]) for source in sources]
    assert histories == [
        {s for s in series["big"] if cf_shards.shard_of(s, 2) == 0},
        {s for s in series["big"] if cf_shards.shard_of(s, 2) == 1},
        {"a-0|cpu", "b-0|cpu"},
    ]
    assert [set(source.predictions()["series_id"]) for source in sources] == [
        {"big"},
        {"big"},
        {"pack.0"},
    ]
    assert all(len(source.predictions()) == 2 for source in sources)
