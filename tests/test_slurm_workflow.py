"""The workflow on a real SLURM scheduler: the tiny synthetic fleet with `--executor slurm` and
the project's SLURM profile, every job through sbatch and slurmd, outputs equal to a local run.

The scheduler is a single node on 127.0.0.1 (tests/slurm_local.py, Debian's slurm-wlm and
munge; skipped with the reason where they cannot be installed). The forecast stage is not
sharded yet: each model family still fits the whole fleet in one job, so the parallelism shown
here is between models and partitions (three services, two baseline models).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from datetime import datetime
from itertools import pairwise
from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]
SNAKEMAKE = str(Path(sys.executable).parent / "snakemake")
CONFIG = ROOT / "tests" / "configs" / "tiny_synthetic.yaml"
TARGET = "risk"

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("slurm")]

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
    cmd = [
        SNAKEMAKE,
        "-s",
        str(ROOT / "Snakefile"),
        "--directory",
        str(workdir),
        f"--configfile={CONFIG}",
        *args,
        TARGET,
    ]
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


@pytest.fixture(scope="module")
def local_run(tmp_path_factory) -> Path:
    workdir = tmp_path_factory.mktemp("local")
    run(workdir, "--cores", "2")
    return workdir


@pytest.fixture(scope="module")
def slurm_run(local_slurm, tmp_path_factory) -> tuple[Path, str]:
    """The same run through sbatch, with the project's SLURM profile; only the partition
    placeholder is replaced and the executor is told the cluster has no accounting database."""
    workdir = tmp_path_factory.mktemp("slurm-run")
    out = run(
        workdir,
        "--workflow-profile",
        str(ROOT / "profiles" / "slurm"),
        "--default-resources",
        f"slurm_partition={local_slurm.partition}",
        "--slurm-status-command",
        "squeue",
        "--slurm-init-seconds-before-status-checks",
        "2",
        "--slurm-keep-successful-logs",
        "--jobs",
        "4",
        "--latency-wait",
        "10",
        env=local_slurm.env(),
    )
    return workdir, out


def submitted(log: str) -> dict[str, list[str]]:
    """rule -> SLURM job ids, from the executor's "submitted with SLURM jobid N (log:
    .../slurm_logs/rule_NAME/N.log)" lines."""
    jobs: dict[str, list[str]] = {}
    for match in re.finditer(
        r"submitted with SLURM jobid (\d+) \(log: \S*/slurm_logs/rule_(\w+)/", log
    ):
        jobs.setdefault(match.group(2), []).append(match.group(1))
    return jobs


def test_every_job_runs_through_sbatch(slurm_run, local_slurm):
    workdir, log = slurm_run
    jobs = submitted(log)
    ran = {rule for rule in jobs}
    # Every rule that does work, one SLURM job each (3 services, 2 baseline models).
    assert ran == {
        "generate_service",
        "generate_fleet",
        "ingest_partition",
        "ingest_resources",
        "series_index",
        "clean_partition",
        "quality",
        "features_partition",
        "backtest_baseline",
        "backtest_statsforecast",
        "leaderboard",
        "forecast_baseline",
        "forecast_statsforecast",
        "combine_forecasts",
        "risk_report",
    }, log[-3000:]
    assert len(jobs["ingest_partition"]) == 3 and len(jobs["backtest_baseline"]) == 2
    # The scheduler's own record: each of them ran on the node and completed.
    records = {r["JobId"]: r for r in local_slurm.completed_jobs()}
    ids = [job_id for ids in jobs.values() for job_id in ids]
    assert len(ids) == len(set(ids)) == 25
    for job_id in ids:
        record = records.get(job_id)
        assert record is not None, f"SLURM job {job_id} is not in the job-completion log"
        assert record["JobState"] == "COMPLETED", record
        assert record["Partition"] == local_slurm.partition
        assert record["WorkDir"] == str(workdir)
    # The rules' resources reached sbatch: the statsforecast jobs got 2 CPUs, every job the
    # memory job_resources gave it (a whole number of GiB).
    for job_id in jobs["backtest_statsforecast"] + jobs["forecast_statsforecast"]:
        assert records[job_id]["ProcCnt"] == "2", records[job_id]
    for job_id in ids:
        tres = dict(item.split("=") for item in records[job_id]["Tres"].split(","))
        assert tres["mem"].endswith("M") and int(tres["mem"][:-1]) % 1024 == 0, tres
    # The executor kept each job's SLURM log, one directory per rule.
    logs = workdir / ".snakemake" / "slurm_logs"
    assert {p.name for p in logs.iterdir()} >= {f"rule_{rule}" for rule in ran}


def test_jobs_ran_in_parallel_on_the_scheduler(slurm_run, local_slurm):
    """Independent jobs (the services' ETL, the models' backtests) overlapped on the node."""
    _, log = slurm_run
    ids = {job_id for ids in submitted(log).values() for job_id in ids}
    spans = sorted(
        (datetime.fromisoformat(r["StartTime"]), datetime.fromisoformat(r["EndTime"]))
        for r in local_slurm.completed_jobs()
        if r["JobId"] in ids
    )
    overlaps = sum(1 for (_, end), (start, _) in pairwise(spans) if start < end)
    assert overlaps >= 1, spans


def _same_table(left: pd.DataFrame, right: pd.DataFrame, name: str) -> None:
    keep = [c for c in left.columns if not TIMING_COLUMNS.search(c)]
    assert list(left.columns) == list(right.columns), name
    pd.testing.assert_frame_equal(
        left[keep].reset_index(drop=True), right[keep].reset_index(drop=True), obj=name
    )


@pytest.mark.parametrize("rel", COMPARED)
def test_outputs_match_a_local_run(slurm_run, local_run, rel):
    workdir, _ = slurm_run
    read = pd.read_parquet if rel.endswith(".parquet") else pd.read_csv
    _same_table(read(workdir / rel), read(local_run / rel), rel)
