"""Work a process must do before it ends, even when it ends through ``os._exit``.

Rule scripts end with ``os._exit`` (``rulekit.exit_without_teardown``), which skips ``atexit``;
other entry points (the SageMaker job, notebooks, tests) end normally. A hook registered here
runs once in either case.
"""

from __future__ import annotations

import atexit
import logging
from collections.abc import Callable

logger = logging.getLogger(__name__)

_hooks: list[Callable[[], None]] = []


def run_before_exit(hook: Callable[[], None]) -> None:
    """Run ``hook`` when this process ends (once, however often it is registered)."""
    if hook not in _hooks:
        _hooks.append(hook)


def run_exit_hooks() -> None:
    """Run the registered hooks, newest first, each once; a failing hook is logged and
    does not stop the rest."""
    while _hooks:
        hook = _hooks.pop()
        try:
            hook()
        except Exception as err:
            # The process is ending with its outputs written: say so, and run the other hooks.
            logger.warning("exit hook %s failed: %s", getattr(hook, "__name__", hook), err)


atexit.register(run_exit_hooks)
