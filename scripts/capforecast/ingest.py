"""Read local metric files (CSV or parquet) into the raw long format, keeping every row.

Two file layouts are understood:

* long: columns ``timestamp, resource_id, metric, value`` (any further columns are ignored);
* series: columns ``timestamp, value``, one series per file (NAB style); the resource id is the
  file stem and the metric comes from ``data.metric`` or the first ``data.metric_patterns`` regex
  found in the stem.

Row ``i`` of the returned frame is data row ``i`` of the file, so the quarantine written later
can point back to the source row. Rows are never dropped here: empty values and empty timestamps
stay as NaN / NaT and are quarantined by :mod:`capforecast.validate`.

Row numbers in error messages are 1-based *data* rows, as a user counts them below the header:
``row 5`` is the fifth record; for CSV files the message adds the physical line (``line 6``,
the header being line 1). The quarantine table uses the 0-based row index instead
(``row 4`` there is ``row 5`` here), as stated in :data:`capforecast.contracts.QUARANTINE_COLUMNS`.
"""

from __future__ import annotations

import glob
import re
import zoneinfo
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from capforecast.contracts import RAW_COLUMNS, RESOURCE_COLUMNS
from capforecast.errors import ConfigError, InputDataError

CSV_SUFFIXES = (".csv",)
PARQUET_SUFFIXES = (".parquet", ".pq")
SUPPORTED_SUFFIXES = CSV_SUFFIXES + PARQUET_SUFFIXES

LONG_COLUMNS = ("timestamp", "resource_id", "metric", "value")
SERIES_COLUMNS = ("timestamp", "value")
CATALOGUE_FIELDS = ("vcpu", "memory_gib", "hourly_price_usd")
UNASSIGNED_SERVICE = "unassigned"

# A timestamp string carries its own offset when a clock time is followed by Z or +hh[:mm].
# Anchoring on the clock time keeps a bare date such as "2014-05-14" from looking like "-14".
_OFFSET_RE = r"\d{1,2}:\d{2}(?::\d{2}(?:[.,]\d+)?)?\s*(?:[zZ]|[+-]\d{2}(?::?\d{2})?)$"
_GLOB_CHARS = re.compile(r"[*?\[]")


# --------------------------------------------------------------------------- listing files


def list_input_files(path: str | Path, *, exclude: Iterable[str | Path] = ()) -> list[Path]:
    """Input files named by ``data.path``: a directory or a glob pattern.

    A directory yields its ``*.csv``, ``*.parquet`` and ``*.pq`` files (not recursive, suffix
    case ignored, other files such as a README are not data and are skipped). A glob yields every
    file it matches; a match with an unsupported extension is an error rather than a silent skip,
    because the user named it. ``exclude`` removes files such as the resources table when it sits
    in the same directory. The result is sorted so partitions are stable across runs.
    """
    text = str(path)
    excluded = {Path(p).resolve() for p in exclude}
    root = Path(text).expanduser()
    if root.is_dir():
        files = [
            f for f in root.iterdir() if f.is_file() and f.suffix.lower() in SUPPORTED_SUFFIXES
        ]
    elif root.is_file():
        files = [root]
    elif _GLOB_CHARS.search(text):
        files = [Path(p) for p in glob.glob(str(root), recursive=True) if Path(p).is_file()]
    else:
        raise InputDataError(text, "no such file or directory (data.path)")
    files = sorted(f for f in files if f.resolve() not in excluded)
    for file in files:
        _check_suffix(file)
    if not files:
        raise InputDataError(
            text, f"no input files found (expected {', '.join(SUPPORTED_SUFFIXES)} files)"
        )
    return files


def partition_name(file: str | Path) -> str:
    """Partition name of one input file: its stem with every character outside [A-Za-z0-9_-]
    replaced by "_" (safe in paths and Snakemake wildcards)."""
    name = re.sub(r"[^A-Za-z0-9_-]", "_", Path(file).stem)
    return name or "_"


def partition_names(files: Iterable[str | Path]) -> dict[str, Path]:
    """Partition name -> file, raising when two files map to the same name
    (e.g. ``a b.csv`` and ``a_b.csv``, or ``x.csv`` and ``x.parquet``)."""
    names: dict[str, Path] = {}
    for file in map(Path, files):
        name = partition_name(file)
        if name in names:
            raise InputDataError(
                str(file),
                f"partition name '{name}' is also the name of {names[name]}; "
                "rename one of the two files",
            )
        names[name] = file
    return names


# --------------------------------------------------------------------------- reading tables


def _check_suffix(file: Path) -> None:
    if file.suffix.lower() not in SUPPORTED_SUFFIXES:
        shown = file.suffix or "(none)"
        raise InputDataError(
            str(file),
            f"unsupported extension '{shown}'; expected one of {', '.join(SUPPORTED_SUFFIXES)}",
        )


def _is_csv(file: Path) -> bool:
    return file.suffix.lower() in CSV_SUFFIXES


def _row_label(file: Path, index: int) -> str:
    """Where 0-based data row ``index`` is, for a message (CSV: also the physical line)."""
    return f"line {index + 2} of the file" if _is_csv(file) else f"0-based index {index}"


def _read_table(file: Path) -> pd.DataFrame:
    """Read a CSV (every cell as text, blanks as NaN) or parquet file; one-line errors for
    missing, empty, header-only, corrupt or unsupported files."""
    _check_suffix(file)
    if not file.is_file():
        raise InputDataError(str(file), "file not found")
    if file.stat().st_size == 0:
        raise InputDataError(str(file), "empty file (0 bytes)")
    if _is_csv(file):
        try:
            # Text first: numbers and timestamps are parsed afterwards so that a bad cell can be
            # reported with its row. Blank lines are kept (as empty rows) so that row numbers
            # match the file; trailing blank lines are not records and are trimmed below.
            table = pd.read_csv(
                file, dtype=str, skip_blank_lines=False, encoding="utf-8-sig", low_memory=False
            )
        except pd.errors.EmptyDataError:
            raise InputDataError(str(file), "empty file (no header line)") from None
        except (pd.errors.ParserError, UnicodeDecodeError) as err:
            detail = str(err).strip().splitlines()[0]
            raise InputDataError(str(file), f"not a readable CSV file: {detail}") from None
        filled = table.notna().any(axis=1).to_numpy()
        last = int(np.flatnonzero(filled)[-1]) + 1 if filled.any() else 0
        table = table.iloc[:last]
    else:
        try:
            table = pq.ParquetFile(file).read().to_pandas()
            if not isinstance(table.index, pd.RangeIndex):
                # pandas wrote a named index (e.g. timestamp) as metadata: make it a column again.
                table = table.reset_index()
        except (pa.ArrowInvalid, pa.ArrowException, OSError) as err:
            detail = str(err).strip().splitlines()[0]
            raise InputDataError(
                str(file), f"not a readable parquet file (corrupt or truncated): {detail}"
            ) from None
    if len(table) == 0:
        what = "header only" if _is_csv(file) else "zero rows"
        columns = ", ".join(map(str, table.columns))
        raise InputDataError(str(file), f"no data rows ({what}; columns: {columns})")
    return table.reset_index(drop=True)


def _normalise_columns(file: Path, table: pd.DataFrame) -> pd.DataFrame:
    """Match column names case- and space-insensitively ("Timestamp " -> "timestamp")."""
    renamed: dict[Any, str] = {}
    seen: dict[str, Any] = {}
    for col in table.columns:
        key = str(col).strip().lower()
        if key in seen:
            raise InputDataError(
                str(file), f"columns '{seen[key]}' and '{col}' have the same name", column=key
            )
        seen[key] = col
        renamed[col] = key
    return table.rename(columns=renamed)


def _missing_columns_error(
    file: Path, table: pd.DataFrame, missing: list[str], layout: str
) -> InputDataError:
    found = [str(c) for c in table.columns]
    problem = (
        f"missing required column(s) {', '.join(repr(m) for m in missing)} for the {layout}; "
        f"found columns: {', '.join(repr(c) for c in found)}"
    )
    if len(found) == 1 and any(sep in found[0] for sep in (";", "\t", "|")):
        sep = next(s for s in (";", "\t", "|") if s in found[0])
        problem += f" (the header contains {sep!r}: the delimiter looks wrong, expected ',')"
    return InputDataError(str(file), problem, column=missing[0])


def _choose_layout(file: Path, table: pd.DataFrame, fmt: str) -> str:
    """'long' or 'series' for this file, or an InputDataError naming the missing columns."""
    cols = set(table.columns)
    if fmt == "long" or (fmt == "auto" and {"resource_id", "metric"} & cols):
        missing = [c for c in LONG_COLUMNS if c not in cols]
        if missing:
            layout = "long format (timestamp, resource_id, metric, value)"
            raise _missing_columns_error(file, table, missing, layout)
        return "long"
    missing = [c for c in SERIES_COLUMNS if c not in cols]
    if missing:
        layout = (
            "series format (timestamp, value)"
            if fmt == "series"
            else "series format (timestamp, value) or the long format "
            "(timestamp, resource_id, metric, value)"
        )
        raise _missing_columns_error(file, table, missing, layout)
    return "series"


# --------------------------------------------------------------------------- cell parsing


def _parse_values(file: Path, column: pd.Series, name: str = "value") -> pd.Series:
    """Numbers as float64; empty cells stay NaN, any other non-numeric text is an error."""
    if pd.api.types.is_bool_dtype(column) or not (
        pd.api.types.is_numeric_dtype(column) or column.dtype == object
    ):
        raise InputDataError(str(file), f"expected numbers, found {column.dtype}", column=name)
    if pd.api.types.is_numeric_dtype(column):
        return column.astype("float64")
    text = column.astype("string").str.strip()
    blank = (text.isna() | (text == "")).fillna(True).to_numpy(dtype=bool)
    cells = np.where(blank, np.nan, column.to_numpy(dtype=object))
    try:
        # Python's float() parsing (what numpy uses for text) is exact to the last digit, unlike
        # pandas' fast text-to-number path; values must round-trip.
        return pd.Series(cells.astype("float64"), index=column.index)
    except (TypeError, ValueError):
        bad = pd.to_numeric(text, errors="coerce").isna().to_numpy(dtype=bool) & ~blank
    i = int(np.flatnonzero(bad)[0]) if bad.any() else int(np.flatnonzero(~blank)[0])
    raise InputDataError(
        str(file),
        f"non-numeric value {column.iloc[i]!r} ({_row_label(file, i)})",
        column=name,
        row=i + 1,
    )


def _timezone(name: str) -> str:
    try:
        zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise ConfigError(
            "data.naive_timezone", f"unknown timezone {name!r}; use an IANA name"
        ) from None
    return name


def _localise(file: Path, naive: pd.Series, tz: str, series_keys: pd.DataFrame | None) -> pd.Series:
    """Naive local times -> UTC. DST fall-back hours are resolved per series from the order of
    the samples; times that cannot exist or cannot be resolved are errors naming the row."""
    if tz == "UTC":
        return naive.dt.tz_localize("UTC")
    local = naive.dt.tz_localize(tz, ambiguous="NaT", nonexistent="NaT")
    unresolved = local.isna() & naive.notna()
    if not unresolved.any():
        return local.dt.tz_convert("UTC")
    # ambiguous=True settles every repeated hour, so what is still NaT never exists (spring DST).
    nonexistent = naive.dt.tz_localize(tz, ambiguous=True, nonexistent="NaT").isna() & unresolved
    if nonexistent.any():
        i = int(np.flatnonzero(nonexistent.to_numpy())[0])
        raise InputDataError(
            str(file),
            f"local time '{naive.iloc[i]}' does not exist in {tz} (DST change; "
            f"{_row_label(file, i)}); check data.naive_timezone",
            column="timestamp",
            row=i + 1,
        )
    groups = (
        [np.arange(len(naive))]
        if series_keys is None
        else list(series_keys.groupby(list(series_keys.columns), sort=False).indices.values())
    )
    resolved = local.copy()
    for positions in groups:
        if not unresolved.iloc[positions].any():
            continue
        part = naive.iloc[positions]
        try:
            resolved.iloc[positions] = part.dt.tz_localize(tz, ambiguous="infer").to_numpy()
        except Exception:  # pandas 2 raises pytz.AmbiguousTimeError, pandas 3 a ValueError
            i = int(positions[np.flatnonzero(unresolved.iloc[positions].to_numpy())[0]])
            raise InputDataError(
                str(file),
                f"local time '{naive.iloc[i]}' is ambiguous in {tz} (DST fall-back; "
                f"{_row_label(file, i)}) and the sample order does not resolve it; "
                "write timestamps with a UTC offset",
                column="timestamp",
                row=i + 1,
            ) from None
    return resolved.dt.tz_convert("UTC")


def _parse_timestamps(
    file: Path, column: pd.Series, tz: str, series_keys: pd.DataFrame | None
) -> pd.Series:
    """Timestamps as datetime64[ns, UTC]. Aware values are converted; naive ones are read as
    ``tz`` (data.naive_timezone). Empty cells stay NaT; anything unparseable is an error."""
    if isinstance(column.dtype, pd.DatetimeTZDtype):
        return column.dt.tz_convert("UTC").astype("datetime64[ns, UTC]")
    if pd.api.types.is_datetime64_dtype(column):
        naive = column.astype("datetime64[ns]")
        return _localise(file, naive, tz, series_keys).astype("datetime64[ns, UTC]")
    if column.dtype != object:
        raise InputDataError(
            str(file),
            f"expected ISO 8601 timestamps or a datetime column, found {column.dtype}",
            column="timestamp",
        )
    text = column.astype("string").str.strip()
    text = text.mask(text == "")
    aware = text.str.contains(_OFFSET_RE, regex=True).fillna(False).to_numpy(dtype=bool)
    parsed = pd.Series(pd.NaT, index=column.index, dtype="datetime64[ns, UTC]")
    if aware.any():
        # utc=True also handles a mix of offsets, e.g. across a DST change.
        parsed[aware] = pd.to_datetime(text[aware], utc=True, format="ISO8601", errors="coerce")
    if (~aware).any():
        naive = pd.to_datetime(text[~aware], format="ISO8601", errors="coerce")
        keys = None if series_keys is None else series_keys[~aware]
        parsed[~aware] = _localise(file, naive, tz, keys)
    bad = parsed.isna() & text.notna()
    if bad.any():
        i = int(np.flatnonzero(bad.to_numpy())[0])
        raise InputDataError(
            str(file),
            f"unparseable timestamp {column.iloc[i]!r} ({_row_label(file, i)}); "
            "expected ISO 8601 such as 2024-01-31 13:05:00 or 2024-01-31T13:05:00+02:00",
            column="timestamp",
            row=i + 1,
        )
    return parsed


def _text_column(column: pd.Series) -> pd.Series:
    """Identifiers as str (object dtype); empty cells become None so validation sees them.

    Identifiers repeat (a few thousand distinct ones in millions of rows), so the strings are
    cleaned once per distinct value and mapped back by code: ~10x faster than per row.
    """
    codes, uniques = pd.factorize(column, use_na_sentinel=True)
    if len(uniques) == 0:
        return pd.Series([None] * len(column), index=column.index, dtype=object)
    cleaned = pd.Series(uniques).astype("string").str.strip()
    present = (cleaned.notna() & (cleaned != "")).fillna(False).to_numpy(dtype=bool)
    values = np.where(present, cleaned.astype(object).to_numpy(), None)
    mapped = np.where(codes >= 0, values[np.clip(codes, 0, None)], None)
    return pd.Series(mapped, index=column.index, dtype=object)


def infer_metric(file: str | Path, data_cfg: Mapping[str, Any]) -> str:
    """Metric of a series-format file: ``data.metric`` or the first matching pattern."""
    if data_cfg.get("metric"):
        return str(data_cfg["metric"])
    stem = Path(file).stem
    for entry in data_cfg.get("metric_patterns") or []:
        if re.search(entry["pattern"], stem):
            return str(entry["metric"])
    raise InputDataError(
        str(file),
        f"cannot tell the metric of series file '{stem}': no data.metric_patterns regex matches "
        "its name; set data.metric or add a pattern",
    )


def read_input_file(file: str | Path, data_cfg: Mapping[str, Any]) -> pd.DataFrame:
    """Read one input file into the raw long format (contracts.RAW_COLUMNS), one row per file
    row, in file order.

    ``data_cfg`` is the validated config's ``data`` section (format, metric, metric_patterns,
    naive_timezone). Raises :class:`InputDataError` with one line naming the file, column and
    row for anything that cannot be read.
    """
    file = Path(file)
    tz = _timezone(str(data_cfg.get("naive_timezone") or "UTC"))
    fmt = str(data_cfg.get("format") or "auto")
    table = _normalise_columns(file, _read_table(file))
    layout = _choose_layout(file, table, fmt)
    if layout == "long":
        resource_id = _text_column(table["resource_id"])
        metric = _text_column(table["metric"])
        keys = pd.DataFrame({"r": resource_id.fillna(""), "m": metric.fillna("")})
    else:
        metric_name = infer_metric(file, data_cfg)
        resource_id = pd.Series(file.stem, index=table.index, dtype=object)
        metric = pd.Series(metric_name, index=table.index, dtype=object)
        keys = None
    raw = pd.DataFrame(
        {
            "timestamp": _parse_timestamps(file, table["timestamp"], tz, keys),
            "resource_id": resource_id,
            "metric": metric,
            "value": _parse_values(file, table["value"]),
        }
    )
    return raw.loc[:, list(RAW_COLUMNS)].reset_index(drop=True)


# --------------------------------------------------------------------------- resources


def read_resources_table(
    path: str | Path, catalogue: Mapping[str, Mapping[str, Any]]
) -> pd.DataFrame:
    """Read an optional resources table (CSV or parquet) into contracts.RESOURCE_COLUMNS.

    ``resource_id`` is required and unique. vcpu, memory_gib and hourly_price_usd that are absent
    (column or cell) are filled from ``catalogue`` via ``instance_type``; an instance type that
    is not in the catalogue is an error naming the row. A missing service is "unassigned";
    a missing region stays empty.
    """
    file = Path(path)
    table = _normalise_columns(file, _read_table(file))
    if "resource_id" not in table.columns:
        raise _missing_columns_error(file, table, ["resource_id"], "resources table")
    out = pd.DataFrame(index=table.index)
    out["resource_id"] = _text_column(table["resource_id"])
    missing_id = out["resource_id"].isna().to_numpy()
    if missing_id.any():
        i = int(np.flatnonzero(missing_id)[0])
        raise InputDataError(
            str(file), f"empty resource_id ({_row_label(file, i)})", column="resource_id", row=i + 1
        )
    dupes = out["resource_id"].duplicated().to_numpy()
    if dupes.any():
        i = int(np.flatnonzero(dupes)[0])
        raise InputDataError(
            str(file),
            f"resource_id {out['resource_id'].iloc[i]!r} appears twice ({_row_label(file, i)})",
            column="resource_id",
            row=i + 1,
        )
    for col in ("service", "instance_type", "region"):
        out[col] = _text_column(table[col]) if col in table.columns else None
    out["service"] = out["service"].where(out["service"].notna(), UNASSIGNED_SERVICE)

    known = out["instance_type"].isin(list(catalogue)) | out["instance_type"].isna()
    if not known.all():
        i = int(np.flatnonzero(~known.to_numpy())[0])
        raise InputDataError(
            str(file),
            f"instance type {out['instance_type'].iloc[i]!r} is not in the catalogue "
            f"({_row_label(file, i)}); add it to config 'catalogue' or fix the type; "
            f"known: {', '.join(sorted(catalogue))}",
            column="instance_type",
            row=i + 1,
        )
    for field in CATALOGUE_FIELDS:
        given = (
            _parse_values(file, table[field], field)
            if field in table.columns
            else pd.Series(np.nan, index=table.index)
        )
        lookup = out["instance_type"].map(
            lambda t, f=field: float(catalogue[t][f]) if isinstance(t, str) else np.nan
        )
        out[field] = given.fillna(lookup).astype("float64")
    return out.loc[:, list(RESOURCE_COLUMNS)].reset_index(drop=True)


def complete_resources(
    resources: pd.DataFrame | None, seen_resource_ids: Iterable[str]
) -> pd.DataFrame:
    """The resources table plus one row (service "unassigned", other fields empty) for every
    resource seen in the data but absent from the table, so later stages can join on it."""
    listed = [] if resources is None else list(resources["resource_id"])
    extra = sorted({str(r) for r in seen_resource_ids if r is not None} - set(listed))
    out = pd.DataFrame({"resource_id": pd.Series(listed + extra, dtype=object)})
    for col in RESOURCE_COLUMNS[1:]:
        given = [] if resources is None else list(resources[col])
        if col in CATALOGUE_FIELDS:
            out[col] = pd.to_numeric(pd.Series(given + [np.nan] * len(extra)), errors="coerce")
            out[col] = out[col].astype("float64")
        else:
            fill = UNASSIGNED_SERVICE if col == "service" else None
            column = pd.Series(given + [fill] * len(extra), dtype=object)
            out[col] = column.where(column.notna(), None)
    return out.loc[:, list(RESOURCE_COLUMNS)]
