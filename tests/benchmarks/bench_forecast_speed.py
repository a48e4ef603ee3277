"""Speed benchmark: backtest (K = 3 + selection window) plus final fit on a synthetic fleet.

Default: 1,000 series (200 instances x 5 metrics) x 90 days hourly. Each model runs in its own
subprocess (peak RSS is that model's alone) on the same panel, with the project's default config.
Side by side: the seed-style loop, one default Prophet fit per series and window, sequential;
it is timed on --seed-sample series and scaled linearly to the whole fleet (said in the output).

Run: .venv/bin/python tests/benchmarks/bench_forecast_speed.py [--instances 200] [--days 90]
[--write-readme] (`make bench-speed` writes the README table between its markers).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# The fast statistical set: the baselines, the seasonal median and the default set's standard
# Theta method (on the log scale; no model search).
FAST_SET = [
    "seasonal_naive_daily",
    "seasonal_naive_weekly",
    "predict_linear",
    "seasonal_median",
    "theta_log",
]
README = ROOT / "README.md"
README_START = "<!-- bench-speed:start -->"
README_END = "<!-- bench-speed:end -->"

CHILD = r"""
import json, os, resource, sys, time
os.environ["HF_HUB_OFFLINE"] = "1"
import logging; logging.basicConfig(level=logging.WARNING)
import pandas as pd
from capforecast.forecast import backtest
from capforecast.forecast import fit
from capforecast.config import validated_config
from capforecast.forecast.models import MODEL_REGISTRY
from capforecast.forecast.panel import series_bounds
from capforecast.settings import backtest_settings, forecast_settings, model_settings
model, panel_path = sys.argv[1], sys.argv[2]
cfg = validated_config({})
panel = pd.read_parquet(panel_path)
bt, n_jobs = backtest_settings(cfg["backtest"]), os.cpu_count() or 1
fc, models = forecast_settings(cfg["forecast"]), model_settings(cfg["models"])
t0 = time.perf_counter()
backtest.run_backtest(
    panel[["series_id", "timestamp", "y"]], MODEL_REGISTRY[model], model,
    windows=bt.windows, horizon=bt.horizon, step=bt.step,
    quantiles=fit.model_quantiles(fc), season=bt.season,
    bounds=series_bounds(panel, cfg["etl"]["percent_metrics"]), n_jobs=n_jobs,
    model_cfg=models, selection_windows=bt.selection_windows,
)
t1 = time.perf_counter()
fit.fit_forecast(
    model, panel, forecast_cfg=fc, backtest_cfg=bt, models_cfg=models,
    percent_metrics=cfg["etl"]["percent_metrics"], n_jobs=n_jobs,
)
t2 = time.perf_counter()
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
print(json.dumps({"backtest_s": t1 - t0, "final_s": t2 - t1, "peak_mib": max(peak, children)}))
"""

SEED_LOOP = r"""
import json, logging, sys, time
import pandas as pd
from prophet import Prophet
logging.getLogger("cmdstanpy").setLevel(logging.WARNING)
logging.getLogger("prophet").setLevel(logging.WARNING)
panel = pd.read_parquet(sys.argv[1])
sample = int(sys.argv[2])
ids = sorted(panel["series_id"].unique())[:sample]
fits = 0
t0 = time.perf_counter()
for sid in ids:
    series = panel[panel["series_id"] == sid].dropna(subset=["y"])
    # 4 backtest windows + the final fit, as the pipeline does; each a fresh default Prophet.
    for cut in (96, 72, 48, 24, 0):
        train = series.iloc[: len(series) - cut] if cut else series
        m = Prophet()
        m.fit(pd.DataFrame({"ds": train["timestamp"].dt.tz_localize(None), "y": train["y"]}))
        m.predict(m.make_future_dataframe(periods=24 if cut else 168, freq="h").tail(24))
        fits += 1
print(json.dumps({"seconds": time.perf_counter() - t0, "series": len(ids), "fits": fits}))
"""


def build_panel(path: Path, instances: int, days: int) -> int:
    from capforecast.config import validated_config
    from capforecast.data import resample, synth, validate
    from capforecast.data.features import build_features
    from capforecast.settings import etl_settings

    services = [
        {
            "name": f"svc{i:02d}",
            "instances": instances // 10,
            "instance_type": "m5.large",
            "scenario": scenario,
        }
        for i, scenario in zip(
            range(10), ["flat", "growing", "saturating", "over_provisioned"] * 3, strict=False
        )
    ]
    cfg = validated_config({"synthetic": {"days": days, "freq": "1h", "services": services}})
    plan = synth.plan_fleet(cfg)
    etl = etl_settings(cfg["etl"])
    frames = []
    for svc in services:
        raw = synth.generate_service(plan, svc["name"], cfg)
        kept = validate.validate_rows(raw, etl, svc["name"]).kept
        frames.append(build_features(resample.resample_series(kept, etl)))
    import pandas as pd

    panel = pd.concat(frames, ignore_index=True)
    panel.to_parquet(path, index=False)
    return panel["series_id"].nunique()


def run_model(model: str, panel_path: Path) -> dict | str:
    """One model's backtest and final fit in a fresh process: timings, or the error line."""
    code = CHILD
    out = subprocess.run(
        [sys.executable, "-c", code, model, str(panel_path)], capture_output=True, text=True
    )
    if out.returncode != 0:
        return out.stderr.strip().splitlines()[-1]
    return json.loads(out.stdout.strip().splitlines()[-1])


def write_readme(lines: list[str]) -> None:
    import re

    text = README.read_text()
    if README_START not in text or README_END not in text:
        raise SystemExit(f"README.md lacks the markers {README_START} ... {README_END}")
    body = "\n".join([README_START, "<!-- generated by `make bench-speed` -->", *lines, README_END])
    pattern = re.compile(re.escape(README_START) + ".*?" + re.escape(README_END), re.S)
    README.write_text(pattern.sub(lambda _: body, text))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--instances", type=int, default=200)
    parser.add_argument("--days", type=int, default=90)
    parser.add_argument(
        "--models",
        nargs="+",
        default=None,
        help="default: the enabled models plus autotheta and autogluon",
    )
    parser.add_argument("--seed-sample", type=int, default=40)
    parser.add_argument("--write-readme", action="store_true")
    args = parser.parse_args()
    from capforecast.config import validated_config

    cfg = validated_config({})
    default_set = list(cfg["models"]["enabled"])
    models = args.models or [*default_set, "autotheta", "autogluon"]
    lines: list[str] = []

    def say(line: str = "") -> None:
        print(line, flush=True)
        lines.append(line)

    with tempfile.TemporaryDirectory() as tmp:
        panel_path = Path(tmp) / "panel.parquet"
        n_series = build_panel(panel_path, args.instances, args.days)
        bt = cfg["backtest"]
        say(
            f"{n_series} series x {args.days} days hourly, {os.cpu_count()} cores; backtest "
            f"K = {bt['windows']} + {bt['selection_windows']} selection window, "
            f"H = {bt['horizon']}; final fit {cfg['forecast']['horizon']} steps; models see "
            f"{cfg['models']['max_history_hours']} h of history."
        )
        say()
        say("| model | in default set | backtest s | final fit s | total s | peak MiB |")
        say("|---|---|---:|---:|---:|---:|")
        totals = {}
        for model in models:
            res = run_model(model, panel_path)
            member = "yes" if model in default_set else "no"
            if isinstance(res, str):
                say(f"| {model} | {member} | failed: {res} | | | |")
                continue
            totals[model] = res["backtest_s"] + res["final_s"]
            say(
                f"| {model} | {member} | {res['backtest_s']:.1f} | {res['final_s']:.1f} "
                f"| {totals[model]:.1f} | {res['peak_mib']:,.0f} |"
            )
        default_total = sum(v for k, v in totals.items() if k in default_set)
        fast_total = sum(v for k, v in totals.items() if k in FAST_SET)
        say(
            f"| **default set** ({len(default_set)} models) | | | | **{default_total:.1f}** "
            f"({default_total / 60:.1f} min; bar 15 min) | |"
        )
        say(
            f"| **fast statistical set** ({', '.join(FAST_SET)}) | | | | **{fast_total:.1f}** "
            f"(bar 2 min) | |"
        )
        seed = subprocess.run(
            [sys.executable, "-c", SEED_LOOP, str(panel_path), str(args.seed_sample)],
            capture_output=True,
            text=True,
            check=True,
        )
        res = json.loads(seed.stdout.strip().splitlines()[-1])
        projected = res["seconds"] / res["series"] * n_series
        ratios = ", ".join(
            f"{projected / total:.1f}x the time of the {label}"
            for label, total in (
                ("default set", default_total),
                ("fast set", fast_total),
                ("prophet rule", totals.get("prophet", 0.0)),
            )
            if total > 0
        )
        say()
        say(
            f"Peer, same panel: the seed-style loop (one default `Prophet()` per series and "
            f"window, 5 fits each, sequential) took {res['seconds']:.1f} s for {res['series']} "
            f"series, {projected:.0f} s projected for {n_series}: {ratios}."
        )
    if args.write_readme:
        write_readme(lines)


if __name__ == "__main__":
    main()
