"""Timestamp cells -> datetime64[ns, UTC]: ISO 8601 text, datetime columns, epoch numbers.

``data.timestamp_unit`` says how to read numbers: ``auto`` (numbers are epoch times whose unit
is told by their magnitude; text is ISO 8601), ``s``/``ms``/``us``/``ns`` (numbers, or text
holding numbers, in that unit) or ``iso`` (text only). Datetime columns (parquet) are read as
they are under every setting. Epoch times are UTC by definition; naive ISO times are read in
``data.naive_timezone``.

Errors name the file, the column and the first offending row; ``where(i)`` describes 0-based
data row ``i`` (CSV line or parquet index), as :mod:`capforecast.data.ingest` counts rows.

Instants pandas cannot hold (``datetime64[ns]`` spans 1677-09-21 .. 2262-04-11), written as
well-formed dates (``9999-12-31``, ``0001-01-01``), epoch numbers or wide parquet datetimes, are
read as the nearest instant it can hold (``UNREPRESENTABLE_LOW`` / ``_HIGH``): the raw partition
keeps one row per input row and validation quarantines them as outside the plausible window
(``etl.timestamp_min`` .. ``etl.timestamp_max``, see :func:`timestamp_window`). A column none of
whose timestamps pandas can hold is an error (the unit or the column is wrong, not a few rows).
"""

from __future__ import annotations

import datetime
import zoneinfo
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from capforecast.errors import ConfigError, InputDataError

COLUMN = "timestamp"
UNIT_AUTO = "auto"
UNIT_ISO = "iso"
# Nanoseconds per unit of an epoch number.
EPOCH_UNITS: dict[str, int] = {"s": 10**9, "ms": 10**6, "us": 10**3, "ns": 1}
# Epoch numbers are told apart by magnitude: a unit is plausible when it puts the instant in
# [1990, 2100). The four ranges are 1000x apart and never overlap, so a value fits at most one.
PLAUSIBLE_START_NS = pd.Timestamp("1990-01-01", tz="UTC").value
PLAUSIBLE_END_NS = pd.Timestamp("2100-01-01", tz="UTC").value

# A timestamp string carries its own offset when a clock time is followed by Z or +hh[:mm].
# Anchoring on the clock time keeps a bare date such as "2014-05-14" from looking like "-14".
_OFFSET_RE = r"\d{1,2}:\d{2}(?::\d{2}(?:[.,]\d+)?)?\s*(?:[zZ]|[+-]\d{2}(?::?\d{2})?)$"
_NUMBER_RE = r"^[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?$"
_ISO_EXAMPLE = "expected ISO 8601 such as 2024-01-31 13:05:00 or 2024-01-31T13:05:00+02:00"
# Stand-ins for instants before / after what datetime64[ns] holds (whole seconds inside it).
UNREPRESENTABLE_LOW = pd.Timestamp.min.ceil("s").tz_localize("UTC")
UNREPRESENTABLE_HIGH = pd.Timestamp.max.floor("s").tz_localize("UTC")
_RANGE_TEXT = f"{UNREPRESENTABLE_LOW:%Y-%m-%d} .. {UNREPRESENTABLE_HIGH:%Y-%m-%d}"
WINDOW_KEYS = ("timestamp_min", "timestamp_max")
UTC_NS = pd.DatetimeTZDtype("ns", "UTC")

Where = Callable[[int], str]


def check_timezone(name: str) -> str:
    try:
        zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise ConfigError(
            "data.naive_timezone", f"unknown timezone {name!r}; use an IANA name"
        ) from None
    return name


def _error(file: Path, problem: str, row: int | None = None) -> InputDataError:
    return InputDataError(str(file), problem, column=COLUMN, row=None if row is None else row + 1)


def timestamp_window(timestamp_min: Any, timestamp_max: Any) -> tuple[pd.Timestamp, pd.Timestamp]:
    """``etl.timestamp_min`` and ``etl.timestamp_max`` as UTC instants (naive text is UTC).

    ConfigError names the key when a bound is no instant, lies beyond what pandas can hold or
    the two are out of order. Both bounds are inside the unrepresentable stand-ins, so rows read
    as those are always outside the window.
    """
    bounds = []
    for key, value in zip(WINDOW_KEYS, (timestamp_min, timestamp_max), strict=True):
        try:
            stamp = pd.Timestamp(value)
        except (ValueError, TypeError, OverflowError):
            raise ConfigError(
                f"etl.{key}",
                f"{value!r} is not an ISO 8601 instant pandas can hold ({_RANGE_TEXT}), "
                "e.g. 2000-01-01T00:00:00Z",
            ) from None
        if pd.isna(stamp):
            raise ConfigError(f"etl.{key}", f"{value!r} is not an instant")
        stamp = stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")
        if not UNREPRESENTABLE_LOW < stamp < UNREPRESENTABLE_HIGH:
            raise ConfigError(f"etl.{key}", f"{value!r} is outside {_RANGE_TEXT}")
        bounds.append(stamp)
    low, high = bounds
    if low >= high:
        raise ConfigError("etl.timestamp_max", f"{timestamp_max!r} is not after etl.timestamp_min")
    return low, high


def _direction_beyond_range(cell: Any) -> int:
    """-1 / +1 when ``cell`` is a well-formed ISO 8601 date before / after what pandas holds,
    else 0 (text that is no date at all, or a date pandas could hold)."""
    try:
        moment = datetime.datetime.fromisoformat(str(cell))
    except ValueError:
        return 0
    if moment.tzinfo is not None:
        try:
            moment = moment.astimezone(datetime.UTC).replace(tzinfo=None)
        except OverflowError:  # year 1 or 9999 with an offset: beyond range all the same
            moment = moment.replace(tzinfo=None)
    if moment < UNREPRESENTABLE_LOW.tz_localize(None).to_pydatetime():
        return -1
    if moment > UNREPRESENTABLE_HIGH.tz_localize(None).to_pydatetime():
        return 1
    return 0


def _fill_beyond_range(
    file: Path, where: Where, column: pd.Series, parsed: pd.Series, beyond: np.ndarray
) -> pd.Series:
    """``parsed`` with the stand-ins where ``beyond`` is -1 / +1; an error naming the first row
    when no present timestamp of the column is one pandas can hold."""
    if not beyond.any():
        return parsed
    present = column.notna().to_numpy()
    if not (present & (beyond == 0)).any():
        i = int(np.flatnonzero(beyond)[0])
        raise _error(
            file,
            f"timestamp {column.iloc[i]!r} ({where(i)}) is outside {_RANGE_TEXT}, and so is "
            "every other timestamp of the column; check the column and data.timestamp_unit",
            i,
        )
    out = parsed.copy()
    out[beyond < 0] = UNREPRESENTABLE_LOW
    out[beyond > 0] = UNREPRESENTABLE_HIGH
    return out


def _datetime_beyond_range(column: pd.Series) -> np.ndarray:
    """-1 / +1 per cell of a datetime column (any resolution) before / after what ns holds."""
    values = column.dt.tz_convert("UTC").dt.tz_localize(None) if column.dt.tz else column
    # Compared in whole seconds: casting microseconds of year 9999 to ns would overflow.
    stamps = values.to_numpy().astype("datetime64[s]")
    low = np.datetime64(UNREPRESENTABLE_LOW.tz_localize(None), "s")
    high = np.datetime64(UNREPRESENTABLE_HIGH.tz_localize(None), "s")
    return np.where(stamps < low, -1, np.where(stamps > high, 1, 0))


def _datetime_column(
    file: Path, where: Where, column: pd.Series, tz: str, series_keys: pd.DataFrame | None
) -> pd.Series:
    """A datetime column (any resolution; naive ones in ``tz``) as datetime64[ns, UTC]."""
    aware = isinstance(column.dtype, pd.DatetimeTZDtype)
    unit = column.dtype.unit if aware else np.datetime_data(column.dtype)[0]
    if unit == "ns":
        # Every ns instant is one pandas holds: only those before UNREPRESENTABLE_LOW (a whole
        # second) are read as it. The usual column has none and needs no conversion pass.
        ns = column.array.asi8
        if not ((ns < UNREPRESENTABLE_LOW.value) & (ns != np.iinfo("int64").min)).any():
            if aware:
                if column.dtype == UTC_NS:
                    return column
                utc = column.array.tz_convert("UTC")
            elif tz == "UTC":
                utc = column.array.tz_localize("UTC")
            else:
                utc = None
            if utc is not None:
                return pd.Series(utc, index=column.index, name=column.name, copy=False)
    beyond = _datetime_beyond_range(column)
    inside = column.mask(beyond != 0)
    if isinstance(column.dtype, pd.DatetimeTZDtype):
        parsed = inside.dt.tz_convert("UTC").astype("datetime64[ns, UTC]")
    else:
        naive = inside.astype("datetime64[ns]")
        parsed = _localise(file, where, naive, tz, series_keys).astype("datetime64[ns, UTC]")
    return _fill_beyond_range(file, where, column, parsed, beyond)


def _localise(
    file: Path, where: Where, naive: pd.Series, tz: str, series_keys: pd.DataFrame | None
) -> pd.Series:
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
        raise _error(
            file,
            f"local time '{naive.iloc[i]}' does not exist in {tz} (DST change; "
            f"{where(i)}); check data.naive_timezone",
            i,
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
            raise _error(
                file,
                f"local time '{naive.iloc[i]}' is ambiguous in {tz} (DST fall-back; "
                f"{where(i)}) and the sample order does not resolve it; "
                "write timestamps with a UTC offset",
                i,
            ) from None
    return resolved.dt.tz_convert("UTC")


def _parse_iso(
    file: Path,
    where: Where,
    column: pd.Series,
    text: pd.Series,
    tz: str,
    series_keys: pd.DataFrame | None,
) -> pd.Series:
    aware = text.str.contains(_OFFSET_RE, regex=True).fillna(False).to_numpy(dtype=bool)
    parsed = pd.Series(pd.NaT, index=column.index, dtype="datetime64[ns, UTC]")
    if aware.any():
        # utc=True also handles a mix of offsets, e.g. across a DST change.
        parsed[aware] = pd.to_datetime(text[aware], utc=True, format="ISO8601", errors="coerce")
    if (~aware).any():
        naive = pd.to_datetime(text[~aware], format="ISO8601", errors="coerce")
        keys = None if series_keys is None else series_keys[~aware]
        parsed[~aware] = _localise(file, where, naive, tz, keys)
    bad = (parsed.isna() & text.notna()).to_numpy()
    beyond = np.zeros(len(text), dtype="int8")
    if bad.any():
        # A well-formed date pandas cannot hold (9999-12-31) is a value to quarantine, not a
        # format error; what is still unread after that is.
        beyond[bad] = [_direction_beyond_range(cell) for cell in text[bad]]
        unreadable = bad & (beyond == 0)
        if unreadable.any():
            i = int(np.flatnonzero(unreadable)[0])
            problem = f"unparseable timestamp {column.iloc[i]!r} ({where(i)}); {_ISO_EXAMPLE}"
            raise _error(file, problem, i)
    return _fill_beyond_range(file, where, text, parsed, beyond)


def _epoch_unit(file: Path, where: Where, numbers: np.ndarray, present: np.ndarray) -> str:
    """The unit of the first number that lands in [1990, 2100) in some unit; an error naming
    the row when no number does, or when one lands there only in another unit.

    A number that fits no unit (0 from an unset clock, a stray counter) is read in the column's
    unit: it is an implausible instant, which validation quarantines, not a reason to stop.
    """
    rows = np.flatnonzero(present)
    fits = {
        unit: (numbers[rows] * per >= PLAUSIBLE_START_NS) & (numbers[rows] * per < PLAUSIBLE_END_NS)
        for unit, per in EPOCH_UNITS.items()
    }
    fits_some = np.logical_or.reduce(list(fits.values()))
    if not fits_some.any():
        i = int(rows[0])
        raise _error(
            file,
            f"number {numbers[i]:.15g} is not an epoch time in s, ms, us or ns between 1990 and "
            f"2100 ({where(i)}); set data.timestamp_unit (or iso for dates written as numbers)",
            i,
        )
    first = int(np.flatnonzero(fits_some)[0])
    unit = next(u for u, ok in fits.items() if ok[first])
    other_unit = fits_some & ~fits[unit]
    if other_unit.any():
        at = int(np.flatnonzero(other_unit)[0])
        i = int(rows[at])
        other = next(u for u, ok in fits.items() if ok[at])
        raise _error(
            file,
            f"epoch time {numbers[i]:.15g} ({where(i)}) looks like epoch {other}, but row "
            f"{int(rows[first]) + 1} is epoch {unit}; one unit per column (set "
            "data.timestamp_unit to force one)",
            i,
        )
    return unit


def _epoch_numbers(cells: pd.Series) -> tuple[np.ndarray, np.ndarray | None]:
    """Numbers of a numeric column or of numeric text: float64 (NaN where missing) and, when
    every present number is an integer, the exact int64 values too (0 where missing)."""
    if pd.api.types.is_numeric_dtype(cells):
        floats = cells.astype("Float64").to_numpy(dtype="float64", na_value=np.nan)
        if not pd.api.types.is_integer_dtype(cells):
            return floats, None
        return floats, cells.to_numpy(dtype="int64", na_value=0)
    present = cells.notna().to_numpy()
    floats = pd.to_numeric(cells, errors="coerce").to_numpy(dtype="float64")
    given = cells[present]
    if not given.str.fullmatch(r"[+-]?\d{1,19}").all():
        return floats, None
    try:
        exact = given.astype("int64").to_numpy()
    except (OverflowError, ValueError):  # beyond int64: out of range for any unit anyway
        return floats, None
    ints = np.zeros(len(cells), dtype="int64")
    ints[present] = exact
    return floats, ints


def _parse_epoch(file: Path, where: Where, cells: pd.Series, unit: str) -> pd.Series:
    """Epoch numbers (a numeric column or numeric text) in ``unit`` (or auto-detected) -> UTC.

    Integers convert exactly; other numbers are rounded to the microsecond, so that 5-minute
    samples written as float seconds land on whole seconds rather than 256 ns off.
    """
    floats, ints = _epoch_numbers(cells)
    present = ~np.isnan(floats)
    out = pd.Series(pd.NaT, index=cells.index, dtype="datetime64[ns, UTC]")
    if not present.any():
        return out
    if unit == UNIT_AUTO:
        unit = _epoch_unit(file, where, floats, present)
    per = EPOCH_UNITS[unit]
    with np.errstate(invalid="ignore"):
        beyond = np.where(
            floats < UNREPRESENTABLE_LOW.value / per,
            -1,
            np.where(floats > UNREPRESENTABLE_HIGH.value / per, 1, 0),
        )
    if not (present & (beyond == 0)).any():
        i = int(np.flatnonzero(present)[0])
        raise _error(
            file,
            f"epoch time {floats[i]:.15g} {unit} is out of range ({where(i)}): outside "
            f"{_RANGE_TEXT}, like every timestamp of the column; check data.timestamp_unit",
            i,
        )
    inside = present & (beyond == 0)
    if ints is not None:
        ns = ints[inside] * per
    else:
        ns = np.rint(floats[inside] * (per / 1000)).astype("int64") * 1000
    out[inside] = pd.to_datetime(ns, unit="ns", utc=True)
    return _fill_beyond_range(file, where, cells, out, beyond)


def parse_timestamps(
    file: Path,
    where: Where,
    column: pd.Series,
    *,
    tz: str,
    unit: str,
    series_keys: pd.DataFrame | None,
) -> pd.Series:
    """Timestamps as datetime64[ns, UTC]; empty cells stay NaT, anything unreadable is an
    error naming the file, the column and the row."""
    if isinstance(column.dtype, pd.DatetimeTZDtype) or pd.api.types.is_datetime64_dtype(column):
        return _datetime_column(file, where, column, tz, series_keys)
    numeric = pd.api.types.is_numeric_dtype(column) and not pd.api.types.is_bool_dtype(column)
    if numeric:
        if unit == UNIT_ISO:
            raise _error(file, f"numbers ({column.dtype}) but data.timestamp_unit is iso")
        return _parse_epoch(file, where, column, unit)
    if column.dtype != object and not pd.api.types.is_string_dtype(column):
        raise _error(file, f"expected timestamps or epoch numbers, found {column.dtype}")
    text = column.astype("string").str.strip()
    text = text.mask(text == "")
    is_number = text.str.fullmatch(_NUMBER_RE).fillna(False).to_numpy(dtype=bool)
    present = text.notna().to_numpy()
    if unit == UNIT_ISO or (unit == UNIT_AUTO and not is_number.any()):
        return _parse_iso(file, where, column, text, tz, series_keys)
    if not is_number[present].all():
        i = int(np.flatnonzero(present & ~is_number)[0])
        mixed = " among epoch numbers" if unit == UNIT_AUTO else f" (data.timestamp_unit is {unit})"
        raise _error(file, f"unparseable timestamp {column.iloc[i]!r}{mixed} ({where(i)})", i)
    return _parse_epoch(file, where, text, unit)


# The instant a decision backtest cuts the data at (capforecast.data.holdout); parsed here so the
# config check does not import the holdout stage.
HISTORY_END_KEY = "data.history_end"


def parse_history_end(value: Any, freq: str) -> pd.Timestamp | None:
    """``data.history_end`` as a UTC timestamp (None when unset).

    Naive values are UTC. The cut must fall on an ``etl.freq`` bin boundary (bins are aligned to
    the epoch): otherwise the last history bin and the first actuals bin would each hold part of
    an hour. Raises ConfigError naming the key.
    """
    if value is None:
        return None
    try:
        stamp = pd.Timestamp(value)
    except (ValueError, TypeError):
        raise ConfigError(
            HISTORY_END_KEY, f"{value!r} is not an ISO 8601 timestamp (e.g. 2013-09-02T00:00:00Z)"
        ) from None
    if pd.isna(stamp):
        raise ConfigError(HISTORY_END_KEY, f"{value!r} is not a timestamp")
    stamp = stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")
    step = pd.Timedelta(freq)
    if stamp.value % step.value:
        raise ConfigError(
            HISTORY_END_KEY,
            f"{stamp.isoformat()} is not on an etl.freq ({freq}) bin boundary; "
            f"e.g. {stamp.floor(step).isoformat()}",
        )
    return stamp
