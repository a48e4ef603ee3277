"""Accuracy benchmark on the vendored NAB CloudWatch fixture, peers side by side.

Protocol (issue 3): 1 h grid (hourly mean), H = 24, season 24, K = 3 scored windows, quantiles
0.1/0.5/0.9; every model sees the same rolling-origin windows. Peers: seasonal naive
(statsforecast's intervals), predict_linear over the last 24 h, Prophet with default settings,
statsforecast AutoETS and AutoTheta with their defaults (capforecast.models.peers), and
AutoGluon's WeightedEnsemble (SN, ETS, Theta, DirectTabular, RecursiveTabular; SQL), which is
this project's `autogluon` model with its default config. Candidates for `selected` are this
project's enabled models (config defaults); peers are scored alongside but never selected.

Run: .venv/bin/python tests/benchmarks/bench_forecast_accuracy.py [--models a b ...] [--fast]
Prints the leaderboard as a Markdown table and whether the bars of issue 3 hold.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts"))

import pandas as pd  # noqa: E402

from capforecast.config import load_config  # noqa: E402
from capforecast.evaluate import (  # noqa: E402
    backtest_models,
    evaluate_backtests,
    leaderboard_with_peers,
)
from capforecast.features import panel_from_local_files  # noqa: E402
from capforecast.models import MODEL_REGISTRY  # noqa: E402
from capforecast.models.peers import PEER_REGISTRY  # noqa: E402
from capforecast.panel import series_bounds  # noqa: E402

BARS = {"mase_relgm": 0.76, "wql_relgm": 0.65, "mase_mean": 2.0, "coverage": (0.75, 0.88)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--models", nargs="+", default=None, help="candidate models")
    parser.add_argument("--fast", action="store_true", help="skip prophet and autogluon")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    os.chdir(ROOT)
    cfg = load_config(ROOT / "config" / "config.yaml", ROOT / "config" / "nab.yaml")
    cfg["backtest"].update(windows=3, horizon=24, season=24, step=None)
    cfg["forecast"]["quantiles"] = [0.1, 0.5, 0.9]
    panel = panel_from_local_files(cfg)
    history = panel[["series_id", "timestamp", "y"]]
    bounds = series_bounds(panel, cfg["etl"]["percent_metrics"])
    candidates = args.models or list(cfg["models"]["enabled"])
    if args.fast:
        candidates = [m for m in candidates if m not in {"prophet", "autogluon"}]
    runs = {name: MODEL_REGISTRY[name] for name in candidates}
    peers = {
        name: fn for name, fn in PEER_REGISTRY.items() if not (args.fast and "prophet" in name)
    }
    bt = cfg["backtest"]
    predictions, seconds = {}, {}
    for name, fn in {**runs, **peers}.items():
        start = time.perf_counter()
        predictions[name] = backtest_models(
            history, {name: fn}, cfg, bounds=bounds, n_jobs=os.cpu_count() or 1
        )
        seconds[name] = time.perf_counter() - start
        print(f"# {name}: {seconds[name]:.1f} s", file=sys.stderr)
    candidate_predictions = pd.concat([predictions[n] for n in runs], ignore_index=True)
    peer_predictions = pd.concat([predictions[n] for n in peers], ignore_index=True)
    out_dir = ROOT / "tests" / "benchmarks" / "out"
    out_dir.mkdir(parents=True, exist_ok=True)
    pd.concat([candidate_predictions, peer_predictions], ignore_index=True).to_parquet(
        out_dir / "nab_backtest_predictions.parquet", index=False
    )
    history.to_parquet(out_dir / "nab_history.parquet", index=False)
    result = evaluate_backtests(
        candidate_predictions,
        history,
        backtest_cfg=bt,
        forecast_cfg=cfg["forecast"],
        selection_cfg=cfg["selection"],
        bounds=bounds,
    )
    board = leaderboard_with_peers(
        result,
        peer_predictions,
        history,
        season=bt["season"],
        quantiles=cfg["forecast"]["quantiles"],
    )
    board["backtest_s"] = board["model"].map(seconds)
    cols = [
        "model",
        "is_peer",
        "mase_mean",
        "mase_relgm",
        "wql_median",
        "wql_relgm",
        "coverage_p10_p90",
        "n_series",
        "n_windows",
        "backtest_s",
    ]
    print(f"NAB fixture: {history['series_id'].nunique()} series, K={bt['windows']}, H=24")
    print(board[cols].to_markdown(index=False, floatfmt=".3f"))
    sel = board.set_index("model").loc["selected"]
    checks = {
        "MASE relgm <= 0.76": sel["mase_relgm"] <= BARS["mase_relgm"],
        "WQL relgm <= 0.65": sel["wql_relgm"] <= BARS["wql_relgm"],
        "MASE mean <= 2.0": sel["mase_mean"] <= BARS["mase_mean"],
        "coverage in 0.75-0.88": BARS["coverage"][0]
        <= sel["coverage_p10_p90"]
        <= BARS["coverage"][1],
    }
    for name, ok in checks.items():
        print(f"{'PASS' if ok else 'FAIL'}  selected {name}")


if __name__ == "__main__":
    main()
