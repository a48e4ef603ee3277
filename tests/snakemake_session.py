"""Snakemake's command line run many times in one process, for tests that plan hundreds of times.

Importing Snakemake and its executor plugins takes about 2.4 s of every `snakemake` call, far
more than planning the tiny fleet; tests that only plan (`--detailed-summary`) send their
arguments here instead, one JSON list per line on stdin, and read one JSON object per line back
(``{"code": exit status, "stdout": ..., "stderr": ...}``, what Snakemake printed to each).

Each call runs `snakemake.cli.main` as the `snakemake` script does. The project's package is
imported afresh for every call (its modules are dropped from ``sys.modules`` first), so module
state such as the code digests' in-memory caches never carries over from one call to the next:
a call sees the files on disk as a new process would.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import select
import subprocess
import sys

PACKAGE = "capforecast"
# A call that has not answered by then is taken as hung: the session is stopped and the test
# fails in one line instead of waiting for the CI's time limit.
CALL_TIMEOUT_S = 600


def _forget_package() -> None:
    for name in [m for m in sys.modules if m == PACKAGE or m.startswith(f"{PACKAGE}.")]:
        del sys.modules[name]


def run(args: list[str]) -> dict:
    from snakemake.cli import main

    _forget_package()
    stdout, stderr = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        try:
            main(args)
            code = 0
        except SystemExit as stop:
            code = stop.code if isinstance(stop.code, int) else int(stop.code is not None)
    return {"code": code, "stdout": stdout.getvalue(), "stderr": stderr.getvalue()}


class SnakemakeSession:
    """One process that runs `snakemake` calls in turn (use as a context manager)."""

    def __init__(self, env: dict[str, str] | None = None):
        # Replies come on a pipe of their own: whatever a call writes to the real standard
        # output (a child process, a C library) cannot be mistaken for one.
        replies, self._reply_end = os.pipe()
        self._proc = subprocess.Popen(
            [sys.executable, __file__, str(self._reply_end)],
            stdin=subprocess.PIPE,
            # The standard error is the test's own (pytest shows it when the test fails): a
            # session that cannot start says why there.
            stdout=subprocess.DEVNULL,
            pass_fds=(self._reply_end,),
            text=True,
            env={**os.environ, **(env or {})},
        )
        os.close(self._reply_end)
        self._replies = os.fdopen(replies)

    def __call__(self, *args: str) -> dict:
        """Exit status, standard output and standard error of `snakemake *args`."""
        self._proc.stdin.write(json.dumps(list(args)) + "\n")
        self._proc.stdin.flush()
        # One line answers one call, so nothing is left in the reader's buffer between calls.
        ready, _, _ = select.select([self._replies], [], [], CALL_TIMEOUT_S)
        if not ready:
            self._proc.kill()
            raise TimeoutError(f"snakemake {' '.join(args)}: no answer in {CALL_TIMEOUT_S} s")
        reply = self._replies.readline()
        if not reply:
            raise RuntimeError(f"the Snakemake session ended (exit {self._proc.wait()})")
        return json.loads(reply)

    def close(self) -> None:
        if self._proc.poll() is None:
            self._proc.stdin.close()
            self._proc.wait(timeout=60)
        self._replies.close()

    def __enter__(self) -> SnakemakeSession:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


if __name__ == "__main__":
    with open(int(sys.argv[1]), "w") as replies:
        for line in sys.stdin:
            replies.write(json.dumps(run(json.loads(line))) + "\n")
            replies.flush()
