"""Reading local input files into the raw long format (capforecast.data.ingest)."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from capforecast.config import validated_config
from capforecast.contracts import INGEST_SERIES_COLUMNS, RAW_COLUMNS, RESOURCE_TABLE_COLUMNS
from capforecast.data import ingest, partitions, quality, resample, validate
from capforecast.errors import ConfigError, InputDataError
from capforecast.settings import data_settings, etl_settings


@pytest.fixture(scope="module")
def cfg() -> dict:
    return validated_config({"data": {"source": "local", "path": "unused"}})


@pytest.fixture()
def data_cfg(cfg) -> dict:
    return dict(cfg["data"])


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def assert_raw_contract(raw: pd.DataFrame) -> None:
    assert tuple(raw.columns) == RAW_COLUMNS
    assert str(raw["timestamp"].dtype) == "datetime64[ns, UTC]"
    assert raw["value"].dtype == np.float64
    assert list(raw.index) == list(range(len(raw)))


# --------------------------------------------------------------------------- listing


def test_list_input_files_directory_keeps_data_files_sorted(tmp_path):
    for name in ["b.parquet", "a.csv", "c.pq", "D.CSV", "README.md", "notes.json"]:
        (tmp_path / name).write_text("x")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "inner.csv").write_text("x")
    files = ingest.list_input_files(str(tmp_path))
    assert [f.name for f in files] == ["D.CSV", "a.csv", "b.parquet", "c.pq"]


def test_list_input_files_glob_and_exclude(tmp_path):
    for name in ["m1.csv", "m2.csv", "resources.csv", "x.parquet"]:
        (tmp_path / name).write_text("x")
    files = ingest.list_input_files(str(tmp_path / "*.csv"), exclude=[tmp_path / "resources.csv"])
    assert [f.name for f in files] == ["m1.csv", "m2.csv"]


def test_list_input_files_glob_matching_unsupported_file_is_an_error(tmp_path):
    (tmp_path / "m1.csv").write_text("x")
    (tmp_path / "README.md").write_text("x")
    with pytest.raises(InputDataError, match=r"README\.md.*unsupported extension '\.md'"):
        ingest.list_input_files(str(tmp_path / "*"))


def test_list_input_files_nothing_found_names_the_path(tmp_path):
    (tmp_path / "README.md").write_text("x")
    with pytest.raises(InputDataError, match=re.escape(str(tmp_path)) + ".*no input files"):
        ingest.list_input_files(str(tmp_path))
    missing = tmp_path / "nope"
    with pytest.raises(InputDataError, match=re.escape(str(missing))):
        ingest.list_input_files(str(missing))
    with pytest.raises(InputDataError, match="no input files"):
        ingest.list_input_files(str(tmp_path / "*.parquet"))


# --------------------------------------------------------------------------- reading


def test_long_csv_keeps_every_row_in_file_order(tmp_path, data_cfg):
    rows = [
        ("2024-01-01 01:00:00", "i-1", "cpu_utilization", "5.5", "x"),
        ("2024-01-01 00:00:00", "i-1", "cpu_utilization", "4", "y"),
        ("2024-01-01 00:00:00", "i-2", "memory_utilization", "", "z"),
        ("", "i-2", "memory_utilization", "7", "w"),
    ]
    text = "Timestamp, Resource_ID ,metric,value,extra\n" + "\n".join(",".join(r) for r in rows)
    raw = ingest.read_input_file(
        write(tmp_path / "fleet.csv", text + "\n\n\n"), data_settings(data_cfg)
    )
    assert_raw_contract(raw)
    assert len(raw) == len(rows)  # trailing blank lines are not records
    assert list(raw["resource_id"]) == [r[1] for r in rows]
    assert list(raw["metric"]) == [r[2] for r in rows]
    assert raw["value"].iloc[:2].tolist() == [5.5, 4.0]
    assert np.isnan(raw["value"].iloc[2])  # empty cell kept as NaN, quarantined later
    assert pd.isna(raw["timestamp"].iloc[3])  # empty timestamp kept as NaT
    assert raw["timestamp"].iloc[0] == pd.Timestamp("2024-01-01 01:00", tz="UTC")


def test_blank_line_inside_csv_is_kept_so_rows_match_lines(tmp_path, data_cfg):
    text = "timestamp,value\n2024-01-01 00:00,1\n\n2024-01-01 00:10,3\n"
    raw = ingest.read_input_file(write(tmp_path / "cpu_a.csv", text), data_settings(data_cfg))
    assert len(raw) == 3
    assert pd.isna(raw["timestamp"].iloc[1]) and np.isnan(raw["value"].iloc[1])
    assert raw["value"].iloc[2] == 3.0


def test_series_csv_infers_resource_and_metric(tmp_path, data_cfg):
    text = "timestamp,value\n2024-01-01 00:00:00,1.5\n2024-01-01 00:05:00,2.5\n"
    raw = ingest.read_input_file(
        write(tmp_path / "host-7_mem_used.csv", text), data_settings(data_cfg)
    )
    assert_raw_contract(raw)
    assert set(raw["resource_id"]) == {"host-7_mem_used"}
    assert set(raw["metric"]) == {"memory_utilization"}
    assert raw["value"].tolist() == [1.5, 2.5]


def test_series_metric_override_and_first_pattern_wins(tmp_path, data_cfg):
    path = write(tmp_path / "cpu_and_mem.csv", "timestamp,value\n2024-01-01,1\n")
    assert (
        ingest.read_input_file(path, data_settings(data_cfg))["metric"].iloc[0] == "cpu_utilization"
    )
    forced = {**data_cfg, "metric": "custom_metric"}
    assert ingest.read_input_file(path, data_settings(forced))["metric"].iloc[0] == "custom_metric"


def test_format_long_rejects_series_file(tmp_path, data_cfg):
    path = write(tmp_path / "cpu.csv", "timestamp,value\n2024-01-01,1\n")
    with pytest.raises(InputDataError, match=r"'resource_id'.*long format"):
        ingest.read_input_file(path, data_settings({**data_cfg, "format": "long"}))


def test_auto_format_with_half_long_columns_is_an_error(tmp_path, data_cfg):
    path = write(tmp_path / "cpu.csv", "timestamp,resource_id,value\n2024-01-01,i-1,1\n")
    with pytest.raises(InputDataError, match=r"column 'metric'.*long format"):
        ingest.read_input_file(path, data_settings(data_cfg))


def test_parquet_with_aware_and_naive_timestamps(tmp_path, data_cfg):
    local = pd.date_range("2024-07-01 12:00", periods=3, freq="5min", tz="America/New_York")
    frame = pd.DataFrame(
        {
            "timestamp": local,
            "resource_id": [1, 1, 2],  # ids written as numbers still become text
            "metric": "cpu_utilization",
            "value": np.array([1, 2, 3], dtype="int32"),
        }
    )
    frame.to_parquet(tmp_path / "aware.parquet")
    raw = ingest.read_input_file(tmp_path / "aware.parquet", data_settings(data_cfg))
    assert_raw_contract(raw)
    assert list(raw["timestamp"]) == list(local.tz_convert("UTC"))
    assert list(raw["resource_id"]) == ["1", "1", "2"]

    naive = frame.assign(timestamp=local.tz_localize(None))
    naive.to_parquet(tmp_path / "naive.pq")
    berlin = ingest.read_input_file(
        tmp_path / "naive.pq", data_settings({**data_cfg, "naive_timezone": "Europe/Berlin"})
    )
    expected = local.tz_localize(None).tz_localize("Europe/Berlin").tz_convert("UTC")
    assert list(berlin["timestamp"]) == list(expected)


def test_parquet_string_timestamps_and_values(tmp_path, data_cfg):
    frame = pd.DataFrame(
        {"timestamp": ["2024-01-01T00:00:00Z", None], "value": ["1.25", None]}, dtype=object
    )
    frame.to_parquet(tmp_path / "web_network_in.parquet")
    raw = ingest.read_input_file(tmp_path / "web_network_in.parquet", data_settings(data_cfg))
    assert raw["metric"].iloc[0] == "network_in_bytes"
    assert raw["value"].iloc[0] == 1.25 and np.isnan(raw["value"].iloc[1])
    assert pd.isna(raw["timestamp"].iloc[1])


def test_mixed_offsets_and_naive_in_one_column(tmp_path, data_cfg):
    stamps = ["2024-03-30 12:00:00+01:00", "2024-03-31 12:00:00+02:00", "2024-03-31 13:00:00"]
    text = "timestamp,value\n" + "\n".join(f"{s},1" for s in stamps) + "\n"
    raw = ingest.read_input_file(write(tmp_path / "cpu.csv", text), data_settings(data_cfg))
    assert list(raw["timestamp"]) == [
        pd.Timestamp("2024-03-30 11:00", tz="UTC"),
        pd.Timestamp("2024-03-31 10:00", tz="UTC"),
        pd.Timestamp("2024-03-31 13:00", tz="UTC"),  # naive_timezone defaults to UTC
    ]


def test_dst_fall_back_hour_resolved_from_sample_order(tmp_path, data_cfg):
    local = ["01:30", "02:00", "02:30", "02:00", "02:30", "03:00"]
    text = "timestamp,value\n" + "\n".join(f"2024-10-27 {t},1" for t in local) + "\n"
    berlin = {**data_cfg, "naive_timezone": "Europe/Berlin"}
    raw = ingest.read_input_file(write(tmp_path / "cpu.csv", text), data_settings(berlin))
    start = pd.Timestamp("2024-10-26 23:30", tz="UTC")
    assert list(raw["timestamp"]) == [start + pd.Timedelta(minutes=30 * k) for k in range(6)]


def test_dst_nonexistent_and_unresolvable_local_times_are_errors(tmp_path, data_cfg):
    berlin = {**data_cfg, "naive_timezone": "Europe/Berlin"}
    spring = "timestamp,value\n2024-03-31 01:30,1\n2024-03-31 02:30,1\n"
    with pytest.raises(InputDataError, match=r"column 'timestamp', row 2: .*does not exist"):
        ingest.read_input_file(write(tmp_path / "cpu_s.csv", spring), data_settings(berlin))
    autumn = "timestamp,value\n2024-10-27 02:30,1\n"
    with pytest.raises(InputDataError, match=r"row 1: .*ambiguous"):
        ingest.read_input_file(write(tmp_path / "cpu_a.csv", autumn), data_settings(berlin))


def test_unknown_naive_timezone_is_a_config_error(tmp_path, data_cfg):
    path = write(tmp_path / "cpu.csv", "timestamp,value\n2024-01-01,1\n")
    with pytest.raises(ConfigError, match=r"data\.naive_timezone"):
        ingest.read_input_file(path, data_settings({**data_cfg, "naive_timezone": "Mars/Olympus"}))


# --------------------------------------------------------------------------- resources


@pytest.fixture()
def catalogue(cfg) -> dict:
    return cfg["catalogue"]


def test_resources_table_filled_from_catalogue(tmp_path, catalogue):
    text = (
        "resource_id,instance_type,service,vcpu\n"
        "i-1,m5.large,web,\n"
        "i-2,r5.xlarge,,12\n"  # an explicit vcpu wins over the catalogue
        "i-3,,batch,3\n"
    )
    table = ingest.read_resources_table(write(tmp_path / "res.csv", text), catalogue)
    assert tuple(table.columns) == RESOURCE_TABLE_COLUMNS
    by_id = table.set_index("resource_id")
    assert by_id.loc["i-1", "vcpu"] == catalogue["m5.large"]["vcpu"]
    assert by_id.loc["i-1", "memory_gib"] == catalogue["m5.large"]["memory_gib"]
    assert by_id.loc["i-2", "vcpu"] == 12.0
    assert by_id.loc["i-2", "hourly_price_usd"] == catalogue["r5.xlarge"]["hourly_price_usd"]
    assert by_id.loc["i-2", "service"] == ingest.UNASSIGNED_SERVICE
    assert by_id.loc["i-3", "vcpu"] == 3.0 and np.isnan(by_id.loc["i-3", "memory_gib"])
    assert by_id["region"].isna().all()


def test_resources_table_unknown_instance_type(tmp_path, catalogue):
    text = "resource_id,instance_type\ni-1,m5.large\ni-2,z9.huge\n"
    path = write(tmp_path / "res.csv", text)
    with pytest.raises(
        InputDataError, match=r"res\.csv, column 'instance_type', row 2: .*'z9\.huge'"
    ):
        ingest.read_resources_table(path, catalogue)


def test_resources_table_duplicate_and_missing_ids(tmp_path, catalogue):
    dup = write(tmp_path / "dup.csv", "resource_id\ni-1\ni-2\ni-1\n")
    with pytest.raises(InputDataError, match=r"column 'resource_id', row 3: .*twice"):
        ingest.read_resources_table(dup, catalogue)
    nocol = write(tmp_path / "nocol.csv", "id,service\ni-1,web\n")
    with pytest.raises(InputDataError, match=r"'resource_id'.*found columns: 'id', 'service'"):
        ingest.read_resources_table(nocol, catalogue)


def test_complete_resources_adds_unlisted_resources(tmp_path, catalogue):
    table = ingest.read_resources_table(
        write(tmp_path / "res.csv", "resource_id,instance_type,service\ni-1,m5.large,web\n"),
        catalogue,
    )
    done = ingest.complete_resources(table, ["i-2", "i-1", "i-2"])
    assert tuple(done.columns) == RESOURCE_TABLE_COLUMNS
    assert list(done["resource_id"]) == ["i-1", "i-2"]
    assert list(done["service"]) == ["web", ingest.UNASSIGNED_SERVICE]
    assert np.isnan(done["vcpu"].iloc[1])
    alone = ingest.complete_resources(None, ["b", "a"])
    assert list(alone["resource_id"]) == ["a", "b"]
    assert alone["vcpu"].dtype == np.float64


# --------------------------------------------------------------------------- NAB fixture


def expected_nab_metric(stem: str) -> str:
    """What the README says each NAB file holds, from its name."""
    name = stem.lower()
    if "cpu" in name or name.startswith("grok_asg"):
        return "cpu_utilization"
    if "network_in" in name or "networkin" in name:
        return "network_in_bytes"
    if "disk_write" in name:
        return "disk_write_bytes"
    if "request_count" in name:
        return "request_count"
    if "latency" in name:
        return "request_latency"
    raise AssertionError(f"unexpected NAB file {stem}")


@pytest.fixture(scope="module")
def nab_data_cfg(cfg) -> dict:
    # grok_asg_anomaly (an auto-scaling-group CPU series) matches no default pattern.
    patterns = [
        *cfg["data"]["metric_patterns"],
        {"pattern": "^grok_asg", "metric": "cpu_utilization"},
    ]
    return {**cfg["data"], "metric_patterns": patterns}


def test_nab_fixture_ingests_every_file_and_row(nab_dir, nab_data_cfg):
    files = ingest.list_input_files(str(nab_dir))
    assert len(files) == 19
    assert len(partitions.partition_names(files)) == 19
    total = 0
    for file in files:
        raw = ingest.read_input_file(file, data_settings(nab_data_cfg))
        assert_raw_contract(raw)
        lines = file.read_text().splitlines()
        assert len(raw) == len(lines) - 1, file.name
        assert set(raw["resource_id"]) == {file.stem}
        assert set(raw["metric"]) == {expected_nab_metric(file.stem)}
        # Naive NAB timestamps are UTC; row i is line i + 2 of the file.
        first_stamp, first_value = lines[1].split(",")
        assert raw["timestamp"].iloc[0] == pd.Timestamp(first_stamp, tz="UTC")
        assert raw["value"].iloc[0] == float(first_value)
        last_stamp, _ = lines[-1].split(",")
        assert raw["timestamp"].iloc[-1] == pd.Timestamp(last_stamp, tz="UTC")
        assert raw["value"].notna().all() and raw["timestamp"].notna().all()
        total += len(raw)
    assert total == 89_822  # the README's row count


def test_nab_grok_file_needs_a_metric(nab_dir, cfg):
    defaults = {**cfg["data"], "metric_patterns": [{"pattern": "cpu", "metric": "cpu_utilization"}]}
    with pytest.raises(InputDataError, match=r"grok_asg_anomaly\.csv.*set data\.metric"):
        ingest.read_input_file(nab_dir / "grok_asg_anomaly.csv", data_settings(defaults))


# --------------------------------------------------------------------------- column mapping


def test_column_mapping_long_and_series(tmp_path, data_cfg):
    text = (
        "Time Stamp,Instance,MetricName,Reading,Unit\n"
        "2024-01-01 00:00:00,i-1,CPUUtilization,5.5,Percent\n"
        "2024-01-01 00:05:00,i-2,NetworkIn,100,Bytes\n"
    )
    mapping = {
        "timestamp": "time stamp",
        "resource_id": "INSTANCE",
        "metric": "MetricName",
        "value": " Reading ",
    }
    raw = ingest.read_input_file(
        write(tmp_path / "x.csv", text), data_settings({**data_cfg, "columns": mapping})
    )
    assert_raw_contract(raw)
    assert list(raw["resource_id"]) == ["i-1", "i-2"]
    assert list(raw["metric"]) == ["cpu_utilization", "network_in_bytes"]
    assert list(raw["value"]) == [5.5, 100.0]
    series = pd.DataFrame({"ts": pd.date_range("2024-01-01", periods=3, freq="h"), "v": [1, 2, 3]})
    series.to_parquet(tmp_path / "web_cpu.parquet")
    columns = {"timestamp": "ts", "value": "v"}
    raw = ingest.read_input_file(
        tmp_path / "web_cpu.parquet", data_settings({**data_cfg, "columns": columns})
    )
    assert_raw_contract(raw)
    assert raw["value"].tolist() == [1.0, 2.0, 3.0] and set(raw["metric"]) == {"cpu_utilization"}


def test_missing_mapped_column_and_a_clash_are_one_line_errors(tmp_path, data_cfg):
    path = write(tmp_path / "cpu.csv", "ts,value,val\n2024-01-01,1,2\n")
    with pytest.raises(InputDataError) as info:
        ingest.read_input_file(path, data_settings({**data_cfg, "columns": {"timestamp": "time"}}))
    message = str(info.value)
    assert message.startswith(f"{path}, column 'time': ")
    assert "named by data.columns.timestamp not found" in message and "'ts'" in message
    clash = {"timestamp": "ts", "value": "val"}
    with pytest.raises(InputDataError, match=r"column 'value' is there as well as 'val'"):
        ingest.read_input_file(path, data_settings({**data_cfg, "columns": clash}))


def test_missing_column_error_points_to_the_mapping(tmp_path, data_cfg):
    path = write(tmp_path / "cpu.csv", "time,val\n2024-01-01,1\n")
    with pytest.raises(InputDataError, match=r"can be mapped with data\.columns"):
        ingest.read_input_file(path, data_settings(data_cfg))


@pytest.mark.parametrize(
    ("data", "key", "detail"),
    [
        ({"format": "series", "columns": {"metric": "m"}}, "data.columns.metric", "no such"),
        ({"columns": {"timestamp": "t", "value": " T"}}, "data.columns.value", "same column"),
        ({"columns": {"time": "t"}}, "data.columns.time", "unknown key"),
    ],
)
def test_column_mapping_config_errors(data, key, detail):
    with pytest.raises(ConfigError) as info:
        validated_config({"data": {"source": "local", "path": "x", **data}})
    assert f"'{key}'" in str(info.value) and detail in str(info.value)
    with pytest.raises(ConfigError, match=r"data\.columns.*local only"):
        validated_config({"data": {"columns": {"value": "v"}}})


# --------------------------------------------------------------------------- metric names


def long_csv(path: Path, rows: list[tuple[str, str, str, str]]) -> Path:
    lines = ["timestamp,resource_id,metric,value", *(",".join(r) for r in rows)]
    return write(path, "\n".join(lines) + "\n")


def test_long_file_metric_names_are_mapped_and_recorded(tmp_path, data_cfg):
    rows = [
        ("2024-01-01 00:00", "i-1", "AWS/EC2:CPUUtilization", "50"),
        ("2024-01-01 00:00", "i-1", "CWAgent:mem_used_percent", "40"),
        ("2024-01-01 00:00", "i-2", "cpu_usage_active", "30"),
        ("2024-01-01 00:00", "db-1", "FreeableMemory", "1e9"),
        ("2024-01-01 00:00", "i-1", "cpu_utilization_extra", "1"),
        ("2024-01-01 00:05", "", "NetworkIn", "7"),  # no resource: no series, still mapped
    ]
    result = ingest.ingest_file(long_csv(tmp_path / "cw.csv", rows), data_settings(data_cfg))
    assert list(result.raw["metric"]) == [
        "cpu_utilization",
        "memory_utilization",
        "cpu_utilization",
        "memory_available_bytes",
        "cpu_utilization_extra",
        "network_in_bytes",
    ]
    series = result.series.set_index(["resource_id", "metric"])
    assert tuple(result.series.columns) == INGEST_SERIES_COLUMNS
    assert len(series) == 5
    assert series.loc[("i-1", "cpu_utilization"), "source_metric"] == "AWS/EC2:CPUUtilization"
    assert series.loc[("i-1", "cpu_utilization"), "name_match"] == "builtin"
    assert series.loc[("i-1", "cpu_utilization_extra"), "name_match"] == "unknown"


def test_two_names_for_one_metric_of_one_resource_is_an_error(tmp_path, data_cfg):
    rows = [
        ("2024-01-01 00:00", "i-1", "CPUUtilization", "50"),
        ("2024-01-01 00:00", "i-2", "cpu_usage_active", "40"),  # another resource: fine
        ("2024-01-01 00:05", "i-1", "cpu_usage_active", "52"),
    ]
    path = long_csv(tmp_path / "cw.csv", rows)
    with pytest.raises(InputDataError) as info:
        ingest.read_input_file(path, data_settings(data_cfg))
    message = str(info.value)
    assert message.startswith(f"{path}, column 'metric', row 3: ")
    assert "'CPUUtilization' (line 2 of the file) and 'cpu_usage_active' (line 4" in message
    assert "both mean 'cpu_utilization'" in message and "data.metric_names" in message


def test_config_names_win_and_unknown_names_warn(tmp_path, data_cfg, caplog):
    rows = [
        ("2024-01-01 00:00", "i-1", "Heap Used %", "50"),
        ("2024-01-01 00:00", "i-1", "node_network_receive_bytes_total", "1e12"),
        ("2024-01-01 00:00", "i-1", "StatusCheckFailed", "0"),
    ]
    cfg = {**data_cfg, "metric_names": {"heap_used_%": "memory_utilization"}}
    with caplog.at_level("WARNING", logger="capforecast"):
        raw = ingest.read_input_file(long_csv(tmp_path / "x.csv", rows), data_settings(cfg))
    assert list(raw["metric"]) == [
        "memory_utilization",
        "node_network_receive_bytes_total",
        "status_check_failed",
    ]
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 2
    counter = next(w for w in warnings if "node_network_receive_bytes_total" in w)
    assert "cumulative counter" in counter and "unclassified_metric" in counter
    status = next(w for w in warnings if "StatusCheckFailed" in w)
    assert "kept as 'status_check_failed'" in status and "data.metric_names" in status


@pytest.mark.parametrize(
    ("stem", "data", "metric"),
    [
        ("iio_us-east-1_i-a2eb1cd9_NetworkIn", {}, "network_in_bytes"),
        ("db1_DiskReadBytes", {}, "disk_read_bytes"),  # the "(?i)disk" pattern would say used %
        ("grok_asg", {"metric": "CPUUtilization"}, "cpu_utilization"),
        ("grok_asg", {"metric": "queue depth"}, "queue_depth"),
    ],
)
def test_series_file_metric_from_its_name_or_data_metric(tmp_path, data_cfg, stem, data, metric):
    path = write(tmp_path / f"{stem}.csv", "timestamp,value\n2024-01-01,1\n")
    result = ingest.ingest_file(path, data_settings({**data_cfg, **data}))
    assert set(result.raw["metric"]) == {metric}
    assert result.series["source_metric"].tolist() == [data.get("metric", stem)]


# --------------------------------------------------------------------------- as users have them


def cloudwatch_export(path: Path, hours: int = 72) -> dict[str, np.ndarray]:
    """A CloudWatch-style long CSV: epoch-ms timestamps, namespaced names, 0-1 fractions, and a
    few bad rows (a blank value, a negative one); returns the true percentages."""
    rng = np.random.default_rng(7)
    stamps = pd.date_range("2024-05-01", periods=hours * 12, freq="5min", tz="UTC")
    day = np.sin(np.arange(len(stamps)) / 288 * 2 * np.pi)
    truth = {
        "cpu": np.clip(55 + 25 * day + rng.normal(0, 3, len(stamps)), 0, 100).round(3),
        "mem": np.clip(62 + rng.normal(0, 1, len(stamps)), 0, 100).round(3),
    }
    lines = ["Timestamp,InstanceId,MetricName,Value"]
    ms = stamps.asi8 // 10**6
    for name, key in (("AWS/EC2:CPUUtilization", "cpu"), ("CWAgent:mem_used_percent", "mem")):
        lines += [
            f"{t},i-0abc,{name},{float(v) / 100!r}" for t, v in zip(ms, truth[key], strict=True)
        ]
    lines[5] = lines[5].rsplit(",", 1)[0] + ","  # blank value
    lines[9] = lines[9].rsplit(",", 1)[0] + ",-0.2"  # negative
    path.write_text("\n".join(lines) + "\n")
    return truth


def test_cloudwatch_fractions_with_epoch_ms_end_up_canonical_and_0_100(tmp_path):
    truth = cloudwatch_export(tmp_path / "cloudwatch.csv")
    cfg = validated_config(
        {
            "data": {
                "source": "local",
                "path": str(tmp_path),
                "columns": {
                    "timestamp": "Timestamp",
                    "resource_id": "InstanceId",
                    "metric": "MetricName",
                    "value": "Value",
                },
            }
        }
    )
    result = ingest.ingest_file(
        tmp_path / "cloudwatch.csv", data_settings(cfg["data"]), etl_settings(cfg["etl"])
    )
    raw = result.raw
    assert_raw_contract(raw)
    assert set(raw["metric"]) == {"cpu_utilization", "memory_utilization"}
    assert raw["timestamp"].iloc[0] == pd.Timestamp("2024-05-01", tz="UTC")
    series = result.series.set_index("metric")
    assert set(series["scale"]) == {"fraction"}
    # every non-blank value was rescaled: 864 per metric, one blank CPU value
    assert series.loc["cpu_utilization", "rows_rescaled"] == len(truth["cpu"]) - 1
    assert series.loc["memory_utilization", "rows_rescaled"] == len(truth["mem"])
    cpu = raw[raw["metric"] == "cpu_utilization"]["value"].to_numpy()
    np.testing.assert_allclose(cpu[10:], truth["cpu"][10:], rtol=1e-12)

    result_v = validate.validate_rows(raw, etl_settings(cfg["etl"]), "cloudwatch.csv")
    counts = result_v.counts
    assert counts["rows_in"] == 2 * len(truth["cpu"]) == len(raw)
    assert counts["rows_quarantined"] == 2  # the blank and the negative row
    assert counts["rows_in"] == counts["rows_kept"] + counts["rows_quarantined"]
    assert sorted(result_v.quarantine["reason"]) == ["missing_value", "negative_value"]

    clean = resample.resample_series(result_v.kept, etl_settings(cfg["etl"]))
    table = quality.quality_table(
        result_v,
        clean,
        raw,
        etl_settings(cfg["etl"]),
        "cloudwatch",
        "cloudwatch.csv",
        result.series,
    ).set_index("metric")
    hourly = clean[clean["metric"] == "cpu_utilization"].set_index("timestamp")["value"]
    assert hourly.min() > 20 and hourly.max() < 90  # a busy VM in percent, not 0.2-0.9
    assert hourly.iloc[5] == pytest.approx(truth["cpu"][60:72].mean(), abs=1e-9)
    assert table.loc["cpu_utilization", "source_metric"] == "AWS/EC2:CPUUtilization"
    assert "fraction_scale_converted" in table.loc["memory_utilization", "flags"].split(";")
    assert table.loc["memory_utilization", "rows_rescaled"] == len(truth["mem"])
    assert table["rows_in"].sum() == counts["rows_in"]


def test_series_file_named_as_a_prometheus_ratio_is_converted_alone(tmp_path, cfg):
    stamps = pd.date_range("2024-05-01", periods=48, freq="h")
    ratio = np.linspace(0.2, 0.8, len(stamps))
    text = "timestamp,value\n" + "".join(f"{t},{v}\n" for t, v in zip(stamps, ratio, strict=True))
    path = write(tmp_path / "node1_instance_node_cpu_utilisation_rate5m.csv", text)
    result = ingest.ingest_file(path, data_settings(cfg["data"]), etl_settings(cfg["etl"]))
    series = result.series.iloc[0]
    assert (series["metric"], series["scale"], series["scale_evidence"]) == (
        "cpu_utilization",
        "fraction",
        "name",
    )
    np.testing.assert_allclose(result.raw["value"], ratio * 100)
    # The same values under a name that declares nothing: one series alone is no evidence.
    plain = write(tmp_path / "node1_cpu.csv", text)
    alone = ingest.ingest_file(plain, data_settings(cfg["data"]), etl_settings(cfg["etl"]))
    assert alone.series["scale"].tolist() == ["ambiguous"]
    np.testing.assert_allclose(alone.raw["value"], ratio)
