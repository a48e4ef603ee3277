"""ETL benchmark: rows/s for 1M and 10M raw rows against a plain pyarrow read, peak memory,
and the no-op rerun time of a 1,000-series workflow.

Run: .venv/bin/python tests/benchmarks/bench_etl.py [--sizes 1000000 10000000] [--skip-noop]
Prints a Markdown table (copied into the README's performance section).
Each measurement runs in a fresh subprocess so peak RSS belongs to that step alone.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[2]
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
        }
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


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", type=int, nargs="+", default=[1_000_000, 10_000_000])
    parser.add_argument("--skip-noop", action="store_true")
    args = parser.parse_args()
    print(f"machine: {os.cpu_count()} cores")
    print(
        "| raw rows | capforecast ETL s | rows/s | peak MiB | pyarrow read s | rows/s | peak MiB "
        "| ETL / read time |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    with tempfile.TemporaryDirectory() as tmp:
        for size in args.sizes:
            path = Path(tmp) / f"raw_{size}.parquet"
            write_raw(path, size)
            etl = measure("etl", path)
            read = measure("pyarrow", path)
            print(
                f"| {size:,} | {etl['seconds']:.2f} | {etl['rows'] / etl['seconds']:,.0f} "
                f"| {etl['peak_mib']:,.0f} | {read['seconds']:.3f} "
                f"| {read['rows'] / read['seconds']:,.0f} | {read['peak_mib']:,.0f} "
                f"| {etl['seconds'] / read['seconds']:.1f}x |"
            )
            path.unlink()
        if not args.skip_noop:
            first, noop, series = noop_rerun_seconds(Path(tmp))
            print()
            print("| workflow | series | first run to `features` s | no-op rerun s |")
            print("|---|---:|---:|---:|")
            print(
                f"| 10 services x 20 instances x 5 metrics | {series} | {first:.1f} | {noop:.1f} |"
            )


if __name__ == "__main__":
    main()
