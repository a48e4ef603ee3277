"""Accuracy benchmark on the vendored NAB CloudWatch fixture, peers side by side.

Protocol (issue 3): 1 h grid (hourly mean), H = 24, season 24, K = 3 scored windows, quantiles
0.1/0.5/0.9; every model sees the same rolling-origin windows. Peers: seasonal naive,
predict_linear over the last 24 h, Prophet with default settings, statsforecast AutoETS and
AutoTheta, and AutoGluon's WeightedEnsemble (SN, ETS, Theta, DirectTabular, RecursiveTabular; SQL).
Candidates for `selected` are this project's enabled models (config defaults).

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
from capforecast.evaluate import backtest_models, evaluate_backtests  # noqa: E402
from capforecast.features import panel_from_local_files  # noqa: E402
from capforecast.models import MODEL_REGISTRY  # noqa: E402
from capforecast.models.base import ForecastRequest, finalize_forecast  # noqa: E402
from capforecast.panel import series_bounds  # noqa: E402

BARS = {"mase_relgm": 0.76, "wql_relgm": 0.65, "mase_mean": 2.0, "coverage": (0.75, 0.88)}


def prophet_default(request: ForecastRequest, model_cfg: dict) -> pd.DataFrame:
    """The peer users start from: `Prophet()` untouched, its 80 % interval as P10/P90."""
    import logging as _logging

    from prophet import Prophet

    _logging.getLogger("cmdstanpy").setLevel(_logging.WARNING)
    frames = []
    for sid, grp in request.history.groupby("series_id", sort=False):
        train = grp.dropna(subset=["y"])
        model = Prophet(interval_width=0.8)
        model.fit(pd.DataFrame({"ds": train["timestamp"].dt.tz_localize(None), "y": train["y"]}))
        future = model.make_future_dataframe(periods=request.horizon, freq=request.freq)
        fc = model.predict(future.tail(request.horizon))
        frame = pd.DataFrame(
            {
                "series_id": sid,
                "timestamp": fc["ds"].dt.tz_localize("UTC").to_numpy(),
                "mean": fc["yhat"].to_numpy(),
                "model_used": "prophet_default",
            }
        )
        for q in request.quantiles:
            source = "yhat_lower" if q < 0.5 else "yhat_upper" if q > 0.5 else "yhat"
            frame[f"q{q:g}"] = fc[source].to_numpy()
        frames.append(frame)
    return finalize_forecast(pd.concat(frames, ignore_index=True), request)


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
    if not args.fast:
        runs["prophet_default"] = prophet_default
    bt = cfg["backtest"]
    predictions, seconds = [], {}
    for name, fn in runs.items():
        start = time.perf_counter()
        predictions.append(
            backtest_models(history, {name: fn}, cfg, bounds=bounds, n_jobs=os.cpu_count() or 1)
        )
        seconds[name] = time.perf_counter() - start
        print(f"# {name}: {seconds[name]:.1f} s", file=sys.stderr)
    all_predictions = pd.concat(predictions, ignore_index=True)
    out_dir = ROOT / "tests" / "benchmarks" / "out"
    out_dir.mkdir(parents=True, exist_ok=True)
    all_predictions.to_parquet(out_dir / "nab_backtest_predictions.parquet", index=False)
    history.to_parquet(out_dir / "nab_history.parquet", index=False)
    # prophet_default is a peer, not a candidate for selection.
    candidates_only = all_predictions[all_predictions["model"] != "prophet_default"]
    result = evaluate_backtests(
        candidates_only,
        history,
        backtest_cfg=bt,
        forecast_cfg=cfg["forecast"],
        selection_cfg=cfg["selection"],
        bounds=bounds,
    )
    board = result.leaderboard
    if "prophet_default" in all_predictions["model"].unique():
        peer = evaluate_backtests(
            all_predictions[
                all_predictions["model"].isin(["prophet_default", "seasonal_naive_daily"])
            ],
            history,
            backtest_cfg=bt,
            forecast_cfg={**cfg["forecast"], "calibrate": False},
            selection_cfg=cfg["selection"],
            bounds=bounds,
        ).leaderboard
        board = pd.concat([board, peer[peer["model"] == "prophet_default"]], ignore_index=True)
    board["backtest_s"] = board["model"].map(seconds)
    cols = [
        "model",
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
