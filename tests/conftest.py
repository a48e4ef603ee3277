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


# Spreading the suite over the xdist workers (`make test`: -n 2 --dist loadfile
# --no-loadscope-reorder). Each module runs on one worker, so a module-scoped fixture (a
# workflow run, executed notebooks) is built once. (`--dist loadgroup` with xdist_group marks
# does not group under pytest 9: xdist 3.8 renames `item._nodeid`, which pytest 9 no longer
# reads, so every shared workflow run was built on both workers.)
# Modules are handed out in collection order, so the longest are collected first and the
# short ones fill the gaps at the end. Order measured with `pytest --durations=0`, longest
# first; a module not listed keeps its place after them.
LONGEST_FIRST = (
    "test_slurm_workflow.py",
    "test_workflow.py",
    "test_shards_workflow.py",
    "test_aws_workflow.py",
    "test_rerun_plan.py",
    "test_decision_workflow.py",
    "test_hostile_ids_workflow.py",
    "test_odd_inputs_workflow.py",
    "test_sagemaker_workflow.py",
    "test_extreme_inputs_workflow.py",
    "test_profiles.py",
    "test_reports.py",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    def rank(item: pytest.Item) -> int:
        name = item.path.name
        return LONGEST_FIRST.index(name) if name in LONGEST_FIRST else len(LONGEST_FIRST)

    items.sort(key=rank)  # stable: each module's tests keep their order
