"""Read local metric files (CSV or parquet) into the raw long format, keeping every row.

Two file layouts are understood:

* long: columns ``timestamp, resource_id, metric, value`` (any further columns are ignored);
* series: columns ``timestamp, value``, one series per file (NAB style); the resource id is the
  file stem and the metric comes from ``data.metric``, else from a metric name the stem spells
  out (``host7_CPUUtilization``), else from the first ``data.metric_patterns`` regex found in it.

Columns named differently are renamed first (``data.columns``). Timestamps may be ISO 8601 text,
datetime columns or epoch numbers (:mod:`capforecast.timestamps`). Metric names are mapped to the
canonical ones (:mod:`capforecast.metric_names`), and percentage series given on a 0-1 scale are
converted to percent (:mod:`capforecast.scale`); what was done to each series is returned next
to the rows (:class:`IngestResult`) and logged.

Row ``i`` of the returned frame is data row ``i`` of the file, so the quarantine written later
can point back to the source row. Rows are never dropped here: empty values and empty timestamps
stay as NaN / NaT and are quarantined by :mod:`capforecast.validate`.

Row numbers in error messages are 1-based *data* rows, as a user counts them below the header:
``row 5`` is the fifth record; for CSV files the message adds the physical line (``line 6``,
the header being line 1). The quarantine table uses the 0-based row index instead
(``row 4`` there is ``row 5`` here), as stated in :data:`capforecast.contracts.QUARANTINE_COLUMNS`.
"""

from __future__ import annotations

import functools
import glob
import logging
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from capforecast import scale, timestamps
from capforecast.contracts import INGEST_SERIES_COLUMNS, RAW_COLUMNS, RESOURCE_COLUMNS
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
from capforecast.validate import SeriesCodes

LOG = logging.getLogger(__name__)

CSV_SUFFIXES = (".csv",)
PARQUET_SUFFIXES = (".parquet", ".pq")
SUPPORTED_SUFFIXES = CSV_SUFFIXES + PARQUET_SUFFIXES

LONG_COLUMNS = ("timestamp", "resource_id", "metric", "value")
SERIES_COLUMNS = ("timestamp", "value")
CATALOGUE_FIELDS = ("vcpu", "memory_gib", "hourly_price_usd")
UNASSIGNED_SERVICE = "unassigned"
SHOWN_IN_LOG = 5  # series named in one log line before "..."

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
    return table.rename(columns=renamed)


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


def _text_codes(column: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """Identifiers as codes into their distinct cleaned names (stripped; -1 for empty cells).

    Identifiers repeat (a few thousand distinct ones in millions of rows), so the strings are
    cleaned once per distinct value and mapped back by code: ~10x faster than per row.
    """
    codes, uniques = pd.factorize(column, use_na_sentinel=True)
    cleaned = pd.Series(uniques, dtype=object).astype("string").str.strip()
    present = (cleaned.notna() & (cleaned != "")).fillna(False).to_numpy(dtype=bool)
    # Names that differ only by surrounding spaces become one name.
    merged, names = pd.factorize(cleaned.where(present).astype(object), use_na_sentinel=True)
    lookup = np.append(merged, -1)  # code -1 (empty cell) stays -1
    return lookup[codes].astype("int64"), np.asarray(names, dtype=object)


def _from_codes(codes: np.ndarray, names: np.ndarray, index: pd.Index) -> pd.Series:
    """Names per row (object dtype); None where the code is -1, so validation sees them."""
    values = np.append(names, None).astype(object)  # code -1 -> the appended None
    return pd.Series(values[codes], index=index, dtype=object)


def _text_column(column: pd.Series) -> pd.Series:
    """Identifiers as str (object dtype); empty cells become None so validation sees them."""
    return _from_codes(*_text_codes(column), column.index)


def infer_metric(
    file: str | Path, data_cfg: Mapping[str, Any], names: MetricNameMap | None = None
) -> MetricName:
    """Metric of a series-format file: ``data.metric``, else the metric name its stem spells
    out (a whole-token match with the metric-name map), else the first matching
    ``data.metric_patterns`` regex; every result goes through the metric-name map."""
    names = names or MetricNameMap.from_config(data_cfg)
    if data_cfg.get("metric"):
        return names.lookup(str(data_cfg["metric"]))
    stem = Path(file).stem
    spelled = names.from_stem(stem)
    if spelled is not None:
        return spelled
    for entry in data_cfg.get("metric_patterns") or []:
        if re.search(entry["pattern"], stem):
            found = names.lookup(str(entry["metric"]))
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
    file: Path, row_pairs: np.ndarray, pairs: np.ndarray, canonical: np.ndarray, labels: np.ndarray
) -> InputDataError | None:
    """Two source names of one resource meaning the same metric (CPUUtilization and
    cpu_usage_active, say) would be merged into one series silently: an error naming both.

    ``pairs`` are the distinct (resource, source name) codes as ``r * n_sources + s``,
    ``row_pairs`` the same code per row (-1 without a resource or name)."""
    r_code, s_code = np.divmod(pairs, max(len(labels), 1))
    found = pd.DataFrame({"r": r_code, "c": canonical[s_code], "pair": pairs})
    clash = found[found.duplicated(["r", "c"], keep=False)]
    if clash.empty:
        return None
    first = clash[clash["r"] == clash["r"].iloc[0]]
    rows = sorted(int(np.flatnonzero(row_pairs == pair)[0]) for pair in first["pair"][:2])
    a, b = (labels[row_pairs[row] % max(len(labels), 1)] for row in rows)
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
    naming: pd.DataFrame  # resource_id, metric, source_metric, name_match, declared_scale


def _resolve_long_metrics(
    file: Path, names: MetricNameMap, resource: pd.Series, metric: pd.Series
) -> _LongMetrics:
    """Resolve every distinct metric name once, check that no resource has two names for one
    metric, and build the rows' series codes and the per-series naming table."""
    r_code, r_names = _text_codes(resource)
    s_code, labels = _text_codes(metric)
    resolved = [names.lookup(str(label)) for label in labels]
    canonical = np.array([r.metric for r in resolved], dtype=object)
    n_src = max(len(labels), 1)
    row_pairs = np.where((r_code >= 0) & (s_code >= 0), r_code * n_src + s_code, -1)
    pairs = np.sort(pd.unique(row_pairs[row_pairs >= 0]))
    error = _conflict_error(file, row_pairs, pairs, canonical, labels)
    if error is not None:
        raise error
    m_of_source, m_names = pd.factorize(canonical)
    m_code = np.where(s_code >= 0, np.append(m_of_source, -1)[s_code], -1)
    pair_r, pair_s = np.divmod(pairs, n_src)
    naming = pd.DataFrame(
        {
            "resource_id": r_names[pair_r],
            "metric": canonical[pair_s],
            "source_metric": labels[pair_s],
            "name_match": [resolved[i].match for i in pair_s],
            "declared_scale": [resolved[i].scale for i in pair_s],
        }
    )
    codes = SeriesCodes.from_codes(r_code, r_names, m_code, np.asarray(m_names, dtype=object))
    return _LongMetrics(codes, naming)


def _series_table(
    raw: pd.DataFrame,
    naming: pd.DataFrame,
    etl_cfg: Mapping[str, Any] | None,
    codes: SeriesCodes | None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Scale decisions (when ``etl_cfg`` is given) applied to ``raw``, and the per-series
    ingest table (contracts.INGEST_SERIES_COLUMNS)."""
    keys = ["resource_id", "metric"]
    if etl_cfg is None:
        decided = naming[keys].assign(scale="", scale_evidence="", rows_rescaled=0)
    else:
        decided, rows = scale.decide_scales(raw, naming, etl_cfg, codes)
        raw = scale.rescale(raw, rows)
    table = naming.drop(columns="declared_scale").merge(decided, on=keys, how="left")
    table["rows_rescaled"] = table["rows_rescaled"].fillna(0).astype("int64")
    return raw, table.loc[:, list(INGEST_SERIES_COLUMNS)].reset_index(drop=True)


def ingest_file(
    file: str | Path,
    data_cfg: Mapping[str, Any],
    etl_cfg: Mapping[str, Any] | None = None,
) -> IngestResult:
    """Read one input file into the raw long format, one row per file row, in file order.

    ``data_cfg`` is the validated config's ``data`` section (format, columns, metric,
    metric_patterns, metric_names, naive_timezone, timestamp_unit). ``etl_cfg`` (the ``etl``
    section: percent_metrics, fraction_scale) turns on the 0-1 scale
    check; without it values are kept as they are. Raises :class:`InputDataError` with one line
    naming the file, column and row for anything that cannot be read.
    """
    file = Path(file)
    tz = timestamps.check_timezone(str(data_cfg["naive_timezone"]))
    names = MetricNameMap.from_config(data_cfg)
    table = _normalise_columns(file, _read_table(file))
    table = _map_columns(file, table, data_cfg.get("columns") or {})
    layout = _choose_layout(file, table, str(data_cfg["format"]))
    if layout == "long":
        long = _resolve_long_metrics(file, names, table["resource_id"], table["metric"])
        codes: SeriesCodes | None = long.codes
        naming = long.naming
        resource_id = _from_codes(codes.row_resource, codes.resource_names, table.index)
        metric = _from_codes(codes.row_metric, codes.metric_names, table.index)
        keys = pd.DataFrame({"r": resource_id.fillna(""), "m": metric.fillna("")})
    else:
        codes = None
        resource_id = pd.Series(file.stem, index=table.index, dtype=object)
        found = infer_metric(file, data_cfg, names)
        metric = pd.Series(found.metric, index=table.index, dtype=object)
        source = str(data_cfg.get("metric") or file.stem)
        naming = pd.DataFrame(
            [[file.stem, found.metric, source, found.match, found.scale]],
            columns=["resource_id", "metric", "source_metric", "name_match", "declared_scale"],
        )
        keys = None
    parsed = timestamps.parse_timestamps(
        file,
        functools.partial(_row_label, file),
        table["timestamp"],
        tz=tz,
        unit=str(data_cfg["timestamp_unit"]),
        series_keys=keys,
    )
    raw = pd.DataFrame(
        {
            "timestamp": parsed,
            "resource_id": resource_id,
            "metric": metric,
            "value": _parse_values(file, table["value"]),
        }
    ).loc[:, list(RAW_COLUMNS)]
    raw, series = _series_table(raw.reset_index(drop=True), naming, etl_cfg, codes)
    log_series_notes(file, series)
    return IngestResult(raw=raw, series=series)


def read_input_file(
    file: str | Path,
    data_cfg: Mapping[str, Any],
    etl_cfg: Mapping[str, Any] | None = None,
) -> pd.DataFrame:
    """The raw rows of :func:`ingest_file` (contracts.RAW_COLUMNS)."""
    return ingest_file(file, data_cfg, etl_cfg).raw


def _listed(frame: pd.DataFrame) -> str:
    shown = [f"{r} {m}" for r, m in zip(frame["resource_id"], frame["metric"], strict=True)]
    more = len(shown) - SHOWN_IN_LOG
    return ", ".join(shown[:SHOWN_IN_LOG]) + (f", ... (+{more})" if more > 0 else "")


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
