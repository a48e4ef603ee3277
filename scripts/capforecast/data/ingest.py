"""Read local metric files (CSV or parquet) into the raw long format, keeping every row.

Two file layouts are understood:

* long: columns ``timestamp, resource_id, metric, value`` (any further columns are ignored);
* series: columns ``timestamp, value``, one series per file (NAB style); the resource id is the
  file stem and the metric comes from ``data.metric``, else from a metric name the stem spells
  out (``host7_CPUUtilization``), else from the first ``data.metric_patterns`` regex found in it.

Columns named differently are renamed first (``data.columns``). Timestamps may be ISO 8601 text,
datetime columns or epoch numbers (:mod:`capforecast.timestamps`). Metric names are mapped to the
canonical ones (:mod:`capforecast.metric_names`), and percentage series given on a 0-1 scale are
converted to percent (:mod:`capforecast.data.scale`); what was done to each series is returned next
to the rows (:class:`IngestResult`) and logged.

Row ``i`` of the returned frame is data row ``i`` of the file, so the quarantine written later
can point back to the source row. Rows are never dropped here: empty values and empty timestamps
stay as NaN / NaT and are quarantined by :mod:`capforecast.data.validate`.

Row numbers in error messages are 1-based *data* rows, as a user counts them below the header:
``row 5`` is the fifth record; for CSV files the message adds the physical line (``line 6``,
the header being line 1). The quarantine table uses the 0-based row index instead
(``row 4`` there is ``row 5`` here), as stated in :data:`capforecast.contracts.QUARANTINE_COLUMNS`.
"""

from __future__ import annotations

import functools
import glob
import io
import logging
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from capforecast import timestamps
from capforecast.contracts import INGEST_SERIES_COLUMNS, RESOURCE_TABLE_COLUMNS
from capforecast.data import capacity, columnar, scale
from capforecast.data.validate import SeriesCodes
from capforecast.errors import InputDataError
from capforecast.metric_names import (
    MATCH_CANONICAL,
    MATCH_PATTERN,
    MATCH_UNKNOWN,
    SCALE_FRACTION,
    MetricName,
    MetricNameMap,
    counter_hint,
)
from capforecast.settings import DataSettings, EtlSettings

LOG = logging.getLogger(__name__)

# Compressed CSV (name.csv.gz, name.csv.zst) is read through pyarrow's codec of that name.
CSV_COMPRESSIONS: dict[str, str | None] = {
    ".csv": None,
    ".csv.gz": "gzip",
    ".csv.zst": "zstd",
    ".csv.zstd": "zstd",
}
CSV_SUFFIXES = tuple(CSV_COMPRESSIONS)
PARQUET_SUFFIXES = (".parquet", ".pq")
SUPPORTED_SUFFIXES = CSV_SUFFIXES + PARQUET_SUFFIXES
# Cells that mean "no value" in the timestamp and value columns (pandas' default NA strings).
# Identifier columns never get this treatment: "NA", "null" or "None" there is a name.
MISSING_TOKENS: frozenset[str] = frozenset(
    {
        "#N/A",
        "#N/A N/A",
        "#NA",
        "-1.#IND",
        "-1.#QNAN",
        "-NaN",
        "-nan",
        "1.#IND",
        "1.#QNAN",
        "<NA>",
        "N/A",
        "NA",
        "NULL",
        "NaN",
        "None",
        "n/a",
        "nan",
        "null",
    }
)

LONG_COLUMNS = ("timestamp", "resource_id", "metric", "value")
SERIES_COLUMNS = ("timestamp", "value")
CATALOGUE_FIELDS = ("vcpu", "memory_gib", "hourly_price_usd")
UNASSIGNED_SERVICE = "unassigned"
SHOWN_IN_LOG = 5  # series named in one log line before "..."

_GLOB_CHARS = re.compile(r"[*?\[]")
_SUFFIXES_LONGEST_FIRST = sorted(SUPPORTED_SUFFIXES, key=len, reverse=True)


# --------------------------------------------------------------------------- listing files


def data_suffix(file: str | Path) -> str | None:
    """The data suffix of a file name (``.csv``, ``.csv.gz``, ``.parquet``, ...; case ignored),
    or None when the file is not one the workflow reads."""
    name = Path(file).name.lower()
    return next((s for s in _SUFFIXES_LONGEST_FIRST if name.endswith(s)), None)


def data_stem(file: str | Path) -> str:
    """The file name without its data suffix (``host1_cpu.csv.gz`` -> ``host1_cpu``)."""
    name = Path(file).name
    suffix = data_suffix(file)
    return name[: len(name) - len(suffix)] if suffix else Path(file).stem


@dataclass(frozen=True)
class InputListing:
    """What ``data.path`` names: the files to read, and every other entry with the reason it
    is not read (``contracts.SKIPPED_FILE_COLUMNS``: file, reason), so nothing is left out
    without a word."""

    files: list[Path]
    skipped: list[tuple[str, str]]


def _skip_reason(entry: Path, excluded: set[Path], named: bool) -> str | None:
    """Why ``entry`` is not a metrics file to read (None: read it). ``named``: the user named
    it (a file or a glob match), so an unsupported extension is an error, not a skip."""
    if entry.resolve() in excluded:
        return "the resources table (data.resources), read as such"
    if entry.is_dir():
        return "a directory: data.path is not searched recursively (a glob such as dir/**/*.csv is)"
    if not entry.is_file():
        return "not a regular file"
    if not named and entry.name.startswith("."):
        return "hidden file (its name starts with '.')"
    if data_suffix(entry) is None:
        if named:
            _check_suffix(entry)
        shown = "".join(entry.suffixes[-2:]) or "(none)"
        return f"unsupported extension '{shown}' (read: {', '.join(SUPPORTED_SUFFIXES)})"
    return None


def scan_input_files(path: str | Path, *, exclude: Iterable[str | Path] = ()) -> InputListing:
    """Input files named by ``data.path`` (a directory, a file or a glob pattern), and the
    entries that are not read, with the reason.

    A directory yields its CSV (plain, ``.csv.gz``, ``.csv.zst``) and parquet (``.parquet``,
    ``.pq``) files, suffix case ignored, not recursively; its other entries (a README, a hidden
    file, a subdirectory) are listed as skipped. A glob yields every file it matches; a match
    with an unsupported extension is an error rather than a skip, because the user named it.
    ``exclude`` names files such as the resources table when it sits in the same directory.
    Both lists are sorted so partitions are stable across runs.
    """
    text = str(path)
    excluded = {Path(p).resolve() for p in exclude}
    root = Path(text).expanduser()
    if root.is_dir():
        entries, named = list(root.iterdir()), False
    elif root.is_file():
        entries, named = [root], True
    elif _GLOB_CHARS.search(text):
        entries, named = [Path(p) for p in glob.glob(str(root), recursive=True)], True
    else:
        raise InputDataError(text, "no such file or directory (data.path)")
    files: list[Path] = []
    skipped: list[tuple[str, str]] = []
    for entry in sorted(entries):
        reason = _skip_reason(entry, excluded, named)
        if reason is None:
            files.append(entry)
        else:
            skipped.append((str(entry), reason))
    if not files:
        shown = "; ".join(f"{Path(f).name}: {r}" for f, r in skipped[:SHOWN_IN_LOG])
        raise InputDataError(
            text,
            f"no input files found (expected {', '.join(SUPPORTED_SUFFIXES)} files)"
            + (f"; not read: {shown}" if shown else ""),
        )
    return InputListing(files, skipped)


def list_input_files(path: str | Path, *, exclude: Iterable[str | Path] = ()) -> list[Path]:
    """The files :func:`scan_input_files` reads."""
    return scan_input_files(path, exclude=exclude).files


# --------------------------------------------------------------------------- reading tables


def _check_suffix(file: Path) -> None:
    if data_suffix(file) is None:
        shown = "".join(file.suffixes[-2:]) or "(none)"
        raise InputDataError(
            str(file),
            f"unsupported extension '{shown}'; expected one of {', '.join(SUPPORTED_SUFFIXES)}",
        )


def _is_csv(file: Path) -> bool:
    return data_suffix(file) in CSV_COMPRESSIONS


def _row_label(file: Path, index: int) -> str:
    """Where 0-based data row ``index`` is, for a message (CSV: also the physical line)."""
    return f"line {index + 2} of the file" if _is_csv(file) else f"0-based index {index}"


def _csv_bytes(file: Path) -> bytes:
    """The text of a CSV file, decompressed (``.csv.gz``, ``.csv.zst``), checked for NUL bytes."""
    codec = CSV_COMPRESSIONS[str(data_suffix(file))]
    try:
        with pa.input_stream(str(file), compression=codec) as stream:
            data = stream.read()
    except (pa.ArrowException, OSError) as err:
        detail = str(err).strip().splitlines()[0]
        raise InputDataError(
            str(file), f"not a readable {codec} file (corrupt or truncated): {detail}"
        ) from None
    if not data:
        raise InputDataError(str(file), "empty file (0 bytes)")
    _check_no_nul(file, data)
    return data


def _check_no_nul(file: Path, data: bytes) -> None:
    """A NUL byte is never text: CSV parsers end the cell at it (``vm\\x001`` would be read as
    ``vm``, merging series and cutting values), so it is an error naming its line and column."""
    at = data.find(b"\x00")
    if at < 0:
        return
    if data[:2] in (b"\xff\xfe", b"\xfe\xff"):
        raise InputDataError(str(file), "UTF-16 text; save the file as UTF-8")
    line_start = data.rfind(b"\n", 0, at) + 1
    line = data.count(b"\n", 0, at) + 1
    header = data.split(b"\n", 1)[0].decode("utf-8-sig", "replace")
    names = [name.strip().strip('"') for name in header.split(",")]
    field = data.count(b",", line_start, at)
    # The column is named only when counting commas finds it (no quoted cell before it).
    plain = b'"' not in data[line_start:at]
    column = names[field] if line > 1 and plain and field < len(names) else None
    raise InputDataError(
        str(file),
        f"NUL byte (\\x00) on line {line} of the file: a text file has none (binary or "
        "corrupt?) and a CSV reader would cut the cell short at it; remove the NUL bytes",
        column=column,
        row=line - 1 if line > 1 else None,
    )


def _read_table(
    file: Path, categorical: Callable[[list[str]], list[str]] | None = None
) -> pd.DataFrame:
    """Read a CSV (every cell as text, only blank cells missing) or parquet file; one-line
    errors for missing, empty, header-only, corrupt or unsupported files.

    ``categorical``: given a parquet file's column names, those of its string columns to read
    as pandas categoricals (dictionary-encoded: no Python string per row).
    """
    _check_suffix(file)
    if not file.is_file():
        raise InputDataError(str(file), "file not found")
    if file.stat().st_size == 0:
        raise InputDataError(str(file), "empty file (0 bytes)")
    if _is_csv(file):
        data = _csv_bytes(file)
        try:
            # Text first: numbers and timestamps are parsed afterwards so that a bad cell can be
            # reported with its row. No NA inference: an id "NA" or "null" is a name (the
            # timestamp and value columns treat MISSING_TOKENS as blank later). Blank lines are
            # kept (as empty rows) so that row numbers match the file; trailing blank lines are
            # not records and are trimmed below.
            table = pd.read_csv(
                io.BytesIO(data),
                dtype=str,
                keep_default_na=False,
                na_values=[""],
                skip_blank_lines=False,
                encoding="utf-8-sig",
                low_memory=False,
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
            parquet = pq.ParquetFile(file)
            schema = parquet.schema_arrow
            text = [
                name
                for name in (categorical(list(schema.names)) if categorical else [])
                if schema.names.count(name) == 1
                and (
                    pa.types.is_string(schema.field(name).type)
                    or pa.types.is_large_string(schema.field(name).type)
                )
            ]
            if text:
                parquet = pq.ParquetFile(file, read_dictionary=text)
            # split_blocks + self_destruct: columns are handed over one by one (zero-copy
            # where pyarrow can), so the read and the frame never both hold every column.
            table = parquet.read().to_pandas(split_blocks=True, self_destruct=True)
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
    if table.index.equals(pd.RangeIndex(len(table))):
        return table
    return table.reset_index(drop=True)


def _renamed(table: pd.DataFrame, names: Mapping[Any, str]) -> pd.DataFrame:
    """``table`` with columns renamed (``names``: old -> new), without copying its data."""
    out = table.copy(deep=False)
    out.columns = [names.get(col, col) for col in table.columns]
    return out


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
    return _renamed(table, renamed)


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
    else:
        problem += " (columns named differently can be mapped with data.columns)"
    return InputDataError(str(file), problem, column=missing[0])


def _map_columns(file: Path, table: pd.DataFrame, columns: Mapping[str, str]) -> pd.DataFrame:
    """Rename the columns ``data.columns`` names ({timestamp: ts, value: val, ...}) to the
    contract's names; matched like every column, ignoring case and surrounding spaces."""
    renamed: dict[str, str] = {}
    for target, source in columns.items():
        key = str(source).strip().lower()
        if key not in table.columns:
            found = ", ".join(repr(str(c)) for c in table.columns)
            raise InputDataError(
                str(file),
                f"column '{source}' named by data.columns.{target} not found; "
                f"found columns: {found}",
                column=str(source),
            )
        renamed[key] = target
    for key, target in renamed.items():
        if target in table.columns and target not in renamed:
            raise InputDataError(
                str(file),
                f"column '{target}' is there as well as '{key}' (data.columns.{target}); "
                "rename one of them",
                column=target,
            )
    return _renamed(table, renamed)


def _identifier_columns(data: DataSettings) -> Callable[[list[str]], list[str]]:
    """Which of a file's columns become resource_id or metric (matched like every column,
    then renamed by ``data.columns``): the ones worth reading as categoricals."""
    columns = data.columns or {}
    targets = {str(source).strip().lower(): target for target, source in columns.items()}

    def identifiers(columns: list[str]) -> list[str]:
        return [
            col
            for col in columns
            if targets.get(str(col).strip().lower(), str(col).strip().lower())
            in ("resource_id", "metric")
        ]

    return identifiers


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
        return column.astype("float64", copy=False)  # the table read is ingest's own
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


def _distinct_cells(column: pd.Series) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The distinct present cells of a column in the order they first appear (``uniques``) and
    where each row's cell is: ``uniques[to_unique[codes[i]]]``, missing where that is -1
    (``to_unique`` ends with -1, the entry of code -1). A categorical column (read
    dictionary-encoded) is not hashed row by row."""
    if columnar.is_categorical(column) and all(
        isinstance(name, str) for name in column.cat.categories
    ):
        codes = column.cat.codes.to_numpy()
        seen = columnar.first_appearance(codes)
        seen = seen[seen >= 0]
        to_unique = np.full(len(column.cat.categories) + 1, -1, dtype="int64")
        to_unique[seen] = np.arange(len(seen))
        return codes, np.asarray(column.cat.categories, dtype=object)[seen], to_unique
    codes, uniques = pd.factorize(column, use_na_sentinel=True)
    uniques = np.asarray(uniques, dtype=object)
    return codes, uniques, np.append(np.arange(len(uniques)), -1)


def _text_codes(
    column: pd.Series, distinct: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Identifiers as codes into their distinct cleaned names (stripped; -1 for empty cells).

    Identifiers repeat (a few thousand distinct ones in millions of rows), so the strings are
    cleaned once per distinct value and mapped back by code, much faster than per row (the
    README's "Whole workflow and ETL" table). ``distinct``: :func:`_distinct_cells` of the
    column, when the caller has it.
    """
    codes, uniques, to_unique = _distinct_cells(column) if distinct is None else distinct
    cleaned = pd.Series(uniques, dtype=object).astype("string").str.strip()
    present = (cleaned.notna() & (cleaned != "")).fillna(False).to_numpy(dtype=bool)
    # Names that differ only by surrounding spaces become one name.
    merged, names = pd.factorize(cleaned.where(present).astype(object), use_na_sentinel=True)
    lookup = np.append(merged, -1)[to_unique]  # code -1 (empty cell) stays -1
    codes = columnar.recode(columnar.small_codes(lookup, len(names)), codes)
    return codes, np.asarray(names, dtype=object)


def _untrimmed_spellings(uniques: Iterable[Any]) -> dict[str, list[str]]:
    """Name -> the spellings with surrounding whitespace that :func:`_text_codes` read as it
    (``"vm1 "`` and ``" vm1"`` are ``vm1``: a repair that is counted, never a silent merge).
    ``uniques``: the column's distinct present cells in the order they first appear."""
    spellings: dict[str, list[str]] = {}
    for raw in uniques:
        text = str(raw)
        name = text.strip()
        if name and text != name:
            spellings.setdefault(name, []).append(text)
    return spellings


def _check_identifiers(file: Path, column: str, codes: np.ndarray, names: np.ndarray) -> None:
    """Identifiers (parquet strings may hold anything) with a NUL byte are an error naming the
    first row: every CSV reader downstream would cut them short there, merging two series."""
    bad = np.flatnonzero(["\x00" in str(name) for name in names])
    if len(bad):
        row = int(np.flatnonzero(np.isin(codes, bad))[0])
        raise InputDataError(
            str(file),
            f"identifier {names[bad[0]]!r} contains a NUL byte (\\x00) ({_row_label(file, row)}); "
            "CSV readers cut it short there, merging it with another: remove the NUL bytes",
            column=column,
            row=row + 1,
        )


def _blank_missing_tokens(column: pd.Series) -> pd.Series:
    """Text cells spelling "no value" (MISSING_TOKENS: NA, null, NaN, ...) as NaN, for columns
    that hold timestamps or numbers; identifier columns keep such text as a name."""
    if column.dtype != object and not pd.api.types.is_string_dtype(column):
        return column
    return column.mask(column.isin(MISSING_TOKENS).to_numpy(dtype=bool))


def _from_codes(codes: np.ndarray, names: np.ndarray, index: pd.Index) -> pd.Series:
    """Names per row (object dtype); None where the code is -1, so validation sees them."""
    values = np.append(names, None).astype(object)  # code -1 -> the appended None
    return pd.Series(values[codes], index=index, dtype=object)


def _text_column(column: pd.Series) -> pd.Series:
    """Identifiers as str (object dtype); empty cells become None so validation sees them."""
    return _from_codes(*_text_codes(column), column.index)


def infer_metric(
    file: str | Path, data: DataSettings, names: MetricNameMap | None = None
) -> MetricName:
    """Metric of a series-format file: ``data.metric``, else the metric name its stem spells
    out (a whole-token match with the metric-name map), else the first matching
    ``data.metric_patterns`` regex; every result goes through the metric-name map."""
    names = names or MetricNameMap(data.metric_names)
    if data.metric:
        return names.lookup(str(data.metric))
    stem = data_stem(file)
    spelled = names.from_stem(stem)
    if spelled is not None:
        return spelled
    for entry in data.metric_patterns or ():
        if re.search(entry.pattern, stem):
            found = names.lookup(entry.metric)
            if found.match == MATCH_UNKNOWN:
                return found
            return MetricName(found.metric, MATCH_PATTERN, found.scale)
    raise InputDataError(
        str(file),
        f"cannot tell the metric of series file '{stem}': no metric name in it and no "
        "data.metric_patterns regex matches it; set data.metric or add a pattern",
    )


@dataclass
class IngestResult:
    """One input file in the raw long format, and what ingest did to each of its series.

    raw: contracts.RAW_COLUMNS, row i = data row i of the file; canonical metric names,
        percentages on the 0-100 scale.
    series: contracts.INGEST_SERIES_COLUMNS, one row per (resource_id, metric) with a
        resource id and a metric (rows without one belong to no series).
    """

    raw: pd.DataFrame
    series: pd.DataFrame


def _conflict_error(
    file: Path,
    row_resource: np.ndarray,
    row_source: np.ndarray,
    pairs: np.ndarray,
    canonical: np.ndarray,
    labels: np.ndarray,
) -> InputDataError | None:
    """Two source names of one resource meaning the same metric (CPUUtilization and
    cpu_usage_active, say) would be merged into one series silently: an error naming both.

    ``pairs`` are the distinct (resource, source name) codes as ``r * n_sources + s``,
    ``row_resource`` and ``row_source`` the codes per row (-1 where missing)."""
    r_code, s_code = np.divmod(pairs, max(len(labels), 1))
    found = pd.DataFrame({"r": r_code, "c": canonical[s_code], "pair": pairs})
    clash = found[found.duplicated(["r", "c"], keep=False)]
    if clash.empty:
        return None
    first = clash[clash["r"] == clash["r"].iloc[0]]
    rows = sorted(
        int(np.flatnonzero((row_resource == r) & (row_source == s))[0])
        for r, s in (divmod(int(pair), max(len(labels), 1)) for pair in first["pair"][:2])
    )
    a, b = (labels[row_source[row]] for row in rows)
    return InputDataError(
        str(file),
        f"metric names {a!r} ({_row_label(file, rows[0])}) and {b!r} "
        f"({_row_label(file, rows[1])}) both mean '{first['c'].iloc[0]}' for the same "
        "resource; keep one, or map one to another name in data.metric_names",
        column="metric",
        row=rows[1] + 1,
    )


@dataclass
class _LongMetrics:
    """Long-format naming: canonical metric codes per row and the per-series naming table."""

    codes: SeriesCodes
    # resource_id, metric, source_metric, name_match, declared_scale, ids_trimmed
    naming: pd.DataFrame
    trimmed: dict[str, list[str]]  # name -> its spellings with surrounding whitespace


def _resolve_long_metrics(
    file: Path, names: MetricNameMap, resource: pd.Series, metric: pd.Series
) -> _LongMetrics:
    """Resolve every distinct metric name once, check that no resource has two names for one
    metric, and build the rows' series codes and the per-series naming table."""
    resource_cells, metric_cells = _distinct_cells(resource), _distinct_cells(metric)
    r_code, r_names = _text_codes(resource, resource_cells)
    s_code, labels = _text_codes(metric, metric_cells)
    _check_identifiers(file, "resource_id", r_code, r_names)
    _check_identifiers(file, "metric", s_code, labels)
    resolved = [names.lookup(str(label)) for label in labels]
    canonical = np.array([r.metric for r in resolved], dtype=object)
    n_src = max(len(labels), 1)
    # Every distinct (resource, source name) pair starts a run of equal pairs: only the rows
    # where either code changes are looked at.
    change = np.ones(len(r_code), dtype=bool)
    change[1:] = (r_code[1:] != r_code[:-1]) | (s_code[1:] != s_code[:-1])
    r_at, s_at = r_code[change], s_code[change]
    keyed_at = (r_at >= 0) & (s_at >= 0)
    pairs = columnar.distinct(
        r_at[keyed_at].astype("int64") * n_src + s_at[keyed_at], len(r_names) * n_src
    )
    error = _conflict_error(file, r_code, s_code, pairs, canonical, labels)
    if error is not None:
        raise error
    m_of_source, m_names = pd.factorize(canonical)
    # Canonical metric code per row; code -1 (no name) stays -1.
    m_code = columnar.recode(columnar.small_codes(np.append(m_of_source, -1), len(m_names)), s_code)
    pair_r, pair_s = np.divmod(pairs, n_src)
    trimmed_ids = _untrimmed_spellings(resource_cells[1])
    trimmed_metrics = _untrimmed_spellings(metric_cells[1])
    naming = pd.DataFrame(
        {
            "resource_id": r_names[pair_r],
            "metric": canonical[pair_s],
            "source_metric": labels[pair_s],
            "name_match": [resolved[i].match for i in pair_s],
            "declared_scale": [resolved[i].scale for i in pair_s],
        }
    )
    naming["ids_trimmed"] = naming["resource_id"].isin(list(trimmed_ids)) | naming[
        "source_metric"
    ].isin(list(trimmed_metrics))
    codes = SeriesCodes.from_codes(r_code, r_names, m_code, np.asarray(m_names, dtype=object))
    return _LongMetrics(codes, naming, {**trimmed_metrics, **trimmed_ids})


def _series_table(
    raw: pd.DataFrame,
    naming: pd.DataFrame,
    etl: EtlSettings | None,
    codes: SeriesCodes | None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Scale decisions (when ``etl`` is given) applied to ``raw``, and the per-series
    ingest table (contracts.INGEST_SERIES_COLUMNS)."""
    keys = ["resource_id", "metric"]
    if etl is None:
        decided = naming[keys].assign(scale="", scale_evidence="", rows_rescaled=0)
    else:
        decided, rows = scale.decide_scales(raw, naming, etl, codes)
        raw = scale.rescale(raw, rows)
    table = naming.drop(columns="declared_scale").merge(decided, on=keys, how="left")
    table["rows_rescaled"] = table["rows_rescaled"].fillna(0).astype("int64")
    return raw, table.loc[:, list(INGEST_SERIES_COLUMNS)].reset_index(drop=True)


def ingest_file(
    file: str | Path,
    data: DataSettings,
    etl: EtlSettings | None = None,
) -> IngestResult:
    """Read one input file into the raw long format, one row per file row, in file order.

    ``data`` are the ``data`` settings (format, columns, metric, metric_patterns, metric_names,
    naive_timezone, timestamp_unit). ``etl`` (the ``etl``
    settings: percent_metrics, fraction_scale, the timestamp window) turns on the 0-1 scale
    check; without it values are kept as they are. Raises :class:`InputDataError` with one line
    naming the file, column and row for anything that cannot be read.
    """
    file = Path(file)
    tz = timestamps.check_timezone(str(data.naive_timezone))
    names = MetricNameMap(data.metric_names)
    table = _normalise_columns(file, _read_table(file, _identifier_columns(data)))
    table = _map_columns(file, table, data.columns or {})
    layout = _choose_layout(file, table, str(data.format))
    for column in ("timestamp", "value"):
        cells = table[column]
        blanked = _blank_missing_tokens(cells)
        if blanked is not cells:  # text columns only: assigning copies the column
            table[column] = blanked
    stem = data_stem(file)
    if layout == "long":
        long = _resolve_long_metrics(file, names, table["resource_id"], table["metric"])
        codes: SeriesCodes | None = long.codes
        naming = long.naming
        trimmed = long.trimmed
        resource_id = columnar.sorted_text_categorical(codes.row_resource, codes.resource_names)
        metric = columnar.sorted_text_categorical(codes.row_metric, codes.metric_names)
        # Series keys for resolving DST fall-back hours per series: codes stand for the names
        # (-1 for a missing one). Only naive times outside UTC need them.
        keys = (
            None
            if tz == "UTC"
            else pd.DataFrame({"r": codes.row_resource, "m": codes.row_metric}, index=table.index)
        )
    else:
        codes = None
        single = np.zeros(len(table), dtype="int8")
        resource_id = columnar.text_categorical(single, np.array([stem], dtype=object))
        found = infer_metric(file, data, names)
        metric = columnar.text_categorical(single, np.array([found.metric], dtype=object))
        source = str(data.metric or stem)
        naming = pd.DataFrame(
            [[stem, found.metric, source, found.match, found.scale]],
            columns=["resource_id", "metric", "source_metric", "name_match", "declared_scale"],
        ).assign(ids_trimmed=False)
        trimmed = {}
        keys = None
    parsed = timestamps.parse_timestamps(
        file,
        functools.partial(_row_label, file),
        table["timestamp"],
        tz=tz,
        unit=str(data.timestamp_unit),
        series_keys=keys,
    )
    raw = pd.DataFrame(
        {
            "timestamp": parsed,
            "resource_id": resource_id,
            "metric": metric,
            "value": _parse_values(file, table["value"]),
        },
        copy=False,
    )
    raw, series = _series_table(raw, naming, etl, codes)
    log_series_notes(file, series)
    _log_trimmed(file, trimmed)
    return IngestResult(raw=raw, series=series)


def _log_trimmed(file: Path, trimmed: Mapping[str, list[str]]) -> None:
    """One warning for identifiers read without their surrounding whitespace."""
    if not trimmed:
        return
    shown = [
        f"{spelling!r} -> {name!r}"
        for name, spellings in sorted(trimmed.items())
        for spelling in spellings
    ]
    LOG.warning(
        "%s: %d identifiers had surrounding whitespace, removed (names that differ only by it "
        "are one name; quality flag id_whitespace_trimmed): %s",
        file,
        len(shown),
        _shown(shown),
    )


def read_input_file(
    file: str | Path,
    data: DataSettings,
    etl: EtlSettings | None = None,
) -> pd.DataFrame:
    """The raw rows of :func:`ingest_file` (contracts.RAW_COLUMNS)."""
    return ingest_file(file, data, etl).raw


def _listed(frame: pd.DataFrame) -> str:
    return _shown([f"{r} {m}" for r, m in zip(frame["resource_id"], frame["metric"], strict=True)])


def _shown(items: list[str]) -> str:
    """The first SHOWN_IN_LOG items, comma-joined, and how many more there are."""
    more = len(items) - SHOWN_IN_LOG
    return ", ".join(items[:SHOWN_IN_LOG]) + (f", ... (+{more})" if more > 0 else "")


def log_series_notes(file: Path, series: pd.DataFrame) -> None:
    """What ingest changed or could not decide, one log line per kind (WARNING where a user
    should look: unknown names, rescaled series, 0-1 series read as percent)."""
    mapped = series[~series["name_match"].isin([MATCH_UNKNOWN, MATCH_CANONICAL])]
    pairs = sorted(set(zip(mapped["source_metric"], mapped["metric"], strict=True)))
    if pairs:
        LOG.info("%s: metric names mapped: %s", file, ", ".join(f"{s} -> {m}" for s, m in pairs))
    unknown = series[series["name_match"] == MATCH_UNKNOWN]
    for (source, metric), group in unknown.groupby(["source_metric", "metric"], sort=True):
        LOG.warning(
            "%s: metric %r is neither a canonical nor a mapped metric name; kept as %r "
            "(%d series)%s. Unless risk.thresholds names it, it is forecast with no thresholds "
            "(unclassified_metric); map it in data.metric_names",
            file,
            source,
            metric,
            len(group),
            counter_hint(metric),
        )
    converted = series[series["scale"] == SCALE_FRACTION]
    if len(converted):
        LOG.warning(
            "%s: %d series given on a 0-1 scale, converted to percent x100 (%d values; "
            "fraction_scale_converted): %s",
            file,
            len(converted),
            int(converted["rows_rescaled"].sum()),
            _listed(converted),
        )
    ambiguous = series[series["scale"] == scale.AMBIGUOUS]
    if len(ambiguous):
        LOG.warning(
            "%s: %d percentage series stay within 0-1 with no other evidence of their scale "
            "and are read as percent (idle?; fraction_scale_ambiguous): %s. If they are "
            "fractions, set etl.fraction_scale: always or a scale in data.metric_names",
            file,
            len(ambiguous),
            _listed(ambiguous),
        )


# --------------------------------------------------------------------------- resources


def read_resources_table(
    path: str | Path, catalogue: Mapping[str, Mapping[str, Any]]
) -> pd.DataFrame:
    """Read an optional resources table (CSV or parquet) into
    contracts.RESOURCE_TABLE_COLUMNS.

    ``resource_id`` is required and unique. vcpu, memory_gib and hourly_price_usd that are absent
    (column or cell) are filled from ``catalogue`` via ``instance_type``; an instance type that
    is not in the catalogue is an error naming the row. A missing service is "unassigned";
    a missing region stays empty. ``capacity_issue`` says which resources cannot be sized
    (:mod:`capforecast.data.capacity`: 0 vCPU, no memory size, ...); they are logged and the run
    goes on without right-sizing or planning them.
    """
    file = Path(path)
    table = _normalise_columns(file, _read_table(file))
    if "resource_id" not in table.columns:
        raise _missing_columns_error(file, table, ["resource_id"], "resources table")
    out = pd.DataFrame(index=table.index)
    id_codes, ids = _text_codes(table["resource_id"])
    _check_identifiers(file, "resource_id", id_codes, ids)
    out["resource_id"] = _from_codes(id_codes, ids, table.index)
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
    # "N/A" is no instance type (unless the catalogue has one of that name); service and
    # region keep such text as a name.
    no_type = out["instance_type"].isin(MISSING_TOKENS - set(catalogue)).to_numpy(dtype=bool)
    out["instance_type"] = out["instance_type"].where(~no_type, None)

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
            _parse_values(file, _blank_missing_tokens(table[field]), field)
            if field in table.columns
            else pd.Series(np.nan, index=table.index)
        )
        lookup = out["instance_type"].map(
            lambda t, f=field: float(catalogue[t][f]) if isinstance(t, str) else np.nan
        )
        out[field] = given.fillna(lookup).astype("float64")
    out["capacity_issue"] = capacity.capacity_issues(out)
    _log_capacity_issues(file, out)
    return out.loc[:, list(RESOURCE_TABLE_COLUMNS)].reset_index(drop=True)


def _log_capacity_issues(file: Path, table: pd.DataFrame) -> None:
    """One WARNING per capacity issue, naming its resources and their rows."""
    for code, what in (
        (capacity.CAPACITY_IMPOSSIBLE, "a vCPU or memory size of 0 or less, or infinite"),
        (capacity.CAPACITY_UNKNOWN, "no vCPU or memory size and no catalogued instance type"),
    ):
        rows = np.flatnonzero((table["capacity_issue"] == code).to_numpy(dtype=bool))
        if not len(rows):
            continue
        shown = ", ".join(
            f"{table['resource_id'].iloc[i]!r} ({_row_label(file, int(i))})"
            for i in rows[:SHOWN_IN_LOG]
        )
        more = f", ... (+{len(rows) - SHOWN_IN_LOG})" if len(rows) > SHOWN_IN_LOG else ""
        LOG.warning(
            "%s: %d resource(s) with %s: %s%s; they get no right-sizing and no capacity plan "
            "(quality flag and reason code %s)",
            file,
            len(rows),
            what,
            shown,
            more,
            code,
        )


def complete_resources(
    resources: pd.DataFrame | None, seen_resource_ids: Iterable[str]
) -> pd.DataFrame:
    """The resources table (contracts.RESOURCE_TABLE_COLUMNS) plus one row (service
    "unassigned", other fields empty) for every resource seen in the data but absent from the
    table, so later stages can join on it."""
    listed = [] if resources is None else list(resources["resource_id"])
    extra = sorted({str(r) for r in seen_resource_ids if r is not None} - set(listed))
    out = pd.DataFrame({"resource_id": pd.Series(listed + extra, dtype=object)})
    for col in RESOURCE_TABLE_COLUMNS[1:]:
        if resources is None:
            given = []
        else:
            given = list(resources[col]) if col in resources.columns else [None] * len(listed)
        if col in CATALOGUE_FIELDS:
            out[col] = pd.to_numeric(pd.Series(given + [np.nan] * len(extra)), errors="coerce")
            out[col] = out[col].astype("float64")
        else:
            fill = UNASSIGNED_SERVICE if col == "service" else None
            column = pd.Series(given + [fill] * len(extra), dtype=object)
            out[col] = column.where(column.notna(), None)
    return out.loc[:, list(RESOURCE_TABLE_COLUMNS)]
