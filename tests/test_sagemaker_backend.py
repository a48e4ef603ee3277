"""The SageMaker training backend against moto's server on 127.0.0.1 (tests/aws_local.py), with
each training job run by the local "container" of tests/sagemaker_local.py under the SageMaker
contract: the job's own uploaded inputs, its own command, its model.tar.gz where it says."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pandas as pd
import pytest
from aws_local import FAKE_ACCESS_KEY, FAKE_SECRET_KEY
from test_train import feature_panel

from capforecast import train, train_backtest
from capforecast.aws import sagemaker_backend as backend
from capforecast.aws.errors import AwsError
from capforecast.config import validated_config
from capforecast.forecast import fit

MODEL = "predict_linear"


def config(bucket: str, role_arn: str, **training) -> dict:
    return validated_config(
        {
            "forecast": {"horizon": 12},
            "backtest": {"windows": 2, "horizon": 12, "selection_windows": 1},
            "training": {"backend": {"baseline": "sagemaker"}, "poll_seconds": 0.2, **training},
            "aws": {"bucket": bucket, "role_arn": role_arn, "prefix": "cf/test"},
        }
    )


def rule_params(cfg: dict, task: str) -> dict:
    """What rules/forecast.smk passes a model rule."""
    forecast_keys = ("quantiles", "extra_quantiles") + (("horizon",) if task == "forecast" else ())
    from capforecast.forecast.models import model_settings as model_keys

    return {
        "backtest": cfg["backtest"],
        "models": model_keys(cfg["models"], MODEL),
        "forecast": {k: cfg["forecast"][k] for k in forecast_keys},
        "percent_metrics": cfg["etl"]["percent_metrics"],
        "freq": cfg["etl"]["freq"],
    }


def request(tmp_path: Path, cfg: dict, task: str, model: str = MODEL) -> backend.TrainingRequest:
    features = tmp_path / "features"
    features.mkdir(exist_ok=True)
    panel = feature_panel()
    for rid, part in panel.groupby("resource_id"):
        part.to_parquet(features / f"{rid}.parquet", index=False)
    out = tmp_path / "results" / task
    return backend.TrainingRequest(
        model=model,
        task=task,
        feature_files=tuple(sorted(features.glob("*.parquet"))),
        job_config=backend.job_config(rule_params(cfg, task)),
        output=out / f"{model}.parquet",
        receipt=out / f"{model}.sagemaker.json",
        models_dir=out / "models" / model if task == "forecast" else None,
    )


def run(req: backend.TrainingRequest, cfg: dict) -> tuple[dict, list[str]]:
    lines: list[str] = []
    receipt = backend.run_training_job(
        req,
        backend.sagemaker_settings(cfg["training"], cfg["aws"]),
        cfg["aws"],
        progress=lines.append,
    )
    return receipt, lines


def local_result(cfg: dict, task: str) -> pd.DataFrame:
    settings = train.fit_settings(cfg, n_jobs=1)
    panel = feature_panel().sort_values(["series_id", "timestamp"], ignore_index=True)
    if task == "forecast":
        return fit.fit_forecast(MODEL, panel, **settings)
    return train_backtest.backtest_predictions(MODEL, panel, **settings)


def comparable(frame: pd.DataFrame) -> pd.DataFrame:
    drop = [c for c in ("fit_seconds",) if c in frame]
    keys = [c for c in ("series_id", "cutoff", "timestamp") if c in frame]
    return frame.drop(columns=drop).sort_values(keys, ignore_index=True)


@pytest.mark.parametrize("task", ["backtest", "forecast"])
def test_a_job_writes_what_a_local_run_writes_and_a_receipt(
    tmp_path, fresh_bucket, local_sagemaker, task
):
    cfg = config(fresh_bucket, local_sagemaker.role_arn, tags={"team": "capacity"})
    req = request(tmp_path, cfg, task)
    receipt, lines = run(req, cfg)

    assert local_sagemaker.errors == {}
    pd.testing.assert_frame_equal(
        comparable(pd.read_parquet(req.output)), comparable(local_result(cfg, task))
    )
    if task == "forecast":
        assert req.models_dir.is_dir()
    stored = json.loads(req.receipt.read_text())
    assert stored == receipt
    job = local_sagemaker.aws.client("sagemaker").describe_training_job(
        TrainingJobName=receipt["job_name"]
    )
    assert receipt["job_arn"] == job["TrainingJobArn"]
    assert receipt["status"] == "Completed"
    assert receipt["image"] == (
        "763104351884.dkr.ecr.us-east-1.amazonaws.com/autogluon-training:1.5-cpu-py311"
    )
    assert receipt["instance_type"] == "ml.m5.xlarge"
    assert receipt["billable_seconds"] >= 1
    assert receipt["spot"] is False
    prefix = f"s3://{fresh_bucket}/cf/test/sagemaker/capforecast-{MODEL.replace('_', '-')}-{task}"
    assert receipt["model_artifacts_s3_uri"].startswith(prefix)
    assert set(receipt["input_s3_uris"]) == {"train", "config", "code", "sm_drivers"}
    assert all(uri.startswith(prefix) for uri in receipt["input_s3_uris"].values())
    # The job's train channel holds exactly the rule's feature panels.
    s3 = local_sagemaker.aws.client("s3")
    train_uri = receipt["input_s3_uris"]["train"].removeprefix(f"s3://{fresh_bucket}/")
    listed = s3.list_objects_v2(Bucket=fresh_bucket, Prefix=train_uri)["Contents"]
    assert sorted(Path(o["Key"]).name for o in listed) == ["i-1.parquet", "i-2.parquet"]
    tags = {
        t["Key"]: t["Value"]
        for t in local_sagemaker.aws.client("sagemaker").list_tags(
            ResourceArn=job["TrainingJobArn"]
        )["Tags"]
    }
    assert tags == {"capforecast:model": MODEL, "capforecast:task": task, "team": "capacity"}
    # A progress line per poll: the job was seen running, then completed.
    assert any(": InProgress / Training after" in line for line in lines)
    assert ": Completed / Completed after" in lines[-1]
    # No key of the test credentials anywhere the job left a trace.
    text = req.receipt.read_text() + "\n".join(lines) + req.output.read_bytes().decode("latin-1")
    assert FAKE_ACCESS_KEY not in text and FAKE_SECRET_KEY not in text


def test_spot_training_and_limits_reach_the_job(tmp_path, fresh_bucket, local_sagemaker):
    cfg = config(
        fresh_bucket,
        local_sagemaker.role_arn,
        use_spot=True,
        max_run_seconds=600,
        instance_type="ml.c5.2xlarge",
        image_uri="123456789012.dkr.ecr.us-east-1.amazonaws.com/capforecast-train:1",
    )
    receipt, _ = run(request(tmp_path, cfg, "backtest"), cfg)
    job = local_sagemaker.aws.client("sagemaker").describe_training_job(
        TrainingJobName=receipt["job_name"]
    )
    assert job["EnableManagedSpotTraining"] is True
    assert job["StoppingCondition"] == {"MaxRuntimeInSeconds": 600, "MaxWaitTimeInSeconds": 1200}
    assert job["ResourceConfig"]["InstanceType"] == "ml.c5.2xlarge"
    assert receipt["image"].endswith("capforecast-train:1") and receipt["spot"] is True


def test_a_failed_job_names_its_reason_and_the_tail_of_its_log(
    tmp_path, fresh_bucket, local_sagemaker
):
    """The container really fails (a model the entry point does not know): the error carries
    the job's FailureReason, which the entry point wrote, and its CloudWatch log lines."""
    cfg = config(fresh_bucket, local_sagemaker.role_arn, log_tail_lines=3)
    req = request(tmp_path, cfg, "forecast", model="no_such_model")
    with pytest.raises(backend.SageMakerJobError) as info:
        run(req, cfg)
    message = str(info.value)
    first = message.splitlines()[0]
    assert first.startswith("SageMaker training job capforecast-no-such-model-forecast-")
    assert "failed: capforecast error: config key 'models.enabled': unknown model" in first
    assert "last 3 log lines (log group /aws/sagemaker/TrainingJobs" in message
    tail = message.split("log lines", 1)[1].splitlines()[1:4]
    assert "unknown model 'no_such_model'" in tail[1]
    assert tail[2].strip() == "An error occurred with exit code 1"
    assert "python -m capforecast.aws logs capforecast-no-such-model-forecast-" in message
    assert not req.output.exists() and not req.receipt.exists()


def test_a_missing_bucket_stops_before_any_upload_or_job(tmp_path, aws_env, local_sagemaker):
    cfg = config("cf-no-such-bucket", local_sagemaker.role_arn)
    with pytest.raises(AwsError) as info:
        run(request(tmp_path, cfg, "backtest"), cfg)
    assert str(info.value) == (
        "S3 bucket 'cf-no-such-bucket' (aws.bucket): does not exist: create it "
        "(`aws s3 mb s3://BUCKET`) or fix aws.bucket"
    )
    assert local_sagemaker.jobs == []
    buckets = [b["Name"] for b in aws_env.client("s3").list_buckets()["Buckets"]]
    assert "cf-no-such-bucket" not in buckets  # the SDK would have created it


def test_no_credentials_is_one_line_naming_the_chain(
    tmp_path, fresh_bucket, local_sagemaker, monkeypatch
):
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    cfg = config(fresh_bucket, local_sagemaker.role_arn)
    with pytest.raises(AwsError) as info:
        run(request(tmp_path, cfg, "backtest"), cfg)
    message = str(info.value)
    assert "no AWS credentials" in message and "AWS_PROFILE" in message
    assert "\n" not in message
    assert local_sagemaker.jobs == []


def test_access_denied_names_the_call_and_the_fix(
    tmp_path, fresh_bucket, local_sagemaker, monkeypatch
):
    """moto enforcing IAM: a user who may use the bucket but not create training jobs."""
    from moto.core.authorization import enable_iam_authentication

    iam = local_sagemaker.aws.client("iam")
    user = f"cf-s3-only-{abs(hash(str(tmp_path))) % 10**6}"
    iam.create_user(UserName=user)
    iam.put_user_policy(
        UserName=user,
        PolicyName="s3-only",
        PolicyDocument=json.dumps(
            {
                "Version": "2012-10-17",
                "Statement": [{"Effect": "Allow", "Action": ["s3:*"], "Resource": "*"}],
            }
        ),
    )
    key = iam.create_access_key(UserName=user)["AccessKey"]
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", key["AccessKeyId"])
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", key["SecretAccessKey"])
    cfg = config(fresh_bucket, local_sagemaker.role_arn)
    with enable_iam_authentication(), pytest.raises(AwsError) as info:
        run(request(tmp_path, cfg, "backtest"), cfg)
    message = str(info.value)
    # moto answers a JSON service's denial in XML, so botocore reads the code as 403; AWS
    # says AccessDeniedException. Either way: the call, "access denied", the fix.
    assert message.startswith(
        "SageMaker training job capforecast-predict-linear-backtest (CreateTrainingJob): "
        "access denied ("
    )
    assert "IAM policy" in message and "\n" not in message
    assert local_sagemaker.jobs == []
    assert key["SecretAccessKey"] not in message


@pytest.fixture
def throttled_describe(monkeypatch):
    """moto answers DescribeTrainingJob with ThrottlingException ``remaining[0]`` times, after
    the one the SDK makes when it creates a job."""
    from moto.core.exceptions import ServiceException
    from moto.sagemaker.models import SageMakerModelBackend

    class Throttling(ServiceException):
        code = "ThrottlingException"
        message = "Rate exceeded"

    original = SageMakerModelBackend.describe_training_job
    remaining = [0]
    calls = [0]

    def describe(backend_, name):
        calls[0] += 1
        if calls[0] > 1 and remaining[0] > 0:
            remaining[0] -= 1
            raise Throttling()
        return original(backend_, name)

    monkeypatch.setattr(SageMakerModelBackend, "describe_training_job", describe)
    return remaining, calls


def test_throttling_is_retried_by_botocore(
    tmp_path, fresh_bucket, local_sagemaker, throttled_describe
):
    remaining, _calls = throttled_describe
    remaining[0] = 3
    cfg = config(fresh_bucket, local_sagemaker.role_arn)
    cfg["aws"]["max_attempts"] = 5
    receipt, _ = run(request(tmp_path, cfg, "backtest"), cfg)
    assert receipt["status"] == "Completed"
    assert remaining[0] == 0


def test_throttling_beyond_the_retries_is_one_line(
    tmp_path, fresh_bucket, local_sagemaker, throttled_describe
):
    remaining, calls = throttled_describe
    remaining[0] = 10**6
    cfg = config(fresh_bucket, local_sagemaker.role_arn)
    cfg["aws"]["max_attempts"] = 3
    with pytest.raises(AwsError) as info:
        run(request(tmp_path, cfg, "backtest"), cfg)
    message = str(info.value)
    assert message.startswith("SageMaker DescribeTrainingJob capforecast-predict-linear-backtest-")
    assert "throttled by AWS (ThrottlingException) after every retry" in message
    assert calls[0] == 1 + 3  # the SDK's, then aws.max_attempts (the first call included)


def test_default_image_is_aws_autogluon_training_image_of_the_region():
    cfg = validated_config({})
    sm = backend.sagemaker_settings(cfg["training"], {**cfg["aws"], "bucket": "b", "role_arn": "r"})
    assert backend.training_image(sm, "eu-west-1") == (
        "763104351884.dkr.ecr.eu-west-1.amazonaws.com/autogluon-training:1.5-cpu-py311"
    )


def test_job_names_and_commands_follow_sagemaker_rules():
    assert backend.job_base_name("seasonal_naive_daily", "backtest") == (
        "capforecast-seasonal-naive-daily-backtest"
    )
    # Shard jobs of one model and task start in the same second: their names differ by a tag
    # of the shard (its group, a partition or a pack, and number), kept whole within the 48
    # characters before the SDK's timestamp.
    names = {
        backend.job_base_name("seasonal_naive_daily", "backtest", f"{p}/{s}")
        for p in ("alpha", "a_very_long_partition_name_" * 2, "pack.0", "pack.1")
        for s in range(3)
    }
    assert len(names) == 12
    for name in names:
        assert len(name) <= 48 and re.fullmatch(r"[A-Za-z0-9](-*[A-Za-z0-9])*", name)
        assert name.startswith("capforecast-seasonal-naive-daily-backte-")
    assert "-m capforecast.train_backtest --model theta" in backend.container_command(
        "theta", "backtest"
    )
    assert "-m capforecast.train --model theta" in backend.container_command("theta", "forecast")


def test_the_code_bundle_runs_the_project_entry_points(tmp_path):
    bundle = backend.code_bundle(tmp_path / "code")
    assert (bundle / "scripts" / "capforecast" / "train.py").is_file()
    assert (bundle / "scripts" / "capforecast" / "train_backtest.py").is_file()
    assert (bundle / "config" / "schema.yaml").is_file()
    assert (bundle / "requirements.txt").read_text() == backend.REQUIREMENTS_FILE.read_text()
    assert not list(bundle.rglob("__pycache__"))


def test_sagemaker_settings_have_no_defaults_of_their_own():
    """Defaults live in config/schema.yaml only (as capforecast.settings)."""
    import dataclasses

    assert backend.SageMakerSettings.__dataclass_params__.frozen
    for field in dataclasses.fields(backend.SageMakerSettings):
        assert field.default is dataclasses.MISSING, field.name
        assert field.default_factory is dataclasses.MISSING, field.name
    cfg = validated_config(
        {
            "training": {"backend": {"prophet": "sagemaker"}, "tags": {"team": "cap"}},
            "aws": {"bucket": "b", "role_arn": "arn:aws:iam::1:role/r", "prefix": "/p/q/"},
        }
    )
    sm = backend.sagemaker_settings(cfg["training"], cfg["aws"])
    assert (sm.instance_type, sm.use_spot, sm.max_wait_seconds, sm.prefix) == (
        "ml.m5.xlarge",
        False,
        None,
        "p/q",
    )
    assert sm.tags == (("team", "cap"),)
    with pytest.raises(KeyError):
        backend.sagemaker_settings(
            {k: v for k, v in cfg["training"].items() if k != "tags"}, cfg["aws"]
        )
