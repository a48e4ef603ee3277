"""Shared fixtures: paths to the project, its default config and the vendored NAB data."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

PROJECT_ROOT = Path(__file__).resolve().parents[1]
NAB_DIR = PROJECT_ROOT / "tests" / "data" / "nab-aws-cloudwatch"


@pytest.fixture(scope="session")
def project_root() -> Path:
    return PROJECT_ROOT


@pytest.fixture(scope="session")
def nab_dir() -> Path:
    return NAB_DIR


@pytest.fixture(scope="session")
def schema() -> dict:
    return yaml.safe_load((PROJECT_ROOT / "config" / "schema.yaml").read_text())


# The local AWS (moto server on 127.0.0.1) for every AWS test, SageMaker jobs run locally
# (tests/sagemaker_local.py), and a local SLURM (tests/slurm_local.py).
pytest_plugins = ["aws_local", "sagemaker_local", "slurm_local"]
