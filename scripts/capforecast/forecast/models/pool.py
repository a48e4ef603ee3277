"""One process pool for every model that fits series one by one (statsforecast, Prophet).

Workers are forked (the Linux default, also what statsforecast's ``n_jobs`` uses): ``spawn`` and
``forkserver`` children re-run the parent's ``__main__``, which for an unguarded Snakemake rule
script would start the whole forecast again in every worker. ``spawn`` is used only where fork
does not exist.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable, Iterable
from concurrent.futures import ProcessPoolExecutor
from functools import partial
from typing import Any, TypeVar

Item = TypeVar("Item")
Result = TypeVar("Result")

# Chunks per worker: interleaved chunks spread long and short series evenly over the workers.
CHUNKS_PER_WORKER = 4


def _run_chunk(function: Callable[[Any], Any], chunk: list[Any]) -> list[Any]:
    return [function(item) for item in chunk]


def map_in_processes(
    function: Callable[[Item], Result],
    items: Iterable[Item],
    n_jobs: int,
    *,
    min_items: int = 2,
) -> list[Result]:
    """``[function(item) for item in items]``, in input order, across up to ``n_jobs`` worker
    processes when there are at least ``min_items`` items (below that, forking costs more than
    it saves). ``function`` must be picklable: a module-level function or a ``partial`` of one.
    """
    chunked = partial(_run_chunk, function)
    return map_chunks_in_processes(chunked, items, n_jobs, min_items=min_items)


def map_chunks_in_processes(
    function: Callable[[list[Item]], list[Result]],
    items: Iterable[Item],
    n_jobs: int,
    *,
    min_items: int = 2,
) -> list[Result]:
    """``function(items)``, in input order, with ``function`` called on chunks of the items
    (a result per item) across up to ``n_jobs`` worker processes when there are at least
    ``min_items`` items; one call on all of them otherwise. For work that is cheaper done for
    many items together. ``function`` must be picklable."""
    items = list(items)
    workers = max(1, min(int(n_jobs), len(items)))
    if workers == 1 or len(items) < min_items:
        return function(items)
    n_chunks = min(len(items), workers * CHUNKS_PER_WORKER)
    chunks = [items[i::n_chunks] for i in range(n_chunks)]
    method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
    results: list[Any] = [None] * len(items)
    with ProcessPoolExecutor(
        max_workers=workers, mp_context=multiprocessing.get_context(method)
    ) as pool:
        outputs = pool.map(function, chunks)
        for start, chunk_out in enumerate(outputs):
            results[start::n_chunks] = chunk_out
    return results
