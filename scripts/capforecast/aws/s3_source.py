"""``data.source: s3``: the objects under an ``s3://bucket/prefix/`` read like local files.

Listing happens when the workflow is planned (rules/common.smk): the objects directly under the
prefix (or one object, or a glob on keys), filtered and partitioned exactly like local files
(:func:`capforecast.data.ingest.data_suffix`, :mod:`capforecast.data.partitions`: partition
names from untrusted keys are bounded, path-safe and distinct). Each object is the input of its
own ingest job through Snakemake's S3 storage plugin, so Snakemake compares the object's
Last-Modified time with the job's outputs and downloads only the objects whose jobs run: a
changed object reruns its partition and what depends on it, nothing else. The job reads the
downloaded copy with the local reader (:func:`ingest_object`), and its errors name the
``s3://`` URI.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from capforecast.aws.config_checks import parse_s3_uri
from capforecast.aws.errors import aws_call, error_code
from capforecast.aws.session import aws_client
from capforecast.data import ingest, partitions
from capforecast.errors import InputDataError
from capforecast.settings import DataSettings, EtlSettings

_GLOB_CHARS = re.compile(r"[*?\[]")


@dataclass(frozen=True)
class S3Object:
    """One listed object: what identifies its version (ETag, Last-Modified) and its size."""

    uri: str
    key: str
    etag: str
    last_modified: str
    size: int


@dataclass(frozen=True)
class S3Listing:
    """Objects to read, and every other entry under the prefix with the reason it is not read
    (``contracts.SKIPPED_FILE_COLUMNS``: file, reason)."""

    objects: list[S3Object]
    skipped: list[tuple[str, str]]


def _object(bucket: str, item: Mapping[str, Any]) -> S3Object:
    return S3Object(
        uri=f"s3://{bucket}/{item['Key']}",
        key=str(item["Key"]),
        etag=str(item.get("ETag", "")).strip('"'),
        last_modified=item["LastModified"].isoformat(),
        size=int(item.get("Size", 0)),
    )


def glob_regex(pattern: str) -> re.Pattern[str]:
    """A key glob as a regex: ``*`` and ``?`` stay within one ``/`` level, ``**`` crosses
    levels, ``[...]`` is a character class."""
    out, i = [], 0
    while i < len(pattern):
        char = pattern[i]
        if pattern.startswith("**/", i):
            out.append("(?:.*/)?")  # any number of levels, none included (as glob's **)
            i += 3
            continue
        if pattern.startswith("**", i):
            out.append(".*")
            i += 2
            continue
        if char == "*":
            out.append("[^/]*")
        elif char == "?":
            out.append("[^/]")
        elif char == "[" and "]" in pattern[i + 2 :]:
            close = pattern.index("]", i + 2)
            body = pattern[i + 1 : close].replace("\\", "\\\\")
            out.append("[^" + body[1:] + "]" if body.startswith("!") else "[" + body + "]")
            i = close + 1
            continue
        else:
            out.append(re.escape(char))
        i += 1
    return re.compile("".join(out) + r"\Z", re.DOTALL)


def _skip_reason(item: Mapping[str, Any], excluded: set[str], named: bool) -> str | None:
    """Why an object is not a metrics file to read (None: read it); the same rules as local
    files (``capforecast.data.ingest._skip_reason``)."""
    key = str(item["Key"])
    name = posixpath.basename(key)
    if key in excluded:
        return "the resources table (data.resources), read as such"
    if key.endswith("/"):
        return "a folder marker (zero-byte key ending in '/')"
    if not named and name.startswith("."):
        return "hidden file (its name starts with '.')"
    if ingest.data_suffix(name) is None:
        shown = "".join(Path(name).suffixes[-2:]) or "(none)"
        return f"unsupported extension '{shown}' (read: {', '.join(ingest.SUPPORTED_SUFFIXES)})"
    return None


def _pages(client: Any, **kwargs: Any) -> Iterable[Mapping[str, Any]]:
    yield from client.get_paginator("list_objects_v2").paginate(**kwargs)


def scan_s3_objects(uri: str, aws: Mapping[str, Any], *, exclude: Iterable[str] = ()) -> S3Listing:
    """Objects named by ``data.path`` (``s3://bucket/prefix/``, ``s3://bucket/key`` or a glob
    on keys such as ``s3://bucket/exports/*.csv``) and the entries that are not read.

    A prefix yields the objects directly under it (sub-prefixes are listed as skipped, like
    subdirectories); a key that is an object yields that object; a glob yields every key it
    matches (``**`` crosses ``/``). Raises :class:`AwsError` for a missing bucket, denied
    access or missing credentials, and :class:`InputDataError` when nothing can be read.
    """
    bucket, key = parse_s3_uri(uri)
    excluded = {parse_s3_uri(e, "data.resources")[1] for e in exclude if e.startswith("s3://")}
    client = aws_client("s3", aws)
    items: list[Mapping[str, Any]] = []
    skipped: list[tuple[str, str]] = []
    named = False
    with aws_call(f"listing {uri}"):
        if _GLOB_CHARS.search(key):
            prefix = _GLOB_CHARS.split(key, maxsplit=1)[0]
            pattern = glob_regex(key)
            for page in _pages(client, Bucket=bucket, Prefix=prefix):
                items += [i for i in page.get("Contents", []) if pattern.match(i["Key"])]
            named = True
        else:
            single = key and not key.endswith("/") and _head(client, bucket, key)
            if single:
                items, named = [single], True
            else:
                prefix = f"{key}/" if key and not key.endswith("/") else key
                for page in _pages(client, Bucket=bucket, Prefix=prefix, Delimiter="/"):
                    items += [i for i in page.get("Contents", []) if i["Key"] != prefix]
                    skipped += [
                        (
                            f"s3://{bucket}/{p['Prefix']}",
                            "a prefix (folder): data.path is not searched recursively "
                            "(a glob such as s3://bucket/prefix/**/*.csv is)",
                        )
                        for p in page.get("CommonPrefixes", [])
                    ]
    objects: list[S3Object] = []
    for item in sorted(items, key=lambda i: i["Key"]):
        reason = _skip_reason(item, excluded, named)
        if reason is not None and named and ingest.data_suffix(item["Key"]) is None:
            raise InputDataError(f"s3://{bucket}/{item['Key']}", reason)
        if reason is None:
            objects.append(_object(bucket, item))
        else:
            skipped.append((f"s3://{bucket}/{item['Key']}", reason))
    if not objects:
        shown = "; ".join(f"{posixpath.basename(f)}: {r}" for f, r in skipped[:5])
        raise InputDataError(
            uri,
            "no input objects found (expected "
            f"{', '.join(ingest.SUPPORTED_SUFFIXES)} objects)"
            + (f"; not read: {shown}" if shown else ""),
        )
    return S3Listing(sorted(objects, key=lambda o: o.key), sorted(skipped))


def _head(client: Any, bucket: str, key: str) -> Mapping[str, Any] | None:
    """The listing entry of one object, or None when no object has that key."""
    import botocore.exceptions as bexc

    try:
        head = client.head_object(Bucket=bucket, Key=key)
    except bexc.ClientError as err:
        if error_code(err) in {"404", "NoSuchKey", "NotFound"}:
            return None
        raise
    return {
        "Key": key,
        "ETag": head.get("ETag", ""),
        "LastModified": head["LastModified"],
        "Size": head.get("ContentLength", 0),
    }


def partition_objects(objects: Iterable[S3Object]) -> dict[str, S3Object]:
    """Partition name -> object: the names local files would get (capforecast.data.partitions:
    bounded, safe in paths and wildcards, distinct); two keys that would share one stop the run
    naming both URIs."""
    by_key = {obj.key: obj for obj in objects}
    try:
        named = partitions.partition_names(by_key)
    except InputDataError as err:
        bucket = next(iter(by_key.values())).uri.split("/")[2]
        raise InputDataError(f"s3://{bucket}/{err.file}", err.problem) from None
    return {name: by_key[str(path)] for name, path in named.items()}


def ingest_object(
    local: str | Path,
    uri: str,
    data: DataSettings,
    etl: EtlSettings | None = None,
) -> ingest.IngestResult:
    """:func:`capforecast.data.ingest.ingest_file` on the downloaded copy of ``uri`` (the storage
    plugin keeps the key's file name, so a series file's resource id is its stem); errors name
    the URI, not the local copy."""
    try:
        return ingest.ingest_file(Path(local), data, etl)
    except InputDataError as err:
        raise InputDataError(uri, err.problem, column=err.column, row=err.row) from None
