"""A SageMaker training "container" for the tests, behind moto's SageMaker API.

moto marks a training job Completed the moment it is created and never runs it. The fixture
``local_sagemaker`` hooks moto's in-process backend (the server runs in the test process): a job
created through the API (by the workflow in a subprocess, or the CLI) is set ``InProgress`` and
run here as SageMaker would run it, under its contract:

* every input channel of the job is downloaded from the local S3 to
  ``<root>/input/data/<channel>/`` (``SM_CHANNEL_<CHANNEL>``);
* the command the SDK wrote to the job's ``sm_drivers`` channel (``sourcecode.json``) runs in the
  code channel, with ``SM_MODEL_DIR``, ``SM_OUTPUT_DIR``, ``SM_OUTPUT_DATA_DIR`` and
  ``SM_PYTHON_CMD`` set (this venv's Python: the pip install of ``requirements.txt`` is the one
  step skipped, the venv already holds the pinned stack);
* its output lines go to CloudWatch Logs ``/aws/sagemaker/TrainingJobs``, stream
  ``<job>/algo-1-<time>``;
* on success ``<root>/model`` is packed as ``model.tar.gz`` and put where the job's
  ``ModelArtifacts`` say, then the job is ``Completed`` (with billable seconds); on failure it
  is ``Failed`` with ``<root>/output/failure`` as its ``FailureReason``, as SageMaker does.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import tarfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aws_local import LocalAws

LOG_GROUP = "/aws/sagemaker/TrainingJobs"


@dataclass
class LocalSageMaker:
    aws: LocalAws
    root: Path
    role_arn: str = ""
    jobs: list[str] = field(default_factory=list)
    threads: list[threading.Thread] = field(default_factory=list)
    # Names of jobs whose container run failed with its exception (bugs in this helper).
    errors: dict[str, str] = field(default_factory=dict)

    def run(self, job: Any) -> None:
        try:
            self._run(job)
        except Exception as err:  # a bug here must fail the job, not hang the poller
            self.errors[job.training_job_name] = repr(err)
            job.failure_reason = f"test container: {err!r}"
            job.training_job_status = "Failed"
            job.secondary_status = "Failed"

    def _run(self, job: Any) -> None:
        name = job.training_job_name
        root = self.root / name / "opt" / "ml"
        s3 = self.aws.client("s3")
        channels = {}
        for channel in job.input_data_config:
            uri = channel["DataSource"]["S3DataSource"]["S3Uri"]
            bucket, _, prefix = uri.removeprefix("s3://").partition("/")
            dest = root / "input" / "data" / channel["ChannelName"]
            dest.mkdir(parents=True, exist_ok=True)
            listed = s3.list_objects_v2(Bucket=bucket, Prefix=prefix.rstrip("/") + "/")
            for obj in listed.get("Contents", []):
                relative = obj["Key"][len(prefix.rstrip("/")) + 1 :]
                target = dest / relative
                target.parent.mkdir(parents=True, exist_ok=True)
                s3.download_file(bucket, obj["Key"], str(target))
            channels[channel["ChannelName"]] = dest
        source = json.loads((channels["sm_drivers"] / "sourcecode.json").read_text())
        model_dir, output_dir = root / "model", root / "output"
        (output_dir / "data").mkdir(parents=True, exist_ok=True)
        model_dir.mkdir(parents=True, exist_ok=True)
        env = {
            **os.environ,
            "SM_MODEL_DIR": str(model_dir),
            "SM_OUTPUT_DIR": str(output_dir),
            "SM_OUTPUT_DATA_DIR": str(output_dir / "data"),
            "SM_PYTHON_CMD": sys.executable,
            "TRAINING_JOB_NAME": name,
            "HF_HUB_OFFLINE": "1",
            "MPLBACKEND": "Agg",
            **{f"SM_CHANNEL_{c.upper()}": str(path) for c, path in channels.items()},
        }
        env.pop("PYTHONPATH", None)
        start = time.monotonic()
        proc = subprocess.run(
            ["bash", "-c", 'eval "$SM_TEST_COMMAND"'],
            cwd=channels["code"],
            env={**env, "SM_TEST_COMMAND": source["command"]},
            capture_output=True,
            text=True,
            timeout=900,
        )
        # What sm_train.sh prints around the command, then the command's own output.
        self._log(
            name,
            [
                "Starting training script",
                f"Executing command: {source['command']}",
                *(proc.stdout + proc.stderr).splitlines(),
                *(
                    [f"An error occurred with exit code {proc.returncode}"]
                    if proc.returncode
                    else []
                ),
                *([] if proc.returncode else ["Training Container Execution Completed"]),
            ],
        )
        job.billable_time_in_seconds = max(1, round(time.monotonic() - start))
        job.training_time_in_seconds = job.billable_time_in_seconds
        if proc.returncode != 0:
            failure = output_dir / "failure"
            job.failure_reason = (
                failure.read_text().strip()
                if failure.is_file()
                else f"AlgorithmError: exit status {proc.returncode}"
            )
            job.training_job_status = job.secondary_status = "Failed"
            return
        archive = root / "model.tar.gz"
        with tarfile.open(archive, "w:gz") as tar:
            for path in sorted(model_dir.iterdir()):
                tar.add(path, arcname=path.name)
        uri = job.model_artifacts["S3ModelArtifacts"]
        bucket, _, key = uri.removeprefix("s3://").partition("/")
        s3.upload_file(str(archive), bucket, key)
        job.training_job_status = job.secondary_status = "Completed"

    def _log(self, name: str, lines: list[str]) -> None:
        logs = self.aws.client("logs")
        with contextlib.suppress(logs.exceptions.ResourceAlreadyExistsException):
            logs.create_log_group(logGroupName=LOG_GROUP)
        stream = f"{name}/algo-1-{int(time.time())}"
        logs.create_log_stream(logGroupName=LOG_GROUP, logStreamName=stream)
        now = int(time.time() * 1000)
        logs.put_log_events(
            logGroupName=LOG_GROUP,
            logStreamName=stream,
            logEvents=[{"timestamp": now + i, "message": line} for i, line in enumerate(lines)],
        )

    def wait(self, timeout: float = 900) -> None:
        for thread in self.threads:
            thread.join(timeout)


@pytest.fixture
def local_sagemaker(
    aws_env: LocalAws, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[LocalSageMaker]:
    """moto's SageMaker, with created training jobs run here under the SageMaker contract."""
    from moto.sagemaker.models import SageMakerModelBackend

    runner = LocalSageMaker(aws=aws_env, root=tmp_path / "sagemaker-jobs")
    original = SageMakerModelBackend.create_training_job

    def create_training_job(backend, *args, **kwargs):
        job = original(backend, *args, **kwargs)
        job.training_job_status = "InProgress"
        job.secondary_status = "Training"
        runner.jobs.append(job.training_job_name)
        thread = threading.Thread(target=runner.run, args=(job,), daemon=True)
        runner.threads.append(thread)
        thread.start()
        return job

    monkeypatch.setattr(SageMakerModelBackend, "create_training_job", create_training_job)
    role = aws_env.client("iam").create_role(
        RoleName=f"capforecast-test-{abs(hash(str(tmp_path))) % 10**8}",
        AssumeRolePolicyDocument=json.dumps({"Version": "2012-10-17", "Statement": []}),
    )
    runner.role_arn = role["Role"]["Arn"]
    yield runner
    runner.wait()


PROCESSING_ROOT = "/opt/ml/processing"


def run_processing_job(aws: LocalAws, name: str, root: Path) -> subprocess.CompletedProcess:
    """Run a Processing job moto stored (it never runs one) as SageMaker would: each input
    downloaded to its local path, the container's entry point and arguments run, each output
    directory uploaded to its S3 URI. ``/opt/ml/processing`` becomes ``root``; the command's
    ``pip install`` steps are skipped (this venv holds the pinned stack, and the unpacked
    workflow's package is put first on PYTHONPATH instead of being installed)."""
    job = aws.client("sagemaker").describe_processing_job(ProcessingJobName=name)
    s3 = aws.client("s3")

    def local(path: str) -> Path:
        return root / Path(path).relative_to(PROCESSING_ROOT)

    for item in job["ProcessingInputs"]:
        uri, target = item["S3Input"]["S3Uri"], local(item["S3Input"]["LocalPath"])
        bucket, _, key = uri.removeprefix("s3://").partition("/")
        target.mkdir(parents=True, exist_ok=True)
        for obj in s3.list_objects_v2(Bucket=bucket, Prefix=key).get("Contents", []):
            relative = obj["Key"][len(key) :].lstrip("/") or Path(obj["Key"]).name
            (target / relative).parent.mkdir(parents=True, exist_ok=True)
            s3.download_file(bucket, obj["Key"], str(target / relative))
    # SageMaker creates every output directory before the container starts.
    for output in job["ProcessingOutputConfig"]["Outputs"]:
        local(output["S3Output"]["LocalPath"]).mkdir(parents=True, exist_ok=True)
    app = job["AppSpecification"]
    *entry, command = [*app["ContainerEntrypoint"], *app["ContainerArguments"]]
    steps = [s for s in command.split("; ") if not s.startswith("pip install")]
    command = "; ".join(steps).replace(PROCESSING_ROOT, str(root))
    env = {
        **aws.env(),
        "PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin",
        "PYTHONPATH": str(root / "project" / "scripts"),
        "HOME": str(root),
    }
    proc = subprocess.run([*entry, command], capture_output=True, text=True, env=env, timeout=1200)
    if proc.returncode == 0:
        for output in job["ProcessingOutputConfig"]["Outputs"]:
            uri = output["S3Output"]["S3Uri"]
            source = local(output["S3Output"]["LocalPath"])
            bucket, _, key = uri.removeprefix("s3://").partition("/")
            for path in sorted(p for p in source.rglob("*") if p.is_file()):
                s3.upload_file(str(path), bucket, f"{key.rstrip('/')}/{path.relative_to(source)}")
    return proc
