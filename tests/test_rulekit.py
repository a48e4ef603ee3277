"""capforecast.rulekit: how a rule script's process ends."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

SCRIPT = """
import atexit, sys
from types import SimpleNamespace
from capforecast.errors import ConfigError
from capforecast.rulekit import LOG, run_rule

atexit.register(lambda: print("interpreter teardown ran", flush=True))

def main(smk):
    LOG.info("wrote %s", smk.output)
    if smk.fail:
        raise ConfigError("risk.lead_time_days", "must be positive")

run_rule(main, SimpleNamespace(log=[sys.argv[1]], output="out.parquet", fail=sys.argv[2] == "fail"))
"""


@pytest.mark.parametrize(("outcome", "code"), [("ok", 0), ("fail", 1)])
def test_a_rule_process_ends_without_teardown_and_keeps_its_log(tmp_path: Path, outcome, code):
    """Teardown is skipped (pyarrow can abort there after a parquet read), yet the log is
    complete and a user-facing error still exits 1 with its one line."""
    log = tmp_path / "rule.log"
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(SCRIPT), str(log), outcome],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == code
    assert "interpreter teardown ran" not in done.stdout
    assert "wrote out.parquet" in log.read_text()
    if outcome == "fail":
        assert "capforecast error: config key 'risk.lead_time_days': must be positive" in (
            done.stderr
        )
        assert "risk.lead_time_days" in log.read_text()
