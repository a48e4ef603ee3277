"""How many series a local input file holds, counted when the workflow is planned.

The forecast stage's shards are fixed before any job runs (:mod:`capforecast.forecast.shards`):
a partition of ``n`` series gets ``ceil(n / forecast.shard_size)`` shards. For a local file
``n`` is counted here, cheaply: a series-format file (``timestamp, value``) is one series
without reading it; a long-format file is read for its ``resource_id`` and ``metric`` columns
only (pyarrow; CSV decompressed as the reader does) and its distinct pairs are counted, trimmed
of surrounding spaces, before metric names are mapped (so at most what ingest finds). A file
that cannot be read this way counts as unknown (one shard): ingest reports it in one line.

Counts are cached per working directory (:func:`file_series`): keyed by the file's path, size
and modification time and by the settings that decide what a series is, so a DAG build reads
only new or changed files, and a cluster job, which plans the workflow again, reads none.
The count is a function of the file and those settings only, so a series' shard does not
depend on when or where it was counted.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

from capforecast.data import ingest
from capforecast.errors import InputDataError

LOG = logging.getLogger(__name__)

# Bump when the way series are counted changes: older cache entries are then recounted.
CACHE_VERSION = 1
_KEYS = ("resource_id", "metric")


def _header(file: Path) -> list[str]:
    """Column names of a CSV (decompressed) or parquet file, as written."""
    if ingest.data_suffix(file) in ingest.PARQUET_SUFFIXES:
        return list(pq.read_schema(file).names)
    with _csv_stream(file) as stream:
        return list(pa_csv.open_csv(stream, read_options=_CSV_READ).schema.names)


_CSV_READ = pa_csv.ReadOptions(block_size=1 << 22)


def _csv_stream(file: Path) -> Any:
    codec = ingest.CSV_COMPRESSIONS[str(ingest.data_suffix(file))]
    return pa.input_stream(str(file), compression=codec)


def _source_columns(names: list[str], columns: Mapping[str, str]) -> dict[str, str]:
    """Contract column -> the header name it is read from, matched like the reader does
    (case and surrounding spaces ignored, ``data.columns`` renames first)."""
    by_key = {str(name).strip().lower(): str(name) for name in names}
    found: dict[str, str] = {}
    for column in ingest.LONG_COLUMNS:
        key = str(columns.get(column, column)).strip().lower()
        if key in by_key:
            found[column] = by_key[key]
    return found


def count_file_series(
    file: str | Path, fmt: str = "auto", columns: Mapping[str, str] | None = None
) -> int | None:
    """Series in one input file (``data.format``, ``data.columns``); None when it cannot be
    read for them (ingest then stops the run naming the file)."""
    file = Path(file)
    try:
        names = _header(file)
        source = _source_columns(names, columns or {})
        long = fmt == "long" or (fmt == "auto" and any(k in source for k in _KEYS))
        if not long:
            return 1  # series format: the file is the series
        if not all(k in source for k in _KEYS):
            return None
        wanted = [source[k] for k in _KEYS]
        if ingest.data_suffix(file) in ingest.PARQUET_SUFFIXES:
            table = pq.read_table(file, columns=wanted)
        else:
            convert = pa_csv.ConvertOptions(
                include_columns=wanted, column_types=dict.fromkeys(wanted, pa.string())
            )
            with _csv_stream(file) as stream:
                table = pa_csv.read_csv(stream, read_options=_CSV_READ, convert_options=convert)
    except (pa.ArrowException, OSError, InputDataError, KeyError, ValueError) as err:
        LOG.warning("%s: series not counted, planned as one shard (%s)", file, err)
        return None
    resource, metric = (pc.utf8_trim_whitespace(table[name].cast(pa.string())) for name in wanted)
    pairs = pa.table({"resource_id": resource, "metric": metric})
    pairs = pairs.filter(pc.fill_null(pc.not_equal(resource, ""), False))
    return pairs.group_by(list(_KEYS)).aggregate([]).num_rows


def _settings_key(fmt: str, columns: Mapping[str, str]) -> str:
    return json.dumps([CACHE_VERSION, fmt, dict(sorted(columns.items()))])


def _load(cache_file: Path) -> dict[str, Any]:
    try:
        loaded = json.loads(cache_file.read_text())
    except (OSError, ValueError):
        return {}
    return loaded if isinstance(loaded, dict) else {}


def _save(cache_file: Path, entries: Mapping[str, Any]) -> None:
    """Write the cache atomically (cluster jobs plan the workflow at the same time); a cache
    that cannot be written is only a slower next plan."""
    try:
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=cache_file.parent, prefix=".series_counts.")
        with os.fdopen(fd, "w") as out:
            json.dump(entries, out, indent=1, sort_keys=True)
        os.replace(tmp, cache_file)
    except OSError as err:
        LOG.debug("series count cache %s not written: %s", cache_file, err)


def file_series(
    files: Mapping[str, str | Path], data: Mapping[str, Any], cache_file: str | Path
) -> dict[str, int | None]:
    """Partition -> series of its input file (:func:`count_file_series`), read from
    ``cache_file`` when the file's size and modification time and the settings (``data``:
    the validated ``data`` section, its ``format`` and ``columns``) are those cached."""
    cache_file = Path(cache_file)
    fmt, columns = str(data["format"]), dict(data["columns"] or {})
    settings = _settings_key(fmt, columns)
    cached = _load(cache_file)
    entries: dict[str, Any] = {}
    counts: dict[str, int | None] = {}
    for partition, path in files.items():
        key = str(Path(path).resolve())
        try:
            stat = os.stat(key)
        except OSError:
            counts[partition] = None  # ingest names the missing file
            continue
        stamp = [stat.st_size, stat.st_mtime_ns, settings]
        entry = cached.get(key)
        if isinstance(entry, list) and len(entry) == 2 and entry[0] == stamp:
            series = entry[1]
        else:
            series = count_file_series(key, fmt, columns)
        entries[key] = [stamp, series]
        counts[partition] = series
    if entries != {k: cached.get(k) for k in entries} or set(cached) - set(entries):
        _save(cache_file, entries)
    return counts
