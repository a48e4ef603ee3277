"""Operations on AWS in one CLI: ``python -m capforecast.aws <command>`` (``PYTHONPATH=scripts``).

    setup-role  create or update the SageMaker execution role: trust in sagemaker.amazonaws.com and
                a least-privilege inline policy (the configured bucket/prefix, the SageMaker log
                groups, the training image); prints the policy; --dry-run changes nothing
    push        upload the workflow bundle (code) and input data to s3://<bucket>/<prefix>/
    train       one model's backtest or refit as a SageMaker training job, outside Snakemake
    deploy      run a workflow target in the cloud: a SageMaker Processing job on the pushed
                bundle, results uploaded to s3://<bucket>/<prefix>/deploy/<job>/results/
    status      a training or processing job's state (and its failure reason)
    logs        a job's CloudWatch log lines

Settings come from the project's config files (``--configfile``, like Snakemake's: later files
override earlier ones; ``config/config.yaml`` first), validated against ``config/schema.yaml``;
credentials only from the standard AWS chain. Every failure is one line naming what to fix.
"""

from __future__ import annotations

import argparse
import copy
import io
import json
import sys
import tarfile
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from capforecast.aws import sagemaker_backend as backend
from capforecast.aws.errors import AwsError, aws_call
from capforecast.aws.session import aws_client, aws_session, aws_settings
from capforecast.errors import CapForecastError, ConfigError

PROJECT_DIR = backend.PROJECT_DIR
DEFAULT_CONFIG = PROJECT_DIR / "config" / "config.yaml"
DEFAULT_ROLE = "capforecast-sagemaker"
# What `push` bundles: everything a workflow run needs, nothing it writes.
WORKFLOW_FILES = (
    "Snakefile",
    "rules",
    "scripts",
    "config",
    "notebooks",
    "envs",
    "profiles",
    "report",
    "requirements.lock",
    "pyproject.toml",
)
PROCESSING_LOG_GROUP = "/aws/sagemaker/ProcessingJobs"
# The account that publishes AWS's deep learning container images (the AutoGluon ones too).
DLC_ACCOUNT = "763104351884"
TRUST_POLICY = {
    "Version": "2012-10-17",
    "Statement": [
        {
            "Effect": "Allow",
            "Principal": {"Service": "sagemaker.amazonaws.com"},
            "Action": "sts:AssumeRole",
        }
    ],
}


def load_config(files: Sequence[Path]) -> dict[str, Any]:
    """The project's config files merged (nested keys merge, later files win) and validated.

    The execution role may not exist yet (``setup-role`` makes it), so a SageMaker family
    without ``aws.role_arn`` is accepted here; the commands that need the role check it."""
    from capforecast.config import validated_config

    merged: dict[str, Any] = {}
    for path in files:
        if not Path(path).is_file():
            raise ConfigError("--configfile", f"no such file: {path}")
        _merge(merged, yaml.safe_load(Path(path).read_text()) or {})
    training = merged.get("training")
    backends = training.pop("backend", None) if isinstance(training, dict) else None
    cfg = validated_config(merged)
    if backends is not None:
        # Checked alone: its own values, with stand-ins for the role it may not have yet.
        probe = {"training": {"backend": backends}, "aws": {"bucket": "-", "role_arn": "-"}}
        cfg["training"]["backend"] = validated_config(probe)["training"]["backend"]
    return cfg


def _merge(base: dict[str, Any], extra: Mapping[str, Any]) -> None:
    for key, value in extra.items():
        if isinstance(value, Mapping) and isinstance(base.get(key), dict):
            _merge(base[key], value)
        else:
            base[key] = copy.deepcopy(value)


def require(cfg: Mapping[str, Any], key: str, hint: str) -> str:
    value = cfg["aws"][key]
    if not value:
        raise ConfigError(f"aws.{key}", f"not set; {hint}")
    return str(value)


def s3_prefix(cfg: Mapping[str, Any]) -> str:
    return str(cfg["aws"]["prefix"]).strip("/")


def project_bucket(cfg: Mapping[str, Any], hint: str) -> tuple[Any, Any, str, str]:
    """(session, S3 client, bucket, prefix) of the configured bucket, which must exist."""
    settings = aws_settings(cfg["aws"])
    bucket = require(cfg, "bucket", hint)
    session = aws_session(settings)
    s3 = aws_client("s3", settings, session=session)
    backend.check_bucket(s3, bucket)
    return session, s3, bucket, s3_prefix(cfg)


# --- setup-role ---------------------------------------------------------------------------


def execution_policy(cfg: Mapping[str, Any], region: str) -> dict[str, Any]:
    """Least privilege for the jobs: objects under the configured prefix only, the SageMaker log
    groups, metrics in SageMaker's namespaces, and pulling the training image."""
    bucket = require(cfg, "bucket", "set the bucket the jobs read and write")
    prefix = s3_prefix(cfg)
    image = cfg["training"]["image_uri"]
    if image:
        account, _, rest = image.partition(".dkr.ecr.")
        repo_region, _, repo = rest.partition(".amazonaws.com/")
        repository = f"arn:aws:ecr:{repo_region}:{account}:repository/{repo.split(':')[0]}"
    else:
        repository = f"arn:aws:ecr:{region}:{DLC_ACCOUNT}:repository/autogluon-training"
    log_groups = [
        f"arn:aws:logs:{region}:*:log-group:{group}:*"
        for group in (backend.TRAINING_LOG_GROUP, PROCESSING_LOG_GROUP)
    ]
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "ListTheProjectPrefix",
                "Effect": "Allow",
                "Action": "s3:ListBucket",
                "Resource": f"arn:aws:s3:::{bucket}",
                "Condition": {"StringLike": {"s3:prefix": [f"{prefix}/*"]}},
            },
            {
                "Sid": "ReadWriteTheProjectPrefix",
                "Effect": "Allow",
                "Action": ["s3:GetObject", "s3:PutObject", "s3:DeleteObject"],
                "Resource": f"arn:aws:s3:::{bucket}/{prefix}/*",
            },
            {
                "Sid": "WriteJobLogs",
                "Effect": "Allow",
                "Action": [
                    "logs:CreateLogGroup",
                    "logs:CreateLogStream",
                    "logs:PutLogEvents",
                    "logs:DescribeLogStreams",
                ],
                "Resource": log_groups,
            },
            {
                "Sid": "JobMetrics",
                "Effect": "Allow",
                "Action": "cloudwatch:PutMetricData",
                "Resource": "*",
                "Condition": {"StringLike": {"cloudwatch:namespace": "/aws/sagemaker/*"}},
            },
            {
                "Sid": "PullTheTrainingImage",
                "Effect": "Allow",
                "Action": [
                    "ecr:BatchGetImage",
                    "ecr:GetDownloadUrlForLayer",
                    "ecr:BatchCheckLayerAvailability",
                ],
                "Resource": repository,
            },
            {
                "Sid": "EcrLogin",
                "Effect": "Allow",
                "Action": "ecr:GetAuthorizationToken",
                "Resource": "*",
            },
        ],
    }


def setup_role(cfg: Mapping[str, Any], role_name: str, dry_run: bool, out: Callable) -> str:
    settings = aws_settings(cfg["aws"])
    session = aws_session(settings)
    policy = execution_policy(cfg, session.region_name)
    out(f"trust policy of role {role_name}:\n{json.dumps(TRUST_POLICY, indent=2)}")
    out(f"inline policy {role_name}-policy:\n{json.dumps(policy, indent=2)}")
    iam = aws_client("iam", settings, session=session)
    with aws_call(f"IAM role {role_name}"):
        try:
            arn = iam.get_role(RoleName=role_name)["Role"]["Arn"]
            exists = True
        except iam.exceptions.NoSuchEntityException:
            arn, exists = None, False
        if dry_run:
            action = "would update" if exists else "would create"
            out(f"dry run: {action} role {role_name} and put the inline policy; nothing changed")
            return arn or f"(role {role_name} does not exist yet)"
        if exists:
            iam.update_assume_role_policy(
                RoleName=role_name, PolicyDocument=json.dumps(TRUST_POLICY)
            )
        else:
            arn = iam.create_role(
                RoleName=role_name,
                AssumeRolePolicyDocument=json.dumps(TRUST_POLICY),
                Description="capforecast SageMaker jobs (python -m capforecast.aws setup-role)",
                Tags=[{"Key": "capforecast", "Value": "execution-role"}],
            )["Role"]["Arn"]
        iam.put_role_policy(
            RoleName=role_name,
            PolicyName=f"{role_name}-policy",
            PolicyDocument=json.dumps(policy),
        )
    out(f"{'updated' if exists else 'created'} role {role_name}: set aws.role_arn: {arn}")
    return str(arn)


# --- push ---------------------------------------------------------------------------------


def workflow_bundle() -> bytes:
    """The workflow as a tar.gz (no results, caches or venv)."""
    buffer = io.BytesIO()

    def keep(info: tarfile.TarInfo) -> tarfile.TarInfo | None:
        parts = Path(info.name).parts
        if "__pycache__" in parts or info.name.endswith(".pyc"):
            return None
        return info

    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name in WORKFLOW_FILES:
            path = PROJECT_DIR / name
            if path.exists():
                tar.add(path, arcname=name, filter=keep)
    return buffer.getvalue()


def data_files(cfg: Mapping[str, Any], data: Path | None) -> list[Path]:
    """What ``push`` uploads as input data: ``--data`` (a file or directory), else a local
    ``data.path``; the synthetic fleet needs none."""
    if data is None:
        if cfg["data"]["source"] != "local":
            return []
        data = Path(cfg["data"]["path"])
    if data.is_file():
        return [data]
    if data.is_dir():
        return sorted(p for p in data.iterdir() if p.is_file() and not p.name.startswith("."))
    raise ConfigError("--data", f"no such file or directory: {data}")


def push(cfg: Mapping[str, Any], data: Path | None, out: Callable) -> dict[str, Any]:
    _, s3, bucket, prefix = project_bucket(cfg, "set the bucket to push to")
    code_key = f"{prefix}/code/workflow.tar.gz"
    with aws_call(f"upload s3://{bucket}/{code_key}"):
        s3.put_object(Bucket=bucket, Key=code_key, Body=workflow_bundle())
    out(f"pushed the workflow to s3://{bucket}/{code_key}")
    uploaded = []
    for path in data_files(cfg, data):
        key = f"{prefix}/data/{path.name}"
        with aws_call(f"upload s3://{bucket}/{key}"):
            s3.upload_file(str(path), bucket, key)
        uploaded.append(f"s3://{bucket}/{key}")
    if uploaded:
        out(f"pushed {len(uploaded)} data file(s) to s3://{bucket}/{prefix}/data/")
    return {"code": f"s3://{bucket}/{code_key}", "data": uploaded}


# --- train --------------------------------------------------------------------------------


def train(cfg: Mapping[str, Any], args: argparse.Namespace, out: Callable) -> dict[str, Any]:
    from capforecast.forecast.models import MODEL_REGISTRY, model_settings

    require(cfg, "role_arn", "run `python -m capforecast.aws setup-role` and set it")
    if args.model not in MODEL_REGISTRY:
        known = ", ".join(sorted(MODEL_REGISTRY))
        raise ConfigError("--model", f"unknown model '{args.model}'; known: {known}")
    features = sorted(Path(args.features).glob("*.parquet"))
    if not features:
        raise ConfigError(
            "--features", f"no feature parquet files in {args.features} (run `snakemake features`)"
        )
    forecast_keys = ("quantiles", "extra_quantiles") + (
        ("horizon",) if args.task == "forecast" else ()
    )
    params = {
        "backtest": cfg["backtest"],
        "models": model_settings(cfg["models"], args.model),
        "forecast": {key: cfg["forecast"][key] for key in forecast_keys},
        "percent_metrics": cfg["etl"]["percent_metrics"],
        "freq": cfg["etl"]["freq"],
    }
    output_dir = Path(args.output_dir)
    request = backend.TrainingRequest(
        model=args.model,
        task=args.task,
        feature_files=tuple(features),
        job_config=backend.job_config(params),
        output=output_dir / f"{args.model}.parquet",
        receipt=output_dir / f"{args.model}.sagemaker.json",
        models_dir=output_dir / args.model if args.task == "forecast" else None,
    )
    receipt = backend.run_training_job(
        request, backend.sagemaker_settings(cfg["training"], cfg["aws"]), cfg["aws"], progress=out
    )
    out(f"wrote {request.output} and {request.receipt}")
    return receipt


# --- deploy -------------------------------------------------------------------------------


def deploy_command(target: str, cores: str) -> str:
    """What the Processing job runs on the pushed bundle: the pinned stack, then the target."""
    return (
        "set -e; mkdir -p /opt/ml/processing/project; cd /opt/ml/processing/project; "
        "tar -xzf /opt/ml/processing/input/code/workflow.tar.gz; "
        "pip install --quiet torch==$(grep '^torch==' requirements.lock | cut -d= -f3) "
        "--extra-index-url https://download.pytorch.org/whl/cpu; "
        "pip install --quiet -r requirements.lock; "
        # The workflow imports the capforecast package: installed, as `make venv` does.
        "pip install --quiet --no-deps -e .; "
        f"snakemake --cores {cores} {target} --configfile config/config.yaml "
        "/opt/ml/processing/input/config/config.yaml; "
        "cp -r results/. /opt/ml/processing/output/results/"
    )


def deploy(cfg: Mapping[str, Any], args: argparse.Namespace, out: Callable) -> str:
    """A SageMaker Processing job that runs ``target`` of the pushed workflow; its results go
    to ``s3://<bucket>/<prefix>/deploy/<job>/results/``."""
    role = require(cfg, "role_arn", "run `python -m capforecast.aws setup-role` and set it")
    session, s3, bucket, prefix = project_bucket(cfg, "set the bucket `push` uploaded to")
    code_key = f"{prefix}/code/workflow.tar.gz"
    with aws_call(f"s3://{bucket}/{code_key}"):
        try:
            s3.head_object(Bucket=bucket, Key=code_key)
        except s3.exceptions.ClientError as err:
            if err.response.get("Error", {}).get("Code") in ("404", "NoSuchKey"):
                raise AwsError(
                    f"s3://{bucket}/{code_key}",
                    "no workflow pushed: run `python -m capforecast.aws push` first",
                ) from None
            raise
    job = f"capforecast-deploy-{time.strftime('%Y%m%d%H%M%S', time.gmtime())}"
    base = f"s3://{bucket}/{prefix}/deploy/{job}"
    run_config = copy.deepcopy(dict(cfg))
    if cfg["data"]["source"] == "local":
        run_config["data"] = {**cfg["data"], "path": "/opt/ml/processing/input/data"}
    with aws_call(f"upload {base}/config/config.yaml"):
        s3.put_object(
            Bucket=bucket,
            Key=f"{prefix}/deploy/{job}/config/config.yaml",
            Body=yaml.safe_dump(run_config).encode(),
        )
    inputs = [
        _processing_input("code", f"s3://{bucket}/{code_key}", "/opt/ml/processing/input/code"),
        _processing_input("config", f"{base}/config/", "/opt/ml/processing/input/config"),
    ]
    if cfg["data"]["source"] == "local":
        inputs.append(
            _processing_input(
                "data", f"s3://{bucket}/{prefix}/data/", "/opt/ml/processing/input/data"
            )
        )
    sm = backend.sagemaker_settings(cfg["training"], cfg["aws"])
    image = backend.training_image(sm, session.region_name)
    sagemaker = aws_client("sagemaker", aws_settings(cfg["aws"]), session=session)
    with aws_call(f"SageMaker processing job {job} (CreateProcessingJob)"):
        sagemaker.create_processing_job(
            ProcessingJobName=job,
            RoleArn=role,
            AppSpecification={
                "ImageUri": image,
                "ContainerEntrypoint": ["/bin/bash", "-c"],
                "ContainerArguments": [deploy_command(args.target, "all")],
            },
            ProcessingInputs=inputs,
            ProcessingOutputConfig={
                "Outputs": [
                    {
                        "OutputName": "results",
                        "S3Output": {
                            "S3Uri": f"{base}/results/",
                            "LocalPath": "/opt/ml/processing/output/results",
                            "S3UploadMode": "EndOfJob",
                        },
                    }
                ]
            },
            ProcessingResources={
                "ClusterConfig": {
                    "InstanceCount": 1,
                    "InstanceType": sm.instance_type,
                    "VolumeSizeInGB": sm.volume_size_gb,
                }
            },
            StoppingCondition={"MaxRuntimeInSeconds": sm.max_run_seconds},
            Tags=[
                {"Key": "capforecast:target", "Value": args.target},
                *({"Key": k, "Value": v} for k, v in sm.tags),
            ],
        )
    out(f"submitted SageMaker processing job {job}: results will be in {base}/results/")
    out(f"follow it with `python -m capforecast.aws status {job}` and `... logs {job}`")
    return job


def _processing_input(name: str, uri: str, local: str) -> dict[str, Any]:
    return {
        "InputName": name,
        "S3Input": {
            "S3Uri": uri,
            "LocalPath": local,
            "S3DataType": "S3Prefix",
            "S3InputMode": "File",
        },
    }


# --- status and logs ----------------------------------------------------------------------


def describe_job(sagemaker: Any, name: str) -> tuple[str, dict[str, Any]]:
    """("training" | "processing", the Describe* answer) of a job by name."""
    with aws_call(f"SageMaker job {name}"):
        for kind, call, key in (
            ("training", sagemaker.describe_training_job, "TrainingJobName"),
            ("processing", sagemaker.describe_processing_job, "ProcessingJobName"),
        ):
            try:
                return kind, call(**{key: name})
            except sagemaker.exceptions.ClientError as err:
                code = err.response.get("Error", {}).get("Code")
                if code not in ("ValidationException", "ResourceNotFound"):
                    raise
    raise AwsError(f"SageMaker job {name}", "no training or processing job of that name")


def status(cfg: Mapping[str, Any], name: str, out: Callable) -> dict[str, Any]:
    settings = aws_settings(cfg["aws"])
    sagemaker = aws_client("sagemaker", settings)
    kind, job = describe_job(sagemaker, name)
    state = job.get("TrainingJobStatus") or job.get("ProcessingJobStatus")
    fields = {
        "job": name,
        "kind": kind,
        "status": state,
        "secondary_status": job.get("SecondaryStatus"),
        "created": str(job.get("CreationTime")),
        "ended": str(job.get("TrainingEndTime") or job.get("ProcessingEndTime") or ""),
        "billable_seconds": job.get("BillableTimeInSeconds"),
        "failure_reason": job.get("FailureReason"),
        "model_artifacts": job.get("ModelArtifacts", {}).get("S3ModelArtifacts"),
    }
    for key, value in fields.items():
        if value not in (None, ""):
            out(f"{key}: {value}")
    return fields


def logs(cfg: Mapping[str, Any], name: str, tail: int, out: Callable) -> list[str]:
    settings = aws_settings(cfg["aws"])
    session = aws_session(settings)
    kind, _ = describe_job(aws_client("sagemaker", settings, session=session), name)
    client = aws_client("logs", settings, session=session)
    group = backend.TRAINING_LOG_GROUP if kind == "training" else PROCESSING_LOG_GROUP
    lines = backend.log_tail(client, name, tail, log_group=group)
    if not lines:
        out(f"no log lines for {name} yet (the container may not have started)")
    for line in lines:
        out(line)
    return lines


# --- command line -------------------------------------------------------------------------


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(
        prog="python -m capforecast.aws",
        description="capforecast on AWS: execution role, push, SageMaker jobs, status and logs",
    )
    top.add_argument(
        "--configfile",
        action="append",
        type=Path,
        default=[],
        help="a config file merged over config/config.yaml (repeat it for several: later "
        "files win, like Snakemake's --configfile)",
    )
    sub = top.add_subparsers(dest="command", required=True)
    role = sub.add_parser("setup-role", help="create or update the SageMaker execution role")
    role.add_argument("--role-name", default=DEFAULT_ROLE)
    role.add_argument("--dry-run", action="store_true", help="print the policy, change nothing")
    push_cmd = sub.add_parser("push", help="upload the workflow and input data to S3")
    push_cmd.add_argument("--data", type=Path, default=None, help="file or directory of inputs")
    train_cmd = sub.add_parser("train", help="one model's backtest or refit on SageMaker")
    train_cmd.add_argument("--model", required=True)
    train_cmd.add_argument("--task", choices=backend.TASKS, default="forecast")
    train_cmd.add_argument("--features", type=Path, default=Path("results/features"))
    train_cmd.add_argument("--output-dir", type=Path, default=Path("results/sagemaker"))
    deploy_cmd = sub.add_parser("deploy", help="run a workflow target as a Processing job")
    deploy_cmd.add_argument("--target", default="all")
    status_cmd = sub.add_parser("status", help="a job's state")
    status_cmd.add_argument("job")
    logs_cmd = sub.add_parser("logs", help="a job's CloudWatch log lines")
    logs_cmd.add_argument("job")
    logs_cmd.add_argument("--tail", type=int, default=100)
    return top


def main(argv: Sequence[str] | None = None, out: Callable[[str], None] = print) -> int:
    args = parser().parse_args(argv)
    try:
        cfg = load_config([DEFAULT_CONFIG, *args.configfile])
        if args.command == "setup-role":
            setup_role(cfg, args.role_name, args.dry_run, out)
        elif args.command == "push":
            push(cfg, args.data, out)
        elif args.command == "train":
            train(cfg, args, out)
        elif args.command == "deploy":
            deploy(cfg, args, out)
        elif args.command == "status":
            status(cfg, args.job, out)
        elif args.command == "logs":
            logs(cfg, args.job, args.tail, out)
    except CapForecastError as err:
        print(f"capforecast aws {args.command}: error: {err}", file=sys.stderr)
        return 1
    return 0
