"""Scaling benchmark: the whole workflow on synthetic fleets of growing size.

For each fleet (100, 1,000 and 10,000 series x 90 days hourly by default) and model set (the
fast statistical set and the default set), in a fresh working directory with `snakemake
--cores 2`:

- DAG build: `snakemake -n` before anything ran, and the jobs it plans;
- each stage run to its target (data: features + quality; forecast: combine_forecasts;
  risk; reports: everything left), its wall time and its peak memory, sampled every 0.2 s over
  the whole process tree (the sum over concurrent jobs, and the largest single process);
- the no-op rerun (nothing to do) and the rerun after one partition (service) changed, with the
  jobs the change plans.

Side by side on the 1,000-series fleet: the seed-style loop (one default `Prophet()` per series
and window, sequential; timed on a sample and scaled linearly), as a ratio to the forecast stage.

Run: .venv/bin/python tests/benchmarks/bench_scaling.py [--series 100 1000 10000]
[--sets fast default] [--default-max-series 1000] [--write-readme]
(`make bench-scaling` writes the README table between its markers).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench_forecast_speed import FAST_SET, SEED_LOOP
from readme_blocks import replace_block
from snakemake_cli import snakemake_cmd

ROOT = Path(__file__).resolve().parents[2]
# Each fleet's row and the peer's timing, kept so that --reuse can rebuild the table from runs
# made at different times (each row says when, on which commit, under which load).
CACHE = ROOT / "tests" / "benchmarks" / "out" / "scaling"
SERVICES = 10
METRICS_PER_INSTANCE = 5
SCENARIOS = ["flat", "growing", "saturating", "over_provisioned"]
# Targets run one after the other; each stage's time is its own.
STAGES = [
    ("data", ["features", "quality"]),
    ("forecast", ["combine_forecasts"]),
    ("risk", ["risk"]),
    ("reports", ["all"]),
]
# The targets of the scaling issue for 10,000 series with the fast set, on this 2-core machine.
TARGET_SERIES = 10_000
TARGET_END_TO_END_S = 20 * 60
TARGET_PEAK_MIB = 8 * 1024
TARGET_PLANNING_S = 10.0


def fleet_config(n_series: int, models: list[str], days: int) -> dict:
    """A synthetic fleet of ``n_series`` hourly series in ``SERVICES`` services (partitions)."""
    instances = max(1, n_series // (METRICS_PER_INSTANCE * SERVICES))
    services = []
    for i in range(SERVICES):
        scenario = SCENARIOS[i % len(SCENARIOS)]
        service = {
            "name": f"svc{i:02d}",
            "instances": instances,
            "instance_type": "m5.large",
            "scenario": scenario,
            "base_level": 35.0 if scenario != "over_provisioned" else 6.0,
        }
        if scenario == "saturating":
            service["saturating_metric"] = "cpu_utilization"
        services.append(service)
    return {
        "synthetic": {
            "days": days,
            "freq": "1h",
            "decommissioned_fraction": 0.0,
            "new_instance_fraction": 0.0,
            "services": services,
        },
        "models": {"enabled": models},
    }


class PeakMemory:
    """Samples the RSS of a process and its descendants until stopped."""

    def __init__(self, pid: int, interval: float = 0.2):
        self.pid, self.interval = pid, interval
        self.total_mib = 0.0
        self.single_mib = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            root = psutil.Process(self.pid)
        except psutil.NoSuchProcess:
            return
        while not self._stop.is_set():
            try:
                procs = [root, *root.children(recursive=True)]
            except psutil.NoSuchProcess:
                return
            sizes = []
            for proc in procs:
                try:
                    sizes.append(proc.memory_info().rss / 2**20)
                except psutil.NoSuchProcess:
                    continue
            if sizes:
                self.total_mib = max(self.total_mib, sum(sizes))
                self.single_mib = max(self.single_mib, max(sizes))
            time.sleep(self.interval)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def snakemake(workdir: Path, config: Path, *args: str) -> tuple[float, str, PeakMemory]:
    """Run Snakemake; (wall seconds, stdout + stderr, peak memory). Fails loudly."""
    cmd = snakemake_cmd(workdir, config, *args)
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    memory = PeakMemory(proc.pid)
    output, _ = proc.communicate()
    memory.stop()
    seconds = time.perf_counter() - started
    if proc.returncode != 0:
        tail = "\n".join(output.splitlines()[-40:])
        raise SystemExit(f"snakemake {' '.join(args)} failed in {workdir}:\n{tail}")
    return seconds, output, memory


def planned_jobs(output: str) -> int:
    """Total of the "Job stats" table of a dry run (0 when there is nothing to do)."""
    match = re.search(r"^total\s+(\d+)", output, re.M)
    return int(match.group(1)) if match else 0


def seed_loop_seconds(features_dir: Path, sample: int) -> tuple[float, int, int]:
    """(seconds, series timed, series in the fleet) of the seed-style Prophet loop."""
    import pandas as pd

    panel = pd.concat(
        [
            pd.read_parquet(p, columns=["series_id", "timestamp", "y"])
            for p in sorted(features_dir.glob("*.parquet"))
        ],
        ignore_index=True,
    )
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "panel.parquet"
        panel.to_parquet(path, index=False)
        out = subprocess.run(
            [sys.executable, "-c", SEED_LOOP, str(path), str(sample)],
            capture_output=True,
            text=True,
            check=True,
        )
    res = json.loads(out.stdout.strip().splitlines()[-1])
    return float(res["seconds"]), int(res["series"]), int(panel["series_id"].nunique())


def run_fleet(n_series: int, set_name: str, models: list[str], days: int, cores: int) -> dict:
    workdir = Path(tempfile.mkdtemp(prefix=f"scaling-{n_series}-{set_name}-"))
    config = workdir / "bench.yaml"
    cfg = fleet_config(n_series, models, days)
    config.write_text(yaml.safe_dump(cfg, sort_keys=False))
    row: dict = {"series": n_series, "set": set_name}
    dag_s, out, _ = snakemake(workdir, config, "-n", "--cores", str(cores))
    row["jobs"], row["dag_s"] = planned_jobs(out), dag_s
    wall = 0.0
    for stage, targets in STAGES:
        seconds, _, memory = snakemake(workdir, config, "--cores", str(cores), *targets)
        row[f"{stage}_s"] = seconds
        row[f"{stage}_peak_mib"] = memory.total_mib
        row[f"{stage}_job_mib"] = memory.single_mib
        wall += seconds
        print(
            f"# {n_series} {set_name} {stage}: {seconds:.1f} s, peak {memory.total_mib:,.0f} "
            f"MiB (one process {memory.single_mib:,.0f})",
            flush=True,
        )
    row["total_s"] = wall
    row["largest_job"] = largest_job(workdir)
    noop_s, out, _ = snakemake(workdir, config, "--cores", str(cores))
    if "Nothing to be done" not in out:
        raise SystemExit(f"the rerun of {workdir} was not a no-op:\n{out[-2000:]}")
    row["noop_s"] = noop_s
    cfg["synthetic"]["services"][0]["base_level"] += 1.0
    config.write_text(yaml.safe_dump(cfg, sort_keys=False))
    _, out, _ = snakemake(workdir, config, "-n", "--cores", str(cores))
    row["changed_jobs"] = planned_jobs(out)
    row["changed_s"], _, _ = snakemake(workdir, config, "--cores", str(cores))
    row["workdir"] = workdir
    row["commit"] = subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    row["load"] = os.getloadavg()[1]  # the 5-minute load average at the end of the run
    row["measured"] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    return row


def largest_job(workdir: Path) -> list:
    """The job with the largest resident memory by its rule's `benchmark:` file (Snakemake's
    own max_rss of the job's processes): [its file under results/benchmarks, MiB]."""
    root = workdir / "results" / "benchmarks"
    peaks = []
    for path in root.rglob("*.tsv"):
        lines = path.read_text().splitlines()
        header, last = lines[0].split("\t"), lines[-1].split("\t")
        value = last[header.index("max_rss")]
        if value not in ("", "NA", "-"):
            peaks.append((float(value), path.relative_to(root).with_suffix("").as_posix()))
    if not peaks:
        return [None, None]
    mib, name = max(peaks)
    return [name, mib]


def peak_mib(row: dict) -> float:
    """The row's peak memory of the whole process tree, over its stages."""
    return max(row[f"{stage}_peak_mib"] for stage, _ in STAGES)


def target_checks(row: dict) -> list[str]:
    """Each scaling target against the row's measurement: 'what measured <= bound: met'."""
    checks = [
        ("end to end", row["total_s"], TARGET_END_TO_END_S, "s", "{:,.0f}"),
        ("peak memory", peak_mib(row), TARGET_PEAK_MIB, "MiB", "{:,.0f}"),
        ("DAG build", row["dag_s"], TARGET_PLANNING_S, "s", "{:.1f}"),
        ("no-op rerun", row["noop_s"], TARGET_PLANNING_S, "s", "{:.1f}"),
    ]
    return [
        f"{what} {fmt.format(value)} {unit} (bound {fmt.format(bound)}): "
        + ("met" if value <= bound else "**missed**")
        for what, value, bound, unit, fmt in checks
    ]


def cache_path(n_series: int, set_name: str) -> Path:
    return CACHE / f"{n_series}-{set_name}.json"


def save_row(row: dict) -> None:
    CACHE.mkdir(parents=True, exist_ok=True)
    kept = {k: v for k, v in row.items() if k != "workdir"}
    cache_path(row["series"], row["set"]).write_text(json.dumps(kept, indent=1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--series", type=int, nargs="+", default=[100, 1000, 10000])
    parser.add_argument(
        "--sets", nargs="+", choices=["fast", "default"], default=["fast", "default"]
    )
    parser.add_argument(
        "--default-max-series",
        type=int,
        default=1000,
        help="largest fleet the default set is run on (its 10,000-series run takes over an "
        "hour on 2 cores); with --reuse, a kept row of a larger fleet is shown all the same",
    )
    parser.add_argument("--days", type=int, default=90)
    parser.add_argument("--cores", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--seed-sample", type=int, default=20)
    parser.add_argument("--write-readme", action="store_true")
    parser.add_argument(
        "--reuse",
        action="store_true",
        help=f"take a fleet's row from {CACHE.relative_to(ROOT)} when it was measured before",
    )
    args = parser.parse_args()
    from capforecast.config import validated_config

    sets = {"fast": FAST_SET, "default": list(validated_config({})["models"]["enabled"])}
    rows = []
    for n_series in args.series:
        for set_name in args.sets:
            cached = cache_path(n_series, set_name)
            if args.reuse and cached.exists():
                # A row measured before is shown whatever its size: the limit is on running.
                rows.append({**json.loads(cached.read_text()), "workdir": None})
                continue
            if set_name == "default" and n_series > args.default_max_series:
                continue
            row = run_fleet(n_series, set_name, sets[set_name], args.days, args.cores)
            save_row(row)
            rows.append(row)

    lines: list[str] = []

    def say(line: str = "") -> None:
        print(line, flush=True)
        lines.append(line)

    say(
        f"Synthetic fleets x {args.days} days hourly in {SERVICES} services (partitions), "
        f"`snakemake --cores {args.cores}` on {os.cpu_count()} cores, shard size "
        f"{validated_config({})['forecast'].get('shard_size', 'n/a')}. Fast set: "
        f"{', '.join(FAST_SET)}; default set: {', '.join(sets['default'])}. Peak memory: the "
        "whole process tree (concurrent jobs summed) / the largest single process, sampled "
        "every 0.2 s; the largest job by its rule's `benchmark:` file (results/benchmarks/)."
    )
    say()
    say(
        "| series | set | jobs | DAG build s | data s | forecast s | risk s | reports s | "
        "end to end s | peak MiB (tree / one job) | largest job (max_rss MiB) | no-op rerun s | "
        "one partition changed: jobs, s | measured (commit, 5-min load) |"
    )
    say("|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|---|")
    for r in rows:
        peak = peak_mib(r)
        job = max(r[f"{stage}_job_mib"] for stage, _ in STAGES)
        name, largest = r.get("largest_job") or (None, None)
        largest_text = f"{name} ({largest:,.0f})" if name else "n/a"
        say(
            f"| {r['series']:,} | {r['set']} | {r['jobs']} | {r['dag_s']:.1f} | {r['data_s']:.0f} "
            f"| {r['forecast_s']:.0f} | {r['risk_s']:.0f} | {r['reports_s']:.0f} | "
            f"**{r['total_s']:.0f}** ({r['total_s'] / 60:.1f} min) | {peak:,.0f} / {job:,.0f} | "
            f"{largest_text} | {r['noop_s']:.1f} | {r['changed_jobs']}, {r['changed_s']:.0f} | "
            f"{r['measured']} ({r['commit']}, load {r['load']:.1f}) |"
        )
    by_key = {(r["series"], r["set"]): r for r in rows}
    for small, large in zip(args.series, args.series[1:], strict=False):
        for set_name in args.sets:
            if (small, set_name) in by_key and (large, set_name) in by_key:
                ratio = by_key[(large, set_name)]["total_s"] / by_key[(small, set_name)]["total_s"]
                say()
                say(
                    f"{set_name} set, {small:,} -> {large:,} series ({large / small:.0f}x): "
                    f"end to end {ratio:.1f}x the time."
                )
    if (target := by_key.get((TARGET_SERIES, "fast"))) is not None:
        say()
        say(f"Targets at {TARGET_SERIES:,} series, fast set: {', '.join(target_checks(target))}.")
    # The peer runs on the 1,000-series fleet (or the largest fleet below it), once per model
    # set's run, so each ratio compares timings taken on the machine at the same time.
    seed_size = max((r["series"] for r in rows if r["series"] <= 1000), default=None)
    for row in (r for r in rows if r["series"] == seed_size):
        if row["workdir"] is not None:
            features = row["workdir"] / "results" / "features"
            row["seed_loop"] = list(seed_loop_seconds(features, args.seed_sample))
            save_row(row)
        say()
        if row.get("seed_loop") is None:
            say(
                f"(No seed-style loop timing kept for the {row['set']} set's {seed_size:,} "
                "series: run it without --reuse.)"
            )
            continue
        seconds, timed, fleet = row["seed_loop"]
        projected = seconds / timed * fleet
        say(
            f"Peer, the same {fleet:,} series, timed after the {row['set']} set's run: the "
            "seed-style loop (one default `Prophet()` per series and window, 5 fits each, "
            f"sequential) took {seconds:.1f} s for {timed} series, {projected:.0f} s projected: "
            f"{projected / row['forecast_s']:.1f}x the {row['set']} set's forecast stage."
        )
    for r in rows:
        if r["workdir"] is not None:
            shutil.rmtree(r["workdir"], ignore_errors=True)
    if args.write_readme:
        replace_block("bench-scaling", lines, "make bench-scaling")


if __name__ == "__main__":
    main()
