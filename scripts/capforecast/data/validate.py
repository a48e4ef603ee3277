"""Row checks on the raw long format: quarantine, repair, duplicate aggregation, sorting.

Every raw row ends up either kept (possibly repaired, possibly merged with duplicates of the
same ``resource_id, metric, timestamp``) or quarantined with one reason, so that
``rows_in == rows_kept + rows_quarantined`` holds for the file and for every series.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from capforecast.contracts import QUARANTINE_COLUMNS, RAW_COLUMNS
from capforecast.data import columnar
from capforecast.data.value_limits import above_physical_limit, rows_of_metrics
from capforecast.settings import EtlSettings
from capforecast.timestamps import timestamp_window

SERIES_KEYS = ["resource_id", "metric"]
COUNT_COLUMNS = (
    "rows_in",
    "rows_kept",
    "rows_repaired",
    "rows_quarantined",
    "duplicates",
    "unsorted_rows",
)

# Quarantine reasons, in the order they are checked: a row gets the first one that applies.
REASON_MISSING_TIMESTAMP = "missing_timestamp"
REASON_TIMESTAMP_OUTSIDE_WINDOW = "timestamp_outside_window"
REASON_MISSING_RESOURCE_ID = "missing_resource_id"
REASON_MISSING_METRIC = "missing_metric"
REASON_MISSING_VALUE = "missing_value"
REASON_NON_FINITE = "non_finite"
REASON_NEGATIVE = "negative_value"
REASON_PERCENT_ABOVE_RANGE = "percent_above_range"
REASON_ABOVE_PHYSICAL_LIMIT = "above_physical_limit"
REASONS = (
    REASON_MISSING_TIMESTAMP,
    REASON_TIMESTAMP_OUTSIDE_WINDOW,
    REASON_MISSING_RESOURCE_ID,
    REASON_MISSING_METRIC,
    REASON_MISSING_VALUE,
    REASON_NON_FINITE,
    REASON_NEGATIVE,
    REASON_PERCENT_ABOVE_RANGE,
    REASON_ABOVE_PHYSICAL_LIMIT,
)

PERCENT_CEILING = 100.0


@dataclass
class ValidationResult:
    """Outcome of :func:`validate_rows` for one source file.

    kept: raw columns, sorted by resource_id, metric, timestamp, one row per timestamp
        (duplicates averaged), percentages repaired.
    quarantine: contracts.QUARANTINE_COLUMNS, ``row`` = 0-based row index in the raw partition
        (= data row of the source file), original value, one reason per row.
    counts: file totals (COUNT_COLUMNS).
    series_counts: the same counts per (resource_id, metric) for every series with at least one
        raw row, including series whose rows were all quarantined. Rows without a resource_id or
        metric belong to no series and appear only in the file totals and the quarantine.
    """

    source_file: str
    kept: pd.DataFrame
    quarantine: pd.DataFrame
    counts: dict[str, int]
    series_counts: pd.DataFrame = field(repr=False)


class SeriesCodes:
    """Integer code per raw row for its (resource_id, metric), ordered like the names;
    -1 where the row has no resource_id or no metric.

    Built from per-row resource and metric codes (-1 = missing; any integer dtype, usually a
    small one) into their names; the combined ``code`` (int32 while every code fits, else int64)
    and the missing masks are worked out when first used.
    """

    def __init__(
        self,
        row_resource: np.ndarray,
        resource_names: np.ndarray,
        row_metric: np.ndarray,
        metric_names: np.ndarray,
    ) -> None:
        self.row_resource = row_resource  # resource code per row (-1 = missing)
        self.resource_names = resource_names
        self.row_metric = row_metric  # metric code per row (-1 = missing)
        self.metric_names = metric_names

    @functools.cached_property
    def resource_missing(self) -> np.ndarray:
        return self.row_resource < 0

    @functools.cached_property
    def metric_missing(self) -> np.ndarray:
        return self.row_metric < 0

    @functools.cached_property
    def code(self) -> np.ndarray:
        n_met = max(len(self.metric_names), 1)
        # int32 while every code fits: half the memory traffic of int64 on every pass.
        fits = len(self.resource_names) * n_met < np.iinfo("int32").max
        code = self.row_resource.astype("int32" if fits else "int64")
        code *= n_met
        code += self.row_metric
        missing = self.resource_missing | self.metric_missing
        if missing.any():
            code[missing] = -1
        return code

    def names(self, codes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        n_met = max(len(self.metric_names), 1)
        return self.resource_names[codes // n_met], self.metric_names[codes % n_met]

    @classmethod
    def from_codes(
        cls, rid: np.ndarray, rid_names: np.ndarray, met: np.ndarray, met_names: np.ndarray
    ) -> SeriesCodes:
        """From per-row resource and metric codes (-1 = missing) and their names."""
        return cls(rid, rid_names, met, met_names)


def _factorize_text(column: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """Codes (sorted names) with -1 for absent identifiers (None/NaN or blank text).

    Factorising first means the blank check runs on the few distinct names, not on every row;
    a categorical column (what ingest gives) is factorised from its codes, without hashing.
    """
    factorised = columnar.category_codes(column)
    if factorised is None:
        codes, names = pd.factorize(column.to_numpy(dtype=object), sort=True)
        codes, names = codes.astype("int64"), np.asarray(names, dtype=object)
    else:
        codes, names = factorised
    blank = np.array([not str(n).strip() for n in names], dtype=bool)
    if blank.any():
        codes = np.where(np.isin(codes, np.flatnonzero(blank)), -1, codes)
    return codes, names


def series_codes(raw: pd.DataFrame) -> SeriesCodes:
    rid, rid_names = _factorize_text(raw["resource_id"])
    met, met_names = _factorize_text(raw["metric"])
    return SeriesCodes.from_codes(rid, rid_names, met, met_names)


def timestamps_ns(raw: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Timestamps as int64 ns since the epoch (UTC) and the mask of missing ones."""
    stamps = raw["timestamp"]
    values = columnar.utc_nanoseconds(stamps)
    if values is not None:
        return values, values == columnar.NAT
    if isinstance(stamps.dtype, pd.DatetimeTZDtype):
        stamps = stamps.dt.tz_convert("UTC")
    values = stamps.astype("datetime64[ns, UTC]").array.asi8
    return values, stamps.isna().to_numpy()


def _percent_rows(codes: SeriesCodes, etl: EtlSettings) -> np.ndarray:
    return rows_of_metrics(codes.metric_names, codes.row_metric, list(etl.percent_metrics or ()))


def _quarantine_reasons(
    values: np.ndarray,
    codes: SeriesCodes,
    keyed: np.ndarray,
    ts: np.ndarray,
    ts_missing: np.ndarray,
    high_percent: np.ndarray | None,
    etl: EtlSettings,
) -> tuple[np.ndarray, np.ndarray]:
    """The rows to quarantine and, for each of them (in row order), the 1-based index into
    REASONS of the first check it fails. ``high_percent``: percentage rows above 100 or the
    repair ceiling, whichever is lower (None: there are none).

    The union of the checks is a few passes over every row; which check comes first is worked
    out for the flagged rows only (usually none).
    """
    ceiling = PERCENT_CEILING + float(etl.percent_repair_tolerance)
    low, high = timestamp_window(etl.timestamp_min, etl.timestamp_max)
    # A missing timestamp (NaT, the int64 minimum) is below any window: bad either way.
    bad_time = (ts < low.value) | (ts > high.value)
    above_limit = above_physical_limit(
        values,
        series=codes.code,
        stamps=ts,
        timed=lambda: keyed & ~bad_time,
        metric_names=codes.metric_names,
        row_metric=codes.row_metric,
        limits=etl.value_limits,
        freq_seconds=pd.Timedelta(etl.freq).total_seconds(),
    )
    with np.errstate(invalid="ignore"):
        # NaN, -inf and negatives fail ``values >= 0``; +inf is the only other non-finite.
        flagged = bad_time | ~keyed
        flagged |= ~(values >= 0)
        flagged |= values == np.inf
        flagged |= above_limit
        if high_percent is not None:
            flagged |= high_percent & (values > ceiling)
    rows = np.flatnonzero(flagged)
    v = values[rows]
    over = np.zeros(len(rows), dtype=bool) if high_percent is None else high_percent[rows]
    with np.errstate(invalid="ignore"):
        checks = [
            ts_missing[rows],
            bad_time[rows] & ~ts_missing[rows],
            codes.resource_missing[rows],
            codes.metric_missing[rows],
            np.isnan(v),
            np.isinf(v),
            v < 0,
            over & (v > ceiling),
            above_limit[rows],
        ]
    first_reason = np.select(checks, list(range(1, len(REASONS) + 1)), default=0)
    return flagged, first_reason


def _segment_cummax(values: np.ndarray, segment_start: np.ndarray) -> np.ndarray:
    """Running maximum of ``values`` that restarts at every True of ``segment_start``."""
    return pd.Series(values).groupby(np.cumsum(segment_start)).cummax().to_numpy()


def _unsorted_flags(code: np.ndarray, ts: np.ndarray, grouped: np.ndarray | None) -> np.ndarray:
    """True for usable rows whose timestamp is earlier than one already seen in the same
    series (file order): the rows that sorting has to move. ``grouped``: the usable rows
    grouped by series, in file order within each (None: every row, as they are)."""
    flags = np.zeros(len(code), dtype=bool)
    c, t = (code, ts) if grouped is None else (code[grouped], ts[grouped])
    if len(c) < 2 or columnar.within_group_sorted(c, t):
        return flags  # already in time order: the usual case, no grouped scan needed
    new = np.r_[True, c[1:] != c[:-1]]
    previous_max = np.r_[np.iinfo("int64").min, _segment_cummax(t, new)[:-1]]
    if grouped is None:
        flags[:] = ~new & (t < previous_max)
    else:
        flags[grouped] = ~new & (t < previous_max)
    return flags


def _kept_order(
    code: np.ndarray, ts: np.ndarray, kept: np.ndarray, grouped: np.ndarray | None
) -> np.ndarray | None:
    """Kept rows in (series, timestamp) order, equal keys in file order (a stable lexsort); None
    when that is every row in file order. ``grouped`` as for :func:`_unsorted_flags` (kept rows
    are usable ones)."""
    every_row = kept.all()
    if grouped is None and every_row:
        if columnar.within_group_sorted(code, ts):
            return None
    else:
        if grouped is None:
            grouped = np.flatnonzero(kept)
        elif not every_row:
            grouped = grouped[kept[grouped]]
        if columnar.within_group_sorted(code[grouped], ts[grouped]):
            return grouped
    kept_rows = np.flatnonzero(kept)
    return kept_rows[np.lexsort((ts[kept_rows], code[kept_rows]))]


def _kept_ids(codes: np.ndarray, names: np.ndarray, used: np.ndarray) -> pd.Categorical:
    """Categorical of the kept rows' names (``codes`` into ``names``), categories the names
    ``used`` (sorted codes of the names that have kept rows); never a view of ``codes``."""
    if len(used) < len(names):
        lookup = columnar.small_codes(np.full(len(names), -1), len(used))
        lookup[used] = np.arange(len(used))
        codes, names = lookup[codes], names[used]
    else:
        codes = columnar.small_codes(codes, len(names)).copy()
    return columnar.text_categorical(codes, names)


def validate_rows(raw: pd.DataFrame, etl: EtlSettings, source_file: str) -> ValidationResult:
    """Check every raw row (contracts.RAW_COLUMNS) of one file.

    Quarantined: missing timestamp, timestamp outside etl.timestamp_min .. timestamp_max,
    missing resource_id / metric / value, +-inf, negative values, percentages above
    100 + etl.percent_repair_tolerance, values above their metric's physical ceiling
    (etl.value_limits, :mod:`capforecast.data.value_limits`). Repaired (kept, clipped to 100):
    percentages in (100, 100 + tolerance]. Duplicate (resource_id, metric, timestamp) rows are
    averaged into one; they count as kept and as ``duplicates``. Rows out of time order within
    their series are counted as ``unsorted_rows``; the kept frame is sorted.
    """
    if not raw.index.equals(pd.RangeIndex(len(raw))):
        raw = raw.reset_index(drop=True)
    n = len(raw)
    codes = series_codes(raw)
    ts, ts_missing = timestamps_ns(raw)
    values = raw_values = raw["value"].to_numpy(dtype="float64")
    keyed = codes.code >= 0
    # Percentages above 100 or above the repair ceiling, whichever is lower.
    above = min(PERCENT_CEILING, PERCENT_CEILING + float(etl.percent_repair_tolerance))
    with np.errstate(invalid="ignore"):
        high_percent = _percent_rows(codes, etl) & (values > above)
    if not high_percent.any():
        high_percent = None  # the usual case: nothing to repair, no percentage out of range
    quarantined, reason_codes = _quarantine_reasons(
        values, codes, keyed, ts, ts_missing, high_percent, etl
    )

    repaired = np.zeros(n, dtype=bool)
    if high_percent is not None:
        with np.errstate(invalid="ignore"):
            repaired = high_percent & ~quarantined & (values > PERCENT_CEILING)
    if repaired.any():
        values = values.copy()
        values[repaired] = PERCENT_CEILING

    # Usable rows (a series and a timestamp) grouped by series, file order within each: which
    # rows are out of time order, and the kept rows in (series, timestamp) order.
    usable = keyed & ~ts_missing
    if usable.all():
        by_series = columnar.group_order(codes.code)
        grouped = by_series  # None: every row, already grouped
    else:
        rows = np.flatnonzero(usable)
        by_series = columnar.group_order(codes.code[rows])
        grouped = rows if by_series is None else rows[by_series]
    unsorted = _unsorted_flags(codes.code, ts, grouped)
    order = _kept_order(codes.code, ts, ~quarantined, grouped)

    # Equal neighbours are duplicates to average.
    if order is None:
        k_code, k_ts, k_val = codes.code, ts, values
    else:
        k_code, k_ts, k_val = codes.code[order], ts[order], values[order]
    first = np.ones(len(k_code), dtype=bool)
    same_time = np.flatnonzero(k_ts[1:] == k_ts[:-1])  # usually none: one pass
    first[same_time + 1] = k_code[same_time + 1] != k_code[same_time]
    duplicate = np.zeros(n, dtype=bool)
    if not first.all():
        duplicate[np.flatnonzero(~first) if order is None else order[~first]] = True
        starts = np.flatnonzero(first)
        k_val = np.add.reduceat(k_val, starts) / np.diff(np.r_[starts, len(k_code)])
        k_code, k_ts = k_code[starts], k_ts[starts]
        k_rid, k_met = np.divmod(k_code, max(len(codes.metric_names), 1))
    elif order is None:
        k_rid, k_met = codes.row_resource, codes.row_metric
    else:
        k_rid, k_met = codes.row_resource[order], codes.row_metric[order]

    flags = {
        "rows_repaired": repaired,
        "rows_quarantined": quarantined,
        "duplicates": duplicate,
        "unsorted_rows": unsorted,
    }
    series_codes_present, series_counts = _series_table(codes, keyed, flags)
    kept_series = series_codes_present[series_counts["rows_kept"].to_numpy() > 0]
    n_met = max(len(codes.metric_names), 1)
    if k_val is raw_values:
        k_val = k_val.copy()  # never a view of the caller's frame
    kept = pd.DataFrame(
        {
            "timestamp": columnar.utc_timestamps(k_ts),  # a new array
            "resource_id": _kept_ids(
                k_rid, codes.resource_names, columnar.distinct(kept_series // n_met)
            ),
            "metric": _kept_ids(k_met, codes.metric_names, columnar.distinct(kept_series % n_met)),
            "value": k_val,
        },
        copy=False,
    )

    q_rows = np.flatnonzero(quarantined)
    quarantine = columnar.as_object_columns(
        raw.iloc[q_rows if len(q_rows) else slice(0, 0)].loc[:, list(RAW_COLUMNS)].copy(),
        ("resource_id", "metric"),
    )
    quarantine.insert(0, "row", q_rows.astype("int64"))
    quarantine.insert(0, "source_file", str(source_file))
    quarantine["reason"] = np.array(REASONS, dtype=object)[reason_codes - 1].astype(str)
    quarantine = quarantine.loc[:, list(QUARANTINE_COLUMNS)].reset_index(drop=True)

    counts = {"rows_in": n, "rows_kept": int(np.count_nonzero(~quarantined))}
    counts.update({name: int(np.count_nonzero(v)) for name, v in flags.items()})
    counts = {name: counts[name] for name in COUNT_COLUMNS}

    # The accounting promise of this module: no row disappears without a trace.
    if counts["rows_in"] != counts["rows_kept"] + counts["rows_quarantined"]:
        raise AssertionError(f"{source_file}: row counts do not reconcile: {counts}")
    if len(kept) != counts["rows_kept"] - counts["duplicates"]:
        raise AssertionError(f"{source_file}: kept rows do not match the duplicate count")
    return ValidationResult(
        source_file=str(source_file),
        kept=kept,
        quarantine=quarantine,
        counts=counts,
        series_counts=series_counts,
    )


def _series_table(
    codes: SeriesCodes, keyed: np.ndarray, flags: Mapping[str, np.ndarray]
) -> tuple[np.ndarray, pd.DataFrame]:
    """Per-series sums of the row flags (COUNT_COLUMNS but rows_in and rows_kept), for every
    series with at least one raw row; rows_in counts the rows, rows_kept those not quarantined.
    Returns the series' codes (sorted) and the table.
    """
    size = len(codes.resource_names) * max(len(codes.metric_names), 1)
    every_row = keyed.all()
    code = codes.code if every_row else codes.code[keyed]
    present, rows_in = columnar.code_counts(code, size)
    rid_names, met_names = codes.names(present)
    table = pd.DataFrame({"resource_id": rid_names, "metric": met_names})
    table["rows_in"] = rows_in.astype("int64")
    counted = {}
    for name, flag in flags.items():
        rows = flag if every_row else flag[keyed]
        counted[name] = columnar.count_in(code[rows] if rows.any() else code[:0], present, size)
    table["rows_kept"] = table["rows_in"] - counted["rows_quarantined"]
    for name in COUNT_COLUMNS[2:]:
        table[name] = counted[name]
    return present, table
