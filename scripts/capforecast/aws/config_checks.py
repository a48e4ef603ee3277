"""Config rules of the AWS data sources that JSON Schema cannot express (run by
``capforecast.config.validated_config`` before any job): an S3 source names a bucket, a
CloudWatch service selects its instances one way, two CloudWatch metrics never become one
series, and settings that would do nothing for the chosen source are errors, not no-ops.

No AWS library is imported here: every rule validates its config with it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import pandas as pd

from capforecast.errors import ConfigError
from capforecast.metric_names import MetricNameMap

# s3://bucket[/prefix]: bucket names as S3 allows them (3-63 of [a-z0-9.-]).
S3_URI = re.compile(r"^s3://(?P<bucket>[a-z0-9][a-z0-9.-]{1,61}[a-z0-9])(?:/(?P<key>.*))?$")
SELECTORS = ("instance_ids", "auto_scaling_group", "tags")
# CloudWatch's retention per period (seconds -> days), as capforecast.aws.cloudwatch.RETENTION.
RETENTION_DAYS = {60: 15, 300: 63, 3600: 455}
# data keys that describe files (their columns, names and clocks): no meaning for CloudWatch.
FILE_KEYS = (
    "path",
    "format",
    "columns",
    "metric",
    "metric_patterns",
    "timestamp_unit",
    "naive_timezone",
    "resources",
)


def parse_s3_uri(uri: str, key: str = "data.path") -> tuple[str, str]:
    """(bucket, key or prefix) of ``s3://bucket/prefix``; ConfigError naming ``key`` else."""
    match = S3_URI.match(uri)
    if match is None:
        raise ConfigError(
            key, f"{uri!r} is not an S3 URI; write s3://bucket/prefix/ (a bucket name as S3 allows)"
        )
    return match["bucket"], match["key"] or ""


def cloudwatch_source_metric(entry: Mapping[str, Any]) -> str:
    """The source name a CloudWatch metric is stored under before the metric-name map: the
    entry's ``metric`` when given, else ``Namespace:Name`` (the map ignores the namespace)."""
    return str(entry.get("metric") or f"{entry['namespace']}:{entry['name']}")


def check_config(cfg: Mapping[str, Any], defaults: Mapping[str, Any]) -> None:
    """``defaults``: the schema's ``data`` properties (their ``default`` values)."""
    data = cfg["data"]
    source = data["source"]
    path = data["path"]
    if source != "cloudwatch":
        for key, sub in defaults["cloudwatch"]["properties"].items():
            if data["cloudwatch"][key] != sub["default"]:
                raise ConfigError(
                    f"data.cloudwatch.{key}", "applies to data.source cloudwatch only"
                )
    if source == "s3":
        if not path:
            raise ConfigError(
                "data.path", "required when data.source is 's3' (s3://bucket/prefix/)"
            )
        parse_s3_uri(str(path))
        if data["resources"] and str(data["resources"]).startswith("s3://"):
            parse_s3_uri(str(data["resources"]), "data.resources")
    elif path and str(path).startswith("s3://"):
        raise ConfigError("data.path", f"an S3 URI needs data.source: s3 (it is {source!r})")
    elif data["resources"] and str(data["resources"]).startswith("s3://"):
        raise ConfigError("data.resources", "an S3 URI needs data.source: s3")
    if source == "cloudwatch":
        _check_cloudwatch(data, defaults, str(cfg["etl"]["freq"]))


def _check_cloudwatch(data: Mapping[str, Any], defaults: Mapping[str, Any], freq: str) -> None:
    for key in FILE_KEYS:
        if data[key] != defaults[key]["default"]:
            raise ConfigError(
                f"data.{key}",
                "describes input files; data.source cloudwatch reads none (instances and "
                "metrics are data.cloudwatch.*, the resources table comes from EC2)",
            )
    cw = data["cloudwatch"]
    if not cw["services"]:
        raise ConfigError(
            "data.cloudwatch.services",
            "name at least one service: {name, and one of instance_ids, auto_scaling_group, tags}",
        )
    seen: dict[str, int] = {}
    for i, svc in enumerate(cw["services"]):
        given = [key for key in SELECTORS if key in svc]
        if len(given) != 1:
            raise ConfigError(
                f"data.cloudwatch.services[{i}]",
                f"service {svc['name']!r} needs exactly one of {', '.join(SELECTORS)} "
                f"(given: {', '.join(given) or 'none'})",
            )
        other = seen.setdefault(svc["name"].casefold(), i)
        if other != i:
            raise ConfigError(
                f"data.cloudwatch.services[{i}].name",
                f"{svc['name']!r} is also services[{other}] (names are compared ignoring case)",
            )
    names = MetricNameMap(data["metric_names"])
    metrics: dict[str, int] = {}
    for i, entry in enumerate(cw["metrics"]):
        metric = names.lookup(cloudwatch_source_metric(entry)).metric
        other = metrics.setdefault(metric, i)
        if other != i:
            raise ConfigError(
                f"data.cloudwatch.metrics[{i}]",
                f"{entry['namespace']}:{entry['name']} {entry['statistic']} would be the metric "
                f"{metric!r}, as metrics[{other}] is; give one of them another name with "
                "metric: (e.g. cpu_utilization_max)",
            )
    if cw["period"] != "auto" and cw["days"] > RETENTION_DAYS[cw["period"]]:
        raise ConfigError(
            "data.cloudwatch.period",
            f"CloudWatch keeps {cw['period']}-second data {RETENTION_DAYS[cw['period']]} days, "
            f"less than data.cloudwatch.days ({cw['days']}); use auto or a coarser period",
        )
    if cw["end"] is not None:
        end = parse_instant(cw["end"], "data.cloudwatch.end")
        if end != end.floor(pd.Timedelta(freq)):
            raise ConfigError(
                "data.cloudwatch.end", f"{cw['end']} is not on an etl.freq ({freq}) boundary"
            )


def parse_instant(value: Any, key: str) -> pd.Timestamp:
    """An ISO 8601 instant as a UTC timestamp (UTC when it has no offset)."""
    try:
        stamp = pd.Timestamp(str(value))
    except (ValueError, OverflowError):
        stamp = pd.NaT
    if pd.isna(stamp):
        raise ConfigError(key, f"{value!r} is not an ISO 8601 instant")
    return stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")
