"""``data.source: cloudwatch``: one service's EC2 instances and their metrics, fetched with
GetMetricData into the raw long format, incrementally.

One ingest job per service (rules/cloudwatch.smk):

1. Instances: by ids, by Auto Scaling group (its members carry the tag
   ``aws:autoscaling:groupName``) or by tags, all resolved with DescribeInstances, which also
   gives the resources table (instance type, region; vCPU and memory from
   DescribeInstanceTypes; the hourly price from the config's catalogue).
2. Metrics: each configured ``namespace/name`` is looked up with ListMetrics, so the CloudWatch
   agent's metrics (``CWAgent``: memory, disk), whose dimensions carry more than the instance id
   (``path``, ``fstype``, appended ``InstanceType``...), are found with their exact dimensions.
3. Fetch: GetMetricData with at most :data:`MAX_QUERIES` queries and :data:`MAX_DATAPOINTS`
   datapoints per call, every page of NextToken followed (boto3's paginator), throttling retried
   by botocore's standard or adaptive retry mode (``aws.retry_mode``), never by a loop here.
   The period is chosen from the oldest instant requested and CloudWatch's retention
   (:data:`RETENTION`).
4. Incremental: what was fetched is kept in a store (``data.cloudwatch.store``) outside the
   workflow's outputs; a rerun asks each series only for the time after its last sample, less
   ``overlap_minutes`` for late datapoints, and a sample fetched twice keeps the newer value.

The rows keep CloudWatch's names (``AWS/EC2:CPUUtilization``, or an entry's ``metric``); the
local reader (:func:`capforecast.data.ingest.ingest_file`) then maps them to the project's names
exactly as for an exported file.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from capforecast.aws.config_checks import (
    RETENTION_DAYS,
    cloudwatch_source_metric,
    parse_instant,
)
from capforecast.aws.errors import AwsError, aws_call
from capforecast.aws.session import aws_client, aws_session
from capforecast.contracts import RAW_COLUMNS, RESOURCE_TABLE_COLUMNS
from capforecast.data import capacity, ingest
from capforecast.errors import ConfigError
from capforecast.settings import DataSettings, EtlSettings

LOG = logging.getLogger(__name__)

MAX_QUERIES = 500  # MetricDataQueries per GetMetricData call
MAX_DATAPOINTS = 100_800  # datapoints one GetMetricData call returns
# (period seconds, how long CloudWatch keeps data at that resolution), finest first.
RETENTION: tuple[tuple[int, pd.Timedelta], ...] = tuple(
    (period, pd.Timedelta(days=days)) for period, days in sorted(RETENTION_DAYS.items())
)
ASG_TAG = "aws:autoscaling:groupName"
DESCRIBE_TYPES_BATCH = 100  # InstanceTypes per DescribeInstanceTypes call


@dataclass(frozen=True)
class MetricSpec:
    """One entry of ``data.cloudwatch.metrics``."""

    namespace: str
    name: str
    statistic: str
    dimensions: tuple[tuple[str, str], ...]
    source_metric: str  # the name rows carry before the metric-name map


@dataclass(frozen=True)
class ServiceSpec:
    """One entry of ``data.cloudwatch.services``: a name and one way to select instances."""

    name: str
    instance_ids: tuple[str, ...] | None
    auto_scaling_group: str | None
    tags: tuple[tuple[str, tuple[str, ...]], ...] | None

    def describe(self) -> str:
        if self.instance_ids is not None:
            return f"instance ids {', '.join(self.instance_ids)}"
        if self.auto_scaling_group is not None:
            return f"Auto Scaling group {self.auto_scaling_group!r}"
        shown = ", ".join(f"{k}={'|'.join(v)}" for k, v in self.tags or ())
        return f"tags {shown}"


@dataclass(frozen=True)
class CloudWatchSettings:
    """``data.cloudwatch`` (validated), with ``end`` resolved to the instant fetched up to."""

    services: tuple[ServiceSpec, ...]
    metrics: tuple[MetricSpec, ...]
    days: int
    period: str | int
    overlap: pd.Timedelta
    store: str

    def service(self, name: str) -> ServiceSpec:
        return next(s for s in self.services if s.name == name)


def cloudwatch_settings(cw: Mapping[str, Any]) -> CloudWatchSettings:
    """From the validated ``data.cloudwatch`` section."""
    services = []
    for svc in cw["services"]:
        tags = svc.get("tags")
        services.append(
            ServiceSpec(
                name=str(svc["name"]),
                instance_ids=tuple(svc["instance_ids"]) if "instance_ids" in svc else None,
                auto_scaling_group=svc.get("auto_scaling_group"),
                tags=None
                if tags is None
                else tuple(
                    (str(k), tuple([v] if isinstance(v, str) else v))
                    for k, v in sorted(tags.items())
                ),
            )
        )
    metrics = tuple(
        MetricSpec(
            namespace=str(m["namespace"]),
            name=str(m["name"]),
            statistic=str(m["statistic"]),
            dimensions=tuple(sorted((str(k), str(v)) for k, v in m.get("dimensions", {}).items())),
            source_metric=cloudwatch_source_metric(m),
        )
        for m in cw["metrics"]
    )
    return CloudWatchSettings(
        services=tuple(services),
        metrics=metrics,
        days=int(cw["days"]),
        period=cw["period"],
        overlap=pd.Timedelta(minutes=int(cw["overlap_minutes"])),
        store=str(cw["store"]),
    )


def fetch_until(cw: Mapping[str, Any], freq: str, now: pd.Timestamp | None = None) -> str:
    """The instant a fetch ends at: ``data.cloudwatch.end``, else now rounded down to
    ``etl.freq`` (ISO text: a rule param, so a new bin reruns the fetch)."""
    if cw["end"] is not None:
        return parse_instant(cw["end"], "data.cloudwatch.end").isoformat()
    now = now if now is not None else pd.Timestamp.now(tz="UTC")
    return now.floor(pd.Timedelta(freq)).isoformat()


# --------------------------------------------------------------------------- period choice


def allowed_period(period: int, oldest: pd.Timestamp, now: pd.Timestamp) -> bool:
    """Does CloudWatch still keep data at ``period`` seconds as old as ``oldest``?"""
    kept = dict(RETENTION)
    return period in kept and oldest >= now - kept[period]


def choose_period(
    setting: str | int, oldest: pd.Timestamp, now: pd.Timestamp, stored: int | None = None
) -> int:
    """Seconds per datapoint for a fetch reaching back to ``oldest``.

    ``auto``: the period already in the store when there is one (a series keeps one
    resolution) and retention allows it, else the finest period whose retention covers
    ``oldest``; a fixed period must be covered. Older than every retention: ConfigError
    naming data.cloudwatch.days.
    """
    if setting != "auto":
        period = int(setting)
        if not allowed_period(period, oldest, now):
            days = dict(RETENTION)[period].days
            raise ConfigError(
                "data.cloudwatch.period",
                f"CloudWatch keeps {period}-second data {days} days, but the fetch starts at "
                f"{oldest.isoformat()} ({(now - oldest).days} days ago); use auto or a coarser "
                "period, or fewer data.cloudwatch.days",
            )
        return period
    if stored is not None and allowed_period(stored, oldest, now):
        return stored
    for period, _ in RETENTION:
        if allowed_period(period, oldest, now):
            return period
    raise ConfigError(
        "data.cloudwatch.days",
        f"the fetch starts at {oldest.isoformat()}, older than CloudWatch keeps any data "
        f"({RETENTION[-1][1].days} days at 1 hour); fetch fewer days or a later "
        "data.cloudwatch.end",
    )


# --------------------------------------------------------------------------- instances


def _instance_filters(service: ServiceSpec) -> dict[str, Any]:
    if service.instance_ids is not None:
        return {"InstanceIds": list(service.instance_ids)}
    if service.auto_scaling_group is not None:
        return {"Filters": [{"Name": f"tag:{ASG_TAG}", "Values": [service.auto_scaling_group]}]}
    return {"Filters": [{"Name": f"tag:{k}", "Values": list(v)} for k, v in service.tags or ()]}


def resolve_instances(ec2: Any, service: ServiceSpec) -> list[dict[str, Any]]:
    """The service's instances (DescribeInstances, every page), sorted by id; none found is
    a one-line error naming the service and how it selects instances."""
    what = f"service {service.name!r} ({service.describe()}): DescribeInstances"
    with aws_call(what):
        pages = ec2.get_paginator("describe_instances").paginate(**_instance_filters(service))
        found = {
            inst["InstanceId"]: inst
            for page in pages
            for reservation in page.get("Reservations", [])
            for inst in reservation.get("Instances", [])
        }
    if not found:
        raise AwsError(
            what,
            f"no EC2 instance matches in region {ec2.meta.region_name}; check the "
            f"{'group name' if service.auto_scaling_group else 'tags'} in "
            "data.cloudwatch.services and aws.region",
            code="NoInstances",
        )
    return [found[key] for key in sorted(found)]


def instance_resources(
    ec2: Any,
    instances: Sequence[Mapping[str, Any]],
    service: str,
    catalogue: Mapping[str, Mapping[str, Any]],
) -> pd.DataFrame:
    """The resources table (contracts.RESOURCE_TABLE_COLUMNS) of these instances: type and
    region from DescribeInstances, vCPU and memory from DescribeInstanceTypes, the hourly price
    from the catalogue (empty for a type it does not list)."""
    types = sorted({str(inst["InstanceType"]) for inst in instances})
    sizes: dict[str, tuple[float, float]] = {}
    with aws_call(f"service {service!r}: DescribeInstanceTypes"):
        for i in range(0, len(types), DESCRIBE_TYPES_BATCH):
            pages = ec2.get_paginator("describe_instance_types").paginate(
                InstanceTypes=types[i : i + DESCRIBE_TYPES_BATCH]
            )
            for page in pages:
                for info in page.get("InstanceTypes", []):
                    sizes[info["InstanceType"]] = (
                        float(info["VCpuInfo"]["DefaultVCpus"]),
                        float(info["MemoryInfo"]["SizeInMiB"]) / 1024.0,
                    )
    rows = []
    for inst in instances:
        kind = str(inst["InstanceType"])
        vcpu, memory = sizes.get(kind, (np.nan, np.nan))
        price = catalogue.get(kind, {}).get("hourly_price_usd")
        rows.append(
            {
                "resource_id": str(inst["InstanceId"]),
                "service": service,
                "instance_type": kind,
                "vcpu": vcpu,
                "memory_gib": memory,
                "region": str(ec2.meta.region_name),
                "hourly_price_usd": np.nan if price is None else float(price),
            }
        )
    table = pd.DataFrame(rows, columns=list(RESOURCE_TABLE_COLUMNS[:-1]))
    table["capacity_issue"] = capacity.capacity_issues(table)
    return table.loc[:, list(RESOURCE_TABLE_COLUMNS)]


# --------------------------------------------------------------------------- queries


@dataclass(frozen=True)
class Query:
    """One series to fetch: an instance's metric with its exact CloudWatch dimensions."""

    resource_id: str
    source_metric: str
    statistic: str
    metric: Mapping[str, Any]  # {Namespace, MetricName, Dimensions}


def _pick(
    candidates: list[Mapping[str, Any]], spec: MetricSpec, instance: str
) -> Mapping[str, Any]:
    """One metric of an instance for an entry: the one with no dimension besides InstanceId
    and the entry's, else the only one; several is an error naming their dimensions."""
    wanted = {("InstanceId", instance), *spec.dimensions}
    exact = [m for m in candidates if {(d["Name"], d["Value"]) for d in m["Dimensions"]} == wanted]
    if len(exact) == 1 or len(candidates) == 1:
        return exact[0] if exact else candidates[0]
    shown = "; ".join(
        ", ".join(f"{d['Name']}={d['Value']}" for d in m["Dimensions"] if d["Name"] != "InstanceId")
        for m in candidates[:5]
    )
    raise ConfigError(
        "data.cloudwatch.metrics",
        f"{spec.namespace}:{spec.name} has {len(candidates)} series for {instance} ({shown}); "
        "pick one with dimensions: in its entry (e.g. {path: /})",
    )


def metric_queries(
    cw: Any, instance_ids: Sequence[str], metrics: Sequence[MetricSpec]
) -> tuple[list[Query], list[str]]:
    """The series to fetch (ListMetrics per entry, every page) and, per entry, the instances
    that have no such metric (e.g. no CloudWatch agent), for a warning."""
    wanted = set(instance_ids)
    queries: list[Query] = []
    missing: list[str] = []
    for spec in metrics:
        by_instance: dict[str, list[Mapping[str, Any]]] = {}
        with aws_call(f"ListMetrics {spec.namespace}:{spec.name}"):
            pages = cw.get_paginator("list_metrics").paginate(
                Namespace=spec.namespace, MetricName=spec.name
            )
            for page in pages:
                for metric in page.get("Metrics", []):
                    dims = {d["Name"]: d["Value"] for d in metric.get("Dimensions", [])}
                    instance = dims.get("InstanceId")
                    if instance in wanted and all(dims.get(k) == v for k, v in spec.dimensions):
                        by_instance.setdefault(instance, []).append(metric)
        for instance in instance_ids:
            if instance not in by_instance:
                missing.append(f"{instance} {spec.namespace}:{spec.name}")
                continue
            chosen = _pick(by_instance[instance], spec, instance)
            queries.append(
                Query(
                    resource_id=instance,
                    source_metric=spec.source_metric,
                    statistic=spec.statistic,
                    metric={
                        "Namespace": spec.namespace,
                        "MetricName": spec.name,
                        "Dimensions": [dict(d) for d in chosen["Dimensions"]],
                    },
                )
            )
    return queries, missing


# --------------------------------------------------------------------------- fetching


def batches(queries: Sequence[Query], points_per_query: int) -> list[list[Query]]:
    """Queries in calls of at most MAX_QUERIES, whose datapoints stay within MAX_DATAPOINTS."""
    size = max(1, min(MAX_QUERIES, MAX_DATAPOINTS // max(points_per_query, 1)))
    return [list(queries[i : i + size]) for i in range(0, len(queries), size)]


def get_metric_data(
    cw: Any,
    queries: Sequence[Query],
    start: pd.Timestamp,
    end: pd.Timestamp,
    period: int,
) -> pd.DataFrame:
    """Datapoints of ``queries`` in [start, end) at ``period`` seconds, batched and paged, as
    raw long rows in the queries' source names."""
    frames: list[pd.DataFrame] = []
    points = int((end - start) / pd.Timedelta(seconds=period)) + 1
    for batch in batches(queries, points):
        by_id = {f"q{i}": query for i, query in enumerate(batch)}
        request = [
            {
                "Id": key,
                "MetricStat": {"Metric": q.metric, "Period": period, "Stat": q.statistic},
                "ReturnData": True,
            }
            for key, q in by_id.items()
        ]
        stamps: dict[str, list[Any]] = {key: [] for key in by_id}
        values: dict[str, list[float]] = {key: [] for key in by_id}
        what = f"GetMetricData ({len(batch)} series, {start.isoformat()} .. {end.isoformat()})"
        with aws_call(what):
            pages = cw.get_paginator("get_metric_data").paginate(
                MetricDataQueries=request,
                StartTime=start.to_pydatetime(),
                EndTime=end.to_pydatetime(),
                ScanBy="TimestampAscending",
            )
            for page in pages:
                for result in page.get("MetricDataResults", []):
                    _check_status(result, by_id, what)
                    stamps[result["Id"]] += result.get("Timestamps", [])
                    values[result["Id"]] += result.get("Values", [])
        for key, query in by_id.items():
            if stamps[key]:
                frames.append(
                    pd.DataFrame(
                        {
                            "timestamp": pd.to_datetime(stamps[key], utc=True),
                            "resource_id": query.resource_id,
                            "metric": query.source_metric,
                            "value": np.asarray(values[key], dtype="float64"),
                        }
                    )
                )
    return _long(frames)


def _check_status(result: Mapping[str, Any], by_id: Mapping[str, Query], what: str) -> None:
    """Complete and PartialData (more on the next page) are fine; anything else is an error
    naming the series."""
    status = result.get("StatusCode", "Complete")
    if status in ("Complete", "PartialData"):
        return
    query = by_id.get(result.get("Id", ""))
    messages = "; ".join(m.get("Value", "") for m in result.get("Messages", [])) or status
    series = f"{query.resource_id} {query.source_metric}" if query else result.get("Id")
    raise AwsError(what, f"{series}: {status}: {messages}", code=status)


def _long(frames: Iterable[pd.DataFrame]) -> pd.DataFrame:
    frames = [f for f in frames if len(f)]
    if not frames:
        empty = pd.DataFrame({c: pd.Series(dtype=object) for c in RAW_COLUMNS})
        empty["timestamp"] = pd.Series(dtype="datetime64[ns, UTC]")
        empty["value"] = pd.Series(dtype="float64")
        return empty
    out = pd.concat(frames, ignore_index=True)
    out["timestamp"] = out["timestamp"].astype("datetime64[ns, UTC]")
    return out.loc[:, list(RAW_COLUMNS)]


# --------------------------------------------------------------------------- the store


@dataclass(frozen=True)
class Stored:
    """What a service's store holds: rows in source names, and the period they were fetched at."""

    rows: pd.DataFrame
    period: int | None


def store_paths(store: str | Path, service: str) -> tuple[Path, Path]:
    root = Path(store)
    return root / f"{service}.parquet", root / f"{service}.json"


def read_store(store: str | Path, service: str) -> Stored:
    rows_path, meta_path = store_paths(store, service)
    if not rows_path.is_file() or not meta_path.is_file():
        return Stored(_long([]), None)
    meta = json.loads(meta_path.read_text())
    rows = pd.read_parquet(rows_path)
    rows["timestamp"] = rows["timestamp"].astype("datetime64[ns, UTC]")
    return Stored(rows.loc[:, list(RAW_COLUMNS)], int(meta["period"]))


def write_store(store: str | Path, service: str, rows: pd.DataFrame, period: int) -> Path:
    """Write rows and period (rows first, then the period file: a store cut short is read as
    empty, i.e. fetched again)."""
    rows_path, meta_path = store_paths(store, service)
    rows_path.parent.mkdir(parents=True, exist_ok=True)
    meta_path.unlink(missing_ok=True)
    rows.to_parquet(rows_path, index=False)
    meta_path.write_text(json.dumps({"period": period}) + "\n")
    return rows_path


def merge(old: pd.DataFrame, new: pd.DataFrame, window_start: pd.Timestamp) -> pd.DataFrame:
    """Old and new rows, a sample fetched twice keeping the new value, rows before the
    window dropped; sorted by series and time."""
    rows = _long([old, new])
    rows = rows.drop_duplicates(["timestamp", "resource_id", "metric"], keep="last")
    rows = rows[rows["timestamp"] >= window_start]
    return rows.sort_values(["resource_id", "metric", "timestamp"], kind="stable").reset_index(
        drop=True
    )


# --------------------------------------------------------------------------- one service


@dataclass(frozen=True)
class FetchReport:
    """What one incremental fetch did (logged, and checked by the tests)."""

    period: int
    starts: dict[str, int]  # ISO start -> series fetched from it
    end: str
    rows_fetched: int
    rows_total: int
    missing: list[str]


def fetch_service(
    *,
    ec2: Any,
    cw: Any,
    settings: CloudWatchSettings,
    service: str,
    until: str,
    catalogue: Mapping[str, Mapping[str, Any]],
    now: pd.Timestamp | None = None,
) -> tuple[Path, pd.DataFrame, FetchReport]:
    """Fetch what is new for one service into its store: (the store's rows file, the
    resources table, what was fetched). ``now`` (for retention) defaults to the clock."""
    spec = settings.service(service)
    now = now if now is not None else pd.Timestamp.now(tz="UTC")
    end = pd.Timestamp(until).tz_convert("UTC")
    window_start = end - pd.Timedelta(days=settings.days)
    instances = resolve_instances(ec2, spec)
    resources = instance_resources(ec2, instances, service, catalogue)
    queries, missing = metric_queries(cw, list(resources["resource_id"]), settings.metrics)
    stored = read_store(settings.store, service)
    starts = _series_starts(stored.rows, queries, window_start, settings.overlap)
    oldest = min(starts.values(), default=window_start)
    period = choose_period(settings.period, oldest, now, stored.period)
    old_rows = stored.rows
    if stored.period is not None and period != stored.period:
        LOG.warning(
            "%s: the store holds %d-second data; fetching the whole window again at %d s",
            service,
            stored.period,
            period,
        )
        old_rows = _long([])
        starts = {key: window_start for key in starts}
    step = pd.Timedelta(seconds=period)
    groups: dict[pd.Timestamp, list[Query]] = {}
    for query in queries:
        groups.setdefault(starts[_key(query)].floor(step), []).append(query)
    fetched = [
        get_metric_data(cw, group, start, end.floor(step), period)
        for start, group in sorted(groups.items())
        if start < end.floor(step)
    ]
    new_rows = _long(fetched)
    rows = merge(old_rows, new_rows, window_start)
    # Only the series asked for now: a metric taken out of the config, or an instance that
    # left the service, leaves the data too.
    current = pd.MultiIndex.from_tuples([_key(q) for q in queries], names=["r", "m"])
    rows = rows[pd.MultiIndex.from_arrays([rows["resource_id"], rows["metric"]]).isin(current)]
    rows = rows.reset_index(drop=True)
    if rows.empty:
        raise AwsError(
            f"service {service!r} ({spec.describe()})",
            f"no datapoints from {window_start.isoformat()} to {end.isoformat()} for its "
            f"{len(resources)} instance(s) and {len(settings.metrics)} metric(s) "
            f"({len(missing)} instance metric(s) not in CloudWatch); check "
            "data.cloudwatch.metrics, .days and .end",
            code="NoData",
        )
    path = write_store(settings.store, service, rows, period)
    report = FetchReport(
        period=period,
        starts={start.isoformat(): len(group) for start, group in sorted(groups.items())},
        end=end.floor(step).isoformat(),
        rows_fetched=len(new_rows),
        rows_total=len(rows),
        missing=missing,
    )
    return path, resources, report


def _key(query: Query) -> tuple[str, str]:
    return (query.resource_id, query.source_metric)


def _series_starts(
    rows: pd.DataFrame,
    queries: Sequence[Query],
    window_start: pd.Timestamp,
    overlap: pd.Timedelta,
) -> dict[tuple[str, str], pd.Timestamp]:
    """Per series: its last stored sample less the overlap (never before the window), or the
    window start for a series the store has not seen."""
    last = rows.groupby(["resource_id", "metric"])["timestamp"].max().to_dict() if len(rows) else {}
    starts = {}
    for query in queries:
        seen = last.get(_key(query))
        starts[_key(query)] = window_start if seen is None else max(window_start, seen - overlap)
    return starts


def ingest_service(
    *,
    aws: Mapping[str, Any],
    cloudwatch: Mapping[str, Any],
    service: str,
    until: str,
    data: DataSettings,
    etl: EtlSettings,
    catalogue: Mapping[str, Mapping[str, Any]],
) -> tuple[ingest.IngestResult, pd.DataFrame, FetchReport]:
    """One service's ingest job: fetch what is new (:func:`fetch_service`), then read the
    store like an exported long-format file (names mapped, scales checked, every row kept)."""
    session = aws_session(aws)
    settings = cloudwatch_settings(cloudwatch)
    path, resources, report = fetch_service(
        ec2=aws_client("ec2", aws, session=session),
        cw=aws_client("cloudwatch", aws, session=session),
        settings=settings,
        service=service,
        until=until,
        catalogue=catalogue,
    )
    LOG.info(
        "%s: %d instances; fetched %d datapoints at %d s up to %s (from %s); %d in the store",
        service,
        len(resources),
        report.rows_fetched,
        report.period,
        report.end,
        ", ".join(f"{start}: {n} series" for start, n in report.starts.items()),
        report.rows_total,
    )
    if report.missing:
        LOG.warning(
            "%s: %d instance metric(s) not in CloudWatch (no CloudWatch agent?), not fetched: %s",
            service,
            len(report.missing),
            ingest._shown(report.missing),
        )
    return ingest.ingest_file(path, data, etl), resources, report
