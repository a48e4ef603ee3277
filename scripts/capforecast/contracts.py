"""Column contracts shared by every stage (users and tests read these files).

Changing a name here changes a file format: keep them stable.
"""

from __future__ import annotations

# Raw long format: results/raw/{partition}.parquet
RAW_COLUMNS: tuple[str, ...] = ("timestamp", "resource_id", "metric", "value")

# Metric names the product knows the meaning of (source names are mapped to these by
# capforecast.metric_names). Which of them are 0-100 percentages is etl.percent_metrics.
CANONICAL_METRICS: tuple[str, ...] = (
    "cpu_utilization",  # percent
    "memory_utilization",  # percent of memory in use
    "disk_used_percent",  # percent of disk space in use
    "network_in_bytes",  # bytes per sample period or per second, as the source reports them
    "network_out_bytes",
    "disk_read_bytes",
    "disk_write_bytes",
    "request_count",  # requests per sample period
    "request_latency",  # in the source's unit (seconds for CloudWatch ELB/ALB)
    "memory_available_bytes",  # free memory: lower means less headroom (not a utilisation)
)

# Per-series ingest record: results/raw/{partition}.series.parquet (what ingest did to each series)
INGEST_SERIES_COLUMNS: tuple[str, ...] = (
    "resource_id",
    "metric",  # canonical (or sanitised) name in the raw partition
    "source_metric",  # the name as the input had it (file column value or series-file stem)
    "name_match",  # canonical | builtin | config | pattern | unknown
    "scale",  # percent | fraction (converted x100) | ambiguous (0-1 values read as percent) | ""
    "scale_evidence",  # name | values | config | "" (non-percent metrics)
    "rows_rescaled",  # non-missing values multiplied by 100
    "ids_trimmed",  # the resource id or metric name had surrounding whitespace in some rows
)

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
# results/resources.parquet: the resources table as ingest completed it, plus why a resource
# cannot be sized (capforecast.data.capacity: capacity_impossible | capacity_unknown | None).
RESOURCE_TABLE_COLUMNS: tuple[str, ...] = (*RESOURCE_COLUMNS, "capacity_issue")

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
    "source_metric",  # metric name in the input (see INGEST_SERIES_COLUMNS)
    "rows_rescaled",  # values converted from a 0-1 scale to percent
    "flags",
)

# Entries of data.path that are not read, and why: results/quality/skipped_files.csv
SKIPPED_FILE_COLUMNS: tuple[str, ...] = ("file", "reason")

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

# The risk stage's outputs (results/risk/risk_report.{parquet,csv}, service_capacity.csv): the
# capacity-risk report (capforecast.reports.capacity_risk) relies on every column.
RISK_REPORT_COLUMNS: tuple[str, ...] = (
    "resource_id",
    "service",
    "instance_type",
    "metric",
    "finding",
    "risk_score",
    "confidence",
    "p_breach_warning",
    "p_breach_critical",
    "eta_p10",
    "eta_p50",
    "eta_p90",
    "eta_warning_p10",
    "eta_warning_p50",
    "eta_warning_p90",
    "act_by",
    "act_by_basis",
    "act_now",
    "days_until_full",
    "headroom_pct",
    "headroom_basis",
    "peak_p50",
    "peak_p90",
    "observed_max",
    "trend_per_day",
    "warning_threshold",
    "critical_threshold",
    "first_to_run_out",
    "saturated",
    "pegged_in_history",
    "history_hours",
    "last_observed",
    "reporting_lag_hours",
    "metric_finding",
    "metric_risk_score",
    "metric_reason_codes",
    "sizing",
    "recommended_instance_type",
    "monthly_cost_delta_usd",
    "reason_codes",
    "forecast_start",
    "forecast_end",
    "method",
)
SERVICE_CAPACITY_COLUMNS: tuple[str, ...] = (
    "service",
    "instance_type",
    "current_instances",
    "instances_with_forecasts",
    "vcpu_per_instance",
    "memory_gib_per_instance",
    "cpu_peak_demand_p50_vcpu",
    "cpu_peak_demand_p90_vcpu",
    "cpu_observed_peak_vcpu",
    "cpu_required_instances",
    "memory_peak_demand_p50_gib",
    "memory_peak_demand_p90_gib",
    "memory_observed_peak_gib",
    "memory_required_instances",
    "recommended_instances",
    "binding_dimension",
    "observed_peak_instances",
    "below_observed_peak",
    "advice",
    "instance_delta",
    "monthly_cost_delta_usd",
    "saturated",
    "note",
)


def quantile_column(q: float) -> str:
    """Name of the forecast column holding quantile ``q`` (e.g. 0.1 -> "q0.1")."""
    return f"q{q:g}"


SERIES_ID_SEPARATOR = "|"


def series_id(resource_id: str, metric: str) -> str:
    """Stable identifier of one series (resource x metric): ``resource_id|metric``.

    Metric names never contain the separator (they are canonical or sanitised to ``[a-z0-9_]``
    by :mod:`capforecast.metric_names`), so an id splits at its last ``|``
    (:func:`split_series_id`) and distinct pairs give distinct ids even when a resource id
    contains ``|``: resource ``a|b`` + metric ``m`` is ``a|b|m``, while resource ``a`` + metric
    ``b|m`` cannot exist (that metric is read as ``b_m``). A metric with the separator is
    refused rather than allowed to make an id ambiguous.
    """
    if SERIES_ID_SEPARATOR in metric:
        raise ValueError(
            f"metric {metric!r} contains {SERIES_ID_SEPARATOR!r}, the series-id separator; "
            "metric names are canonical or sanitised (capforecast.metric_names)"
        )
    return f"{resource_id}{SERIES_ID_SEPARATOR}{metric}"


def split_series_id(series: str) -> tuple[str, str]:
    """(resource_id, metric) of an id built by :func:`series_id`."""
    resource_id, _, metric = series.rpartition(SERIES_ID_SEPARATOR)
    return resource_id, metric


# ``model_used`` of a forecast row: "<model>" or "<model> (<flag>)" when the series was routed or
# special-cased. Here rather than in models/ so stages that only read forecasts (the risk
# stage's no-data rows) do not import the forecasting models.
FLAG_NO_DATA = "no_data"


def model_used_label(model: str, flag: str | None = None) -> str:
    """``model`` alone, or ``"model (flag)"`` when the series was routed or special-cased."""
    return model if not flag else f"{model} ({flag})"
