"""Decision backtest on the Bitbrains development set: several cuts, pooled scores, README table.

Protocol (the "risk calls that hold" issue, item 1):

- Data: ``config/bitbrains.yaml`` (60 real business VMs, 5-minute samples, 2013-07-01 ..
  2013-09-29 UTC), the project's default configuration otherwise (``--overlay`` adds a config
  file on top, e.g. cheaper models; the table then says so).
- Cuts (``data.history_end``): four midnights (UTC) on different weekdays, each followed by a
  full ``forecast.horizon`` (168 h) of actuals, windows not overlapping and clear of the trace's
  month-boundary gaps: Tuesday 6 Aug, Monday 19 Aug (the history ends on a Sunday), Thursday
  5 Sep, Saturday 21 Sep 2013.
- Per cut, the whole workflow runs on the history before the cut up to the ``decision`` target,
  in its own working directory ``tests/benchmarks/out/decision/<cut>/`` (Snakemake
  ``--directory``; the config's relative data paths are made absolute, since Snakemake resolves
  them against that directory). A rerun reuses what is up to date there.
- Pooled: the series scores and right-sizing checks of every cut, scored again with
  ``capforecast.decision.scores.method_summary`` (precision, recall, F1, Brier over all
  series-cuts).

Run: ``make decision-backtest`` (= this script with ``--write-readme``), or
``.venv/bin/python tests/benchmarks/bench_decision.py [--cuts ISO ...] [--overlay extra.yaml]
[--cores N] [--write-readme]``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import yaml

from capforecast.config import deep_merge, load_config
from capforecast.decision import scores as decision
from capforecast.decision import tables as decision_report

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "tests" / "benchmarks" / "out" / "decision"
PROJECT_CONFIG = ROOT / "config" / "config.yaml"
DATASET_CONFIG = ROOT / "config" / "bitbrains.yaml"
SNAKEMAKE = Path(sys.executable).parent / "snakemake"
README = ROOT / "README.md"
# Per cut: seconds of the last workflow run that fitted the models.
TIMINGS = OUT / "timings.json"
README_START = "<!-- decision-backtest:start -->"
README_END = "<!-- decision-backtest:end -->"
DEFAULT_CUTS = (
    "2013-08-06T00:00:00Z",
    "2013-08-19T00:00:00Z",
    "2013-09-05T00:00:00Z",
    "2013-09-21T00:00:00Z",
)
# Config keys holding paths: relative ones resolve against the project, not the run directory.
PATH_KEYS = ("path", "resources")


def cut_label(cut: str) -> str:
    return pd.Timestamp(cut).strftime("%Y%m%dT%H%M")


def run_config(cut: str, overlay: Path | None) -> dict:
    """config/config.yaml + the dataset config (what `--configfile config/bitbrains.yaml` gives
    in the project directory) with absolute data paths, the optional overlay and the cut."""
    cfg = deep_merge(
        yaml.safe_load(PROJECT_CONFIG.read_text()), yaml.safe_load(DATASET_CONFIG.read_text())
    )
    for key in PATH_KEYS:
        value = cfg["data"].get(key)
        if value and not Path(value).is_absolute():
            cfg["data"][key] = str(ROOT / value)
    if overlay:
        cfg = deep_merge(cfg, yaml.safe_load(overlay.read_text()) or {})
    cfg["data"]["history_end"] = cut
    return cfg


def run_cut(cut: str, overlay: Path | None, cores: str) -> tuple[Path, float]:
    """Run the workflow up to `decision` for one cut; returns its results dir and seconds."""
    workdir = OUT / cut_label(cut)
    workdir.mkdir(parents=True, exist_ok=True)
    config = workdir / "config.yaml"
    config.write_text(yaml.safe_dump(run_config(cut, overlay), sort_keys=True))
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "MPLBACKEND": "Agg"}
    cmd = [
        str(SNAKEMAKE),
        "-s",
        str(ROOT / "Snakefile"),
        "--directory",
        str(workdir),
        f"--configfile={config}",
        "--cores",
        cores,
        "decision",
    ]
    start = time.perf_counter()
    with open(workdir / "snakemake.log", "w") as log:
        proc = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, check=False)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"cut {cut}: snakemake failed, see {workdir / 'snakemake.log'}")
    # A rerun that reused the model fits took seconds: report the last run that fitted them.
    refitted = re.search(
        r"^(local)?rule (backtest|forecast)_", (workdir / "snakemake.log").read_text(), re.M
    )
    previous = json.loads(TIMINGS.read_text()) if TIMINGS.exists() else {}
    if not refitted and cut in previous:
        seconds = previous[cut]
    return workdir / "results", seconds


def pooled(results: dict[str, Path]) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Series scores and right-sizing checks of every cut (column ``cut``), and per-cut rows."""
    scores, checks, per_cut = [], [], []
    for cut, res in results.items():
        series = pd.read_csv(res / "decision" / "series_scores.csv").assign(cut=cut)
        check = pd.read_csv(res / "decision" / "rightsizing_check.csv").assign(cut=cut)
        summary = decision.method_summary(series).set_index("method")
        counts = decision.rightsizing_counts(check)
        per_cut.append(
            {
                "cut": cut,
                "weekday": pd.Timestamp(cut).day_name(),
                "series": int(summary["series"].iloc[0]),
                "breached": int(summary["breached"].iloc[0]),
                **{f"f1_{m}": summary.loc[m, "f1"] for m in decision.METHOD_COLUMNS},
                **{f"brier_{m}": summary.loc[m, "brier"] for m in decision.METHOD_COLUMNS},
                "changed": counts["changed"],
                "harmful": counts["harmful"],
            }
        )
        scores.append(series)
        checks.append(check)
    return (
        pd.concat(scores, ignore_index=True),
        pd.concat(checks, ignore_index=True),
        pd.DataFrame(per_cut),
    )


def _f(value: float, digits: int = 2) -> str:
    return "-" if pd.isna(value) else f"{value:.{digits}f}"


def per_cut_markdown(per_cut: pd.DataFrame) -> str:
    names = {
        decision.PRODUCT_AT_RISK: "at_risk",
        decision.PREDICT_LINEAR: "predict_linear",
        decision.LAST_WEEK_PEAK: "last-week peak",
    }
    head = " | ".join(f"F1 {n}" for n in names.values())
    brier = " | ".join(f"Brier {n}" for n in names.values())
    lines = [
        f"| cut (UTC) | series | breached | {head} | {brier} | harmful / changed sizing |",
        "|---|---:|---:|" + "---:|" * (2 * len(names)) + "---:|",
    ]
    for row in per_cut.to_dict("records"):
        f1 = " | ".join(_f(row[f"f1_{m}"], 3) for m in names)
        br = " | ".join(_f(row[f"brier_{m}"], 4) for m in names)
        label = f"{pd.Timestamp(row['cut']):%Y-%m-%d %H:%M} {row['weekday'][:3]}"
        lines.append(
            f"| {label} | {row['series']} | {row['breached']} | {f1} | {br} | "
            f"{row['harmful']} / {row['changed']} |"
        )
    return "\n".join(lines)


def code_version() -> str:
    """The commit the workflow ran from, flagged when its code or config had local edits."""
    git = ["git", "-C", str(ROOT)]
    commit = subprocess.run(
        [*git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False
    ).stdout.strip()
    dirty = subprocess.run(
        [*git, "status", "--porcelain", "--", "scripts", "rules", "Snakefile", "config"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    return f"commit {commit or 'unknown'}{' with local edits' if dirty else ''}"


def models_line(cfg: dict) -> str:
    return ", ".join(cfg["models"]["enabled"])


def readme_block(
    summary: pd.DataFrame,
    counts: dict,
    per_cut: pd.DataFrame,
    seconds: dict[str, float],
    cfg: dict,
    overlay: Path | None,
) -> str:
    total = sum(seconds.values())
    setting = (
        f"overlay `{overlay.relative_to(ROOT) if overlay.is_relative_to(ROOT) else overlay}`"
        if overlay
        else "the default configuration"
    )
    return "\n".join(
        [
            README_START,
            f"Generated by `make decision-backtest` ({code_version()}, {setting}; models: "
            f"{models_line(cfg)}; "
            f"forecast.target {cfg['forecast']['target']}, horizon {cfg['forecast']['horizon']} "
            f"bins). {len(seconds)} cuts, {total / 60:.1f} min of workflow runs on "
            f"{os.cpu_count()} cores ({', '.join(f'{s / 60:.1f}' for s in seconds.values())} "
            "min per cut).",
            "",
            "Pooled over the cuts (percentage series with a critical threshold):",
            "",
            decision_report.summary_markdown(summary),
            "",
            decision_report.rightsizing_markdown(counts),
            "",
            "Per cut:",
            "",
            per_cut_markdown(per_cut),
            README_END,
        ]
    )


def write_readme(block: str) -> None:
    text = README.read_text()
    if README_START not in text or README_END not in text:
        raise SystemExit(f"README.md lacks the markers {README_START} ... {README_END}")
    head, rest = text.split(README_START, 1)
    _, tail = rest.split(README_END, 1)
    README.write_text(head + block + tail)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cuts", nargs="+", default=list(DEFAULT_CUTS))
    parser.add_argument("--overlay", type=Path, help="extra config file merged over the dataset")
    parser.add_argument("--cores", default="all")
    parser.add_argument("--write-readme", action="store_true")
    args = parser.parse_args()
    overlay = args.overlay.resolve() if args.overlay else None

    results, seconds = {}, {}
    for cut in args.cuts:
        results[cut], seconds[cut] = run_cut(cut, overlay, args.cores)
        print(f"cut {cut}: {seconds[cut]:.0f} s", flush=True)
    scores, checks, per_cut = pooled(results)
    summary = decision.method_summary(scores)
    counts = decision.rightsizing_counts(checks)
    OUT.mkdir(parents=True, exist_ok=True)
    scores.to_csv(OUT / "pooled_series_scores.csv", index=False)
    checks.to_csv(OUT / "pooled_rightsizing_check.csv", index=False)
    summary.to_csv(OUT / "pooled_summary.csv", index=False)
    per_cut.to_csv(OUT / "per_cut.csv", index=False)
    TIMINGS.write_text(json.dumps(seconds, indent=2))

    cfg = load_config(OUT / cut_label(args.cuts[0]) / "config.yaml")
    block = readme_block(summary, counts, per_cut, seconds, cfg, overlay)
    print(block)
    if args.write_readme:
        write_readme(block)
        print(f"README.md updated between {README_START} and {README_END}")


if __name__ == "__main__":
    main()
