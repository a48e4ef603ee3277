"""ETL benchmark: rows/s for 1M and 10M raw rows against a plain pyarrow read, peak memory,
and the no-op rerun time of a 1,000-series workflow.

Run: .venv/bin/python tests/benchmarks/bench_etl.py [--sizes 1000000 10000000] [--skip-noop]
[--write-readme]. Prints Markdown tables; with --write-readme (`make benchmark`) they replace
the README's blocks between their markers (the workflow table only when it was measured).
Each measurement runs in a fresh subprocess. Its peak memory is the subprocess' own high-water
mark (VmHWM): on Linux ru_maxrss of a fresh child also counts the parent's memory at the fork
(the pre-exec high-water mark carries over), which floored every earlier figure at the
benchmark's own RSS.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
ETL_BLOCK = ("<!-- bench-etl:start -->", "<!-- bench-etl:end -->")
NOOP_BLOCK = ("<!-- bench-etl-noop:start -->", "<!-- bench-etl-noop:end -->")
METRICS = ["cpu_utilization", "memory_utilization", "network_in_bytes", "network_out_bytes"]


def write_raw(path: Path, rows: int, seed: int = 0) -> None:
    """Long-format parquet with 5-minute samples: rows / 8640 series of 30 days each."""
    rng = np.random.default_rng(seed)
    per_series = 8640  # 30 days at 5 min
    n_series = max(1, rows // per_series)
    start = pd.Timestamp("2026-01-01", tz="UTC")
    ts = start + pd.to_timedelta(np.arange(per_series) * 300, unit="s")
    frames = []
    for i in range(n_series):
        metric = METRICS[i % len(METRICS)]
        scale = 100.0 if "utilization" in metric else 1e6
        values = np.clip(rng.normal(0.4, 0.1, per_series), 0, 1) * scale
        frames.append(
            pd.DataFrame(
                {
                    "timestamp": ts,
                    "resource_id": f"i-{i // len(METRICS):06d}",
                    "metric": metric,
                    "value": values,
                }
            )
        )
    pd.concat(frames, ignore_index=True).iloc[:rows].to_parquet(path, index=False)


CHILD = r"""
import json, resource, sys, time
from pathlib import Path
mode, path = sys.argv[1], Path(sys.argv[2])
t0 = time.perf_counter()
if mode == "pyarrow":
    import pyarrow.parquet as pq
    rows = pq.read_table(path).num_rows
else:
    from capforecast.config import validated_config
    from capforecast.data import ingest, validate, resample, quality
    from capforecast.settings import data_settings, etl_settings
    cfg = validated_config({})
    etl = etl_settings(cfg["etl"])
    raw = ingest.read_input_file(path, data_settings(cfg["data"]))
    result = validate.validate_rows(raw, etl, path.name)
    clean = resample.resample_series(result.kept, etl)
    table = quality.quality_table(result, clean, raw, etl, "bench", path.name)
    rows = len(raw)
seconds = time.perf_counter() - t0
try:  # this process' own high-water mark (ru_maxrss would include the parent's at the fork)
    status = Path("/proc/self/status").read_text().splitlines()
    peak_mib = next(int(x.split()[1]) for x in status if x.startswith("VmHWM:")) / 1024
except (OSError, StopIteration):
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({"rows": rows, "seconds": seconds, "peak_mib": peak_mib}))
"""


def measure(mode: str, path: Path) -> dict:
    code = CHILD
    out = subprocess.run(
        [sys.executable, "-c", code, mode, str(path)], capture_output=True, text=True, check=True
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def noop_rerun_seconds(workdir: Path) -> tuple[float, float, int]:
    """Run the 1,000-series config up to `features`, then time a no-op rerun."""
    cfg = {
        "synthetic": {
            "days": 14,
            "freq": "1h",
            "services": [
                {
                    "name": f"svc{i:02d}",
                    "instances": 20,
                    "instance_type": "m5.large",
                    "scenario": "flat",
                }
                for i in range(10)
            ],
        },
        # The data stage reads no backtest key; two short windows keep the plan-time history
        # check satisfied by 14 days (the default windows need more history than that).
        "backtest": {"windows": 1, "selection_windows": 1, "horizon": 24, "step": 24},
    }
    cfg_path = workdir / "bench.yaml"
    cfg_path.write_text(json.dumps(cfg))
    snakemake = str(Path(sys.executable).parent / "snakemake")
    base = [
        snakemake,
        "-s",
        str(ROOT / "Snakefile"),
        "--directory",
        str(workdir),
        "--configfile",
        str(cfg_path),
        "--cores",
        "2",
    ]
    t0 = time.perf_counter()
    subprocess.run([*base, "features"], check=True, capture_output=True)
    first = time.perf_counter() - t0
    series = sum(
        len(pd.read_csv(p)) for p in (workdir / "results/quality/partitions").glob("*.csv")
    )
    t0 = time.perf_counter()
    out = subprocess.run([*base, "features"], check=True, capture_output=True, text=True)
    noop = time.perf_counter() - t0
    assert "Nothing to be done" in out.stdout + out.stderr
    return first, noop, series


def write_readme(block: tuple[str, str], lines: list[str]) -> None:
    """Replace the README's text between the block's markers with ``lines``."""
    start, end = block
    text = README.read_text()
    if start not in text or end not in text:
        raise SystemExit(f"README.md lacks the markers {start} ... {end}")
    body = "\n".join(
        [start, "<!-- generated by `make benchmark`; do not edit by hand -->", *lines, end]
    )
    pattern = re.compile(re.escape(start) + ".*?" + re.escape(end), re.S)
    README.write_text(pattern.sub(lambda _: body, text))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", type=int, nargs="+", default=[1_000_000, 10_000_000])
    parser.add_argument("--skip-noop", action="store_true")
    parser.add_argument("--write-readme", action="store_true")
    args = parser.parse_args()
    etl_lines: list[str] = []
    noop_lines: list[str] = []

    def say(lines: list[str], line: str = "") -> None:
        print(line, flush=True)
        lines.append(line)

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    say(
        etl_lines,
        f"Measured on {os.cpu_count()} cores (1-minute load average {load:.1f} when it started: "
        "other jobs running at the same time slow both columns).",
    )
    say(etl_lines)
    say(
        etl_lines,
        "| raw rows | capforecast ETL s | rows/s | peak MiB | pyarrow read s | rows/s | peak MiB "
        "| ETL / read time |",
    )
    say(etl_lines, "|---:|---:|---:|---:|---:|---:|---:|---:|")
    with tempfile.TemporaryDirectory() as tmp:
        for size in args.sizes:
            path = Path(tmp) / f"raw_{size}.parquet"
            write_raw(path, size)
            etl = measure("etl", path)
            read = measure("pyarrow", path)
            say(
                etl_lines,
                f"| {size:,} | {etl['seconds']:.2f} | {etl['rows'] / etl['seconds']:,.0f} "
                f"| {etl['peak_mib']:,.0f} | {read['seconds']:.3f} "
                f"| {read['rows'] / read['seconds']:,.0f} | {read['peak_mib']:,.0f} "
                f"| {etl['seconds'] / read['seconds']:.1f}x |",
            )
            path.unlink()
        if not args.skip_noop:
            first, noop, series = noop_rerun_seconds(Path(tmp))
            print()
            say(noop_lines, "| workflow | series | first run to `features` s | no-op rerun s |")
            say(noop_lines, "|---|---:|---:|---:|")
            say(
                noop_lines,
                f"| 10 services x 20 instances x 5 metrics | {series:,} | {first:.1f} "
                f"| {noop:.1f} |",
            )
    if args.write_readme:
        write_readme(ETL_BLOCK, etl_lines)
        if noop_lines:
            write_readme(NOOP_BLOCK, noop_lines)


if __name__ == "__main__":
    main()
