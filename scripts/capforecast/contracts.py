"""Column contracts shared by every stage (users and tests read these files).

Changing a name here changes a file format: keep them stable.
"""

from __future__ import annotations

# Raw long format: results/raw/{partition}.parquet
RAW_COLUMNS: tuple[str, ...] = ("timestamp", "resource_id", "metric", "value")

# Resources table: results/raw/resources.parquet
RESOURCE_COLUMNS: tuple[str, ...] = (
    "resource_id",
    "service",
    "instance_type",
    "vcpu",
    "memory_gib",
    "region",
    "hourly_price_usd",
)

# Cleaned hourly data: results/clean/{partition}.parquet
CLEAN_COLUMNS: tuple[str, ...] = (
    "timestamp",  # bin start, UTC
    "resource_id",
    "metric",
    "value",  # mean of the raw samples in the bin (interpolated when filled)
    "value_max",  # max of the raw samples in the bin
    "n_obs",  # raw samples in the bin (0 when filled or a gap)
    "is_filled",  # True where a short gap was interpolated
    "is_gap",  # True inside a gap longer than etl.max_fill_gap (value is NaN)
)

# Per-series quality table: results/quality/data_quality.csv
QUALITY_COLUMNS: tuple[str, ...] = (
    "partition",
    "source_file",
    "resource_id",
    "metric",
    "first_timestamp",
    "last_timestamp",
    "history_hours",
    "expected_bins",
    "observed_bins",
    "coverage",
    "gap_count",
    "longest_gap_bins",
    "filled_points",
    "unfilled_points",
    "duplicates",
    "unsorted_rows",
    "median_step_seconds",
    "irregular_fraction",
    "rows_in",
    "rows_kept",
    "rows_repaired",
    "rows_quarantined",
    "pegged_fraction",
    "too_short",
    "flags",
)

# Quarantined raw rows: results/quality/quarantine.parquet
QUARANTINE_COLUMNS: tuple[str, ...] = (
    "source_file",
    "row",  # 0-based row index in the source file / raw partition
    "timestamp",
    "resource_id",
    "metric",
    "value",
    "reason",
)

# Final forecasts: results/forecast/forecasts.parquet (+ one column per quantile, "q0.1" style)
FORECAST_KEY_COLUMNS: tuple[str, ...] = ("resource_id", "metric", "timestamp", "model")


def quantile_column(q: float) -> str:
    """Name of the forecast column holding quantile ``q`` (e.g. 0.1 -> "q0.1")."""
    return f"q{q:g}"


def series_id(resource_id: str, metric: str) -> str:
    """Stable identifier of one series (resource x metric)."""
    return f"{resource_id}|{metric}"
