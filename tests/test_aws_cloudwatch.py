"""CloudWatch ingest against moto's server (tests/aws_local.py): instances by ids, Auto Scaling
group and tags; exact values of a multi-day, multi-instance fleet; an incremental second fetch;
the resources table from EC2; one-line errors. The batching, paging, retention and throttling
code is unit-tested with botocore's Stubber in test_aws_cloudwatch_stubbed.py (moto neither
pages nor enforces limits)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from capforecast.aws import cloudwatch
from capforecast.aws.errors import AwsError
from capforecast.config import validated_config

# Two days of hourly data, fetched at 1 h: moto aggregates each period by scanning every
# datapoint it holds (quadratic), so the fleet stays small; retention and batching at finer
# periods are unit-tested with the Stubber.
HOURS = 2 * 24
STEP = pd.Timedelta(hours=1)


@pytest.fixture
def fleet(aws_env, request):
    """Two services in moto: 'web' (an Auto Scaling group of 2, with the CloudWatch agent) and
    'api' (2 instances tagged Service=api, one without the agent), 2 days of hourly data."""
    tag = f"api-{abs(hash(request.node.nodeid)) % 10**6}"
    group = f"web-{tag}"
    api_ids, web_ids = launch(aws_env, tagged=2, tag=("Service", tag), kind="m5.large", group=group)
    cw = aws_env.client("cloudwatch")
    end = pd.Timestamp.now(tz="UTC").floor("1h")
    start = end - pd.Timedelta(hours=HOURS)
    stamps = pd.date_range(start, end - STEP, freq=STEP)
    truth = []
    for k, instance in enumerate(api_ids + web_ids):
        cpu = 10.0 + k + (np.arange(len(stamps)) % 24) / 10.0
        truth.append(_put(cw, "AWS/EC2", "CPUUtilization", instance, stamps, cpu))
        net = 1.0e6 * (k + 1) + np.arange(len(stamps)) * 7.0
        truth.append(_put(cw, "AWS/EC2", "NetworkIn", instance, stamps, net))
        if instance in web_ids or instance == api_ids[0]:
            mem = 40.0 + k + (np.arange(len(stamps)) % 12)
            truth.append(_put(cw, "CWAgent", "mem_used_percent", instance, stamps, mem))
    return {
        "api": api_ids,
        "web": web_ids,
        "group": group,
        "tag": tag,
        "end": end,
        "truth": pd.concat(truth, ignore_index=True),
    }


def launch(aws_env, *, tagged: int, tag: tuple[str, str], kind: str, group: str):
    """``tagged`` instances of type ``kind`` with the tag ``tag`` (key, value), and an Auto
    Scaling group ``group`` of two c5.large: (tagged ids, group ids), sorted."""
    ec2, asg = aws_env.client("ec2"), aws_env.client("autoscaling")
    ami = ec2.describe_images()["Images"][0]["ImageId"]
    found = ec2.run_instances(
        ImageId=ami,
        MinCount=tagged,
        MaxCount=tagged,
        InstanceType=kind,
        TagSpecifications=[
            {"ResourceType": "instance", "Tags": [{"Key": tag[0], "Value": tag[1]}]}
        ],
    )["Instances"]
    asg.create_launch_configuration(
        LaunchConfigurationName=group, ImageId=ami, InstanceType="c5.large"
    )
    asg.create_auto_scaling_group(
        AutoScalingGroupName=group,
        LaunchConfigurationName=group,
        MinSize=2,
        MaxSize=2,
        AvailabilityZones=["us-east-1a"],
    )
    members = ec2.describe_instances(
        Filters=[{"Name": f"tag:{cloudwatch.ASG_TAG}", "Values": [group]}]
    )
    group_ids = [i["InstanceId"] for r in members["Reservations"] for i in r["Instances"]]
    return sorted(i["InstanceId"] for i in found), sorted(group_ids)


def _put(cw, namespace, name, instance, stamps, values, extra=()):
    dims = [{"Name": "InstanceId", "Value": instance}, *extra]
    data = [
        {
            "MetricName": name,
            "Dimensions": dims,
            "Timestamp": stamp.to_pydatetime(),
            "Value": float(value),
        }
        for stamp, value in zip(stamps, values, strict=True)
    ]
    for i in range(0, len(data), 1000):
        cw.put_metric_data(Namespace=namespace, MetricData=data[i : i + 1000])
    return pd.DataFrame(
        {
            "timestamp": stamps,
            "resource_id": instance,
            "metric": f"{namespace}:{name}",
            "value": np.asarray(values, dtype="float64"),
        }
    )


def _settings(fleet, tmp_path, **extra):
    cw = {
        "services": [
            {"name": "web", "auto_scaling_group": fleet["group"]},
            {"name": "api", "tags": {"Service": fleet["tag"]}},
        ],
        "metrics": [
            {"namespace": "AWS/EC2", "name": "CPUUtilization", "statistic": "Average"},
            {"namespace": "AWS/EC2", "name": "NetworkIn", "statistic": "Average"},
            {"namespace": "CWAgent", "name": "mem_used_percent", "statistic": "Average"},
        ],
        "days": 2,
        "period": 3600,
        "store": str(tmp_path / "store"),
        **extra,
    }
    cfg = validated_config({"data": {"source": "cloudwatch", "cloudwatch": cw}})
    return cfg


def _fetch(aws_env, cfg, service, until, now=None):
    from capforecast.aws.session import aws_client

    return cloudwatch.fetch_service(
        ec2=aws_client("ec2", cfg["aws"]),
        cw=aws_client("cloudwatch", cfg["aws"]),
        settings=cloudwatch.cloudwatch_settings(cfg["data"]["cloudwatch"]),
        service=service,
        until=until.isoformat(),
        catalogue=cfg["catalogue"],
        now=now,
    )


def test_a_multi_day_fleet_is_fetched_with_exact_values(aws_env, fleet, tmp_path):
    cfg = _settings(fleet, tmp_path)
    for service in ("web", "api"):
        path, resources, report = _fetch(aws_env, cfg, service, fleet["end"])
        rows = pd.read_parquet(path)
        ids = fleet[service]
        want = fleet["truth"][fleet["truth"]["resource_id"].isin(ids)]
        got = rows.merge(want, on=["timestamp", "resource_id", "metric"], how="outer")
        assert len(got) == len(want) == len(rows)
        np.testing.assert_array_equal(got["value_x"].to_numpy(), got["value_y"].to_numpy())
        # 2 days of hourly samples, aligned on the period.
        assert set(rows.groupby(["resource_id", "metric"]).size()) == {HOURS}
        assert report.period == 3600
        assert list(resources["resource_id"]) == ids
        assert set(resources["service"]) == {service}
        assert set(resources["region"]) == {aws_env.region}
        kind, vcpu, mem = ("c5.large", 2.0, 4.0) if service == "web" else ("m5.large", 2.0, 8.0)
        assert set(resources["instance_type"]) == {kind}
        assert set(resources["vcpu"]) == {vcpu} and set(resources["memory_gib"]) == {mem}
        assert set(resources["hourly_price_usd"]) == {cfg["catalogue"][kind]["hourly_price_usd"]}
        assert resources["capacity_issue"].isna().all()
    # The api instance without the CloudWatch agent has no memory series: reported, not fatal.
    assert report.missing == [f"{fleet['api'][1]} CWAgent:mem_used_percent"]


def test_a_second_fetch_asks_only_for_what_is_new_and_deduplicates(aws_env, fleet, tmp_path):
    cfg = _settings(fleet, tmp_path, overlap_minutes=90)
    first_end = fleet["end"] - pd.Timedelta(hours=5)
    path, _, first = _fetch(aws_env, cfg, "web", first_end)
    before = pd.read_parquet(path)
    assert before["timestamp"].max() == first_end - STEP
    # A late datapoint inside the overlap now has another value; and new data after it.
    cw = aws_env.client("cloudwatch")
    late = first_end - pd.Timedelta(hours=1)
    instance = fleet["web"][0]
    _put(cw, "AWS/EC2", "CPUUtilization", instance, pd.DatetimeIndex([late]), [99.5])
    path, _, second = _fetch(aws_env, cfg, "web", fleet["end"])
    after = pd.read_parquet(path)
    # Every series starts 90 minutes before its last sample, rounded down to the period, at
    # the first fetch's period: its last 3 hours again and 5 new ones.
    assert second.period == first.period
    start = (first_end - STEP - pd.Timedelta(minutes=90)).floor("1h")
    assert second.starts == {start.isoformat(): 6}
    assert second.rows_fetched == 6 * (3 + 5)
    assert second.rows_total == len(after) == 6 * HOURS
    assert not after.duplicated(["timestamp", "resource_id", "metric"]).any()
    cpu = after[(after["resource_id"] == instance) & (after["metric"] == "AWS/EC2:CPUUtilization")]
    # The late value and the original one in the same minute: CloudWatch's average of both.
    original = fleet["truth"].set_index(["timestamp", "resource_id", "metric"])["value"]
    late_value = cpu.set_index("timestamp")["value"][late]
    assert late_value == pytest.approx(
        (99.5 + original[(late, instance, "AWS/EC2:CPUUtilization")]) / 2
    )
    # Everything else equals the first fetch and the truth.
    merged = after.merge(before, on=["timestamp", "resource_id", "metric"], how="inner")
    unchanged = merged[merged["timestamp"] != late]
    np.testing.assert_array_equal(unchanged["value_x"], unchanged["value_y"])


def test_instance_ids_select_exactly_those_instances(aws_env, fleet, tmp_path):
    cfg = _settings(fleet, tmp_path)
    cfg["data"]["cloudwatch"]["services"] = [{"name": "two", "instance_ids": fleet["api"]}]
    path, resources, _ = _fetch(aws_env, cfg, "two", fleet["end"])
    assert list(resources["resource_id"]) == fleet["api"]
    assert set(pd.read_parquet(path)["resource_id"]) == set(fleet["api"])


@pytest.mark.parametrize(
    ("service", "message"),
    [
        (
            {"name": "ghost", "auto_scaling_group": "no-such-group"},
            r"service 'ghost' \(Auto Scaling group 'no-such-group'\): DescribeInstances: no EC2 "
            r"instance matches in region us-east-1; check the group name",
        ),
        (
            {"name": "ghost", "tags": {"Service": "nobody"}},
            r"service 'ghost' \(tags Service=nobody\): DescribeInstances: no EC2 instance matches",
        ),
        (
            {"name": "ghost", "instance_ids": ["i-0123456789abcdef0"]},
            r"service 'ghost' \(instance ids i-0123456789abcdef0\): DescribeInstances: "
            r"InvalidInstanceID.NotFound",
        ),
    ],
)
def test_a_selection_without_instances_is_one_line_naming_the_service(
    aws_env, fleet, tmp_path, service, message
):
    cfg = _settings(fleet, tmp_path)
    cfg["data"]["cloudwatch"]["services"] = [service]
    with pytest.raises(AwsError, match=message) as info:
        _fetch(aws_env, cfg, "ghost", fleet["end"])
    assert "\n" not in str(info.value)


def test_several_disks_need_a_dimension_to_pick_one(aws_env, fleet, tmp_path):
    cw = aws_env.client("cloudwatch")
    instance = fleet["web"][0]
    stamps = pd.DatetimeIndex([fleet["end"] - pd.Timedelta(hours=1)])
    for path in ("/", "/data"):
        extra = [{"Name": "path", "Value": path}, {"Name": "fstype", "Value": "xfs"}]
        _put(cw, "CWAgent", "disk_used_percent", instance, stamps, [50.0], extra)
    cfg = _settings(fleet, tmp_path)
    disk = {"namespace": "CWAgent", "name": "disk_used_percent", "statistic": "Maximum"}
    cfg["data"]["cloudwatch"]["metrics"] = [disk]
    with pytest.raises(Exception, match=r"has 2 series for i-.*path=/, fstype=xfs; path=/data"):
        _fetch(aws_env, cfg, "web", fleet["end"])
    cfg["data"]["cloudwatch"]["metrics"] = [{**disk, "dimensions": {"path": "/data"}}]
    path, _, _ = _fetch(aws_env, cfg, "web", fleet["end"])
    rows = pd.read_parquet(path)
    assert rows[["resource_id", "metric", "value"]].values.tolist() == [
        [instance, "CWAgent:disk_used_percent", 50.0]
    ]


def test_a_metric_taken_out_of_the_config_leaves_the_store(aws_env, fleet, tmp_path):
    cfg = _settings(fleet, tmp_path)
    path, _, _ = _fetch(aws_env, cfg, "web", fleet["end"])
    assert "CWAgent:mem_used_percent" in set(pd.read_parquet(path)["metric"])
    cfg["data"]["cloudwatch"]["metrics"] = cfg["data"]["cloudwatch"]["metrics"][:2]
    path, _, report = _fetch(aws_env, cfg, "web", fleet["end"])
    rows = pd.read_parquet(path)
    assert set(rows["metric"]) == {"AWS/EC2:CPUUtilization", "AWS/EC2:NetworkIn"}
    # Nothing new: each series' last 2 hours again (30 minutes' overlap, rounded down).
    assert report.rows_fetched == 2 * 2 * 2 and len(rows) == 2 * 2 * HOURS
