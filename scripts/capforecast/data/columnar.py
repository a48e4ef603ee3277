"""Vectorised helpers the data stage shares: identifier columns as categoricals, codes without
sorting, series order without a sort when rows arrive grouped.

A raw partition of ten million rows repeats a few thousand resource ids and a handful of metric
names. Held as Python strings, every pass over them (hashing, sorting, grouping, copying) costs
more than all the numeric checks together, so the data stage carries them as pandas categoricals
(integer codes into the distinct names) between ingest and resampling, and turns them back into
plain strings where a table leaves the stage: on disk the raw partition, the quarantine and the
clean data keep their string columns (:func:`write_parquet`), and :func:`read_parquet` reads
such columns back as categoricals.

Rows usually arrive grouped by series and in time order; the checks for that are one pass, and
only rows that are not get sorted.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

NAT = np.iinfo("int64").min  # int64 view of NaT
ID_COLUMNS: tuple[str, ...] = ("resource_id", "metric")
# Bincount-based distinct codes when the code space is at most this many times the rows (plus a
# floor): beyond that a sort is cheaper than the counting array.
_DENSE_FACTOR = 4
_DENSE_FLOOR = 1 << 20

# --------------------------------------------------------------------------- categoricals


def is_categorical(column: pd.Series) -> bool:
    return isinstance(column.dtype, pd.CategoricalDtype)


def text_categorical(codes: np.ndarray, names: np.ndarray) -> pd.Categorical:
    """A categorical of ``names`` (distinct str) from codes into them (-1 = missing)."""
    return pd.Categorical.from_codes(
        codes, categories=pd.Index(names, dtype=object), validate=False
    )


def present_categories(column: pd.Series) -> np.ndarray:
    """The categories of a categorical column that some row holds."""
    codes = column.cat.codes.to_numpy()
    used = np.zeros(len(column.cat.categories) + 1, dtype=bool)  # the last entry: code -1
    used[codes] = True
    return np.asarray(column.cat.categories, dtype=object)[used[:-1]]


def sorted_text_categorical(codes: np.ndarray, names: np.ndarray) -> pd.Categorical:
    """:func:`text_categorical` with the categories sorted (as Python sorts str), which is what
    :func:`category_codes` reads without remapping."""
    order = np.argsort(names, kind="stable")
    if is_sorted(order):
        return text_categorical(codes, names)
    rank = np.empty(len(names) + 1, dtype="int64")
    rank[order] = np.arange(len(names))
    rank[-1] = -1  # code -1 (missing) stays -1
    return text_categorical(rank[codes], names[order])


def object_values(column: pd.Series) -> np.ndarray:
    """The cells of an identifier column as an object array, None where missing (what pyarrow
    gives for a string column read without dictionaries)."""
    if not is_categorical(column):
        return column.to_numpy(dtype=object)
    names = np.asarray(column.cat.categories, dtype=object)
    return np.append(names, None)[column.cat.codes.to_numpy()]


def as_object_columns(frame: pd.DataFrame, columns: Iterable[str]) -> pd.DataFrame:
    """``frame`` with the categorical ones of ``columns`` as object columns (None if missing)."""
    out = frame
    for col in columns:
        if is_categorical(frame[col]):
            if out is frame:
                out = frame.copy(deep=False)
            out[col] = pd.Series(object_values(frame[col]), index=frame.index, dtype=object)
    return out


def category_codes(column: pd.Series) -> tuple[np.ndarray, np.ndarray] | None:
    """(codes, names) of a categorical text column whose categories are all str: names sorted
    as Python sorts str (possibly with some no row uses), codes into them in a small integer
    dtype, -1 where missing; None for any other column. Sorted categories
    (:func:`sorted_categories`) are read as they are, without a pass over the rows."""
    if not is_categorical(column):
        return None
    categories = column.cat.categories
    names = np.asarray(categories, dtype=object)
    if not all(isinstance(name, str) for name in names):
        return None
    codes = column.cat.codes.to_numpy()
    if categories.is_monotonic_increasing:
        return codes, names
    order = np.argsort(names, kind="stable")
    lookup = np.empty(len(names) + 1, dtype=codes.dtype)
    lookup[order] = np.arange(len(names))
    lookup[-1] = -1  # code -1 (missing) stays -1
    return lookup[codes], names[order]


def sorted_categories(column: pd.Series) -> pd.Series:
    """A categorical text column with its categories sorted, so that :func:`category_codes`
    has nothing to remap; any other column as it is."""
    if not is_categorical(column) or column.cat.categories.is_monotonic_increasing:
        return column
    factorised = category_codes(column)
    if factorised is None:
        return column
    return pd.Series(text_categorical(*factorised), index=column.index, name=column.name)


# --------------------------------------------------------------------------- timestamps


def utc_nanoseconds(stamps: pd.Series) -> np.ndarray | None:
    """int64 ns since the epoch of a datetime64[ns, tz] column without a copy (NaT = NAT), or
    None for other dtypes."""
    dtype = stamps.dtype
    if isinstance(dtype, pd.DatetimeTZDtype) and dtype.unit == "ns":
        return stamps.array.asi8
    return None


def utc_timestamps(ns: np.ndarray) -> pd.DatetimeIndex:
    """datetime64[ns, UTC] values from int64 ns (far cheaper than pd.to_datetime(unit="ns")),
    never sharing memory with ``ns``."""
    ns = np.asarray(ns, dtype="int64")
    out = pd.DatetimeIndex(ns.view("M8[ns]")).tz_localize("UTC")
    if np.may_share_memory(out.asi8, ns):
        out = out.copy()
    return out


# --------------------------------------------------------------------------- codes


def small_codes(codes: np.ndarray, n_names: int) -> np.ndarray:
    """Codes into ``n_names`` names (-1 = missing) in the smallest signed integer dtype that
    holds them: passes over a few million int8/int16 codes cost a fraction of int64 ones."""
    for dtype in ("int8", "int16", "int32"):
        if n_names <= np.iinfo(dtype).max:
            return codes.astype(dtype, copy=False)
    return codes.astype("int64", copy=False)


def recode(lookup: np.ndarray, codes: np.ndarray) -> np.ndarray:
    """``lookup[codes]`` (``lookup`` ends with the entry for code -1), without the pass over the
    rows when ``lookup`` maps every code to itself."""
    if lookup[-1] == -1 and np.array_equal(lookup[:-1], np.arange(len(lookup) - 1)):
        return codes
    return lookup[codes]


def is_sorted(values: np.ndarray) -> bool:
    """True when ``values`` never decrease."""
    return bool(len(values) < 2 or (values[1:] >= values[:-1]).all())


def run_starts(values: np.ndarray) -> np.ndarray:
    """Positions where a run of equal values starts."""
    if len(values) == 0:
        return np.zeros(0, dtype="int64")
    new = np.empty(len(values), dtype=bool)
    new[0] = True
    np.not_equal(values[1:], values[:-1], out=new[1:])
    return np.flatnonzero(new)


def distinct(codes: np.ndarray, size: int | None = None) -> np.ndarray:
    """The distinct values of non-negative integer ``codes`` in ascending order (np.unique),
    by counting when the code space (``size``, else max + 1) is small."""
    if len(codes) == 0:
        return np.zeros(0, dtype="int64")
    if is_sorted(codes):
        return codes[run_starts(codes)].astype("int64", copy=False)
    size = int(codes.max()) + 1 if size is None else size
    if size <= _DENSE_FACTOR * len(codes) + _DENSE_FLOOR:
        return np.flatnonzero(np.bincount(codes, minlength=size))
    return np.unique(codes).astype("int64", copy=False)


def code_counts(codes: np.ndarray, size: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The distinct non-negative integer ``codes`` in ascending order and how often each
    occurs (np.unique(codes, return_counts=True)), without a sort when the codes are sorted or
    their space (``size``, else max + 1) is small."""
    if len(codes) == 0:
        return np.zeros(0, dtype="int64"), np.zeros(0, dtype="int64")
    if is_sorted(codes):
        starts = run_starts(codes)
        return codes[starts].astype("int64", copy=False), np.diff(np.append(starts, len(codes)))
    size = int(codes.max()) + 1 if size is None else size
    if size <= _DENSE_FACTOR * len(codes) + _DENSE_FLOOR:
        counts = np.bincount(codes, minlength=size)
        present = np.flatnonzero(counts)
        return present, counts[present]
    present, counts = np.unique(codes, return_counts=True)
    return present.astype("int64", copy=False), counts


def count_in(codes: np.ndarray, present: np.ndarray, size: int | None = None) -> np.ndarray:
    """How often each of the sorted distinct codes ``present`` occurs in ``codes`` (all of
    which are among them)."""
    if len(codes) == 0:
        return np.zeros(len(present), dtype="int64")
    size = int(present[-1]) + 1 if size is None else size
    if size <= _DENSE_FACTOR * len(codes) + _DENSE_FLOOR:
        return np.bincount(codes, minlength=size)[present]
    return np.bincount(np.searchsorted(present, codes), minlength=len(present))


def first_appearance(codes: np.ndarray) -> np.ndarray:
    """Distinct values of ``codes`` in the order they first appear (pd.unique), hashing only
    the starts of runs of equal values."""
    if len(codes) == 0:
        return np.asarray(codes)
    return pd.unique(codes[run_starts(codes)])


# --------------------------------------------------------------------------- series order


def group_order(code: np.ndarray) -> np.ndarray | None:
    """A stable permutation that groups equal codes in ascending order (rows of a series keep
    their file order), or None when ``code`` is already sorted."""
    if is_sorted(code):
        return None
    if len(code) and code.min() >= 0 and code.max() < 1 << 16:
        return np.argsort(code.astype("uint16"), kind="stable")  # radix sort
    return np.argsort(code, kind="stable")


def within_group_sorted(code: np.ndarray, ts: np.ndarray) -> bool:
    """True when ``ts`` never decreases inside runs of equal ``code`` (rows grouped by code)."""
    if len(code) < 2:
        return True
    back = np.flatnonzero(ts[1:] < ts[:-1])  # usually none: one pass
    return bool((code[back + 1] != code[back]).all())


def series_time_order(code: np.ndarray, ts: np.ndarray) -> np.ndarray | None:
    """np.lexsort((ts, code)) (stable: equal keys keep their order), or None when the rows are
    already in that order. Rows grouped by series in time order, or in time order across
    series, need at most one radix sort of the codes."""
    order = group_order(code)
    if order is None:
        if within_group_sorted(code, ts):
            return None
        return np.lexsort((ts, code))
    if within_group_sorted(code[order], ts[order]):
        return order
    return np.lexsort((ts, code))


# --------------------------------------------------------------------------- parquet


def read_parquet(
    path: str | Path,
    categorical: Sequence[str] = ID_COLUMNS,
    columns: Sequence[str] | None = None,
) -> pd.DataFrame:
    """A parquet file (its ``columns``, default all) as pandas, the string columns named in
    ``categorical`` as categoricals with sorted categories (read dictionary-encoded: no Python
    string per row)."""
    schema = pq.read_schema(path)
    names = list(schema.names)
    wanted = [
        name
        for name in categorical
        if names.count(name) == 1
        and (columns is None or name in columns)
        and (
            pa.types.is_string(schema.field(name).type)
            or pa.types.is_large_string(schema.field(name).type)
        )
    ]
    table = pq.read_table(
        path, columns=None if columns is None else list(columns), read_dictionary=wanted or None
    )
    frame = table.to_pandas(split_blocks=True)
    for name in wanted:
        frame[name] = sorted_categories(frame[name])
    return frame


def write_parquet(frame: pd.DataFrame, path: str | Path) -> None:
    """``frame.to_parquet(path, index=False)`` with its categorical text columns written as
    the plain string columns (and pandas metadata) an object column of the same strings gives,
    converted by pyarrow rather than through Python strings."""
    text = [
        col
        for col in frame.columns
        if is_categorical(frame[col])
        and len(frame[col].cat.categories) > 0
        and all(isinstance(name, str) for name in frame[col].cat.categories)
    ]
    other = [col for col in frame.columns if is_categorical(frame[col]) and col not in text]
    if not text:
        as_object_columns(frame, other).to_parquet(path, index=False)
        return
    frame = as_object_columns(frame, other)
    table = pa.Table.from_pandas(frame, preserve_index=False)
    meta = json.loads(table.schema.metadata[b"pandas"])
    for entry in meta["columns"]:
        if entry["name"] in text:
            entry.update(pandas_type="unicode", numpy_type="object", metadata=None)
    columns = [
        table.column(name).cast(pa.string()) if name in text else table.column(name)
        for name in table.column_names
    ]
    fields = [
        pa.field(name, pa.string()) if name in text else table.schema.field(name)
        for name in table.column_names
    ]
    schema = pa.schema(fields, metadata={**table.schema.metadata, b"pandas": json.dumps(meta)})
    pq.write_table(pa.Table.from_arrays(columns, schema=schema), path, compression="snappy")
