"""Report notebooks survive a kernel that dies while starting, and only that.

A real kernel spec named ``python3`` (found first through JUPYTER_PATH) starts a launcher that
exits at once for its first N starts (what a lost port race looks like to papermill), then runs
ipykernel.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import nbformat
import pytest
from papermill.exceptions import PapermillExecutionError

from capforecast.reports.execute import execute_notebook

LAUNCHER = """
import sys
from pathlib import Path
counter = Path(sys.argv[1])
starts = int(counter.read_text()) + 1 if counter.exists() else 1
counter.write_text(str(starts))
if starts <= int(sys.argv[2]):
    sys.exit(1)
from ipykernel import kernelapp
sys.argv = [sys.argv[0], *sys.argv[3:]]
kernelapp.launch_new_instance()
"""


def flaky_kernel(tmp_path: Path, monkeypatch, failing_starts: int) -> Path:
    """Install the flaky ``python3`` kernel spec; returns the file counting its starts."""
    launcher = tmp_path / "launcher.py"
    launcher.write_text(LAUNCHER)
    counter = tmp_path / "starts.txt"
    spec_dir = tmp_path / "jupyter" / "kernels" / "python3"
    spec_dir.mkdir(parents=True)
    argv = [
        sys.executable,
        str(launcher),
        str(counter),
        str(failing_starts),
        "-f",
        "{connection_file}",
    ]
    spec = {"argv": argv, "display_name": "flaky", "language": "python"}
    (spec_dir / "kernel.json").write_text(json.dumps(spec))
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    return counter


def notebook(tmp_path: Path, source: str) -> Path:
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "language": "python", "display_name": "py"}
    nb.metadata["language_info"] = {"name": "python"}
    params = nbformat.v4.new_code_cell("value = 1")
    params.metadata["tags"] = ["parameters"]
    nb.cells = [params, nbformat.v4.new_code_cell(source)]
    path = tmp_path / "in.ipynb"
    nbformat.write(nb, path)
    return path


def test_a_kernel_that_dies_at_start_is_restarted(tmp_path, monkeypatch, caplog):
    counter = flaky_kernel(tmp_path, monkeypatch, failing_starts=1)
    out = tmp_path / "out.ipynb"
    execute_notebook(notebook(tmp_path, "print(value * 7)"), out, {"value": 6}, tmp_path)
    assert counter.read_text() == "2"
    outputs = nbformat.read(out, as_version=4).cells[-1].outputs
    assert outputs[0]["text"].strip() == "42"
    assert "the kernel did not start" in caplog.text


def test_a_kernel_that_never_starts_fails_after_the_attempts(tmp_path, monkeypatch):
    counter = flaky_kernel(tmp_path, monkeypatch, failing_starts=99)
    with pytest.raises(RuntimeError, match="Kernel died before replying to kernel_info"):
        execute_notebook(notebook(tmp_path, "1"), tmp_path / "out.ipynb", {}, tmp_path, attempts=2)
    assert counter.read_text() == "2"


def test_an_error_in_a_cell_is_not_retried(tmp_path, monkeypatch):
    counter = flaky_kernel(tmp_path, monkeypatch, failing_starts=0)
    with pytest.raises(PapermillExecutionError, match="ZeroDivisionError"):
        execute_notebook(notebook(tmp_path, "1 / 0"), tmp_path / "out.ipynb", {}, tmp_path)
    assert counter.read_text() == "1"
