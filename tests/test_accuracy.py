"""Reduced accuracy benchmark on the real NAB fixture: the ordering must hold.

The full protocol (all 19 series, Prophet and AutoGluon included) is
tests/benchmarks/bench_generalisation.py (make bench-accuracy); this runs the fast peers on every
series.
"""

from __future__ import annotations

import pandas as pd
import pytest

from capforecast.config import load_config
from capforecast.data.features import panel_from_local_files
from capforecast.forecast.evaluate import (
    backtest_models,
    evaluate_backtests,
    leaderboard_with_peer_scores,
    leaderboard_with_peers,
)
from capforecast.forecast.metrics import score_predictions
from capforecast.forecast.models import MODEL_REGISTRY
from capforecast.forecast.models.peers import PEER_REGISTRY
from capforecast.forecast.panel import series_bounds
from capforecast.settings import (
    backtest_settings,
    forecast_settings,
    model_settings,
    selection_settings,
)

pytestmark = pytest.mark.slow

MODELS = ["seasonal_naive_daily", "predict_linear", "autoets", "autotheta", "theta", "mstl"]
# The statsforecast defaults users start from (full AutoETS search, normal intervals).
PEERS = ["autoets_default", "autotheta_default"]


@pytest.fixture(scope="module")
def nab_run(project_root, nab_dir, monkeypatch_module) -> dict:
    monkeypatch_module.chdir(project_root)
    cfg = load_config(project_root / "config" / "config.yaml", project_root / "config" / "nab.yaml")
    cfg["data"]["path"] = str(nab_dir)
    cfg["backtest"].update(windows=3, horizon=24, season=24, step=None)
    cfg["forecast"]["quantiles"] = [0.1, 0.5, 0.9]
    panel = panel_from_local_files(cfg)
    history = panel[["series_id", "timestamp", "y"]]
    bounds = series_bounds(panel, cfg["etl"]["percent_metrics"])
    models = {name: MODEL_REGISTRY[name] for name in MODELS}
    stage = dict(
        backtest_cfg=backtest_settings(cfg["backtest"]),
        forecast_cfg=forecast_settings(cfg["forecast"]),
    )
    run = dict(stage, models_cfg=model_settings(cfg["models"]), freq=cfg["etl"]["freq"])
    predictions = backtest_models(history, models, **run, bounds=bounds, n_jobs=2)
    peers = {name: PEER_REGISTRY[name] for name in PEERS}
    peer_predictions = backtest_models(history, peers, **run, bounds=bounds, n_jobs=2)
    result = evaluate_backtests(
        predictions,
        history,
        **stage,
        selection_cfg=selection_settings(cfg["selection"]),
        bounds=bounds,
    )
    return {"result": result, "peer_predictions": peer_predictions, "history": history}


@pytest.fixture(scope="module")
def leaderboard(nab_run) -> pd.DataFrame:
    board = leaderboard_with_peers(
        nab_run["result"],
        nab_run["peer_predictions"],
        nab_run["history"],
        season=24,
        quantiles=[0.1, 0.5, 0.9],
    )
    return board.set_index("model")


def test_peer_scores_give_the_same_leaderboard_as_peer_predictions(nab_run, leaderboard):
    # The accuracy benchmark keeps peers' per-window scores, not their predictions.
    scores = score_predictions(nab_run["peer_predictions"], nab_run["history"], 24, [0.1, 0.5, 0.9])
    from_scores = leaderboard_with_peer_scores(nab_run["result"], scores).set_index("model")
    pd.testing.assert_frame_equal(from_scores, leaderboard)
    assert from_scores.loc[PEERS, "is_peer"].all()
    assert not from_scores.loc["selected", "is_peer"]


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as patch:
        yield patch


def test_every_series_and_window_is_scored(leaderboard):
    assert (leaderboard["n_series"] == 19).all()
    assert (leaderboard["n_windows"] == 3).all()


def test_statistical_peers_beat_seasonal_naive(leaderboard):
    assert leaderboard.loc["seasonal_naive_daily", "mase_relgm"] == pytest.approx(1.0)
    for peer in ("autoets_default", "autotheta_default", "autoets", "theta"):
        assert leaderboard.loc[peer, "mase_relgm"] < 1.0
        assert leaderboard.loc[peer, "wql_relgm"] < 1.0
    assert leaderboard.loc["predict_linear", "mase_relgm"] > 1.0
    assert leaderboard.loc[PEERS, "is_peer"].all()


def test_empirical_quantiles_beat_the_same_models_normal_intervals(leaderboard):
    # Same fitted model, quantile shape from the residuals and the median as point: lower WQL,
    # and a point forecast at least as close as the mean.
    assert (
        leaderboard.loc["autotheta", "wql_relgm"]
        < leaderboard.loc["autotheta_default", "wql_relgm"]
    )
    assert (
        leaderboard.loc["autotheta", "mase_relgm"]
        <= leaderboard.loc["autotheta_default", "mase_relgm"]
    )


def test_selected_is_ahead_of_every_peer(leaderboard):
    # The bars: ahead of every peer, MASE relgm <= 0.76, WQL relgm <= 0.65.
    selected = leaderboard.loc["selected"]
    peers = leaderboard.loc[["seasonal_naive_daily", "predict_linear", *PEERS]]
    assert selected["mase_relgm"] < peers["mase_relgm"].min()
    assert selected["wql_relgm"] < peers["wql_relgm"].min()
    assert selected["mase_relgm"] <= 0.76
    assert selected["wql_relgm"] <= 0.65
    assert selected["mase_mean"] <= 2.0
    assert 0.75 <= selected["coverage_p10_p90"] <= 0.88
