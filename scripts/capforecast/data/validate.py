"""Row checks on the raw long format: quarantine, repair, duplicate aggregation, sorting.

Every raw row ends up either kept (possibly repaired, possibly merged with duplicates of the
same ``resource_id, metric, timestamp``) or quarantined with one reason, so that
``rows_in == rows_kept + rows_quarantined`` holds for the file and for every series.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from capforecast.contracts import QUARANTINE_COLUMNS, RAW_COLUMNS
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


@dataclass
class SeriesCodes:
    """Integer code per raw row for its (resource_id, metric), ordered like the names;
    -1 where the row has no resource_id or no metric."""

    code: np.ndarray
    resource_missing: np.ndarray
    metric_missing: np.ndarray
    resource_names: np.ndarray
    metric_names: np.ndarray
    row_metric: np.ndarray  # metric code per row (-1 = missing)
    row_resource: np.ndarray  # resource code per row (-1 = missing)

    def names(self, codes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        n_met = max(len(self.metric_names), 1)
        return self.resource_names[codes // n_met], self.metric_names[codes % n_met]

    @classmethod
    def from_codes(
        cls, rid: np.ndarray, rid_names: np.ndarray, met: np.ndarray, met_names: np.ndarray
    ) -> SeriesCodes:
        """From per-row resource and metric codes (-1 = missing) and their names."""
        keyed = (rid >= 0) & (met >= 0)
        code = np.where(keyed, rid * max(len(met_names), 1) + met, -1).astype("int64")
        return cls(code, rid < 0, met < 0, rid_names, met_names, met, rid)


def _factorize_text(column: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """Codes (sorted names) with -1 for absent identifiers (None/NaN or blank text).

    Factorising first means the blank check runs on the few distinct names, not on every row.
    """
    codes, names = pd.factorize(column.to_numpy(dtype=object), sort=True)
    names = np.asarray(names, dtype=object)
    blank = np.array([not str(n).strip() for n in names], dtype=bool)
    if blank.any():
        codes = np.where(np.isin(codes, np.flatnonzero(blank)), -1, codes)
    return codes.astype("int64"), names


def series_codes(raw: pd.DataFrame) -> SeriesCodes:
    rid, rid_names = _factorize_text(raw["resource_id"])
    met, met_names = _factorize_text(raw["metric"])
    return SeriesCodes.from_codes(rid, rid_names, met, met_names)


def timestamps_ns(raw: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Timestamps as int64 ns since the epoch (UTC) and the mask of missing ones."""
    stamps = raw["timestamp"]
    if isinstance(stamps.dtype, pd.DatetimeTZDtype):
        stamps = stamps.dt.tz_convert("UTC")
    values = stamps.astype("datetime64[ns, UTC]").array.asi8
    return values, stamps.isna().to_numpy()


def _percent_rows(codes: SeriesCodes, etl: EtlSettings) -> np.ndarray:
    return rows_of_metrics(codes.metric_names, codes.row_metric, list(etl.percent_metrics or ()))


def _reasons(
    raw: pd.DataFrame,
    codes: SeriesCodes,
    ts: np.ndarray,
    ts_missing: np.ndarray,
    etl: EtlSettings,
) -> np.ndarray:
    values = raw["value"].to_numpy(dtype="float64")
    ceiling = PERCENT_CEILING + float(etl.percent_repair_tolerance)
    low, high = timestamp_window(etl.timestamp_min, etl.timestamp_max)
    outside_window = ~ts_missing & ((ts < low.value) | (ts > high.value))
    above_limit = above_physical_limit(
        values,
        series=codes.code,
        stamps=ts,
        timed=(codes.code >= 0) & ~ts_missing & ~outside_window,
        metric_names=codes.metric_names,
        row_metric=codes.row_metric,
        limits=etl.value_limits,
        freq_seconds=pd.Timedelta(etl.freq).total_seconds(),
    )
    with np.errstate(invalid="ignore"):
        checks = [
            ts_missing,
            outside_window,
            codes.resource_missing,
            codes.metric_missing,
            np.isnan(values),
            np.isinf(values),
            values < 0,
            _percent_rows(codes, etl) & (values > ceiling),
            above_limit,
        ]
    # Select small integer codes, not the reason strings: a fixed-width text array of every
    # row's reason cost more than all the checks together.
    first_reason = np.select(checks, list(range(1, len(REASONS) + 1)), default=0)
    return np.array([None, *REASONS], dtype=object)[first_reason]


def _segment_cummax(values: np.ndarray, segment_start: np.ndarray) -> np.ndarray:
    """Running maximum of ``values`` that restarts at every True of ``segment_start``."""
    return pd.Series(values).groupby(np.cumsum(segment_start)).cummax().to_numpy()


def _unsorted_flags(code: np.ndarray, ts: np.ndarray, usable: np.ndarray) -> np.ndarray:
    """True for usable rows whose timestamp is earlier than one already seen in the same series
    (file order): the rows that sorting has to move."""
    flags = np.zeros(len(code), dtype=bool)
    rows = np.flatnonzero(usable)
    if len(rows) < 2:
        return flags
    by_series = rows[np.argsort(code[rows], kind="stable")]  # file order within each series
    c, t = code[by_series], ts[by_series]
    new = np.r_[True, c[1:] != c[:-1]]
    if np.all(new[1:] | (t[1:] >= t[:-1])):
        return flags  # already in time order: the usual case, no grouped scan needed
    previous_max = np.r_[np.iinfo("int64").min, _segment_cummax(t, new)[:-1]]
    flags[by_series] = ~new & (t < previous_max)
    return flags


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
    raw = raw.reset_index(drop=True)
    n = len(raw)
    codes = series_codes(raw)
    ts, ts_missing = timestamps_ns(raw)
    reasons = _reasons(raw, codes, ts, ts_missing, etl)
    quarantined = np.not_equal(reasons, None)
    keyed = codes.code >= 0
    values = raw["value"].to_numpy(dtype="float64").copy()

    with np.errstate(invalid="ignore"):
        repaired = ~quarantined & _percent_rows(codes, etl) & (values > PERCENT_CEILING)
    values[repaired] = PERCENT_CEILING
    unsorted = _unsorted_flags(codes.code, ts, keyed & ~ts_missing)

    # Kept rows in (series, timestamp) order; equal neighbours are duplicates to average.
    kept_rows = np.flatnonzero(~quarantined)
    order = kept_rows[np.lexsort((ts[kept_rows], codes.code[kept_rows]))]
    k_code, k_ts, k_val = codes.code[order], ts[order], values[order]
    first = np.ones(len(order), dtype=bool)
    first[1:] = (k_code[1:] != k_code[:-1]) | (k_ts[1:] != k_ts[:-1])
    duplicate = np.zeros(n, dtype=bool)
    duplicate[order[~first]] = True
    starts = np.flatnonzero(first)
    if len(starts) < len(order):
        k_val = np.add.reduceat(k_val, starts) / np.diff(np.r_[starts, len(order)])
    k_code, k_ts = k_code[starts], k_ts[starts]
    rid_names, met_names = codes.names(k_code)
    kept = pd.DataFrame(
        {
            "timestamp": pd.to_datetime(k_ts, unit="ns", utc=True),
            "resource_id": rid_names,
            "metric": met_names,
            "value": np.asarray(k_val, dtype="float64"),
        }
    ).loc[:, list(RAW_COLUMNS)]

    quarantine = raw.loc[quarantined, list(RAW_COLUMNS)].copy()
    quarantine.insert(0, "row", quarantine.index.to_numpy(dtype="int64"))
    quarantine.insert(0, "source_file", str(source_file))
    quarantine["reason"] = reasons[quarantined].astype(str)
    quarantine = quarantine.loc[:, list(QUARANTINE_COLUMNS)].reset_index(drop=True)

    flags = {
        "rows_in": np.ones(n, dtype=bool),
        "rows_kept": ~quarantined,
        "rows_repaired": repaired,
        "rows_quarantined": quarantined,
        "duplicates": duplicate,
        "unsorted_rows": unsorted,
    }
    counts = {name: int(v.sum()) for name, v in flags.items()}
    series_counts = _series_table(codes, keyed, flags)

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
) -> pd.DataFrame:
    """Per-series sums of the row flags, for every series with at least one raw row."""
    present, inverse = np.unique(codes.code[keyed], return_inverse=True)
    rid_names, met_names = codes.names(present)
    table = pd.DataFrame({"resource_id": rid_names, "metric": met_names})
    for name, flag in flags.items():
        table[name] = np.bincount(inverse, weights=flag[keyed], minlength=len(present)).astype(
            "int64"
        )
    return table
