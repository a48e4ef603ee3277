"""Epoch timestamps (s, ms, us, ns) in CSV and parquet, long and series files."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from capforecast.config import validated_config
from capforecast.data import ingest
from capforecast.errors import ConfigError, InputDataError
from capforecast.settings import data_settings

START = pd.Timestamp("2024-05-01 00:00", tz="UTC")
STAMPS = pd.date_range(START, periods=4, freq="5min")
PER_UNIT = {"s": 10**9, "ms": 10**6, "us": 10**3, "ns": 1}


@pytest.fixture(scope="module")
def data_cfg() -> dict:
    return dict(validated_config({"data": {"source": "local", "path": "unused"}})["data"])


def epochs(unit: str) -> list[int]:
    return [int(t.value // PER_UNIT[unit]) for t in STAMPS]


def series_csv(path: Path, cells: list) -> Path:
    path.write_text("timestamp,value\n" + "".join(f"{c},{i}\n" for i, c in enumerate(cells)))
    return path


def error_of(file: Path, data_cfg: dict) -> str:
    with pytest.raises(InputDataError) as info:
        ingest.read_input_file(file, data_settings(data_cfg))
    message = str(info.value)
    assert "\n" not in message and message.startswith(str(file))
    assert "column 'timestamp'" in message
    return message


@pytest.mark.parametrize("unit", ["s", "ms", "us", "ns"])
def test_epoch_integers_in_csv_are_read_by_magnitude(tmp_path, data_cfg, unit):
    raw = ingest.read_input_file(
        series_csv(tmp_path / "cpu_a.csv", epochs(unit)), data_settings(data_cfg)
    )
    assert list(raw["timestamp"]) == list(STAMPS)
    assert str(raw["timestamp"].dtype) == "datetime64[ns, UTC]"


@pytest.mark.parametrize("unit", ["s", "ms", "us", "ns"])
def test_epoch_numbers_in_parquet_ints_floats_and_text(tmp_path, data_cfg, unit):
    values = np.array(epochs(unit), dtype="int64")
    for name, column in {
        "ints": values,
        "text": values.astype(str).astype(object),
        "floats": values.astype("float64"),
    }.items():
        path = tmp_path / f"{name}_{unit}_cpu.parquet"
        pd.DataFrame({"timestamp": column, "value": [1.0, 2.0, 3.0, 4.0]}).to_parquet(path)
        raw = ingest.read_input_file(path, data_settings(data_cfg))
        assert list(raw["timestamp"]) == list(STAMPS), (name, unit)


def test_float_seconds_land_on_whole_microseconds(tmp_path, data_cfg):
    # 1714521600.25 s: as float ns it would be 256 ns off; samples must stay on their instants.
    cells = [f"{t.value / 1e9:.2f}" for t in STAMPS + pd.Timedelta("250ms")]
    raw = ingest.read_input_file(series_csv(tmp_path / "cpu_a.csv", cells), data_settings(data_cfg))
    assert list(raw["timestamp"]) == list(STAMPS + pd.Timedelta("250ms"))


def test_epoch_long_file_blank_cells_and_timezone_setting(tmp_path, data_cfg):
    ms = epochs("ms")
    lines = ["timestamp,resource_id,metric,value"]
    lines += [f"{t},i-1,cpu_utilization,{i}" for i, t in enumerate(ms)]
    lines += [",i-1,cpu_utilization,9"]  # a blank timestamp stays NaT (quarantined later)
    path = tmp_path / "fleet.csv"
    path.write_text("\n".join(lines) + "\n")
    berlin = {**data_cfg, "naive_timezone": "Europe/Berlin"}  # epoch times are UTC regardless
    raw = ingest.read_input_file(path, data_settings(berlin))
    assert list(raw["timestamp"].iloc[:4]) == list(STAMPS)
    assert pd.isna(raw["timestamp"].iloc[4])


def test_forced_unit_reads_numbers_in_it_and_datetimes_as_they_are(tmp_path, data_cfg):
    path = series_csv(tmp_path / "cpu_a.csv", epochs("s"))
    forced = ingest.read_input_file(path, data_settings({**data_cfg, "timestamp_unit": "ms"}))
    assert forced["timestamp"].iloc[0] == pd.Timestamp(epochs("s")[0], unit="ms", tz="UTC")
    frame = pd.DataFrame({"timestamp": STAMPS, "value": [1.0, 2.0, 3.0, 4.0]})
    frame.to_parquet(tmp_path / "cpu_b.parquet")
    dated = ingest.read_input_file(
        tmp_path / "cpu_b.parquet", data_settings({**data_cfg, "timestamp_unit": "s"})
    )
    assert list(dated["timestamp"]) == list(STAMPS)


def test_iso_setting_refuses_numbers_and_auto_keeps_iso_text(tmp_path, data_cfg):
    path = series_csv(tmp_path / "cpu_a.csv", epochs("s"))
    message = error_of(path, {**data_cfg, "timestamp_unit": "iso"})
    assert "unparseable timestamp '1714521600'" in message and "row 1" in message
    iso = series_csv(tmp_path / "cpu_b.csv", [str(t) for t in STAMPS])
    assert list(ingest.read_input_file(iso, data_settings(data_cfg))["timestamp"]) == list(STAMPS)


@pytest.mark.parametrize(
    ("cells", "row", "pattern"),
    [
        # a number that is no epoch time in any unit (a year, a counter)
        (["2024", "2025"], 1, r"number 2024 is not an epoch time in s, ms, us or ns"),
        # seconds, then milliseconds: one unit per column
        ([*epochs("s")[:2], epochs("ms")[2], epochs("s")[3]], 3, r"looks like epoch ms.*row 1"),
        # numbers mixed with dates
        ([*epochs("s")[:3], "2024-05-01 00:15"], 4, r"'2024-05-01 00:15' among epoch numbers"),
    ],
)
def test_bad_epoch_columns_are_one_line_errors_naming_the_row(
    tmp_path, data_cfg, cells, row, pattern
):
    message = error_of(series_csv(tmp_path / "cpu_a.csv", cells), data_cfg)
    assert re.search(pattern, message), message
    assert f"row {row}" in message and f"line {row + 1} of the file" in message


def test_forced_unit_out_of_range_and_non_numbers(tmp_path, data_cfg):
    huge = series_csv(tmp_path / "cpu_a.csv", [epochs("ns")[0]])
    message = error_of(huge, {**data_cfg, "timestamp_unit": "s"})
    assert "out of range" in message and "row 1" in message
    text = series_csv(tmp_path / "cpu_b.csv", [*epochs("ms")[:2], "soon"])
    message = error_of(text, {**data_cfg, "timestamp_unit": "ms"})
    assert "'soon' (data.timestamp_unit is ms)" in message and "row 3" in message
    flags = pd.DataFrame({"timestamp": [True, False], "value": [1.0, 2.0]})
    flags.to_parquet(tmp_path / "cpu_c.parquet")
    assert "found bool" in error_of(tmp_path / "cpu_c.parquet", data_cfg)


def test_timestamp_unit_is_validated():
    with pytest.raises(ConfigError, match=r"data\.timestamp_unit.*allowed: auto, iso, s, ms"):
        validated_config({"data": {"source": "local", "path": "x", "timestamp_unit": "sec"}})
    with pytest.raises(ConfigError, match=r"data\.timestamp_unit.*local only"):
        validated_config({"data": {"timestamp_unit": "ms"}})


# ------------------------------------------------------ timestamps at the edges (quarantined)
LOW = pd.Timestamp("1677-09-21 00:12:44", tz="UTC")  # stand-ins for instants pandas cannot hold
HIGH = pd.Timestamp("2262-04-11 23:47:16", tz="UTC")


def test_stand_ins_are_the_module_constants():
    from capforecast import timestamps

    assert (timestamps.UNREPRESENTABLE_LOW, timestamps.UNREPRESENTABLE_HIGH) == (LOW, HIGH)


@pytest.mark.parametrize(
    ("cell", "read_as"),
    [
        ("9999-12-31", HIGH),  # the usual "no end date" placeholder
        ("2262-04-12 00:00:00", HIGH),  # one day past pandas' last instant
        ("2300-01-01T00:00:00+02:00", HIGH),
        ("0001-01-01T00:00:00Z", LOW),
        ("1677-09-20 23:59:59", LOW),
    ],
)
def test_iso_dates_beyond_pandas_range_are_read_as_stand_ins(tmp_path, data_cfg, cell, read_as):
    cells = [str(t.tz_localize(None)) for t in STAMPS]
    cells[2] = cell
    raw = ingest.read_input_file(series_csv(tmp_path / "cpu_a.csv", cells), data_settings(data_cfg))
    assert raw["timestamp"].iloc[2] == read_as
    others = raw["timestamp"].drop(index=2)
    assert list(others) == [t for i, t in enumerate(STAMPS) if i != 2]


@pytest.mark.parametrize(
    ("cells", "unit", "stray", "read_as"),
    [
        # auto: a 0 (unset clock) or a small counter among epoch seconds is read in seconds
        ([*epochs("s")[:3], "0"], "auto", 3, pd.Timestamp("1970-01-01", tz="UTC")),
        (["0", *epochs("s")[1:]], "auto", 0, pd.Timestamp("1970-01-01", tz="UTC")),
        ([*epochs("ms")[:3], "2024"], "auto", 3, pd.Timestamp("1970-01-01 00:00:02.024", tz="UTC")),
        # a number no unit can hold among plausible ones
        ([*epochs("s")[:3], "99999999999999999"], "s", 3, HIGH),
        (["-99999999999999999", *epochs("ms")[1:]], "ms", 0, LOW),
    ],
)
def test_stray_epoch_numbers_are_read_not_refused(tmp_path, data_cfg, cells, unit, stray, read_as):
    path = series_csv(tmp_path / "cpu_a.csv", cells)
    raw = ingest.read_input_file(path, data_settings({**data_cfg, "timestamp_unit": unit}))
    assert raw["timestamp"].iloc[stray] == read_as
    assert raw["timestamp"].drop(index=stray).isin(STAMPS).all()


@pytest.mark.parametrize("tz", [None, "UTC", "Europe/Amsterdam"])
def test_wide_parquet_datetimes_beyond_range_are_read_as_stand_ins(tmp_path, data_cfg, tz):
    import datetime as dt

    import pyarrow as pa
    import pyarrow.parquet as pq

    moments = [dt.datetime(2024, 5, 1), dt.datetime(9999, 12, 31), dt.datetime(1, 1, 1)]
    column = pa.array(moments, pa.timestamp("us", tz=tz))
    path = tmp_path / "cpu_a.parquet"
    pq.write_table(pa.table({"timestamp": column, "value": [1.0, 2.0, 3.0]}), path)
    raw = ingest.read_input_file(
        path, data_settings({**data_cfg, "naive_timezone": "Europe/Amsterdam"})
    )
    # Arrow stores tz-aware values as UTC instants; naive ones are read in data.naive_timezone.
    first = pd.Timestamp("2024-05-01", tz="UTC" if tz else "Europe/Amsterdam").tz_convert("UTC")
    assert list(raw["timestamp"]) == [first, HIGH, LOW]


@pytest.mark.parametrize(
    ("cells", "unit"),
    [
        (["9999-12-31", "9999-12-30"], "auto"),
        (["0001-01-01T00:00:00Z"], "iso"),
        (["99999999999999999", "99999999999999998"], "s"),
    ],
)
def test_a_column_with_no_representable_timestamp_is_an_error(tmp_path, data_cfg, cells, unit):
    path = series_csv(tmp_path / "cpu_a.csv", cells)
    message = error_of(path, {**data_cfg, "timestamp_unit": unit})
    assert "1677-09-21 .. 2262-04-11" in message and "row 1" in message
    assert "expected ISO 8601" not in message
