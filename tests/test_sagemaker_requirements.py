"""The pinned stack a SageMaker job installs agrees with requirements.lock."""

from __future__ import annotations

from capforecast.aws import requirements
from capforecast.aws.sagemaker_backend import REQUIREMENTS_FILE


def test_the_committed_file_is_what_the_generator_writes():
    assert REQUIREMENTS_FILE.read_text() == requirements.training_requirements(), (
        "run `PYTHONPATH=scripts python -m capforecast.aws.requirements` after `make lock`"
    )


def test_every_pin_agrees_with_the_lock():
    pins = requirements.lock_pins()
    lines = [
        line
        for line in REQUIREMENTS_FILE.read_text().splitlines()
        if line and not line.startswith(("#", "-"))
    ]
    assert len(lines) > 50
    for line in lines:
        name, version = line.split("==")
        key = requirements.canonical(name)
        assert key in pins, f"{name} is not in requirements.lock"
        assert pins[key][1] == version, f"{name}=={version}, the lock has {pins[key][1]}"


def test_the_training_stack_is_the_one_the_models_need():
    text = REQUIREMENTS_FILE.read_text()
    for pin in (
        "autogluon.timeseries==1.6.3",
        "prophet==1.5.0",
        "statsforecast==2.0.3",
        "torch==2.13.0",
        "pandas==2.3.3",
        "pyarrow==24.0.0",
    ):
        assert f"\n{pin}\n" in text
    # Nothing the workflow machinery or the tests need: the job only trains.
    for name in ("snakemake", "pytest", "moto", "papermill", "sagemaker=="):
        assert f"\n{name}" not in text
    # torch from the CPU wheels, as `make venv` installs it.
    assert "--extra-index-url https://download.pytorch.org/whl/cpu\n" in text
