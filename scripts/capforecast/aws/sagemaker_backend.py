"""SageMaker training backend: one model's backtest or refit as a SageMaker training job.

A model rule whose family has ``training.backend.<family>: sagemaker`` calls
:func:`run_training_job`: it stages the rule's feature panels and the settings the job reads,
submits a training job with the SageMaker Python SDK 3 (``ModelTrainer`` with ``SourceCode``,
``Compute``, ``InputData``), polls it with a progress line, downloads ``model.tar.gz`` and unpacks
it into the rule's usual outputs (the files a local run writes), and writes a receipt JSON beside
them. Inside the container the project's entry point runs (``python -m capforecast.train``, which
reads the SageMaker contract: ``SM_CHANNEL_TRAIN``, ``SM_CHANNEL_CONFIG``, ``SM_MODEL_DIR``; the
backtest's is ``python -m capforecast.train_backtest``).

The job's code channel is a bundle of this package, ``config/schema.yaml`` and
``training-requirements.txt`` (the pinned training stack, generated from ``requirements.lock``
by :mod:`capforecast.aws.requirements`): on AWS's AutoGluon training image (the SDK knows
versions up to 1.5) the job first pip-installs the project's pins, AutoGluon 1.6 included.

Credentials come from the standard chain only (:mod:`capforecast.aws.session`); receipts and
messages hold job names, ARNs and S3 URIs, never keys.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import tarfile
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from capforecast.aws.errors import AwsError, aws_call, describe, error_code
from capforecast.aws.session import aws_client, aws_session, aws_settings
from capforecast.errors import CapForecastError, ConfigError

PACKAGE_DIR = Path(__file__).resolve().parents[1]
PROJECT_DIR = PACKAGE_DIR.parents[1]
SCHEMA_FILE = PROJECT_DIR / "config" / "schema.yaml"
REQUIREMENTS_FILE = Path(__file__).with_name("training-requirements.txt")
TRAINING_LOG_GROUP = "/aws/sagemaker/TrainingJobs"
TERMINAL = ("Completed", "Failed", "Stopped")
# What every job's channels hold (capforecast.train reads SM_CHANNEL_TRAIN / SM_CHANNEL_CONFIG).
TRAIN_CHANNEL, CONFIG_CHANNEL = "train", "config"
CONFIG_FILE = "config.yaml"
# The project's entry point of each task (the rules run the same functions locally).
ENTRY_POINTS = {"backtest": "capforecast.train_backtest", "forecast": "capforecast.train"}
TASKS = tuple(ENTRY_POINTS)


class SageMakerJobError(CapForecastError):
    """A training job failed or was stopped: its reason and the tail of its log."""


@dataclass(frozen=True)
class SageMakerSettings:
    """``training`` (without ``backend``) and the ``aws`` keys a SageMaker job needs."""

    instance_type: str
    image_uri: str | None
    image_version: str
    volume_size_gb: int
    max_run_seconds: int
    use_spot: bool
    max_wait_seconds: int | None
    poll_seconds: float
    log_tail_lines: int
    tags: tuple[tuple[str, str], ...]
    bucket: str
    prefix: str
    role_arn: str


def sagemaker_settings(training: Mapping[str, Any], aws: Mapping[str, Any]) -> SageMakerSettings:
    """From the validated ``training`` and ``aws`` sections (a SageMaker family needs
    ``aws.bucket`` and ``aws.role_arn``: checked by ``validated_config`` and again here)."""
    for key in ("bucket", "role_arn"):
        if not aws[key]:
            raise ConfigError(f"aws.{key}", "a SageMaker training job needs it")
    return SageMakerSettings(
        instance_type=str(training["instance_type"]),
        image_uri=training["image_uri"],
        image_version=str(training["image_version"]),
        volume_size_gb=int(training["volume_size_gb"]),
        max_run_seconds=int(training["max_run_seconds"]),
        use_spot=bool(training["use_spot"]),
        max_wait_seconds=training["max_wait_seconds"],
        poll_seconds=float(training["poll_seconds"]),
        log_tail_lines=int(training["log_tail_lines"]),
        tags=tuple(sorted((str(k), str(v)) for k, v in training["tags"].items())),
        bucket=str(aws["bucket"]),
        prefix=str(aws["prefix"]).strip("/"),
        role_arn=str(aws["role_arn"]),
    )


@dataclass(frozen=True)
class TrainingRequest:
    """One rule job: ``task`` (backtest | forecast) of ``model`` on ``feature_files``, with the
    settings the job reads (``job_config``: a partial config ``capforecast.train`` validates).

    ``output``: where the table goes; ``models_dir``: where fitted models go (Prophet's refit);
    ``receipt``: the receipt JSON; ``shard``: ``<group>/<shard>`` of a rule job (a group is a
    partition or a pack of small ones, ``pack.<k>``; its job name and tags say which)."""

    model: str
    task: str
    feature_files: tuple[Path, ...]
    job_config: Mapping[str, Any]
    output: Path
    receipt: Path
    models_dir: Path | None = None
    shard: str = ""


def job_config(params: Mapping[str, Any]) -> dict[str, Any]:
    """The partial config a job validates: the sections a model rule is given as params (its
    backtest, model and forecast keys, the percentage metrics and the frequency)."""
    return {
        "backtest": dict(params["backtest"]),
        "models": dict(params["models"]),
        "forecast": dict(params["forecast"]),
        "etl": {"percent_metrics": list(params["percent_metrics"]), "freq": params["freq"]},
    }


def job_base_name(model: str, task: str, shard: str = "") -> str:
    """``capforecast-<model>-<task>[-<shard tag>]``: SageMaker names allow letters, digits and
    hyphens; the SDK appends a second-resolution timestamp (63 characters in all). The shard
    jobs of one model and task start within the same second, so a shard's tag (8 hex digits
    of a digest of ``<group>/<shard>``; group names may hold ``_``, ``.`` and 64 characters)
    keeps their job names, and with them their S3 input and output prefixes, apart."""
    name = re.sub(r"[^A-Za-z0-9-]", "-", f"capforecast-{model}-{task}")
    if not shard:
        return name[:48].strip("-")
    tag = hashlib.sha256(shard.encode("utf-8")).hexdigest()[:8]
    return f"{name[:39].strip('-')}-{tag}"


def container_command(model: str, task: str) -> str:
    """What the job runs in its code channel (``sm_train.sh`` evals it after the install)."""
    module = ENTRY_POINTS[task]
    return (
        f"PYTHONPATH=scripts $SM_PYTHON_CMD -m {module} --model {model} --output-dir $SM_MODEL_DIR"
    )


def code_bundle(dest: Path) -> Path:
    """The job's code channel: ``scripts/capforecast`` (this package), ``config/schema.yaml``
    (``capforecast.config`` finds it two levels above the package, as in the project) and
    ``requirements.txt`` (the pinned training stack). Also what ``ops push`` uploads."""
    dest.mkdir(parents=True, exist_ok=True)
    shutil.copytree(
        PACKAGE_DIR,
        dest / "scripts" / "capforecast",
        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"),
        dirs_exist_ok=True,
    )
    (dest / "config").mkdir(exist_ok=True)
    shutil.copy2(SCHEMA_FILE, dest / "config" / "schema.yaml")
    shutil.copy2(REQUIREMENTS_FILE, dest / "requirements.txt")
    return dest


def training_image(sm: SageMakerSettings, region: str) -> str:
    """``training.image_uri``, else AWS's AutoGluon training image for the region."""
    if sm.image_uri:
        return sm.image_uri
    from sagemaker.core import image_uris

    try:
        return str(
            image_uris.retrieve(
                "autogluon",
                region=region,
                version=sm.image_version,
                image_scope="training",
                instance_type=sm.instance_type,
                py_version="py311",
            )
        )
    except ValueError as err:
        first = str(err).strip().splitlines()[0]
        raise ConfigError(
            "training.image_version",
            f"no AWS AutoGluon training image {sm.image_version} for region {region} and "
            f"{sm.instance_type} ({first}); set training.image_uri",
        ) from None


@contextlib.contextmanager
def sdk_endpoint(endpoint_url: str | None) -> Iterator[None]:
    """The SageMaker SDK builds its own boto3 clients from the session, which only the
    environment can point at an endpoint: ``aws.endpoint_url`` is exported as
    ``AWS_ENDPOINT_URL`` while the SDK works (restored after)."""
    if not endpoint_url:
        yield
        return
    before = os.environ.get("AWS_ENDPOINT_URL")
    os.environ["AWS_ENDPOINT_URL"] = endpoint_url
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("AWS_ENDPOINT_URL", None)
        else:
            os.environ["AWS_ENDPOINT_URL"] = before


@contextlib.contextmanager
def sdk_call(what: str) -> Iterator[None]:
    """Like ``aws_call`` for the SageMaker SDK: the failing operation is named (the SDK makes
    several calls: uploads, CreateTrainingJob, DescribeTrainingJob), and the SDK's own argument
    checks (``ValueError``, pydantic's included) are one line too."""
    import botocore.exceptions as bexc

    try:
        yield
    except AwsError:
        raise
    except bexc.ClientError as err:
        operation = getattr(err, "operation_name", None)
        raise describe(err, f"{what} ({operation})" if operation else what) from None
    except bexc.BotoCoreError as err:
        raise describe(err, what) from None
    except ValueError as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise SageMakerJobError(f"{what}: {first}") from None


def check_bucket(s3: Any, bucket: str) -> None:
    """The bucket exists and is reachable: the SDK would otherwise create it silently."""
    what = f"S3 bucket '{bucket}' (aws.bucket)"
    try:
        with aws_call(what):
            s3.head_bucket(Bucket=bucket)
    except AwsError as err:
        if err.code in ("404", "NoSuchBucket", "NotFound"):
            raise AwsError(
                what,
                "does not exist: create it (`aws s3 mb s3://BUCKET`) or fix aws.bucket",
                code="NoSuchBucket",
            ) from None
        raise


def sagemaker_session(boto_session: Any, sm: SageMakerSettings) -> Any:
    """A SageMaker SDK session with an explicit default bucket (else the SDK asks STS for the
    account to name one) and telemetry off."""
    from sagemaker.core.helper.session_helper import Session

    return Session(
        boto_session=boto_session,
        default_bucket=sm.bucket,
        default_bucket_prefix=f"{sm.prefix}/sagemaker",
        sagemaker_config={
            "SchemaVersion": "1.0",
            "SageMaker": {"PythonSDK": {"Modules": {"TelemetryOptOut": True}}},
        },
    )


def stage_inputs(request: TrainingRequest, workdir: Path) -> dict[str, Path]:
    """Local copies of the job's channels: the feature panels and the settings file."""
    train_dir, config_dir = workdir / TRAIN_CHANNEL, workdir / CONFIG_CHANNEL
    train_dir.mkdir(parents=True)
    config_dir.mkdir(parents=True)
    for path in request.feature_files:
        shutil.copy2(path, train_dir / Path(path).name)
    (config_dir / CONFIG_FILE).write_text(yaml.safe_dump(dict(request.job_config)))
    return {TRAIN_CHANNEL: train_dir, CONFIG_CHANNEL: config_dir}


def submit(
    request: TrainingRequest,
    sm: SageMakerSettings,
    aws: Mapping[str, Any],
    workdir: Path,
) -> str:
    """Stage the inputs, submit the training job; its name."""
    from sagemaker.core.shapes import OutputDataConfig, StoppingCondition
    from sagemaker.core.shapes import Tag as SdkTag
    from sagemaker.train import ModelTrainer
    from sagemaker.train.configs import Compute, InputData, SourceCode

    if request.task not in TASKS:
        raise ValueError(f"task must be one of {TASKS}, not {request.task!r}")
    settings = aws_settings(aws)
    boto_session = aws_session(settings)
    check_bucket(aws_client("s3", settings, session=boto_session), sm.bucket)
    channels = stage_inputs(request, workdir)
    bundle = code_bundle(workdir / "code")
    image = training_image(sm, boto_session.region_name)
    base_name = job_base_name(request.model, request.task, request.shard)
    tags = [
        ("capforecast:model", request.model),
        ("capforecast:task", request.task),
        *([("capforecast:shard", request.shard)] if request.shard else []),
        *sm.tags,
    ]
    max_wait = sm.max_wait_seconds or 2 * sm.max_run_seconds
    with sdk_endpoint(settings.endpoint_url), sdk_call(f"SageMaker training job {base_name}"):
        trainer = ModelTrainer(
            training_image=image,
            source_code=SourceCode(
                source_dir=str(bundle),
                requirements="requirements.txt",
                command=container_command(request.model, request.task),
            ),
            compute=Compute(
                instance_type=sm.instance_type,
                instance_count=1,
                volume_size_in_gb=sm.volume_size_gb,
                enable_managed_spot_training=sm.use_spot,
            ),
            stopping_condition=StoppingCondition(
                max_runtime_in_seconds=sm.max_run_seconds,
                max_wait_time_in_seconds=max_wait if sm.use_spot else None,
            ),
            output_data_config=OutputDataConfig(
                s3_output_path=f"s3://{sm.bucket}/{sm.prefix}/sagemaker/{base_name}",
                compression_type="GZIP",
            ),
            role=sm.role_arn,
            sagemaker_session=sagemaker_session(boto_session, sm),
            base_job_name=base_name,
            tags=[SdkTag(key=k, value=v) for k, v in tags],
        )
        trainer.train(
            input_data_config=[
                InputData(channel_name=name, data_source=str(path))
                for name, path in channels.items()
            ],
            wait=False,
            logs=False,
        )
    return str(trainer._latest_training_job.training_job_name)


def wait(
    sagemaker: Any,
    job_name: str,
    *,
    poll_seconds: float,
    progress: Callable[[str], None],
    sleep: Callable[[float], None] = time.sleep,
) -> dict[str, Any]:
    """Poll until the job ends; one progress line per poll: status, secondary status, time."""
    start = time.monotonic()
    last = None
    while True:
        with aws_call(f"SageMaker DescribeTrainingJob {job_name}"):
            job = sagemaker.describe_training_job(TrainingJobName=job_name)
        status = job["TrainingJobStatus"]
        state = (status, job.get("SecondaryStatus"))
        elapsed = time.monotonic() - start
        message = job.get("SecondaryStatusTransitions", [{}])[-1].get("StatusMessage", "")
        line = f"{job_name}: {status} / {state[1]} after {elapsed:.0f} s"
        progress(f"{line}{' - ' + message if message and state != last else ''}")
        last = state
        if status in TERMINAL:
            return job
        sleep(poll_seconds)


def log_tail(
    logs: Any, job_name: str, lines: int, log_group: str = TRAINING_LOG_GROUP
) -> list[str]:
    """The last ``lines`` messages of a job's CloudWatch log streams (``<job>/algo-1-...``;
    processing jobs log to ``/aws/sagemaker/ProcessingJobs``)."""
    with aws_call(f"CloudWatch Logs {log_group}/{job_name}"):
        try:
            streams = logs.describe_log_streams(
                logGroupName=log_group, logStreamNamePrefix=f"{job_name}/"
            )["logStreams"]
        except logs.exceptions.ResourceNotFoundException:
            return []
        events: list[tuple[int, str]] = []
        for stream in streams:
            got = logs.get_log_events(
                logGroupName=log_group,
                logStreamName=stream["logStreamName"],
                limit=lines,
                startFromHead=False,
            )["events"]
            events.extend((e["timestamp"], e["message"].rstrip()) for e in got)
    return [message for _, message in sorted(events)[-lines:]]


def failure(job: Mapping[str, Any], tail: Sequence[str]) -> SageMakerJobError:
    name, status = job["TrainingJobName"], job["TrainingJobStatus"]
    reason = str(job.get("FailureReason") or "no reason given").strip()
    where = f"log group {TRAINING_LOG_GROUP}, streams {name}/*"
    if tail:
        shown = "\n    ".join(tail)
        logs = f"\n  last {len(tail)} log lines ({where}):\n    {shown}"
    else:
        logs = f"\n  no log lines in {where} (the container may not have started)"
    return SageMakerJobError(
        f"SageMaker training job {name} {status.lower()}: {reason}{logs}\n"
        f"  see `python -m capforecast.aws logs {name}`"
    )


def download_artifacts(s3: Any, uri: str, dest: Path) -> Path:
    """Download and unpack ``model.tar.gz`` into ``dest`` (regular files and folders only)."""
    match = re.fullmatch(r"s3://([^/]+)/(.+)", uri)
    if not match:
        raise AwsError("SageMaker model artifacts", f"not an S3 URI: {uri}")
    archive = dest.parent / "model.tar.gz"
    with aws_call(f"download {uri}"):
        try:
            s3.download_file(match.group(1), match.group(2), str(archive))
        except Exception as err:
            if error_code(err) in ("404", "NoSuchKey"):
                raise AwsError(
                    f"download {uri}",
                    "the job completed but wrote no model.tar.gz there",
                    code="NoSuchKey",
                ) from None
            raise
    dest.mkdir(parents=True, exist_ok=True)
    with tarfile.open(archive) as tar:
        tar.extractall(dest, filter="data")
    return dest


def install_outputs(request: TrainingRequest, unpacked: Path) -> list[Path]:
    """Move the unpacked files to the rule's outputs: ``<model>.parquet`` and, for a refit
    that saves models, ``<model>/``."""
    table = unpacked / f"{request.model}.parquet"
    if not table.is_file():
        found = sorted(p.relative_to(unpacked).as_posix() for p in unpacked.rglob("*"))
        raise SageMakerJobError(
            f"model.tar.gz of {request.model} ({request.task}) has no {table.name}; "
            f"it holds: {', '.join(found[:10]) or 'nothing'}"
        )
    request.output.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(str(table), request.output)
    written = [request.output]
    if request.models_dir is not None:
        models = unpacked / request.model
        if request.models_dir.exists():
            shutil.rmtree(request.models_dir)
        request.models_dir.parent.mkdir(parents=True, exist_ok=True)
        if models.is_dir():
            shutil.move(str(models), request.models_dir)
        else:
            request.models_dir.mkdir()
        written.append(request.models_dir)
    return written


def receipt(job: Mapping[str, Any], request: TrainingRequest, written: Sequence[Path]) -> dict:
    """What ran where: job, image, instance, time billed, S3 URIs, the files it produced."""
    resources = job.get("ResourceConfig", {})
    return {
        "job_name": job["TrainingJobName"],
        "job_arn": job["TrainingJobArn"],
        "status": job["TrainingJobStatus"],
        "model": request.model,
        "task": request.task,
        "image": job.get("AlgorithmSpecification", {}).get("TrainingImage"),
        "instance_type": resources.get("InstanceType"),
        "instance_count": resources.get("InstanceCount"),
        "spot": bool(job.get("EnableManagedSpotTraining", False)),
        "billable_seconds": job.get("BillableTimeInSeconds"),
        "training_seconds": job.get("TrainingTimeInSeconds"),
        "role_arn": job.get("RoleArn"),
        "input_s3_uris": {
            c["ChannelName"]: c["DataSource"]["S3DataSource"]["S3Uri"]
            for c in job.get("InputDataConfig", [])
            if "S3DataSource" in c.get("DataSource", {})
        },
        "output_s3_uri": job.get("OutputDataConfig", {}).get("S3OutputPath"),
        "model_artifacts_s3_uri": job.get("ModelArtifacts", {}).get("S3ModelArtifacts"),
        "outputs": [str(p) for p in written],
    }


def run_training_job(
    request: TrainingRequest,
    sm: SageMakerSettings,
    aws: Mapping[str, Any],
    *,
    progress: Callable[[str], None],
    sleep: Callable[[float], None] = time.sleep,
) -> dict[str, Any]:
    """Submit, wait, unpack into the rule's outputs, write the receipt; the receipt."""
    settings = aws_settings(aws)
    with tempfile.TemporaryDirectory(prefix="capforecast-sagemaker-") as tmp:
        workdir = Path(tmp)
        job_name = submit(request, sm, aws, workdir / "stage")
        progress(f"submitted SageMaker training job {job_name} ({request.task} of {request.model})")
        session = aws_session(settings)
        sagemaker = aws_client("sagemaker", settings, session=session)
        try:
            job = wait(
                sagemaker, job_name, poll_seconds=sm.poll_seconds, progress=progress, sleep=sleep
            )
        except KeyboardInterrupt:
            # Interrupted (Ctrl-C): do not leave an instance running and billing.
            progress(f"interrupted: stopping SageMaker training job {job_name}")
            with contextlib.suppress(Exception):
                sagemaker.stop_training_job(TrainingJobName=job_name)
            raise
        if job["TrainingJobStatus"] != "Completed":
            logs = aws_client("logs", settings, session=session)
            tail = log_tail(logs, job_name, sm.log_tail_lines)
            raise failure(job, tail)
        uri = job["ModelArtifacts"]["S3ModelArtifacts"]
        unpacked = download_artifacts(
            aws_client("s3", settings, session=session), uri, workdir / "model"
        )
        written = install_outputs(request, unpacked)
    record = receipt(job, request, written)
    request.receipt.parent.mkdir(parents=True, exist_ok=True)
    request.receipt.write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
    return record
