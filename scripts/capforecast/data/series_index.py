"""Which input file each series comes from: one series, one file.

A partition is an input file, cleaned, resampled and checked on its own. A series (resource_id x
metric, after metric names are mapped) found in two files would become two series under one id:
files that overlap in time failed late, in the backtest, with a duplicate-timestamp message
naming neither series nor file; files that do not overlap were forecast and reported from one
file's history. Merging across partitions would undo their independence (a changed file would
rerun every file's jobs), so the workflow stops right after ingest instead, with one line naming
the series and both files: concatenate such files into one (or rename the resource in one).

The index (``SERIES_INDEX_COLUMNS``) is built right after ingest, first among the jobs ready
then (rule priority), and the leaderboard waits for it, so a split series stops the run before
any model is scored, and in practice before any is fitted (the model jobs wait for cleaning
and features). The model jobs do not wait for it: a fleet-wide input would rerun every shard
when any partition changes.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import pandas as pd

from capforecast.errors import InputDataError

SERIES_INDEX_COLUMNS: tuple[str, ...] = (
    "resource_id",
    "metric",
    "source_metric",
    "partition",
    "source_file",
)
_KEYS = ["resource_id", "metric"]


def series_index(ingested: Mapping[str, tuple[str | Path, pd.DataFrame]]) -> pd.DataFrame:
    """One row per series of the fleet (``SERIES_INDEX_COLUMNS``), from ``partition ->
    (source file, its ingest record)`` (contracts.INGEST_SERIES_COLUMNS).

    Raises :class:`InputDataError` naming the series and both files when a series is in more
    than one file (and how many series are split so).
    """
    frames = [
        record.loc[:, [*_KEYS, "source_metric"]].assign(partition=name, source_file=str(source))
        for name, (source, record) in ingested.items()
    ]
    frames = [f for f in frames if len(f)]
    if not frames:
        return pd.DataFrame({c: pd.Series(dtype=object) for c in SERIES_INDEX_COLUMNS})
    index = pd.concat(frames, ignore_index=True).loc[:, list(SERIES_INDEX_COLUMNS)]
    split = index[index.duplicated(_KEYS, keep=False)]
    if len(split):
        raise _split_error(split)
    return index.sort_values(_KEYS, ignore_index=True)


def _split_error(split: pd.DataFrame) -> InputDataError:
    first = split.sort_values([*_KEYS, "source_file"], kind="stable")
    key = tuple(first.iloc[0][_KEYS])
    files = first[(first["resource_id"] == key[0]) & (first["metric"] == key[1])]
    a, b = files.iloc[0], files.iloc[1]
    n_series = len(split.drop_duplicates(_KEYS))
    also = f" and {len(files) - 2} more file(s)" if len(files) > 2 else ""
    return InputDataError(
        a["source_file"],
        f"series resource_id {key[0]!r}, metric {key[1]!r} (read as {a['source_metric']!r}) is "
        f"also in {b['source_file']} (as {b['source_metric']!r}){also}: one series must come "
        "from one input file, each file is cleaned on its own; concatenate the files, or "
        f"rename the resource in one ({n_series} series split over several files)",
        column="resource_id",
    )
