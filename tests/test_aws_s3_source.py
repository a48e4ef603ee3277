"""S3 input: listing a prefix, a key or a key glob like a directory (moto server on 127.0.0.1),
partition names from untrusted keys, errors that name the URI, and the config rules of the
s3 and cloudwatch sources."""

from __future__ import annotations

import pytest

from capforecast.aws import s3_source
from capforecast.aws.errors import AwsError
from capforecast.config import validated_config
from capforecast.data.partitions import NAME_MAX
from capforecast.errors import ConfigError, InputDataError
from capforecast.settings import data_settings, etl_settings


def _aws():
    return validated_config({})["aws"]


def _put(aws_env, bucket, *keys, body=b"timestamp,value\n2026-01-01,1\n"):
    s3 = aws_env.client("s3")
    for key in keys:
        s3.put_object(Bucket=bucket, Key=key, Body=body)


def test_a_prefix_is_listed_like_a_directory(aws_env, fresh_bucket):
    _put(
        aws_env,
        fresh_bucket,
        "m/a.csv",
        "m/b.CSV.gz",
        "m/c.parquet",
        "m/README.md",
        "m/.hidden.csv",
        "m/sub/d.csv",
        "m/",
        "other/e.csv",
    )
    listing = s3_source.scan_s3_objects(f"s3://{fresh_bucket}/m/", _aws())
    assert [o.key for o in listing.objects] == ["m/a.csv", "m/b.CSV.gz", "m/c.parquet"]
    obj = listing.objects[0]
    assert obj.uri == f"s3://{fresh_bucket}/m/a.csv" and obj.etag and obj.size > 0
    reasons = dict(listing.skipped)
    base = f"s3://{fresh_bucket}/m/"
    assert reasons[base + "README.md"].startswith("unsupported extension '.md'")
    assert reasons[base + ".hidden.csv"].startswith("hidden file")
    assert reasons[base + "sub/"].startswith("a prefix (folder)")
    # Without the trailing slash the prefix means the same folder.
    same = s3_source.scan_s3_objects(f"s3://{fresh_bucket}/m", _aws())
    assert same.objects == listing.objects


def test_a_key_and_a_glob(aws_env, fresh_bucket):
    _put(aws_env, fresh_bucket, "x/2026/01/a.csv", "x/2026/02/b.csv", "x/top.csv", "x/n.txt")
    one = s3_source.scan_s3_objects(f"s3://{fresh_bucket}/x/top.csv", _aws())
    assert [o.key for o in one.objects] == ["x/top.csv"]
    deep = s3_source.scan_s3_objects(f"s3://{fresh_bucket}/x/**/*.csv", _aws())
    assert [o.key for o in deep.objects] == ["x/2026/01/a.csv", "x/2026/02/b.csv", "x/top.csv"]
    flat = s3_source.scan_s3_objects(f"s3://{fresh_bucket}/x/*/0[1]/*.csv", _aws())
    assert [o.key for o in flat.objects] == ["x/2026/01/a.csv"]
    with pytest.raises(InputDataError, match=r"x/n.txt: unsupported extension '.txt'"):
        s3_source.scan_s3_objects(f"s3://{fresh_bucket}/x/n.*", _aws())


def test_the_resources_table_in_the_prefix_is_not_a_metrics_file(aws_env, fresh_bucket):
    _put(aws_env, fresh_bucket, "m/a.csv", "m/resources.csv")
    listing = s3_source.scan_s3_objects(
        f"s3://{fresh_bucket}/m/", _aws(), exclude=[f"s3://{fresh_bucket}/m/resources.csv"]
    )
    assert [o.key for o in listing.objects] == ["m/a.csv"]
    assert dict(listing.skipped)[f"s3://{fresh_bucket}/m/resources.csv"].startswith("the resou")


def test_partition_names_from_hostile_keys_are_bounded_safe_and_distinct(aws_env, fresh_bucket):
    keys = [
        "h/日本_cpu.csv",
        "h/中国_cpu.csv",
        "h/a b.csv",
        "h/a_b.csv",
        "h/" + "x" * 300 + ".csv",
        "h/<img src=x onerror=alert(1)>.csv",
        "h/-rf.csv",
        "h/cpu_" + "a" * 30 + ".csv",
    ]
    _put(aws_env, fresh_bucket, *keys)
    listing = s3_source.scan_s3_objects(f"s3://{fresh_bucket}/h/", _aws())
    names = s3_source.partition_objects(listing.objects)
    assert sorted(o.key for o in names.values()) == sorted(keys)
    for name in names:
        assert len(name) <= NAME_MAX
        assert name[0] != "-" and set(name) <= set(
            "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-"
        )


def test_two_keys_with_one_stem_stop_the_plan_naming_both(aws_env, fresh_bucket):
    _put(aws_env, fresh_bucket, "d/web.csv", "d/web.parquet")
    listing = s3_source.scan_s3_objects(f"s3://{fresh_bucket}/d/", _aws())
    with pytest.raises(InputDataError, match=rf"s3://{fresh_bucket}/d/web.parquet: partition name"):
        s3_source.partition_objects(listing.objects)


def test_nothing_to_read_and_a_missing_bucket_are_one_line(aws_env, fresh_bucket):
    _put(aws_env, fresh_bucket, "e/notes.txt")
    with pytest.raises(InputDataError, match=r"no input objects found .*not read: notes.txt"):
        s3_source.scan_s3_objects(f"s3://{fresh_bucket}/e/", _aws())
    with pytest.raises(AwsError, match=r"bucket 'cf-no-such-bucket-xyz' does not exist"):
        s3_source.scan_s3_objects("s3://cf-no-such-bucket-xyz/e/", _aws())


def test_errors_of_a_downloaded_object_name_its_uri(tmp_path):
    local = tmp_path / "web_cpu.csv"
    local.write_text("timestamp,value\n2026-01-01T00:00:00Z,abc\n")
    cfg = validated_config({})
    with pytest.raises(InputDataError) as info:
        s3_source.ingest_object(
            local, "s3://b/k/web_cpu.csv", data_settings(cfg["data"]), etl_settings(cfg["etl"])
        )
    assert str(info.value).startswith("s3://b/k/web_cpu.csv, column 'value', row 1: non-numeric")
    assert str(tmp_path) not in str(info.value)


CW = {"services": [{"name": "web", "auto_scaling_group": "web-asg"}]}


@pytest.mark.parametrize(
    ("data", "key", "detail"),
    [
        ({"source": "s3"}, "data.path", "required when data.source is 's3'"),
        ({"source": "s3", "path": "s3://Bad_Bucket/x"}, "data.path", "is not an S3 URI"),
        ({"source": "s3", "path": "/tmp/x"}, "data.path", "is not an S3 URI"),
        ({"source": "local", "path": "s3://bkt/x/"}, "data.path", "needs data.source: s3"),
        ({"cloudwatch": {"days": 3}}, "data.cloudwatch.days", "applies to data.source cloudwatch"),
        ({"source": "cloudwatch"}, "data.cloudwatch.services", "name at least one service"),
        (
            {"source": "cloudwatch", "cloudwatch": CW, "format": "long"},
            "data.format",
            "describes input files",
        ),
        (
            {"source": "cloudwatch", "cloudwatch": CW, "path": "/tmp/x"},
            "data.path",
            "describes input files",
        ),
        (
            {
                "source": "cloudwatch",
                "cloudwatch": {
                    "services": [{"name": "web", "auto_scaling_group": "a", "tags": {"k": "v"}}]
                },
            },
            "data.cloudwatch.services[0]",
            "needs exactly one of instance_ids, auto_scaling_group, tags",
        ),
        (
            {
                "source": "cloudwatch",
                "cloudwatch": {
                    "services": [
                        {"name": "web", "auto_scaling_group": "a"},
                        {"name": "WEB", "tags": {"k": "v"}},
                    ]
                },
            },
            "data.cloudwatch.services[1].name",
            "is also services[0]",
        ),
        (
            {
                "source": "cloudwatch",
                "cloudwatch": {
                    **CW,
                    "metrics": [
                        {"namespace": "AWS/EC2", "name": "CPUUtilization", "statistic": "Average"},
                        {"namespace": "AWS/EC2", "name": "CPUUtilization", "statistic": "Maximum"},
                    ],
                },
            },
            "data.cloudwatch.metrics[1]",
            "would be the metric 'cpu_utilization', as metrics[0] is",
        ),
        (
            {"source": "cloudwatch", "cloudwatch": {**CW, "end": "2026-01-01T00:30:00Z"}},
            "data.cloudwatch.end",
            "not on an etl.freq (1h) boundary",
        ),
        (
            {"source": "cloudwatch", "cloudwatch": {**CW, "period": 60, "days": 20}},
            "data.cloudwatch.period",
            "keeps 60-second data 15 days, less than data.cloudwatch.days (20)",
        ),
        (
            {"source": "cloudwatch", "cloudwatch": {**CW, "period": 120}},
            "data.cloudwatch.period",
            "",
        ),
        (
            {
                "source": "cloudwatch",
                "cloudwatch": {"services": [{"name": "web", "instance_ids": ["web-1"]}]},
            },
            "data.cloudwatch.services[0].instance_ids[0]",
            "must match",
        ),
        (
            {
                "source": "cloudwatch",
                "cloudwatch": {
                    **CW,
                    "metrics": [
                        {
                            "namespace": "CWAgent",
                            "name": "disk_used_percent",
                            "statistic": "Average",
                            "dimensions": {"InstanceId": "i-1"},
                        }
                    ],
                },
            },
            "data.cloudwatch.metrics[0].dimensions",
            "",
        ),
    ],
)
def test_aws_source_settings_that_cannot_work_fail_validation(data, key, detail):
    with pytest.raises(ConfigError) as info:
        validated_config({"data": data})
    assert info.value.key == key
    assert detail in str(info.value)


def test_valid_aws_source_settings_pass():
    cfg = validated_config({"data": {"source": "s3", "path": "s3://bkt/prefix/"}})
    assert cfg["data"]["path"] == "s3://bkt/prefix/"
    cw = {
        **CW,
        "metrics": [
            {"namespace": "AWS/EC2", "name": "CPUUtilization", "statistic": "Average"},
            {
                "namespace": "AWS/EC2",
                "name": "CPUUtilization",
                "statistic": "Maximum",
                "metric": "cpu_peak",
            },
        ],
        "end": "2026-01-01T06:00:00Z",
    }
    cfg = validated_config({"data": {"source": "cloudwatch", "cloudwatch": cw}})
    assert cfg["data"]["cloudwatch"]["period"] == "auto"
