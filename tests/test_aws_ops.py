"""The operations CLI (python -m capforecast.aws) against moto's server on 127.0.0.1."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
import yaml
from aws_local import FAKE_ACCESS_KEY, FAKE_SECRET_KEY
from sagemaker_local import run_processing_job
from test_sagemaker_backend import feature_panel

from capforecast.aws import ops

ROOT = Path(__file__).resolve().parents[1]


def configfile(tmp_path: Path, bucket: str, role_arn: str | None = None, **extra) -> Path:
    path = tmp_path / "aws.yaml"
    cfg = {
        "aws": {"region": "us-east-1", "bucket": bucket, "prefix": "team/cf", "role_arn": role_arn},
        "training": {"poll_seconds": 0.2},
        **extra,
    }
    path.write_text(yaml.safe_dump(cfg))
    return path


def cli(*args: str) -> tuple[int, list[str]]:
    lines: list[str] = []
    code = ops.main(list(args), out=lines.append)
    return code, lines


def test_setup_role_prints_a_least_privilege_policy_and_is_idempotent(
    tmp_path, fresh_bucket, aws_env
):
    cfg = configfile(tmp_path, fresh_bucket)
    role = f"cf-role-{abs(hash(str(tmp_path))) % 10**6}"
    code, lines = cli("--configfile", str(cfg), "setup-role", "--role-name", role, "--dry-run")
    assert code == 0
    assert "dry run: would create role" in lines[-1]
    iam = aws_env.client("iam")
    with pytest.raises(iam.exceptions.NoSuchEntityException):
        iam.get_role(RoleName=role)

    code, lines = cli("--configfile", str(cfg), "setup-role", "--role-name", role)
    assert code == 0
    arn = iam.get_role(RoleName=role)["Role"]["Arn"]
    assert lines[-1] == f"created role {role}: set aws.role_arn: {arn}"
    policy = iam.get_role_policy(RoleName=role, PolicyName=f"{role}-policy")["PolicyDocument"]
    printed = json.loads(lines[1].split(":\n", 1)[1])
    assert policy == printed
    statements = {s["Sid"]: s for s in policy["Statement"]}
    # Objects under the configured prefix only; the log groups of SageMaker jobs.
    assert statements["ReadWriteTheProjectPrefix"]["Resource"] == (
        f"arn:aws:s3:::{fresh_bucket}/team/cf/*"
    )
    assert statements["ListTheProjectPrefix"]["Condition"] == {
        "StringLike": {"s3:prefix": ["team/cf/*"]}
    }
    assert all(":log-group:/aws/sagemaker/" in r for r in statements["WriteJobLogs"]["Resource"])
    assert statements["PullTheTrainingImage"]["Resource"] == (
        "arn:aws:ecr:us-east-1:763104351884:repository/autogluon-training"
    )
    trust = iam.get_role(RoleName=role)["Role"]["AssumeRolePolicyDocument"]
    assert trust["Statement"][0]["Principal"] == {"Service": "sagemaker.amazonaws.com"}

    code, lines = cli("--configfile", str(cfg), "setup-role", "--role-name", role)
    assert code == 0 and lines[-1] == f"updated role {role}: set aws.role_arn: {arn}"
    assert [r for r in iam.list_roles()["Roles"] if r["RoleName"] == role] != []
    assert iam.list_role_policies(RoleName=role)["PolicyNames"] == [f"{role}-policy"]


def test_push_uploads_the_workflow_and_the_data(tmp_path, fresh_bucket, aws_env):
    data = tmp_path / "data"
    data.mkdir()
    (data / "a.csv").write_text("timestamp,value\n2026-01-01T00:00:00Z,1\n")
    (data / ".hidden").write_text("x")
    cfg = configfile(tmp_path, fresh_bucket)
    code, lines = cli("--configfile", str(cfg), "push", "--data", str(data))
    assert code == 0, lines
    s3 = aws_env.client("s3")
    keys = sorted(o["Key"] for o in s3.list_objects_v2(Bucket=fresh_bucket)["Contents"])
    assert keys == ["team/cf/code/workflow.tar.gz", "team/cf/data/a.csv"]
    body = s3.get_object(Bucket=fresh_bucket, Key=keys[0])["Body"].read()
    with tarfile.open(fileobj=io.BytesIO(body)) as tar:
        names = tar.getnames()
    assert {"Snakefile", "requirements.lock", "scripts/capforecast/train.py"} <= set(names)
    assert "rules/forecast.smk" in names and "config/schema.yaml" in names
    assert not [n for n in names if "__pycache__" in n or n.startswith(("results", ".venv"))]


def test_train_status_and_logs_of_one_job(tmp_path, fresh_bucket, local_sagemaker):
    features = tmp_path / "features"
    features.mkdir()
    feature_panel().to_parquet(features / "fleet.parquet", index=False)
    cfg = configfile(tmp_path, fresh_bucket, local_sagemaker.role_arn, forecast={"horizon": 12})
    out = tmp_path / "out"
    code, lines = cli(
        "--configfile",
        str(cfg),
        "train",
        "--model",
        "predict_linear",
        "--features",
        str(features),
        "--output-dir",
        str(out),
    )
    assert code == 0, lines
    receipt = json.loads((out / "predict_linear.sagemaker.json").read_text())
    assert (out / "predict_linear.parquet").is_file() and (out / "predict_linear").is_dir()
    job = receipt["job_name"]

    code, lines = cli("--configfile", str(cfg), "status", job)
    assert code == 0
    assert f"job: {job}" in lines and "kind: training" in lines and "status: Completed" in lines

    code, lines = cli("--configfile", str(cfg), "logs", job, "--tail", "2")
    assert code == 0
    assert lines[-1] == "Training Container Execution Completed"
    assert len(lines) == 2


def test_deploy_runs_a_target_of_the_pushed_workflow(
    tmp_path, fresh_bucket, local_sagemaker, capsys
):
    cfg = configfile(tmp_path, fresh_bucket, local_sagemaker.role_arn)
    code, _ = cli("--configfile", str(cfg), "deploy", "--target", "risk")
    assert code == 1
    err = capsys.readouterr().err
    assert err.strip().endswith("no workflow pushed: run `python -m capforecast.aws push` first")
    assert err.count("\n") == 1

    assert cli("--configfile", str(cfg), "push")[0] == 0
    code, lines = cli("--configfile", str(cfg), "deploy", "--target", "risk")
    assert code == 0, lines
    job = lines[0].split()[4].rstrip(":")
    described = local_sagemaker.aws.client("sagemaker").describe_processing_job(
        ProcessingJobName=job
    )
    command = described["AppSpecification"]["ContainerArguments"][0]
    assert "snakemake --cores all risk" in command
    inputs = {i["InputName"]: i["S3Input"]["S3Uri"] for i in described["ProcessingInputs"]}
    assert inputs["code"] == f"s3://{fresh_bucket}/team/cf/code/workflow.tar.gz"
    output = described["ProcessingOutputConfig"]["Outputs"][0]["S3Output"]["S3Uri"]
    assert output == f"s3://{fresh_bucket}/team/cf/deploy/{job}/results/"
    code, lines = cli("--configfile", str(cfg), "status", job)
    assert code == 0 and "kind: processing" in lines


@pytest.mark.slow
def test_a_deployed_workflow_runs_and_puts_its_results_on_s3(
    tmp_path, fresh_bucket, local_sagemaker
):
    """The Processing job `deploy` defines, run as SageMaker would (tests/sagemaker_local.py):
    the pushed bundle unpacked, the target run on the deployed config, results on S3."""
    tiny = yaml.safe_load((ROOT / "tests" / "configs" / "tiny_synthetic.yaml").read_text())
    cfg = configfile(tmp_path, fresh_bucket, local_sagemaker.role_arn, **tiny)
    assert cli("--configfile", str(cfg), "push")[0] == 0
    code, lines = cli("--configfile", str(cfg), "deploy", "--target", "risk")
    assert code == 0, lines
    job = lines[0].split()[4].rstrip(":")
    proc = run_processing_job(local_sagemaker.aws, job, tmp_path / "processing")
    assert proc.returncode == 0, proc.stderr[-3000:]
    s3 = local_sagemaker.aws.client("s3")
    prefix = f"team/cf/deploy/{job}/results/"
    keys = {
        o["Key"][len(prefix) :]
        for o in s3.list_objects_v2(Bucket=fresh_bucket, Prefix=prefix, MaxKeys=1000)["Contents"]
    }
    assert {"risk/risk_report.csv", "risk/summary.json", "backtest/leaderboard.csv"} <= keys
    body = s3.get_object(Bucket=fresh_bucket, Key=f"{prefix}risk/risk_report.csv")["Body"].read()
    # The tiny fleet's five instances, each judged on its metrics.
    assert body.count(b"\n") > 5
    for key in keys:
        text = s3.get_object(Bucket=fresh_bucket, Key=prefix + key)["Body"].read()
        assert FAKE_ACCESS_KEY.encode() not in text and FAKE_SECRET_KEY.encode() not in text


@pytest.mark.parametrize(
    "args, bucket, message",
    [
        (["push"], "cf-ops-no-such-bucket", "does not exist: create it"),
        (["status", "capforecast-nope-1"], None, "no training or processing job of that name"),
        (["push"], None, "config key 'aws.bucket': not set"),
        (["train", "--model", "arima"], "b", "config key 'aws.role_arn': not set"),
    ],
)
def test_failures_are_one_line(tmp_path, aws_env, capsys, args, bucket, message):
    cfg = configfile(tmp_path, bucket)
    code, _ = cli("--configfile", str(cfg), *args)
    err = capsys.readouterr().err
    assert code == 1
    assert err.startswith(f"capforecast aws {args[0]}: error: ")
    assert message in err and err.count("\n") == 1


def test_the_module_runs_as_a_command_without_leaking_keys(tmp_path, fresh_bucket, aws_env):
    cfg = configfile(tmp_path, fresh_bucket)
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "capforecast.aws",
            "--configfile",
            str(cfg),
            "setup-role",
            "--dry-run",
            "--role-name",
            "cf-cmd-role",
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={**aws_env.env(), "PYTHONPATH": str(ROOT / "scripts"), "PATH": "/usr/bin:/bin"},
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert "dry run: would create role cf-cmd-role" in proc.stdout
    assert FAKE_ACCESS_KEY not in proc.stdout + proc.stderr
    assert FAKE_SECRET_KEY not in proc.stdout + proc.stderr
