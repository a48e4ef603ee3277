"""One test per kind of bad input: a one-line error naming file/column/row, or an explicit
quarantine reason / quality flag. Every bad file is built in tmp_path."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from capforecast.config import validated_config
from capforecast.data import ingest, quality, resample, validate
from capforecast.errors import InputDataError
from capforecast.settings import data_settings, etl_settings


@pytest.fixture(scope="module")
def cfg() -> dict:
    return validated_config({"data": {"source": "local", "path": "unused"}})


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def series_csv(path: Path, stamps: list[str], values: list[str]) -> Path:
    lines = ["timestamp,value", *(f"{t},{v}" for t, v in zip(stamps, values, strict=True))]
    return write(path, "\n".join(lines) + "\n")


def five_minute_stamps(n: int, start: str = "2024-05-01 00:00:00") -> list[str]:
    return [str(t) for t in pd.date_range(start, periods=n, freq="5min")]


def error_of(file: Path, data_cfg: dict) -> str:
    with pytest.raises(InputDataError) as info:
        ingest.read_input_file(file, data_settings(data_cfg))
    message = str(info.value)
    assert "\n" not in message  # one line
    assert message.startswith(str(file))
    return message


def process(file: Path, cfg: dict) -> tuple[validate.ValidationResult, pd.DataFrame]:
    raw = ingest.read_input_file(file, data_settings(cfg["data"]))
    result = validate.validate_rows(raw, etl_settings(cfg["etl"]), str(file))
    clean = resample.resample_series(result.kept, etl_settings(cfg["etl"]))
    table = quality.quality_table(
        result, clean, raw, etl_settings(cfg["etl"]), file.stem, str(file)
    )
    return result, table


def test_missing_columns(tmp_path, cfg):
    file = write(tmp_path / "cpu_a.csv", "time,val\n2024-05-01 00:00,1\n")
    message = error_of(file, cfg["data"])
    assert "column 'timestamp'" in message
    assert "missing required column(s) 'timestamp', 'value'" in message
    assert "found columns: 'time', 'val'" in message


def test_wrong_delimiter(tmp_path, cfg):
    file = write(tmp_path / "cpu_a.csv", "timestamp;value\n2024-05-01 00:00;1,5\n")
    message = error_of(file, cfg["data"])
    assert "found columns: 'timestamp;value'" in message
    assert "delimiter looks wrong" in message and "';'" in message


def test_unparseable_timestamp(tmp_path, cfg):
    stamps = five_minute_stamps(5)
    stamps[3] = "01/05/2024 00:15"  # data row 4, line 5
    file = series_csv(tmp_path / "cpu_a.csv", stamps, ["1"] * 5)
    message = error_of(file, cfg["data"])
    assert "column 'timestamp', row 4" in message
    assert "line 5" in message and "'01/05/2024 00:15'" in message


def test_non_numeric_value(tmp_path, cfg):
    values = ["1.5", "2", "n/a?", "4"]
    file = series_csv(tmp_path / "cpu_a.csv", five_minute_stamps(4), values)
    message = error_of(file, cfg["data"])
    assert "column 'value', row 3" in message and "'n/a?'" in message and "line 4" in message


def test_empty_file(tmp_path, cfg):
    file = write(tmp_path / "cpu_a.csv", "")
    assert "empty file" in error_of(file, cfg["data"])


def test_header_only_file(tmp_path, cfg):
    file = write(tmp_path / "cpu_a.csv", "timestamp,value\n")
    assert "no data rows (header only" in error_of(file, cfg["data"])


def test_corrupt_parquet(tmp_path, cfg):
    garbage = tmp_path / "cpu_a.parquet"
    garbage.write_bytes(b"timestamp,value\n2024-05-01,1\n")  # a CSV in disguise
    assert "not a readable parquet file" in error_of(garbage, cfg["data"])

    good = tmp_path / "cpu_b.parquet"
    pd.DataFrame({"timestamp": pd.date_range("2024-05-01", periods=50), "value": 1.0}).to_parquet(
        good
    )
    truncated = tmp_path / "cpu_c.parquet"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    assert "corrupt or truncated" in error_of(truncated, cfg["data"])


def test_unsupported_extension(tmp_path, cfg):
    file = write(tmp_path / "cpu_a.xlsx", "whatever")
    message = error_of(file, cfg["data"])
    assert "unsupported extension '.xlsx'" in message and ".csv" in message


def test_unknown_metric_for_series_file(tmp_path, cfg):
    file = series_csv(tmp_path / "host42_mystery.csv", five_minute_stamps(2), ["1", "2"])
    message = error_of(file, cfg["data"])
    assert "'host42_mystery'" in message and "set data.metric" in message
    named = ingest.read_input_file(file, data_settings({**cfg["data"], "metric": "queue_depth"}))
    assert set(named["metric"]) == {"queue_depth"}


def test_timezones(tmp_path, cfg):
    aware = ["2024-05-01T10:00:00+02:00", "2024-05-01T10:05:00+02:00"]
    file = series_csv(tmp_path / "cpu_aware.csv", aware, ["1", "2"])
    raw = ingest.read_input_file(file, data_settings(cfg["data"]))
    assert list(raw["timestamp"]) == [
        pd.Timestamp("2024-05-01 08:00", tz="UTC"),
        pd.Timestamp("2024-05-01 08:05", tz="UTC"),
    ]

    naive = ["2024-01-15 12:00:00", "2024-07-15 12:00:00"]  # Berlin: +01:00 winter, +02:00 summer
    file = series_csv(tmp_path / "cpu_naive.csv", naive, ["1", "2"])
    raw = ingest.read_input_file(
        file, data_settings({**cfg["data"], "naive_timezone": "Europe/Berlin"})
    )
    assert list(raw["timestamp"]) == [
        pd.Timestamp("2024-01-15 11:00", tz="UTC"),
        pd.Timestamp("2024-07-15 10:00", tz="UTC"),
    ]


def test_duplicates_aggregated_and_counted(tmp_path, cfg):
    stamps = five_minute_stamps(4)
    stamps = [stamps[0], stamps[1], stamps[1], stamps[2], stamps[1], stamps[3]]
    values = ["1", "2", "4", "3", "9", "5"]
    result, table = process(series_csv(tmp_path / "cpu_a.csv", stamps, values), cfg)
    assert result.counts["duplicates"] == 2
    assert result.counts["rows_kept"] == 6 and len(result.kept) == 4
    assert result.kept["value"].tolist() == pytest.approx([1.0, (2 + 4 + 9) / 3, 3.0, 5.0])
    assert table["duplicates"].iloc[0] == 2
    assert "duplicates" in table["flags"].iloc[0].split(";")


def test_nan_and_inf_quarantined(tmp_path, cfg):
    values = ["1", "", "inf", "-inf", "NaN", "2"]
    result, table = process(series_csv(tmp_path / "cpu_a.csv", five_minute_stamps(6), values), cfg)
    q = result.quarantine
    assert q["row"].tolist() == [1, 2, 3, 4]  # 0-based data rows
    assert q["reason"].tolist() == ["missing_value", "non_finite", "non_finite", "missing_value"]
    assert table["rows_quarantined"].iloc[0] == 4
    assert "quarantined_rows" in table["flags"].iloc[0].split(";")
    assert result.counts["rows_in"] == 6 == result.counts["rows_kept"] + 4


def test_negative_values_quarantined(tmp_path, cfg):
    values = ["3", "-0.5", "4"]
    result, _ = process(
        series_csv(tmp_path / "network_in_a.csv", five_minute_stamps(3), values), cfg
    )
    assert result.quarantine[["row", "reason"]].values.tolist() == [[1, "negative_value"]]
    assert result.quarantine["value"].iloc[0] == -0.5
    assert result.kept["value"].tolist() == [3.0, 4.0]


def test_percent_above_100(tmp_path, cfg):
    tol = cfg["etl"]["percent_repair_tolerance"]
    values = ["99", str(100 + tol / 2), str(100 + tol), str(100 + tol + 0.01)]
    result, table = process(series_csv(tmp_path / "cpu_a.csv", five_minute_stamps(4), values), cfg)
    assert result.kept["value"].tolist() == [99.0, 100.0, 100.0]
    assert result.counts["rows_repaired"] == 2
    assert result.quarantine[["row", "reason"]].values.tolist() == [[3, "percent_above_range"]]
    assert table["rows_repaired"].iloc[0] == 2


def test_unsorted_timestamps(tmp_path, cfg):
    stamps = five_minute_stamps(5)
    shuffled = [stamps[i] for i in (0, 3, 1, 2, 4)]  # rows 3 and 4 arrive late
    result, table = process(series_csv(tmp_path / "cpu_a.csv", shuffled, ["1"] * 5), cfg)
    assert result.counts["unsorted_rows"] == 2
    assert result.kept["timestamp"].is_monotonic_increasing
    assert list(result.kept["timestamp"]) == [pd.Timestamp(s, tz="UTC") for s in stamps]
    assert table["unsorted_rows"].iloc[0] == 2


def test_too_short_series_flagged_and_kept(tmp_path, cfg):
    hours = cfg["etl"]["min_history_hours"]
    n = int(hours * 12 / 2)  # half the minimum history of 5-minute samples
    file = series_csv(tmp_path / "cpu_new.csv", five_minute_stamps(n), ["5"] * n)
    result, table = process(file, cfg)
    assert len(table) == 1 and bool(table["too_short"].iloc[0])
    assert table["history_hours"].iloc[0] < hours
    assert "too_short" in table["flags"].iloc[0].split(";")
    assert len(result.kept) == n  # flagged, not dropped


def test_irregular_timestamps(tmp_path, cfg):
    rng = np.random.default_rng(5)
    offsets = np.cumsum(np.where(rng.random(200) < 0.3, 420, 300))  # 30 % of steps are 7 min
    start = pd.Timestamp("2024-05-01")
    stamps = [str(start + pd.Timedelta(seconds=int(s))) for s in offsets]
    file = series_csv(tmp_path / "cpu_a.csv", stamps, ["1"] * len(stamps))
    _, table = process(file, cfg)
    steps = np.diff(offsets)
    expected = float(np.mean(steps != np.median(steps)))
    assert table["median_step_seconds"].iloc[0] == np.median(steps)
    assert table["irregular_fraction"].iloc[0] == pytest.approx(expected)
    assert table["irregular_fraction"].iloc[0] > 0
    assert "irregular" in table["flags"].iloc[0].split(";")


def test_error_names_row_of_long_file_consistently(tmp_path, cfg):
    # The 1-based row in the message is the 0-based quarantine row + 1 (same record).
    text = (
        "timestamp,resource_id,metric,value\n"
        "2024-05-01,i-1,cpu_utilization,1\n"
        "2024-05-01,i-1,cpu_utilization,x\n"
    )
    message = error_of(write(tmp_path / "fleet.csv", text), cfg["data"])
    assert re.search(r"column 'value', row 2: .*'x' \(line 3 of the file\)", message)
