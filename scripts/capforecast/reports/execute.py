"""Run a report notebook with papermill, surviving a kernel that dies while starting.

Several report jobs starting Jupyter kernels at the same moment (``snakemake --cores 2`` and
more) now and then lose the race for the kernel's ZeroMQ ports: the kernel exits before it
answers ``kernel_info`` and papermill raises ``RuntimeError("Kernel died before replying to
kernel_info")`` although nothing in the notebook ran. Such a start is retried (a fresh kernel
picks fresh ports); an error raised by a notebook cell is never retried.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

LOGGER = logging.getLogger("capforecast")

# What jupyter_client raises when the kernel never became ready (nothing of the notebook ran).
KERNEL_START_FAILURES = ("Kernel died before replying to kernel_info", "Kernel didn't respond")


def kernel_failed_to_start(error: BaseException) -> bool:
    return isinstance(error, RuntimeError) and str(error).startswith(KERNEL_START_FAILURES)


def execute_notebook(
    notebook: str | Path,
    output: str | Path,
    parameters: dict[str, Any],
    cwd: str | Path,
    attempts: int = 3,
) -> None:
    """``papermill.execute_notebook`` with the python3 kernel, retrying failed kernel starts."""
    import papermill

    for attempt in range(1, attempts + 1):
        try:
            papermill.execute_notebook(
                str(notebook),
                str(output),
                parameters=parameters,
                cwd=str(cwd),
                kernel_name="python3",
                progress_bar=False,
            )
            return
        except RuntimeError as error:
            if not kernel_failed_to_start(error) or attempt == attempts:
                raise
            LOGGER.warning(
                "%s: the kernel did not start (%s); attempt %d of %d",
                notebook,
                error,
                attempt + 1,
                attempts,
            )
            time.sleep(0.5 * attempt)
