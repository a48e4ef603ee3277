"""The whole workflow on AWS, against moto's server on 127.0.0.1 (tests/aws_local.py): inputs
from S3 or CloudWatch, every output on S3 (profiles/aws), reruns after one object changes or
new datapoints arrive, no credential in any output, and one-line failures.

Only AWS_ENDPOINT_URL and test credentials differ from production; a proxy trap makes any call
that bypasses the endpoint fail."""

from __future__ import annotations

import io
import os
import re
import subprocess
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from aws_local import FAKE_ACCESS_KEY, FAKE_SECRET_KEY
from snakemake_cli import planned, snakemake_cmd
from test_aws_cloudwatch import _put, launch

ROOT = Path(__file__).resolve().parents[1]
NAB = ROOT / "tests" / "data" / "nab-aws-cloudwatch"
TINY = yaml.safe_load((ROOT / "tests" / "configs" / "tiny_local.yaml").read_text())
NAB_FILES = [
    "ec2_cpu_utilization_24ae8d.csv",
    "ec2_cpu_utilization_53ea38.csv",
    "ec2_network_in_257a54.csv",
]

pytestmark = pytest.mark.slow


def snakemake(workdir, env, config, *args, check=True):
    """The project's Snakefile in ``workdir`` with ``env`` over this process's environment."""
    cmd = snakemake_cmd(workdir, config, *args)
    full = {**os.environ, "HF_HUB_OFFLINE": "1", "MPLBACKEND": "Agg", **env}
    # None in env: unset (as are the credential variables a developer may have).
    for key in ("AWS_PROFILE", "AWS_SESSION_TOKEN", *[k for k, v in env.items() if v is None]):
        full.pop(key, None)
    proc = subprocess.run(cmd, capture_output=True, text=True, env=full, timeout=1200)
    if check and proc.returncode != 0:
        raise AssertionError(f"snakemake {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}")
    return proc


def s3_objects(s3, bucket, prefix="") -> dict[str, dict]:
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
    return {o["Key"]: o for page in pages for o in page.get("Contents", [])}


def s3_parquet(s3, bucket, key) -> pd.DataFrame:
    return pd.read_parquet(io.BytesIO(s3.get_object(Bucket=bucket, Key=key)["Body"].read()))


def assert_no_credentials(s3, bucket, workdir, *texts):
    """Neither fake key anywhere: S3 results, the working directory (logs, .snakemake
    metadata and storage copies, the CloudWatch store), snakemake's own output."""
    secrets = [FAKE_ACCESS_KEY.encode(), FAKE_SECRET_KEY.encode()]
    found = []
    for key in s3_objects(s3, bucket):
        body = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
        found += [f"s3://{bucket}/{key}" for s in secrets if s in body]
    files = [p for p in Path(workdir).rglob("*") if p.is_file()]
    assert any(".snakemake" in p.parts for p in files)  # metadata is among them
    found += [str(p) for p in files for s in secrets if s in p.read_bytes()]
    found += [f"output {i}" for i, t in enumerate(texts) for s in secrets if s.decode() in t]
    assert found == []


@pytest.fixture
def results_bucket(aws_env, fresh_bucket):
    """A second bucket for results (fresh_bucket holds the inputs)."""
    name = f"{fresh_bucket[:50]}-out"
    aws_env.client("s3").create_bucket(Bucket=name)
    return name


def test_s3_inputs_a_family_on_sagemaker_s3_results_and_a_rerun_after_one_object_changes(
    aws_env, fresh_bucket, results_bucket, tmp_path, local_sagemaker
):
    """All of it at once, as on AWS: inputs listed from S3, the baseline family fitted by
    SageMaker training jobs (tests/sagemaker_local.py runs them), every output on S3; then one
    input object changes and only its partition, and its SageMaker jobs, run again."""
    s3 = aws_env.client("s3")
    # Two objects, two groups: one changes, the other proves it is left alone; each SageMaker
    # job of one model and task is told apart by its group.
    objects = NAB_FILES[:2]
    for name in objects:
        s3.put_object(Bucket=fresh_bucket, Key=f"metrics/{name}", Body=(NAB / name).read_bytes())
    s3.put_object(Bucket=fresh_bucket, Key="metrics/README.md", Body=b"not metrics")
    s3.put_object(Bucket=fresh_bucket, Key="metrics/old/x.csv", Body=b"timestamp,value\n")
    config = tmp_path / "s3-sagemaker.yaml"
    settings = {
        **TINY,
        # One baseline model: one SageMaker job per stage and object (each is about 18 s of
        # SDK and container start here); several models of a family on SageMaker are
        # tests/test_sagemaker_workflow.py's subject.
        "models": {**TINY["models"], "enabled": ["seasonal_naive_daily"]},
        "data": {"source": "s3", "path": f"s3://{fresh_bucket}/metrics/"},
        "training": {"backend": {"baseline": "sagemaker"}, "poll_seconds": 0.5},
        "aws": {"bucket": fresh_bucket, "prefix": "jobs", "role_arn": local_sagemaker.role_arn},
    }
    config.write_text(yaml.safe_dump(settings))
    work = tmp_path / "work"
    env = {**aws_env.env(), "CAPFORECAST_S3_PREFIX": f"s3://{results_bucket}/team-a/run"}
    profile = ("--profile", str(ROOT / "profiles" / "aws"))
    first = snakemake(work, env, config, *profile, "--cores", "2")
    assert local_sagemaker.errors == {}

    prefix = "team-a/run/results/"
    results = s3_objects(s3, results_bucket, prefix)
    for key in (
        "risk/risk_report.csv",
        "risk/summary.json",
        "backtest/leaderboard.csv",
        "forecast/forecasts.parquet",
        "quality/data_quality.csv",
        "reports/capacity_risk.html",
        "logs/ingest/ec2_cpu_utilization_53ea38.log",
    ):
        assert prefix + key in results, key
    assert not (work / "results").exists()  # every output is on S3
    # A backtest and a refit per model and shard: each object is a group of its own, one shard
    # (forecast.series_per_partition unset: its series are not known when planning, so it is
    # never packed).
    baselines = settings["models"]["enabled"]
    partitions = [name.removesuffix(".csv") for name in objects]
    assert len(local_sagemaker.jobs) == 2 * len(baselines) * len(partitions)
    for model in baselines:
        for stage in ("backtest", "forecast"):
            for partition in partitions:
                shard = f"{prefix}{stage}/shards/{partition}/0/{model}"
                assert f"{shard}.sagemaker.json" in results
                assert f"{shard}.parquet" in results
    skipped = s3.get_object(Bucket=results_bucket, Key=prefix + "quality/skipped_files.csv")
    text = skipped["Body"].read().decode()
    assert f"s3://{fresh_bucket}/metrics/README.md" in text
    assert f"s3://{fresh_bucket}/metrics/old/" in text
    # Every input row is accounted for, per object, as for local files.
    recon = pd.read_csv(
        io.BytesIO(
            s3.get_object(Bucket=results_bucket, Key=prefix + "quality/reconciliation.csv")[
                "Body"
            ].read()
        )
    )
    assert sorted(recon["source_file"]) == objects
    rows = sum(len((NAB / n).read_text().splitlines()) - 1 for n in objects)
    assert recon["rows_in"].sum() == rows
    raw = s3_parquet(s3, results_bucket, prefix + "raw/ec2_cpu_utilization_53ea38.parquet")
    local = pd.read_csv(NAB / NAB_FILES[1], float_precision="round_trip")
    np.testing.assert_array_equal(raw["value"].to_numpy(), local["value"].to_numpy())

    assert "Nothing to be done" in snakemake(work, env, config, *profile, "-n").stdout

    # One object changes: its partition and what depends on it, nothing else.
    time.sleep(1.1)  # S3 times have 1 s resolution
    lines = (NAB / NAB_FILES[1]).read_text().splitlines()
    stamp, _ = lines[10].split(",")
    lines[10] = f"{stamp},55.5"
    s3.put_object(
        Bucket=fresh_bucket, Key=f"metrics/{NAB_FILES[1]}", Body=("\n".join(lines) + "\n").encode()
    )
    # To the risk report (the first run showed the reports reach S3).
    plan = snakemake(work, env, config, *profile, "-n", "risk")
    jobs = planned(plan)
    assert jobs["ingest_partition"] == 1 and jobs["clean_partition"] == 1
    assert jobs["features_partition"] == 1
    # The changed group's shard only: a backtest and a refit per model.
    assert jobs["backtest_sagemaker"] == jobs["forecast_sagemaker"] == len(baselines)
    assert "generate_service" not in jobs
    assert f"Updated input files: s3://{fresh_bucket}/metrics/{NAB_FILES[1]}" in plan.stdout
    before = s3_objects(s3, results_bucket, prefix + "clean/")
    second = snakemake(work, env, config, *profile, "--cores", "2", "risk")
    assert local_sagemaker.errors == {}
    assert len(local_sagemaker.jobs) == 2 * len(baselines) * (len(partitions) + 1)
    after = s3_objects(s3, results_bucket, prefix + "clean/")
    changed = {k for k in before if after[k]["LastModified"] != before[k]["LastModified"]}
    assert changed == {prefix + "clean/ec2_cpu_utilization_53ea38.parquet"}
    raw = s3_parquet(s3, results_bucket, prefix + "raw/ec2_cpu_utilization_53ea38.parquet")
    assert raw["value"].iloc[9] == 55.5
    assert "Nothing to be done" in snakemake(work, env, config, *profile, "-n", "risk").stdout
    assert_no_credentials(
        s3,
        results_bucket,
        work,
        first.stdout + first.stderr,
        second.stdout + second.stderr,
    )


CW_DAYS = 6  # the tiny backtest needs 5 days of hourly history


def test_shards_of_s3_objects_and_cloudwatch_services_are_planned(aws_env, fresh_bucket, tmp_path):
    """Series known only after ingest (an S3 object, a CloudWatch service selected by tags) are
    planned for forecast.series_per_partition; a service listing instance_ids has instances x
    metrics. Dry runs: the plan needs no object and no CloudWatch call."""
    s3 = aws_env.client("s3")
    for name in NAB_FILES:
        s3.put_object(Bucket=fresh_bucket, Key=f"metrics/{name}", Body=(NAB / name).read_bytes())
    forecast = {**TINY["forecast"], "shard_size": 2, "series_per_partition": 5}
    s3_config = tmp_path / "s3.yaml"
    s3_config.write_text(
        yaml.safe_dump(
            {
                **TINY,
                "data": {"source": "s3", "path": f"s3://{fresh_bucket}/metrics/"},
                "forecast": forecast,
            }
        )
    )
    jobs = planned(snakemake(tmp_path / "s3", aws_env.env(), s3_config, "-n"))
    # 3 objects x ceil(5 / 2) shards x 2 models.
    assert jobs["backtest_baseline"] == jobs["forecast_baseline"] == 3 * 3 * 2

    cw_config = tmp_path / "cw.yaml"
    services = [
        {"name": "web", "instance_ids": ["i-00000000000000a1", "i-00000000000000a2"]},
        {"name": "api", "tags": {"Team": "api"}},
    ]
    metrics = [
        {"namespace": "AWS/EC2", "name": "CPUUtilization", "statistic": "Average"},
        {"namespace": "CWAgent", "name": "mem_used_percent", "statistic": "Average"},
    ]
    cw = {"services": services, "metrics": metrics, "end": "2026-11-01T00:00:00Z"}
    cw_config.write_text(
        yaml.safe_dump(
            {**TINY, "data": {"source": "cloudwatch", "cloudwatch": cw}, "forecast": forecast}
        )
    )
    out = snakemake(tmp_path / "cw", aws_env.env(), cw_config, "-n").stdout
    # web: 2 instances x 2 metrics = 4 series, 2 shards; api: 5 estimated, 3 shards.
    shards = set(re.findall(r"wildcards: group=(\w+), shard=(\d+), model=predict_linear", out))
    assert shards == {("web", "0"), ("web", "1"), ("api", "0"), ("api", "1"), ("api", "2")}


@pytest.fixture
def cloudwatch_fleet(aws_env, request):
    """Two services: an Auto Scaling group of 2 (with the CloudWatch agent) and 1 tagged
    instance, six days of hourly CPU, memory and network data."""
    tag = f"wf-{abs(hash(request.node.nodeid)) % 10**6}"
    api, ids = launch(aws_env, tagged=1, tag=("Team", tag), kind="m5.xlarge", group=tag)
    cw = aws_env.client("cloudwatch")
    end = pd.Timestamp.now(tz="UTC").floor("1h")
    stamps = pd.date_range(end - pd.Timedelta(days=CW_DAYS), end - pd.Timedelta(hours=1), freq="1h")
    hour = np.arange(len(stamps))
    truth = []
    for k, instance in enumerate([*ids, *api]):
        daily = 30.0 + 10.0 * np.sin(2 * np.pi * (hour % 24) / 24) + k + hour * 0.05
        truth.append(_put(cw, "AWS/EC2", "CPUUtilization", instance, stamps, np.round(daily, 3)))
        truth.append(_put(cw, "CWAgent", "mem_used_percent", instance, stamps, 50.0 + k + 0 * hour))
    return {
        "group": tag,
        "tag": tag,
        "web": ids,
        "api": api,
        "end": end,
        "truth": pd.concat(truth, ignore_index=True),
    }


def _cloudwatch_config(path, fleet, end, tmp_path):
    cfg = {
        **TINY,
        "data": {
            "source": "cloudwatch",
            "cloudwatch": {
                "services": [
                    {"name": "web", "auto_scaling_group": fleet["group"]},
                    {"name": "api", "tags": {"Team": [fleet["tag"]]}},
                ],
                "metrics": [
                    {"namespace": "AWS/EC2", "name": "CPUUtilization", "statistic": "Average"},
                    {"namespace": "CWAgent", "name": "mem_used_percent", "statistic": "Maximum"},
                ],
                "days": CW_DAYS,
                "period": 3600,
                "end": end.isoformat(),
            },
        },
    }
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_cloudwatch_to_s3_results_and_an_incremental_rerun(
    aws_env, cloudwatch_fleet, results_bucket, tmp_path
):
    fleet = cloudwatch_fleet
    s3 = aws_env.client("s3")
    work = tmp_path / "work"
    env = {**aws_env.env(), "CAPFORECAST_S3_PREFIX": f"s3://{results_bucket}/cw"}
    profile = ("--profile", str(ROOT / "profiles" / "aws"))
    early = fleet["end"] - pd.Timedelta(hours=3)
    config = _cloudwatch_config(tmp_path / "cw.yaml", fleet, early, tmp_path)
    # To the risk report: that reports reach S3 is the S3-inputs test's to show.
    first = snakemake(work, env, config, *profile, "--cores", "2", "risk")
    prefix = "cw/results/"
    assert prefix + "risk/risk_report.csv" in s3_objects(s3, results_bucket, prefix)

    resources = s3_parquet(s3, results_bucket, prefix + "resources.parquet")
    assert sorted(resources["resource_id"]) == sorted(fleet["web"] + fleet["api"])
    by_id = resources.set_index("resource_id")
    assert set(by_id.loc[fleet["web"], "service"]) == {"web"}
    assert by_id.loc[fleet["api"][0], "instance_type"] == "m5.xlarge"
    assert by_id.loc[fleet["api"][0], "vcpu"] == 4.0
    assert by_id.loc[fleet["api"][0], "memory_gib"] == 16.0

    def check_raw(until):
        raw = s3_parquet(s3, results_bucket, prefix + "raw/web.parquet")
        # CloudWatch names mapped to the project's (AWS/EC2:CPUUtilization, mem_used_percent).
        assert set(raw["metric"]) == {"cpu_utilization", "memory_utilization"}
        names = {"AWS/EC2:CPUUtilization": "cpu_utilization"}
        truth = fleet["truth"].replace({"metric": names})
        truth["metric"] = truth["metric"].replace(
            {"CWAgent:mem_used_percent": "memory_utilization"}
        )
        want = truth[truth["resource_id"].isin(fleet["web"]) & (truth["timestamp"] < until)]
        got = raw.merge(want, on=["timestamp", "resource_id", "metric"], how="outer")
        assert (
            len(got) == len(raw) == len(want) == 2 * 2 * (CW_DAYS * 24 - 3 * (until < fleet["end"]))
        )
        np.testing.assert_array_equal(got["value_x"].to_numpy(), got["value_y"].to_numpy())

    check_raw(early)
    assert "Nothing to be done" in snakemake(work, env, config, *profile, "-n", "risk").stdout

    # Three hours later: both services fetch again (only the new hours and the overlap).
    config = _cloudwatch_config(tmp_path / "cw.yaml", fleet, fleet["end"], tmp_path)
    jobs = planned(snakemake(work, env, config, *profile, "-n"))
    assert jobs["ingest_cloudwatch"] == 2
    second = snakemake(work, env, config, *profile, "--cores", "2", "clean")
    check_raw(fleet["end"])
    log = s3.get_object(Bucket=results_bucket, Key=prefix + "logs/ingest/web.log")["Body"].read()
    start = (early - pd.Timedelta(hours=1) - pd.Timedelta(minutes=30)).floor("1h")
    assert f"(from {start.isoformat()}: 4 series)" in log.decode()
    # 4 series x (the last 2 hours again, overlap rounded down to the period, + 3 new)
    assert "fetched 20 datapoints" in log.decode()
    assert_no_credentials(
        s3, results_bucket, work, first.stdout + first.stderr, second.stdout + second.stderr
    )


@pytest.mark.parametrize("case", ["missing_bucket", "no_credentials", "access_denied"])
def test_s3_failures_stop_the_plan_with_one_line(aws_env, fresh_bucket, tmp_path, case):
    env = dict(aws_env.env())
    path = f"s3://{fresh_bucket}/metrics/"
    if case == "missing_bucket":
        path = "s3://no-such-bucket-capforecast/metrics/"
        want = (
            r"Cannot list the input files: listing s3://no-such-bucket-capforecast/metrics/: the "
            r"bucket 'no-such-bucket-capforecast' does not exist \(NoSuchBucket\)"
        )
    elif case == "no_credentials":
        env["AWS_ACCESS_KEY_ID"] = env["AWS_SECRET_ACCESS_KEY"] = None
        want = r"listing s3://.*: no AWS credentials: the standard AWS credential chain found none"
    else:
        # A local endpoint that denies every call, as S3 does without s3:ListBucket.
        server = _denying_endpoint()
        env["AWS_ENDPOINT_URL"] = f"http://127.0.0.1:{server.server_address[1]}"
        want = r"listing s3://.*: access denied \(AccessDenied\): the credentials in use lack"
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump({**TINY, "data": {"source": "s3", "path": path}}))
    try:
        proc = snakemake(tmp_path / "w", env, config, "-n", check=False)
    finally:
        if case == "access_denied":
            server.shutdown()
    assert proc.returncode != 0
    lines = [line for line in (proc.stdout + proc.stderr).splitlines() if re.search(want, line)]
    assert len(lines) == 1, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    assert FAKE_SECRET_KEY not in proc.stdout + proc.stderr


def _denying_endpoint():
    """An S3 endpoint on 127.0.0.1 answering every request with 403 AccessDenied."""
    import http.server
    import threading

    class Deny(http.server.BaseHTTPRequestHandler):
        def _deny(self):
            body = (
                b'<?xml version="1.0" encoding="UTF-8"?><Error><Code>AccessDenied</Code>'
                b"<Message>Access Denied</Message></Error>"
            )
            self.send_response(403)
            self.send_header("Content-Type", "application/xml")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        do_GET = do_HEAD = do_PUT = do_POST = _deny  # noqa: N815

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Deny)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def test_results_on_s3_need_a_bucket_prefix(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text(
        yaml.safe_dump(yaml.safe_load((ROOT / "tests/configs/tiny_synthetic.yaml").read_text()))
    )
    env = {"CAPFORECAST_S3_PREFIX": ""}
    proc = snakemake(
        tmp_path / "w", env, config, "--profile", str(ROOT / "profiles" / "aws"), "-n", check=False
    )
    assert proc.returncode != 0
    assert "results on S3 need a prefix s3://bucket/prefix: set CAPFORECAST_S3_PREFIX" in (
        proc.stdout + proc.stderr
    )
