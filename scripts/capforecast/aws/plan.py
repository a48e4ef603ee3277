"""What rules/common.smk needs from AWS when the workflow is planned: the partitions of an S3
prefix (listed once per DAG build; no object is downloaded) or of the CloudWatch services (no
AWS call: instances are resolved by each service's ingest job), the series each partition is
planned for (its shards), and the region."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from capforecast.data import partitions
from capforecast.errors import CapForecastError

CLOUDWATCH_SOURCE = "cloudwatch:{service}"


def region(config: Mapping[str, Any]) -> str:
    """``aws.region``, else the standard chain's (one-line error when there is none)."""
    from capforecast.aws.session import aws_session

    return str(aws_session(config["aws"]).region_name)


def partition_sources(config: Mapping[str, Any], skipped: list[list[str]]) -> dict[str, str]:
    """Partition name -> its source: an ``s3://`` URI per object (``data.source: s3``;
    entries not read are appended to ``skipped``) or ``cloudwatch:<service>`` per service."""
    data = config["data"]
    if data["source"] == "cloudwatch":
        services = [svc["name"] for svc in data["cloudwatch"]["services"]]
        # Names the schema allows are safe partition names already; this keeps them distinct.
        named = partitions.partition_names(services)
        return {name: CLOUDWATCH_SOURCE.format(service=str(svc)) for name, svc in named.items()}
    from capforecast.aws import s3_source

    exclude = [data["resources"]] if data["resources"] else []
    listing = s3_source.scan_s3_objects(str(data["path"]), config["aws"], exclude=exclude)
    skipped.extend([uri, reason] for uri, reason in listing.skipped)
    return {name: obj.uri for name, obj in s3_source.partition_objects(listing.objects).items()}


def cloudwatch_services(sources: Mapping[str, str]) -> dict[str, str]:
    """Partition -> CloudWatch service, from :func:`partition_sources` (empty for files)."""
    head = CLOUDWATCH_SOURCE.split("{", 1)[0]
    return {name: src[len(head) :] for name, src in sources.items() if src.startswith(head)}


def planned_series(config: Mapping[str, Any], sources: Mapping[str, str]) -> dict[str, int | None]:
    """Partition -> the series it is planned for (its shard count, rules/common.smk), without
    an AWS call: a CloudWatch service listing ``instance_ids`` has ``instances x metrics``; a
    service selected by ``auto_scaling_group`` or ``tags`` and an S3 object (neither is known
    before its ingest job runs) have ``forecast.series_per_partition`` (None: one shard)."""
    estimate = config["forecast"]["series_per_partition"]
    if config["data"]["source"] != "cloudwatch":
        return dict.fromkeys(sources, estimate)
    cloudwatch = config["data"]["cloudwatch"]
    services = {svc["name"]: svc for svc in cloudwatch["services"]}
    out: dict[str, int | None] = {}
    for partition, service in cloudwatch_services(sources).items():
        instance_ids = services[service].get("instance_ids")
        out[partition] = (
            len(instance_ids) * len(cloudwatch["metrics"]) if instance_ids else estimate
        )
    return out


def cloudwatch_until(config: Mapping[str, Any]) -> str | None:
    """The instant CloudWatch is fetched up to (None for other sources)."""
    if config["data"]["source"] != "cloudwatch":
        return None
    from capforecast.aws.cloudwatch import fetch_until

    return fetch_until(config["data"]["cloudwatch"], str(config["etl"]["freq"]))


def check_storage_prefix(storage_settings: Any) -> None:
    """With S3 as Snakemake's default storage (profiles/aws), ``--default-storage-prefix``
    (``$CAPFORECAST_S3_PREFIX`` in the profile) must be ``s3://bucket[/prefix]``."""
    from capforecast.aws.config_checks import S3_URI

    if getattr(storage_settings, "default_storage_provider", None) != "s3":
        return
    prefix = str(getattr(storage_settings, "default_storage_prefix", "") or "")
    if not S3_URI.match(prefix.rstrip("/")):
        raise CapForecastError(
            f"results on S3 need a prefix s3://bucket/prefix: set CAPFORECAST_S3_PREFIX (read "
            f"by profiles/aws) or --default-storage-prefix (it is {prefix or 'unset'!r})"
        )
