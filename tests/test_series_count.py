"""Series per partition known when the workflow is planned (its shard count): local files
counted (capforecast.data.series_count, cached), CloudWatch instance lists, and the
forecast.series_per_partition estimate for S3 objects and CloudWatch groups or tags."""

from __future__ import annotations

import gzip
import json
import os

import pandas as pd
import pytest

from capforecast.aws.plan import planned_series
from capforecast.config import validated_config
from capforecast.data import ingest, series_count
from capforecast.errors import ConfigError
from capforecast.settings import data_settings

LONG = (
    "\ufeffTimestamp , Resource_ID,metric,value\n"
    "2024-01-01 00:00,vm1,cpu,1\n"
    "2024-01-01 00:00, vm1 ,cpu,2\n"  # the same series, spaces trimmed as ingest does
    "2024-01-01 00:00,vm2,cpu,3\n"
    "2024-01-01 00:00,vm2,memory,4\n"
    "2024-01-01 00:00,vm3,cpu,5\n"
)


def test_series_are_counted_as_ingest_finds_them(tmp_path):
    files = {
        "long.csv": LONG.encode(),
        "long.csv.gz": gzip.compress(LONG.encode()),
        "host_cpu.csv": b"timestamp,value\n2024-01-01 00:00,1\n",
    }
    for name, body in files.items():
        (tmp_path / name).write_bytes(body)
    pd.read_csv(tmp_path / "long.csv", encoding="utf-8-sig").to_parquet(tmp_path / "long.parquet")
    counts = {p.name: series_count.count_file_series(p) for p in sorted(tmp_path.iterdir())}
    assert counts == {"host_cpu.csv": 1, "long.csv": 4, "long.csv.gz": 4, "long.parquet": 4}
    # What ingest reads from the same file.
    result = ingest.ingest_file(tmp_path / "long.csv", data_settings(validated_config({})["data"]))
    assert len(result.series) == 4


def test_renamed_columns_and_a_forced_format(tmp_path):
    path = tmp_path / "m.csv"
    path.write_text("ts,host,name,val\n1,a,cpu,1\n1,b,cpu,1\n1,c,cpu,1\n")
    mapped = {"timestamp": "ts", "resource_id": "HOST", "metric": "name", "value": "val"}
    assert series_count.count_file_series(path, "auto", mapped) == 3
    # Without the mapping it looks like neither layout: one series, ingest reports the file.
    assert series_count.count_file_series(path) == 1
    assert series_count.count_file_series(path, "long") is None


@pytest.mark.parametrize(
    "body", [b"", b"timestamp,resource_id,metric,value\n", b"\x89PNG not a table"]
)
def test_an_unreadable_file_is_one_shard_and_left_to_ingest(tmp_path, body):
    path = tmp_path / "bad.parquet"
    path.write_bytes(body)
    assert series_count.count_file_series(path) is None


def test_counts_are_cached_by_file_size_time_and_settings(tmp_path):
    path = tmp_path / "fleet.csv"
    path.write_text(LONG)
    cache = tmp_path / "cache" / "counts.json"
    data = {"format": "auto", "columns": {}}
    assert series_count.file_series({"p": path}, data, cache) == {"p": 4}
    # A cached count is not read again: make the cached number recognisable.
    entries = json.loads(cache.read_text())
    entries[str(path.resolve())][1] = 99
    cache.write_text(json.dumps(entries))
    assert series_count.file_series({"p": path}, data, cache) == {"p": 99}
    # Other settings, or a changed file (size and time), are counted again.
    assert series_count.file_series({"p": path}, {**data, "format": "series"}, cache) == {"p": 1}
    path.write_text(LONG + "2024-01-01 00:00,vm4,cpu,6\n")
    os.utime(path, ns=(1, 1))
    assert series_count.file_series({"p": path, "q": tmp_path / "gone.csv"}, data, cache) == {
        "p": 5,
        "q": None,
    }


def test_a_cache_that_cannot_be_written_is_only_slower(tmp_path):
    path = tmp_path / "fleet.csv"
    path.write_text(LONG)
    blocker = tmp_path / "file"
    blocker.write_text("")
    counts = series_count.file_series({"p": path}, {"format": "auto", "columns": {}}, blocker / "c")
    assert counts == {"p": 4}


CLOUDWATCH = {
    "source": "cloudwatch",
    "cloudwatch": {
        "services": [
            {"name": "web", "instance_ids": ["i-0000000000000001", "i-0000000000000002"]},
            {"name": "api", "tags": {"Team": "api"}},
        ],
        "metrics": [
            {"namespace": "AWS/EC2", "name": "CPUUtilization", "statistic": "Average"},
            {"namespace": "CWAgent", "name": "mem_used_percent", "statistic": "Average"},
            {"namespace": "AWS/EC2", "name": "NetworkIn", "statistic": "Average"},
        ],
    },
}


def test_cloudwatch_instance_lists_are_known_groups_and_tags_estimated():
    cfg = validated_config({"data": CLOUDWATCH, "forecast": {"series_per_partition": 40}})
    sources = {"web": "cloudwatch:web", "api": "cloudwatch:api"}
    assert planned_series(cfg, sources) == {"web": 2 * 3, "api": 40}
    cfg["forecast"]["series_per_partition"] = None
    assert planned_series(cfg, sources) == {"web": 6, "api": None}


def test_s3_objects_are_estimated():
    cfg = validated_config(
        {
            "data": {"source": "s3", "path": "s3://bucket/m/"},
            "forecast": {"series_per_partition": 7},
        }
    )
    assert planned_series(cfg, {"a": "s3://bucket/m/a.csv", "b": "s3://bucket/m/b.csv"}) == {
        "a": 7,
        "b": 7,
    }


@pytest.mark.parametrize(
    "data",
    [
        {},  # synthetic
        {"source": "local", "path": "/data"},
        {
            **CLOUDWATCH,
            "cloudwatch": {
                **CLOUDWATCH["cloudwatch"],
                "services": CLOUDWATCH["cloudwatch"]["services"][:1],
            },
        },
    ],
    ids=["synthetic", "local", "cloudwatch-instance-ids"],
)
def test_the_estimate_where_every_partition_is_counted_fails_validation(data):
    with pytest.raises(ConfigError) as err:
        validated_config({"data": data, "forecast": {"series_per_partition": 100}})
    message = str(err.value)
    assert message.startswith("config key 'forecast.series_per_partition'") and "\n" not in message
    assert "remove it" in message
