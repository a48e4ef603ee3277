"""Shared fixtures: paths to the project, its default config and the vendored NAB data."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
import yaml
from filelock import FileLock
from snakemake_cli import snakemake_cmd

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


# The tiny synthetic fleet at this forecast.shard_size (the default packs its 25 series into one
# shard): every service is smaller than a shard and the 25 series are ceil(25 / 15) = 2 packs,
# so a run has two shard jobs per model and task. The SLURM and SageMaker workflow tests run it
# that way and compare with the same local run, which the tiny-fleet tests of test_workflow.py
# read and the shard workflow tests continue.
TINY_SHARD_SIZE = 15
TINY_SHARDED = "tiny_sharded"  # its config file's name


def tiny_synthetic_config(directory: Path, name: str, **forecast) -> Path:
    """tests/configs/tiny_synthetic.yaml with these ``forecast`` settings, written to
    ``directory/<name>.yaml``."""
    cfg = yaml.safe_load((PROJECT_ROOT / "tests" / "configs" / "tiny_synthetic.yaml").read_text())
    cfg["forecast"].update(forecast)
    path = directory / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def tiny_sharded_config(directory: Path) -> Path:
    """``tiny_synthetic_config`` with forecast.shard_size TINY_SHARD_SIZE."""
    return tiny_synthetic_config(directory, TINY_SHARDED, shard_size=TINY_SHARD_SIZE)


def shared_run_config(run: Path) -> Path:
    """The config file ``tiny_sharded_local_run`` ran with (written into its directory)."""
    return run / f"{TINY_SHARDED}.yaml"


@pytest.fixture(scope="session")
def tiny_sharded_local_run(tmp_path_factory, worker_id) -> Path:
    """Working directory of a local run of ``tiny_sharded_config`` to the `risk` target, made
    once for the whole suite: xdist workers share it through a lock in their common temporary
    directory (a worker that finds it made reads it). Read it, never write to it."""
    root = tmp_path_factory.getbasetemp()
    if worker_id != "master":
        root = root.parent
    workdir = root / "tiny_sharded_local_run"
    with FileLock(str(root / "tiny_sharded_local_run.lock")):
        done = workdir / "done"
        if not done.exists():
            workdir.mkdir(exist_ok=True)
            config = tiny_sharded_config(workdir)
            proc = subprocess.run(
                snakemake_cmd(workdir, config, "--cores", "2", "risk"),
                cwd=workdir,
                capture_output=True,
                text=True,
                timeout=1500,
                env={**os.environ, "HF_HUB_OFFLINE": "1", "MPLBACKEND": "Agg"},
            )
            assert proc.returncode == 0, f"local tiny run failed:\n{proc.stdout}{proc.stderr}"
            done.touch()
    return workdir


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


# Within a module, the tests that read the suite's shared run (tiny_sharded_local_run) come
# last: the first two modules handed out (one per worker) both read it, and the worker that
# does not build it runs its other tests meanwhile instead of waiting on the lock.
SHARED_RUN = "tiny_sharded_local_run"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    first_seen: dict[Path, int] = {}
    for index, item in enumerate(items):
        first_seen.setdefault(item.path, index)

    def rank(item: pytest.Item) -> tuple[int, int, bool]:
        name = item.path.name
        module = LONGEST_FIRST.index(name) if name in LONGEST_FIRST else len(LONGEST_FIRST)
        return module, first_seen[item.path], SHARED_RUN in getattr(item, "fixturenames", ())

    items.sort(key=rank)  # stable: each module's tests stay together and otherwise in order
