"""Helpers for the thin rule scripts: logging to ``snakemake.log`` and one-line errors."""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from capforecast.errors import CapForecastError
from capforecast.process_exit import run_exit_hooks

LOG = logging.getLogger("capforecast")


def setup_logging(log_path: str | Path | None) -> logging.Logger:
    """Send library logs to the rule's log file (and stderr, so `snakemake` shows progress)."""
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if log_path:
        Path(log_path).parent.mkdir(parents=True, exist_ok=True)
        handlers.append(logging.FileHandler(log_path, mode="w"))
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        handlers=handlers,
        force=True,
    )
    return LOG


def run_rule(main: Callable[[Any], None], smk: Any) -> None:
    """Run a rule's ``main(snakemake)``; user-facing errors become one line, not a traceback."""
    log_files = list(getattr(smk, "log", []) or [])
    setup_logging(log_files[0] if log_files else None)
    try:
        main(smk)
    except CapForecastError as err:
        # The one line users need; Snakemake adds the rule name and the log path around it.
        LOG.error("%s", err)
        print(f"capforecast error: {err}", file=sys.stderr)
        exit_without_teardown(1)
    exit_without_teardown(0)


def exit_without_teardown(code: int) -> None:
    """End the rule's process once its outputs are written, skipping interpreter teardown.

    pyarrow's thread pools can abort a process at teardown after a parquet read (SIGABRT,
    "terminate called without an active exception", apache/arrow#34314): a job whose outputs
    are complete would fail at random. Logs and standard streams are flushed first; the
    outputs are closed files by then, and the process's exit hooks (``process_exit``) have run.
    (An unexpected exception still ends with its traceback.)
    """
    run_exit_hooks()
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


@contextmanager
def timed(step: str) -> Iterator[None]:
    start = time.perf_counter()
    yield
    LOG.info("%s took %.2f s", step, time.perf_counter() - start)


def ensure_parent(*paths: str | Path) -> None:
    for path in paths:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
