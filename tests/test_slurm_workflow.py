"""The workflow on a real SLURM scheduler: the tiny synthetic fleet with `--executor slurm` and
the project's SLURM profile, every job through sbatch and slurmd, outputs equal to a local run.

The scheduler is a single node on 127.0.0.1 (tests/slurm_local.py, Debian's slurm-wlm and
munge; skipped with the reason where they cannot be installed). The forecast stage runs per
(shard, model): at the default forecast.shard_size the tiny fleet (25 series) would be one pack,
one job per model, so this run sets it to 15 (conftest.TINY_SHARD_SIZE): every service is
smaller than a shard, and the 25 series are ceil(25 / 15) = 2 packs, so the parallelism shown
here is between models and shards (two shards, three models). The local run it is compared with
is the suite's shared one (conftest.tiny_sharded_local_run). How partitions map to shards and
packs is tests/test_shards_workflow.py's subject; here every job only has to go through the
scheduler.
"""

from __future__ import annotations

import os
import re
import subprocess
from datetime import datetime
from itertools import pairwise
from pathlib import Path

import pandas as pd
import pytest
from conftest import tiny_sharded_config
from snakemake_cli import snakemake_cmd

ROOT = Path(__file__).resolve().parents[1]
TARGET = "risk"

pytestmark = pytest.mark.slow

# Outputs compared between the SLURM and the local run (parquet and CSV, every row and column
# but run times).
COMPARED = [
    "results/clean/alpha.parquet",
    "results/features/beta.parquet",
    "results/quality/data_quality.csv",
    "results/backtest/selection.parquet",
    "results/backtest/leaderboard.csv",
    "results/forecast/forecasts.parquet",
    "results/risk/risk_report.parquet",
    "results/risk/service_capacity.csv",
]
TIMING_COLUMNS = re.compile(r"fit_s|seconds|_time$|runtime")


def run(workdir: Path, *args: str, env: dict[str, str] | None = None) -> str:
    cmd = snakemake_cmd(workdir, tiny_sharded_config(workdir), *args, TARGET)
    proc = subprocess.run(
        cmd,
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=1500,
        env={**os.environ, "HF_HUB_OFFLINE": "1", "MPLBACKEND": "Agg", **(env or {})},
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"snakemake {' '.join(args)} failed:\n{out[-6000:]}"
    return out


def slurm_run(workdir: Path, slurm) -> str:
    """The run through sbatch with the project's SLURM profile; only the partition placeholder
    is replaced and the executor is told the cluster has no accounting database."""
    return run(
        workdir,
        "--workflow-profile",
        str(ROOT / "profiles" / "slurm"),
        "--default-resources",
        f"slurm_partition={slurm.partition}",
        "--slurm-status-command",
        "squeue",
        "--slurm-init-seconds-before-status-checks",
        "2",
        "--slurm-keep-successful-logs",
        "--jobs",
        "4",
        "--latency-wait",
        "10",
        env=slurm.env(),
    )


def submitted(log: str) -> dict[str, list[str]]:
    """rule -> SLURM job ids, from the executor's "submitted with SLURM jobid N (log:
    .../slurm_logs/rule_NAME/N.log)" lines."""
    jobs: dict[str, list[str]] = {}
    for match in re.finditer(
        r"submitted with SLURM jobid (\d+) \(log: \S*/slurm_logs/rule_(\w+)/", log
    ):
        jobs.setdefault(match.group(2), []).append(match.group(1))
    return jobs


def mem_mb(tres_mem: str) -> int:
    """SLURM's TRES memory (`2048M`, `3G`, `1T`) in MiB."""
    units = {"M": 1, "G": 1024, "T": 1024 * 1024}
    return int(float(tres_mem[:-1]) * units[tres_mem[-1]])


def check_every_job_ran_through_sbatch(workdir: Path, log: str, slurm) -> dict[str, list[str]]:
    jobs = submitted(log)
    # Every rule that does work, one SLURM job each (3 services, two shards, both packs; 2
    # baseline models and theta).
    assert set(jobs) == {
        "generate_service",
        "generate_fleet",
        "ingest_partition",
        "ingest_resources",
        "series_index",
        "clean_partition",
        "quality",
        "features_partition",
        "history_check",
        "backtest_baseline",
        "backtest_statsforecast",
        "leaderboard",
        "forecast_baseline",
        "forecast_statsforecast",
        "combine_forecasts",
        "risk_report",
    }, log[-3000:]
    assert len(jobs["ingest_partition"]) == 3 and len(jobs["backtest_baseline"]) == 4
    # The scheduler's own record: each of them ran on the node and completed.
    records = {r["JobId"]: r for r in slurm.completed_jobs()}
    ids = [job_id for ids in jobs.values() for job_id in ids]
    assert len(ids) == len(set(ids)) == 32
    for job_id in ids:
        record = records.get(job_id)
        assert record is not None, f"SLURM job {job_id} is not in the job-completion log"
        assert record["JobState"] == "COMPLETED", record
        assert record["Partition"] == slurm.partition
        assert record["WorkDir"] == str(workdir)
    # The rules' resources reached sbatch: the statsforecast jobs got 2 CPUs, every job the
    # memory job_resources gave it (whole GiB).
    for job_id in jobs["backtest_statsforecast"] + jobs["forecast_statsforecast"]:
        assert records[job_id]["ProcCnt"] == "2", records[job_id]
    for job_id in ids:
        tres = dict(item.split("=") for item in records[job_id]["Tres"].split(","))
        assert mem_mb(tres["mem"]) % 1024 == 0 and mem_mb(tres["mem"]) >= 2048, tres
    # The executor kept each job's SLURM log, one directory per rule.
    logs = workdir / ".snakemake" / "slurm_logs"
    assert {p.name for p in logs.iterdir()} >= {f"rule_{rule}" for rule in jobs}
    return jobs


def check_model_jobs_overlapped(jobs: dict[str, list[str]], slurm) -> None:
    """The 12 model jobs (backtest and final fit of three models on two shards) are ready at
    once, once their group's features are; the node
    has two CPUs and the baseline models take one each, so at least two of them overlapped."""
    model_ids = {
        job_id
        for rule, ids in jobs.items()
        if rule.startswith(("backtest_", "forecast_"))
        for job_id in ids
    }
    assert len(model_ids) == 12
    spans = sorted(
        (datetime.fromisoformat(r["StartTime"]), datetime.fromisoformat(r["EndTime"]))
        for r in slurm.completed_jobs()
        if r["JobId"] in model_ids
    )
    overlaps = sum(1 for (_, end), (start, _) in pairwise(spans) if start < end)
    assert overlaps >= 1, spans


def check_same_outputs(slurm_dir: Path, local_dir: Path) -> None:
    for rel in COMPARED:
        read = pd.read_parquet if rel.endswith(".parquet") else pd.read_csv
        left, right = read(slurm_dir / rel), read(local_dir / rel)
        assert list(left.columns) == list(right.columns), rel
        keep = [c for c in left.columns if not TIMING_COLUMNS.search(c)]
        pd.testing.assert_frame_equal(
            left[keep].reset_index(drop=True), right[keep].reset_index(drop=True), obj=rel
        )


def test_workflow_on_slurm_matches_a_local_run(local_slurm, tiny_sharded_local_run, tmp_path):
    """One test, so one worker runs it (and starts the one local SLURM)."""
    local_dir, slurm_dir = tiny_sharded_local_run, tmp_path / "slurm"
    slurm_dir.mkdir()
    log = slurm_run(slurm_dir, local_slurm)
    jobs = check_every_job_ran_through_sbatch(slurm_dir, log, local_slurm)
    check_model_jobs_overlapped(jobs, local_slurm)
    check_same_outputs(slurm_dir, local_dir)
