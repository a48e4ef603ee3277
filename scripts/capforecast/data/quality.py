"""Per-series data-quality table and per-file row reconciliation.

Every series that has at least one row in the raw file gets a row, also when all of its rows
were quarantined (flag ``all_quarantined``), so nothing vanishes between ingest and forecasting.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence

import numpy as np
import pandas as pd

from capforecast.contracts import QUALITY_COLUMNS, SKIPPED_FILE_COLUMNS
from capforecast.data import columnar
from capforecast.data.capacity import CAPACITY_ISSUES
from capforecast.data.resample import freq_nanoseconds
from capforecast.data.scale import AMBIGUOUS
from capforecast.data.validate import SERIES_KEYS, ValidationResult, series_codes, timestamps_ns
from capforecast.data.value_limits import rows_of_metrics
from capforecast.metric_names import SCALE_FRACTION
from capforecast.settings import EtlSettings

UNCLASSIFIED = "unclassified_metric"
SHOWN_SERIES = 5  # resource ids named in a warning before "..."
LOW_COVERAGE = 0.8  # coverage below this share of expected bins is flagged low_coverage
PEGGED_SHARE = 0.05  # more than this share of samples at the ceiling is flagged pegged
IRREGULAR_SHARE = 0.05  # more than this share of off-median raw steps is flagged irregular
# Integer counts per series derived from the regular grid.
GRID_COUNT_COLUMNS: tuple[str, ...] = (
    "expected_bins",
    "observed_bins",
    "gap_count",
    "longest_gap_bins",
    "filled_points",
    "unfilled_points",
)

LOG = logging.getLogger(__name__)
RECONCILIATION_COLUMNS: tuple[str, ...] = (
    "source_file",
    "partition",
    "rows_in",
    "rows_kept",
    "rows_repaired",
    "rows_quarantined",
    "duplicates",
    "balanced",
)


def _grid_stats(clean: pd.DataFrame) -> pd.DataFrame:
    """Per series: expected/observed bins, gap runs (empty bins, filled or not), fill counts.

    ``clean`` is resample_series output: sorted by series, then time, one row per bin.
    """
    if len(clean) == 0:
        return pd.DataFrame(columns=[*SERIES_KEYS, *GRID_COUNT_COLUMNS])
    rid, rid_names = pd.factorize(clean["resource_id"], sort=True)
    met, met_names = pd.factorize(clean["metric"], sort=True)
    n_met = max(len(met_names), 1)
    size = len(rid_names) * n_met
    series = rid.astype("int64") * n_met + met
    keys, expected = columnar.code_counts(series, size)
    empty = clean["n_obs"].to_numpy() == 0
    # A run of empty bins starts where an empty bin follows an observed one (or a new series).
    start = empty.copy()
    start[1:] &= ~empty[:-1] | (series[1:] != series[:-1])
    run_series = series[start]
    run_length = np.bincount(np.cumsum(start)[empty], minlength=len(run_series) + 1)[1:]
    longest = np.zeros(len(keys), dtype="int64")
    np.maximum.at(longest, np.searchsorted(keys, run_series), run_length)
    return pd.DataFrame(
        {
            "resource_id": np.asarray(rid_names, dtype=object)[keys // n_met],
            "metric": np.asarray(met_names, dtype=object)[keys % n_met],
            "expected_bins": expected,
            "filled_points": columnar.count_in(
                series[clean["is_filled"].to_numpy(dtype=bool)], keys, size
            ),
            "unfilled_points": columnar.count_in(
                series[clean["is_gap"].to_numpy(dtype=bool)], keys, size
            ),
            "observed_bins": expected - columnar.count_in(series[empty], keys, size),
            "gap_count": columnar.count_in(run_series, keys, size),
            "longest_gap_bins": longest,
        }
    )


def _step_stats(raw: pd.DataFrame) -> pd.DataFrame:
    """Per series, from its distinct raw timestamps in time order: the median step in seconds
    and the share of steps that differ from it (gaps and jitter both count).

    A series whose steps are all equal (regular samples) has that step as its median and no
    step off it; only the other series' steps go through a grouped median.
    """
    codes = series_codes(raw)
    ts, ts_missing = timestamps_ns(raw)
    unusable = codes.resource_missing | codes.metric_missing | ts_missing
    if unusable.any():
        code, stamp = codes.code[~unusable], ts[~unusable]
    else:
        code, stamp = codes.code, ts
    order = columnar.series_time_order(code, stamp)
    if order is not None:
        code, stamp = code[order], stamp[order]
    # Repeated timestamps of a series count once (usually there are none: one pass).
    same_time = np.flatnonzero(stamp[1:] == stamp[:-1])
    repeated = same_time[code[same_time + 1] == code[same_time]] + 1
    if len(repeated):
        keep = np.ones(len(code), dtype=bool)
        keep[repeated] = False
        code, stamp = code[keep], stamp[keep]
    present, size = columnar.code_counts(code)
    n_steps = size - 1  # steps between a series' distinct timestamps
    # step_ns[i] = stamp[i + 1] - stamp[i]: series j's steps are step_ns[start_j : end_j - 1]
    # (the step at end_j - 1 crosses into the next series).
    step_ns = np.diff(stamp)
    end = np.cumsum(size)
    start = end - size
    median = np.full(len(present), np.nan)
    n_off = np.zeros(len(present), dtype="int64")
    stepped = np.flatnonzero(n_steps > 0)
    if len(stepped):
        # Reduce over [start, end - 1) of each stepped series: the odd segments in between
        # (cross-series steps and series without steps) are discarded.
        bounds = np.column_stack((start[stepped], end[stepped] - 1)).ravel()
        bounds = bounds[:-1] if bounds[-1] >= len(step_ns) else bounds
        low = np.minimum.reduceat(step_ns, bounds)[::2]
        high = np.maximum.reduceat(step_ns, bounds)[::2]
        regular = low == high
        median[stepped[regular]] = low[regular] / 1e9
        irregular = stepped[~regular]
        if len(irregular):
            owner = np.repeat(irregular, n_steps[irregular])
            at = np.concatenate([np.arange(start[j], end[j] - 1) for j in irregular])
            steps = pd.Series(step_ns[at] / 1e9)
            median[irregular] = steps.groupby(owner).median().reindex(irregular).to_numpy()
            off = steps.to_numpy() != median[owner]
            n_off = np.bincount(owner[off], minlength=len(present))
    rid_names, met_names = codes.names(present)
    return pd.DataFrame(
        {
            "resource_id": rid_names,
            "metric": met_names,
            "median_step_seconds": median,
            "irregular_fraction": np.where(n_steps > 0, n_off / np.maximum(n_steps, 1), 0.0),
        }
    )


def _observed_span(kept: pd.DataFrame, etl: EtlSettings) -> pd.DataFrame:
    """Per series: first and last kept timestamp and the share of pegged percent samples."""
    columns = [*SERIES_KEYS, "first_timestamp", "last_timestamp", "pegged_fraction"]
    if len(kept) == 0:
        return pd.DataFrame(columns=columns)
    codes = series_codes(kept)
    ts, missing = timestamps_ns(kept)
    code = codes.code
    # Validated rows: every row keyed and dated, sorted by series, then time.
    if (code < 0).any() or missing.any() or not columnar.is_sorted(code):
        return _observed_span_grouped(kept, etl)
    if not columnar.within_group_sorted(code, ts):
        return _observed_span_grouped(kept, etl)
    percent = rows_of_metrics(codes.metric_names, codes.row_metric, etl.percent_metrics or ())
    pegged = percent & (kept["value"].to_numpy(dtype="float64") >= float(etl.pegged_level))
    present, size = columnar.code_counts(code)
    ends = np.cumsum(size)
    rid_names, met_names = codes.names(present)
    return pd.DataFrame(
        {
            "resource_id": rid_names,
            "metric": met_names,
            "first_timestamp": columnar.utc_timestamps(ts[ends - size]),
            "last_timestamp": columnar.utc_timestamps(ts[ends - 1]),
            "pegged_fraction": columnar.count_in(code[pegged], present) / size,
        }
    )


def _observed_span_grouped(kept: pd.DataFrame, etl: EtlSettings) -> pd.DataFrame:
    """:func:`_observed_span` by a pandas groupby, for frames with missing keys or times."""
    level = float(etl.pegged_level)
    is_percent = kept["metric"].isin(list(etl.percent_metrics or ()))
    pegged = (is_percent & (kept["value"] >= level)).astype("float64")
    frame = columnar.as_object_columns(kept[[*SERIES_KEYS, "timestamp"]], SERIES_KEYS)
    out = (
        frame.assign(pegged=pegged.to_numpy())
        .groupby(SERIES_KEYS, sort=True)
        .agg(
            first_timestamp=("timestamp", "min"),
            last_timestamp=("timestamp", "max"),
            pegged_fraction=("pegged", "mean"),
        )
    )
    return out.reset_index()


def _flags(table: pd.DataFrame) -> pd.Series:
    """Semicolon-joined flag names per row (empty string when the series is clean)."""
    checks = {
        "all_quarantined": (table["rows_kept"] == 0) & (table["rows_in"] > 0),
        "too_short": table["too_short"],
        "low_coverage": table["coverage"] < LOW_COVERAGE,
        "long_gaps": table["unfilled_points"] > 0,
        "pegged": table["pegged_fraction"] > PEGGED_SHARE,
        "irregular": table["irregular_fraction"] > IRREGULAR_SHARE,
        "duplicates": table["duplicates"] > 0,
        "quarantined_rows": table["rows_quarantined"] > 0,
        "fraction_scale_converted": table["scale"] == SCALE_FRACTION,
        "fraction_scale_ambiguous": table["scale"] == AMBIGUOUS,
        "id_whitespace_trimmed": table["ids_trimmed"],
    }
    names = pd.Series("", index=table.index, dtype=object)
    for name, mask in checks.items():
        names = _add_flag(names, mask, name)
    return names


def _add_flag(flags: pd.Series, mask: pd.Series, name: str) -> pd.Series:
    """``flags`` (semicolon-joined names) with ``name`` appended where ``mask`` holds."""
    mask = mask.fillna(False).astype(bool)
    out = flags.fillna("").astype(object).copy()
    out[mask] = out[mask].map(lambda s: f"{s};{name}" if s else name)
    return out


def _ingest_columns(counts: pd.DataFrame, ingest_series: pd.DataFrame | None) -> pd.DataFrame:
    """source_metric, rows_rescaled and the scale decision of every series, from the ingest
    record (contracts.INGEST_SERIES_COLUMNS); without one, names and values are as in the data."""
    columns = [*SERIES_KEYS, "source_metric", "rows_rescaled", "scale", "ids_trimmed"]
    if ingest_series is None:
        return counts[SERIES_KEYS].assign(
            source_metric=counts["metric"], rows_rescaled=0, scale="", ids_trimmed=False
        )[columns]
    return ingest_series[columns]


def quality_table(
    validation: ValidationResult,
    clean: pd.DataFrame,
    raw: pd.DataFrame,
    etl: EtlSettings,
    partition: str,
    source_file: str,
    ingest_series: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """One row per series of the raw file with contracts.QUALITY_COLUMNS.

    first/last_timestamp: first and last kept raw sample. expected_bins: bins of the resampled
    grid (first to last bin); history_hours: expected_bins x etl.freq, the history a model gets
    (72 hourly bins = 72 h). observed_bins: bins with samples; coverage:
    observed / expected. gap_count, longest_gap_bins: runs of empty bins (filled or not).
    median_step_seconds, irregular_fraction: from the distinct raw timestamps. pegged_fraction:
    share of kept samples >= etl.pegged_level (percent metrics only). too_short: history below
    etl.min_history_hours. Series whose rows were all quarantined have coverage 0 and the
    flag all_quarantined. source_metric, rows_rescaled and the fraction_scale_* flags come from
    ``ingest_series``, the ingest record of the file
    (:class:`capforecast.data.ingest.IngestResult`).
    """
    freq_hours = freq_nanoseconds(str(etl.freq)) / 3.6e12
    min_history = float(etl.min_history_hours)
    counts = validation.series_counts
    table = counts.merge(_grid_stats(clean), on=SERIES_KEYS, how="left")
    table = table.merge(_observed_span(validation.kept, etl), on=SERIES_KEYS, how="left")
    table = table.merge(_step_stats(raw), on=SERIES_KEYS, how="left")
    table = table.merge(_ingest_columns(counts, ingest_series), on=SERIES_KEYS, how="left")
    table["source_metric"] = table["source_metric"].fillna(table["metric"])
    table["rows_rescaled"] = pd.to_numeric(table["rows_rescaled"]).fillna(0).astype("int64")
    table["ids_trimmed"] = table["ids_trimmed"].astype("boolean").fillna(False).astype(bool)

    for col in GRID_COUNT_COLUMNS:
        table[col] = pd.to_numeric(table[col]).fillna(0).astype("int64")
    table["first_timestamp"] = pd.to_datetime(table["first_timestamp"], utc=True)
    table["last_timestamp"] = pd.to_datetime(table["last_timestamp"], utc=True)
    table["history_hours"] = table["expected_bins"].astype("float64") * freq_hours
    expected = table["expected_bins"].to_numpy()
    table["coverage"] = np.where(
        expected > 0, table["observed_bins"] / np.maximum(expected, 1), 0.0
    )
    table["median_step_seconds"] = pd.to_numeric(table["median_step_seconds"]).astype("float64")
    table["irregular_fraction"] = (
        pd.to_numeric(table["irregular_fraction"]).fillna(0.0).astype("float64")
    )
    table["pegged_fraction"] = pd.to_numeric(table["pegged_fraction"]).fillna(0.0).astype("float64")
    table["too_short"] = table["history_hours"] < min_history
    table["flags"] = _flags(table)
    table["partition"] = partition
    table["source_file"] = str(source_file)
    return table.loc[:, list(QUALITY_COLUMNS)].reset_index(drop=True)


def mark_unclassified(table: pd.DataFrame, known_metrics: Iterable[str]) -> pd.DataFrame:
    """The quality table with flag ``unclassified_metric`` on series whose metric the run cannot
    judge: not canonical, not a percentage metric, no thresholds
    (:func:`capforecast.metric_names.known_metrics`). They are forecast with no thresholds."""
    unknown = ~table["metric"].astype(str).isin(list(known_metrics))
    return table.assign(flags=_add_flag(table["flags"], unknown, UNCLASSIFIED))


def log_unclassified(table: pd.DataFrame) -> int:
    """One WARNING per unclassified metric (its source names and series) and the count of
    flagged series; returns that count."""
    flagged = table[table["flags"].fillna("").str.split(";").map(lambda f: UNCLASSIFIED in f)]
    for metric, group in flagged.groupby("metric", sort=True):
        sources = ", ".join(repr(str(s)) for s in sorted(set(group["source_metric"].astype(str))))
        ids = [str(r) for r in group["resource_id"]]
        shown = ", ".join(ids[:SHOWN_SERIES]) + (", ..." if len(ids) > SHOWN_SERIES else "")
        LOG.warning(
            "unclassified metric %r (input name %s; %d series: %s): not a canonical metric and "
            "no risk.thresholds for it, so it is forecast with no thresholds; map it in "
            "data.metric_names or give it thresholds",
            str(metric),
            sources,
            len(group),
            shown,
        )
    if len(flagged):
        LOG.warning("%d series flagged %s", len(flagged), UNCLASSIFIED)
    return len(flagged)


def mark_capacity_issues(table: pd.DataFrame, resources: pd.DataFrame) -> pd.DataFrame:
    """The quality table with the capacity issue of each series' resource as a flag
    (``capacity_impossible`` / ``capacity_unknown``, from ``results/resources.parquet``, see
    :mod:`capforecast.data.capacity`): such resources get no right-sizing and no capacity plan."""
    if "capacity_issue" not in resources.columns:
        return table
    issue_of = resources.set_index(resources["resource_id"].astype(str))["capacity_issue"]
    issues = table["resource_id"].astype(str).map(issue_of)
    flags = table["flags"]
    for code in CAPACITY_ISSUES:
        flagged = issues == code
        flags = _add_flag(flags, flagged, code)
        if flagged.any():
            LOG.warning(
                "%d series of %d resource(s) flagged %s: no right-sizing, no capacity plan",
                int(flagged.sum()),
                table.loc[flagged, "resource_id"].nunique(),
                code,
            )
    return table.assign(flags=flags)


def skipped_files_table(skipped: Iterable[Sequence[str]]) -> pd.DataFrame:
    """Entries of ``data.path`` that were not read (contracts.SKIPPED_FILE_COLUMNS), one WARNING
    naming them, so that no file is left out without a word."""
    table = pd.DataFrame([list(entry) for entry in skipped], columns=list(SKIPPED_FILE_COLUMNS))
    for entry in table.itertuples(index=False):
        LOG.warning("not read: %s (%s)", entry.file, entry.reason)
    return table.astype(object)


def file_reconciliation(
    validation: ValidationResult, source_file: str, partition: str
) -> pd.DataFrame:
    """One row accounting for every row of the file: in = kept + quarantined (``balanced``)."""
    c = validation.counts
    row = {
        "source_file": str(source_file),
        "partition": partition,
        "rows_in": c["rows_in"],
        "rows_kept": c["rows_kept"],
        "rows_repaired": c["rows_repaired"],
        "rows_quarantined": c["rows_quarantined"],
        "duplicates": c["duplicates"],
        "balanced": c["rows_in"] == c["rows_kept"] + c["rows_quarantined"],
    }
    return pd.DataFrame([row], columns=list(RECONCILIATION_COLUMNS))
