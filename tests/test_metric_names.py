"""Metric names as monitoring systems export them -> canonical names (capforecast.metric_names)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from capforecast import metric_names
from capforecast.config import validated_config
from capforecast.contracts import CANONICAL_METRICS
from capforecast.data import quality
from capforecast.errors import ConfigError
from capforecast.metric_names import MetricNameMap


@pytest.fixture(scope="module")
def names() -> MetricNameMap:
    return MetricNameMap()


@pytest.mark.parametrize(
    ("source", "metric"),
    [
        # CloudWatch AWS/EC2, bare and with the namespace in the two usual spellings
        ("CPUUtilization", "cpu_utilization"),
        ("AWS/EC2:CPUUtilization", "cpu_utilization"),
        ("AWS/EC2/CPUUtilization", "cpu_utilization"),
        ("cpuutilization", "cpu_utilization"),
        ("NetworkIn", "network_in_bytes"),
        ("NetworkOut", "network_out_bytes"),
        ("DiskReadBytes", "disk_read_bytes"),
        ("DiskWriteBytes", "disk_write_bytes"),
        ("EBSWriteBytes", "disk_write_bytes"),
        # CloudWatch agent
        ("CWAgent:mem_used_percent", "memory_utilization"),
        ("CWAgent:disk_used_percent", "disk_used_percent"),
        ("cpu_usage_active", "cpu_utilization"),
        ("Memory % Committed Bytes In Use", "memory_utilization"),
        # RDS, ELB / ALB
        ("AWS/RDS:CPUUtilization", "cpu_utilization"),
        ("AWS/RDS:FreeableMemory", "memory_available_bytes"),
        ("AWS/ELB:RequestCount", "request_count"),
        ("AWS/ELB:Latency", "request_latency"),
        ("AWS/ApplicationELB:TargetResponseTime", "request_latency"),
        # Prometheus node-exporter recording rules (the colons are part of the name)
        ("instance:node_cpu_utilisation:rate5m", "cpu_utilization"),
        (":node_memory_utilisation:", "memory_utilization"),
        ("instance:node_network_receive_bytes_excluding_lo:rate5m", "network_in_bytes"),
        # Azure Monitor, as the portal and as snake case
        ("Percentage CPU", "cpu_utilization"),
        ("Microsoft.Compute/virtualMachines:Percentage CPU", "cpu_utilization"),
        ("percentage_cpu", "cpu_utilization"),
        ("Available Memory Bytes", "memory_available_bytes"),
        ("Network In Total", "network_in_bytes"),
        ("Disk Write Bytes", "disk_write_bytes"),
    ],
)
def test_builtin_names_map_to_canonical(names, source, metric):
    found = names.lookup(source)
    assert found.metric == metric
    assert found.match == "builtin"


def test_canonical_names_resolve_to_themselves(names):
    for metric in CANONICAL_METRICS:
        found = names.lookup(metric)
        assert (found.metric, found.match, found.scale) == (metric, "canonical", None)
    assert names.lookup(" Memory_Utilization ").metric == "memory_utilization"


def test_prometheus_ratios_are_declared_fractions_and_cloudwatch_is_not(names):
    assert names.lookup("instance:node_cpu_utilisation:rate5m").scale == "fraction"
    assert names.lookup("instance:node_memory_utilisation:ratio").scale == "fraction"
    assert names.lookup("CPUUtilization").scale is None  # values decide (capforecast.data.scale)


def test_every_builtin_entry_targets_a_canonical_metric(schema):
    percent = schema["properties"]["etl"]["properties"]["percent_metrics"]["default"]
    entries = metric_names.builtin_entries()
    assert len(entries) >= 30
    for source, metric, scale in entries:
        assert metric in CANONICAL_METRICS, source
        if scale is not None:
            assert scale in {"fraction", "percent"}
            assert metric in percent, f"{source}: a scale on a non-percentage metric"


@pytest.mark.parametrize(
    ("source", "kept"),
    [
        ("StatusCheckFailed", "status_check_failed"),
        ("AWS/EC2:CPUCreditBalance", "aws_ec2_cpu_credit_balance"),
        ("node_network_receive_bytes_total", "node_network_receive_bytes_total"),
        ("Available Memory Percentage", "available_memory_percentage"),
        ("5xx errors", "metric_5xx_errors"),
        ("../../etc/passwd", "etc_passwd"),
        ("<script>alert(1)</script>", "script_alert_1_script"),
    ],
)
def test_unknown_names_keep_a_safe_sanitised_name(names, source, kept):
    found = names.lookup(source)
    assert (found.metric, found.match, found.scale) == (kept, "unknown", None)


def test_sanitise_never_returns_an_unsafe_or_empty_name():
    for text in ["", "???", "é", " ", "a" * 500, "Ω/∑"]:
        name = metric_names.sanitise(text)
        assert name and name[0].isalpha() and len(name) <= metric_names.MAX_NAME_LENGTH
        assert all(c.islower() or c.isdigit() or c == "_" for c in name), name
    assert metric_names.sanitise("a" * 500) != metric_names.sanitise("a" * 499)


def test_counter_hint_only_for_cumulative_counter_names():
    assert "cumulative counter" in metric_names.counter_hint("node_cpu_seconds_total")
    assert metric_names.counter_hint("http_requests_count")
    assert metric_names.counter_hint("status_check_failed") == ""


def test_config_entries_win_over_builtins_and_add_names():
    names = MetricNameMap(
        {
            "CPUUtilization": {"metric": "cpu_utilization", "scale": "fraction"},
            "queue_depth": "queue_depth",
            "JVM Heap Used %": "memory_utilization",
        }
    )
    cpu = names.lookup("AWS/EC2:CPUUtilization")
    assert (cpu.metric, cpu.match, cpu.scale) == ("cpu_utilization", "config", "fraction")
    assert names.lookup("Queue-Depth").metric == "queue_depth"
    assert names.lookup("queue_depth").match == "config"
    assert names.lookup("jvm heap used %").metric == "memory_utilization"
    assert names.lookup("NetworkIn").metric == "network_in_bytes"  # built-ins still there


@pytest.mark.parametrize(
    ("stem", "metric"),
    [
        ("ec2_cpu_utilization_24ae8d", "cpu_utilization"),
        ("iio_us-east-1_i-a2eb1cd9_NetworkIn", "network_in_bytes"),
        ("rds_cpu_utilization_cc0c53", "cpu_utilization"),
        ("elb_request_count_8c0756", "request_count"),
        ("host7_mem_used_percent", "memory_utilization"),
        ("web-1.DiskReadBytes", "disk_read_bytes"),
        ("host_instance_node_cpu_utilisation_rate5m", "cpu_utilization"),
        ("vm01_Percentage CPU", "cpu_utilization"),
    ],
)
def test_series_file_stems_spell_out_metrics(names, stem, metric):
    found = names.from_stem(stem)
    assert found is not None and found.metric == metric


@pytest.mark.parametrize(
    "stem",
    [
        "grok_asg_anomaly",  # no name in it
        "host_CPUUtilization_vs_mem_used_percent",  # two different metrics: ambiguous
        "xcpuutilizationx",  # inside a token, not a whole token
        "cpu_and_mem",  # left to data.metric_patterns
    ],
)
def test_stems_without_one_clear_metric_name_give_none(names, stem):
    assert names.from_stem(stem) is None


def test_known_metrics_are_canonical_percent_and_thresholded():
    cfg = validated_config(
        {
            "etl": {"percent_metrics": ["cpu_utilization", "memory_utilization", "gpu_util"]},
            "risk": {
                "thresholds": {"queue_depth": {"warning": 10, "critical": 20}},
                "service_overrides": {"web": {"open_files": {"warning": 1, "critical": 2}}},
            },
        }
    )
    known = metric_names.known_metrics(cfg)
    assert set(CANONICAL_METRICS) <= set(known)
    assert {"gpu_util", "queue_depth", "open_files"} <= set(known)
    assert "status_check_failed" not in known


@pytest.mark.parametrize(
    ("data", "etl", "key", "detail"),
    [
        ({"metric_names": {"Foo": "Bar"}}, {}, "data.metric_names.Foo", "must match"),
        (
            {"metric_names": {"NetworkIn": {"metric": "network_in_bytes", "scale": "fraction"}}},
            {},
            "data.metric_names.NetworkIn.scale",
            "not in etl.percent_metrics",
        ),
        (
            {"metric_names": {"cpu_x": {"metric": "cpu_utilization", "scale": "fraction"}}},
            {"fraction_scale": "never"},
            "data.metric_names.cpu_x.scale",
            "does nothing",
        ),
        ({"metric_names": {"a_b": "x", "A-B": "y"}}, {}, "data.metric_names.A-B", "same name"),
        ({"metric_names": {"": "x"}}, {}, "data.metric_names", "non-empty"),
    ],
)
def test_bad_metric_name_config_names_the_key(data, etl, key, detail):
    with pytest.raises(ConfigError) as info:
        validated_config({"data": {"source": "local", "path": "x", **data}, "etl": etl})
    assert f"'{key}" in str(info.value)
    assert detail in str(info.value)


def test_quality_table_marks_only_metrics_the_run_cannot_judge():
    table = pd.DataFrame(
        {
            "metric": ["cpu_utilization", "queue_depth", "status_check_failed", "null"],
            "flags": ["long_gaps", np.nan, "", "duplicates"],
        }
    )
    marked = quality.mark_unclassified(table, ["cpu_utilization", "queue_depth"])
    assert marked["flags"].tolist() == [
        "long_gaps",
        "",
        "unclassified_metric",
        "duplicates;unclassified_metric",
    ]
