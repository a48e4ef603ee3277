"""Reduced accuracy benchmark on the real NAB fixture: the ordering must hold.

The full protocol (all 19 series, Prophet and AutoGluon included) is
tests/benchmarks/bench_forecast_accuracy.py; this runs the fast peers on every series.
"""

from __future__ import annotations

import pandas as pd
import pytest

from capforecast import backtest, ingest, resample, validate
from capforecast.config import load_config
from capforecast.evaluate import evaluate_backtests
from capforecast.features import build_features
from capforecast.models import MODEL_REGISTRY
from capforecast.panel import series_bounds
from capforecast.train import model_quantiles

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("accuracy")]

MODELS = ["seasonal_naive_daily", "predict_linear", "autoets", "autotheta", "mstl"]


@pytest.fixture(scope="module")
def leaderboard(project_root, nab_dir, monkeypatch_module) -> pd.DataFrame:
    monkeypatch_module.chdir(project_root)
    cfg = load_config(project_root / "config" / "config.yaml", project_root / "config" / "nab.yaml")
    cfg["data"]["path"] = str(nab_dir)
    cfg["backtest"].update(windows=3, horizon=24, season=24, step=None)
    cfg["forecast"]["quantiles"] = [0.1, 0.5, 0.9]
    frames = []
    for path in ingest.list_input_files(cfg["data"]["path"]):
        raw = ingest.read_input_file(path, cfg["data"])
        kept = validate.validate_rows(raw, cfg["etl"], path.name).kept
        frames.append(build_features(resample.resample_series(kept, cfg["etl"])))
    panel = pd.concat(frames, ignore_index=True)
    history = panel[["series_id", "timestamp", "y"]]
    bounds = series_bounds(panel, cfg["etl"]["percent_metrics"])
    bt = cfg["backtest"]
    predictions = pd.concat(
        [
            backtest.run_backtest(
                history,
                MODEL_REGISTRY[name],
                name,
                windows=bt["windows"],
                horizon=bt["horizon"],
                quantiles=model_quantiles(cfg["forecast"]),
                season=bt["season"],
                bounds=bounds,
                n_jobs=1,
                model_cfg=cfg["models"],
                selection_windows=bt["selection_windows"],
            )
            for name in MODELS
        ],
        ignore_index=True,
    )
    result = evaluate_backtests(
        predictions,
        history,
        backtest_cfg=bt,
        forecast_cfg=cfg["forecast"],
        selection_cfg=cfg["selection"],
        bounds=bounds,
    )
    return result.leaderboard.set_index("model")


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as patch:
        yield patch


def test_every_series_and_window_is_scored(leaderboard):
    assert (leaderboard["n_series"] == 19).all()
    assert (leaderboard["n_windows"] == 3).all()


def test_statistical_peers_beat_seasonal_naive(leaderboard):
    assert leaderboard.loc["seasonal_naive_daily", "mase_relgm"] == pytest.approx(1.0)
    for peer in ("autoets", "autotheta"):
        assert leaderboard.loc[peer, "mase_relgm"] < 1.0
        assert leaderboard.loc[peer, "wql_relgm"] < 1.0
    assert leaderboard.loc["predict_linear", "mase_relgm"] > 1.0


def test_selected_is_ahead_of_every_peer(leaderboard):
    selected = leaderboard.loc["selected"]
    peers = leaderboard.drop(index=["selected", "mstl"])
    assert selected["mase_relgm"] < peers["mase_relgm"].min()
    assert selected["wql_relgm"] < peers["wql_relgm"].min()
    assert selected["mase_mean"] <= 2.0
    assert 0.75 <= selected["coverage_p10_p90"] <= 0.88
