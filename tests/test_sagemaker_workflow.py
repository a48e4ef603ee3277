"""The workflow with a model family on SageMaker, against moto on 127.0.0.1: Snakemake in a
subprocess reaches only the local server (tests/aws_local.py: endpoint, fake keys, proxy trap),
each training job runs in the local container of tests/sagemaker_local.py, and the downstream
rules run on what the jobs returned. Everything must match a run where every family is local:
the run continues a copy of that local run (the suite's shared one) with the baseline family
moved to SageMaker and its rules forced, so only that family's jobs and what reads them run
again."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml
from aws_local import FAKE_ACCESS_KEY, FAKE_SECRET_KEY
from conftest import shared_run_config
from snakemake_cli import planned

from capforecast.aws.sagemaker_backend import job_base_name

ROOT = Path(__file__).resolve().parents[1]
SNAKEMAKE = str(Path(sys.executable).parent / "snakemake")
BASELINES = ("seasonal_naive_daily", "predict_linear")

pytestmark = pytest.mark.slow


def snakemake(workdir: Path, configs: list[Path], env: dict, *targets: str):
    cmd = [
        SNAKEMAKE,
        "-s",
        str(ROOT / "Snakefile"),
        "--directory",
        str(workdir),
        "--cores",
        "2",
        *targets,
        # Last: it takes several values (a repeated --configfile keeps only the last one).
        "--configfile",
        *map(str, configs),
    ]
    proc = subprocess.run(
        cmd,
        capture_output=True,
        text=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1", "MPLBACKEND": "Agg", **env},
        timeout=1500,
    )
    return proc


# The shards of conftest.tiny_sharded_config (the tiny fleet at forecast.shard_size 15; at the
# default size the fleet is one pack, one job per model and task). Two shards are enough to
# show jobs named apart per shard; each more adds four SageMaker jobs of evidence already given.
SHARDS = ("pack.0/0", "pack.1/0")


@pytest.fixture(scope="module")
def tiny(tiny_sharded_local_run) -> Path:
    """The config of the local run this test continues (conftest.tiny_sharded_config)."""
    return shared_run_config(tiny_sharded_local_run)


def comparable(path: Path) -> pd.DataFrame:
    frame = pd.read_parquet(path)
    drop = [c for c in frame if c in ("fit_seconds", "backtest_s", "fit_s")]
    return frame.drop(columns=drop)


def test_a_family_on_sagemaker_gives_the_local_results(
    tmp_path, tiny, tiny_sharded_local_run, local_sagemaker, fresh_bucket
):
    workdir = tmp_path / "work"
    remote = tmp_path / "sagemaker.yaml"
    remote.write_text(
        yaml.safe_dump(
            {
                "training": {"backend": {"baseline": "sagemaker"}, "poll_seconds": 0.5},
                "aws": {
                    "bucket": fresh_bucket,
                    "prefix": "runs/tiny",
                    "role_arn": local_sagemaker.role_arn,
                },
            }
        )
    )
    env = local_sagemaker.aws.env()
    # The local run, continued with the baseline family moved to SageMaker. Where a fit runs
    # changes nothing it computes (training.* and aws.* are no rule's params), so that alone
    # reruns nothing; the user who wants the family fitted there again forces its rules, and
    # only those jobs and what reads them run.
    shutil.copytree(tiny_sharded_local_run, workdir, ignore=shutil.ignore_patterns("locks"))
    moved = snakemake(workdir, [tiny, remote], env, "-n", "risk")
    assert "Nothing to be done" in moved.stdout + moved.stderr
    forced = ("risk", "--forcerun", "backtest_sagemaker", "forecast_sagemaker")
    plan = snakemake(workdir, [tiny, remote], env, "-n", *forced)
    assert plan.returncode == 0, plan.stdout + plan.stderr
    jobs = len(BASELINES) * len(SHARDS)
    assert planned(plan) == {
        "backtest_sagemaker": jobs,
        "forecast_sagemaker": jobs,
        "leaderboard": 1,
        "combine_forecasts": 1,
        "risk_report": 1,
        "risk": 1,
    }
    for model in BASELINES:
        assert "rule backtest_sagemaker:\n" in plan.stdout
        for shard in SHARDS:
            group, number = shard.split("/")
            wildcards = f"wildcards: group={group}, shard={number}, model={model}\n"
            assert wildcards in plan.stdout
    assert "rule backtest_baseline:" not in plan.stdout

    proc = snakemake(workdir, [tiny, remote], env, *forced)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert local_sagemaker.errors == {}
    # One job per baseline model, task and shard (two packs),
    # each run under the SageMaker contract, named apart per shard (jobs of one model and task
    # start in the same second: one name would share one S3 input prefix).
    assert sorted(name.rsplit("-", 1)[0] for name in local_sagemaker.jobs) == sorted(
        job_base_name(model, task, shard)
        for model in BASELINES
        for task in ("backtest", "forecast")
        for shard in SHARDS
    )
    results, local = workdir / "results", tiny_sharded_local_run / "results"
    for model in BASELINES:
        for stage in ("backtest", "forecast"):
            for shard in SHARDS:
                got = results / stage / "shards" / shard / f"{model}.parquet"
                # Written again by the job, not the copy the run continued.
                original = local / stage / "shards" / shard / f"{model}.parquet"
                assert got.stat().st_mtime_ns > original.stat().st_mtime_ns, got
                pd.testing.assert_frame_equal(comparable(got), comparable(original))
                receipt = json.loads(
                    (results / stage / "shards" / shard / f"{model}.sagemaker.json").read_text()
                )
                assert receipt["status"] == "Completed" and receipt["task"] == stage
                assert receipt["model_artifacts_s3_uri"].startswith(
                    f"s3://{fresh_bucket}/runs/tiny/sagemaker/"
                )
        for shard in SHARDS:
            log = (results / "logs" / "backtest" / shard / f"{model}.log").read_text()
            assert "submitted SageMaker training job capforecast-" in log
            assert ": Completed / Completed after" in log
    # theta stayed local.
    assert not list((results / "backtest" / "shards").glob("*/*/theta.sagemaker.json"))
    # Downstream of the jobs: the same leaderboard, forecasts and risk report as locally.
    for name in ("backtest/metrics.parquet", "backtest/selection.parquet"):
        pd.testing.assert_frame_equal(comparable(results / name), comparable(local / name))
    pd.testing.assert_frame_equal(
        comparable(results / "forecast" / "forecasts.parquet"),
        comparable(local / "forecast" / "forecasts.parquet"),
    )
    pd.testing.assert_frame_equal(
        pd.read_parquet(results / "risk" / "risk_report.parquet"),
        pd.read_parquet(local / "risk" / "risk_report.parquet"),
    )
    # No key of the test credentials in any output, log or Snakemake record.
    leaks = [
        str(path)
        for base in (workdir / "results", workdir / ".snakemake")
        for path in base.rglob("*")
        if path.is_file()
        and (
            FAKE_ACCESS_KEY.encode() in path.read_bytes()
            or FAKE_SECRET_KEY.encode() in path.read_bytes()
        )
    ]
    assert leaks == []
    assert FAKE_ACCESS_KEY not in proc.stdout + proc.stderr
    assert FAKE_SECRET_KEY not in proc.stdout + proc.stderr
    # Nothing left to do; an instance type change reruns nothing (where a fit runs is no param).
    again = snakemake(workdir, [tiny, remote], env, "-n", "risk")
    assert "Nothing to be done" in again.stdout + again.stderr
    bigger = tmp_path / "bigger.yaml"
    bigger.write_text(yaml.safe_dump({"training": {"instance_type": "ml.m5.2xlarge"}}))
    again = snakemake(workdir, [tiny, remote, bigger], env, "-n", "risk")
    assert "Nothing to be done" in again.stdout + again.stderr
