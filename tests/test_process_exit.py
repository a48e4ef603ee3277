"""Exit hooks run before a rule's ``os._exit``; AutoGluon's worker processes end with the job."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

# A rule-like process: registers hooks, then ends as every rule script does.
HOOKS = """
import logging
logging.basicConfig()
from capforecast.process_exit import run_before_exit
from capforecast.rulekit import exit_without_teardown

def first():
    print("first", flush=True)

def failing():
    raise RuntimeError("a broken hook")

def last():
    print("last", flush=True)

run_before_exit(first)
run_before_exit(first)  # once, however often registered
run_before_exit(failing)
run_before_exit(last)
exit_without_teardown(3)
"""

# One AutoGluon fit whose local model runs in two joblib (loky) workers, in a process that
# ends like a rule script.
AUTOGLUON_JOB = """
import tempfile
import numpy as np, pandas as pd
from capforecast.config import validated_config
from capforecast.forecast.models.autogluon_model import train_autogluon
from capforecast.forecast.models.base import ForecastRequest
from capforecast.rulekit import exit_without_teardown
from capforecast.settings import model_settings

hours = pd.date_range("2026-01-01", periods=10 * 24, freq="h", tz="UTC")
history = pd.concat(
    pd.DataFrame({"series_id": f"s{i}|cpu_utilization", "timestamp": hours,
                  "y": 50 + 10 * np.sin(np.arange(len(hours)) * 2 * np.pi / 24) + i})
    for i in range(4)
).reset_index(drop=True)
models = validated_config({})["models"]
models["autogluon"] = {**models["autogluon"], "hyperparameters": {"SeasonalNaive": {}}}
request = ForecastRequest(history=history, horizon=24, quantiles=(0.1, 0.5, 0.9), n_jobs=2)
train_autogluon(request, model_settings(models).autogluon, tempfile.mkdtemp() + "/predictor")
exit_without_teardown(0)
"""


def run_python(code: str, timeout: float) -> subprocess.CompletedProcess:
    # communicate() returns when every holder of the pipes has closed them, children included.
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_hooks_run_once_before_the_rule_exits():
    done = run_python(HOOKS, timeout=60)
    assert done.returncode == 3
    assert done.stdout.split() == ["last", "first"]
    assert "exit hook failing failed: a broken hook" in done.stderr


def loky_workers() -> set[str]:
    """The machine's loky worker processes (pid and command line)."""
    ps = subprocess.run(["ps", "-eo", "pid,args"], capture_output=True, text=True).stdout
    return {line for line in ps.splitlines() if "popen_loky_posix" in line}


@pytest.mark.slow
def test_autogluon_workers_end_with_the_job():
    """loky's workers idle 300 s after a job unless stopped; stopped, the job's pipes close at
    once (a 120 s timeout fails the test where they would stay open)."""
    before = loky_workers()
    done = run_python(AUTOGLUON_JOB, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert loky_workers() - before == set()
