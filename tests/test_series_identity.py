"""Series identity: two series never merge, one series never splits.

A series is (resource_id, metric). Its id joins them with "|"; resource ids are free text and may
contain "|", metric names never do. Two source names of one resource that become one metric name
stop ingest; one series found in two input files stops the run after ingest (series_index).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from capforecast import metric_names
from capforecast.config import validated_config
from capforecast.contracts import series_id, split_series_id
from capforecast.data import features, ingest, quality, resample, series_index, validate
from capforecast.errors import InputDataError
from capforecast.forecast import fit
from capforecast.forecast.panel import metric_of, series_bounds
from capforecast.settings import (
    backtest_settings,
    data_settings,
    etl_settings,
    forecast_settings,
    model_settings,
)

HOSTILE_RESOURCES = ("a|b", "a", "|", "||x", "a|", "vm 1", "x,y", "日本", "=cmd()", "NA", "0012")
METRICS = ("cpu_utilization", "b_cpu_utilization", "m")


@pytest.fixture(scope="module")
def cfg() -> dict:
    return validated_config(
        {
            "data": {"source": "local", "path": "unused"},
            "forecast": {"horizon": 24},
            "backtest": {"windows": 1, "horizon": 24},
        }
    )


def long_csv(path: Path, rows: list[tuple[str, str, str, str]]) -> Path:
    frame = pd.DataFrame(rows, columns=["timestamp", "resource_id", "metric", "value"])
    frame.to_csv(path, index=False)
    return path


def hours(resource: str, metric: str, level: float, n: int = 72, start: str = "2024-05-01"):
    stamps = pd.date_range(start, periods=n, freq="h", tz="UTC")
    return [(t.isoformat(), resource, metric, f"{level + (i % 24)}") for i, t in enumerate(stamps)]


# --------------------------------------------------------------------------- the id itself


def test_distinct_pairs_give_distinct_ids_that_split_back():
    pairs = [(r, m) for r in HOSTILE_RESOURCES for m in METRICS]
    ids = [series_id(r, m) for r, m in pairs]
    assert len(set(ids)) == len(pairs)
    assert [split_series_id(s) for s in ids] == pairs
    assert [metric_of(s) for s in ids] == [m for _, m in pairs]


@pytest.mark.parametrize("metric", ["b|m", "|", "cpu|"])
def test_a_metric_with_the_separator_is_refused_and_never_produced(metric):
    with pytest.raises(ValueError, match="series-id separator"):
        series_id("a", metric)
    assert "|" not in metric_names.sanitise(metric)
    assert "|" not in metric_names.MetricNameMap({}).lookup(metric).metric


# --------------------------------------------------------------------------- within one file


def test_a_separator_in_resource_ids_keeps_series_apart_from_file_to_forecast(tmp_path, cfg):
    # resource "a|b" + metric cpu_utilization, resource "a" + metric "b|cpu_utilization":
    # one id "a|b|cpu_utilization" for both, before; two series with their own values now.
    rows = hours("a|b", "cpu_utilization", 10) + hours("a", "b|cpu_utilization", 50)
    rows += hours("|", "cpu_utilization", 30)
    path = long_csv(tmp_path / "fleet.csv", rows)
    raw = ingest.read_input_file(path, data_settings(cfg["data"]), etl_settings(cfg["etl"]))
    kept = validate.validate_rows(raw, etl_settings(cfg["etl"]), path.name).kept
    panel = features.build_features(resample.resample_series(kept, etl_settings(cfg["etl"])))
    assert sorted(panel["series_id"].unique()) == [
        "a|b_cpu_utilization",
        "a|b|cpu_utilization",
        "||cpu_utilization",
    ]
    levels = panel.groupby(["resource_id", "metric"])["y"].min().to_dict()
    assert levels == {
        ("a", "b_cpu_utilization"): 50.0,
        ("a|b", "cpu_utilization"): 10.0,
        ("|", "cpu_utilization"): 30.0,
    }
    bounds = series_bounds(panel[["series_id"]], cfg["etl"]["percent_metrics"])
    assert bounds["a|b|cpu_utilization"] == (0.0, 100.0)
    assert bounds["a|b_cpu_utilization"] == (0.0, None)

    forecast = fit.fit_forecast(
        "seasonal_naive_daily",
        panel,
        forecast_cfg=forecast_settings(cfg["forecast"]),
        backtest_cfg=backtest_settings(cfg["backtest"]),
        models_cfg=model_settings(cfg["models"]),
        percent_metrics=cfg["etl"]["percent_metrics"],
    )
    credited = forecast.groupby(["resource_id", "metric"])["mean"].min().to_dict()
    assert credited == levels  # each forecast credited to its own resource


@pytest.mark.parametrize(
    ("first", "second", "metric"),
    [
        ("a|m", "a_m", "a_m"),
        ("A M", "a-m", "a_m"),
        ("Disk.Read|Ops", "disk_read_ops", "disk_read_ops"),
        ("CPUUtilization", "cpu_utilization", "cpu_utilization"),
    ],
)
def test_two_source_names_that_become_one_metric_stop_ingest(tmp_path, cfg, first, second, metric):
    rows = [
        ("2024-05-01T00:00:00Z", "vm1", first, "1"),
        ("2024-05-01T00:00:00Z", "vm2", second, "2"),  # another resource: no conflict
        ("2024-05-01T01:00:00Z", "vm1", second, "3"),
    ]
    path = long_csv(tmp_path / "names.csv", rows)
    with pytest.raises(InputDataError, match=f"both mean '{metric}' for the same resource") as err:
        ingest.read_input_file(path, data_settings(cfg["data"]))
    assert repr(first) in str(err.value) and repr(second) in str(err.value)
    assert err.value.row == 3


# --------------------------------------------------------------------------- across files


def records(*files: tuple[str, list[tuple[str, str, str]]]) -> dict:
    """partition -> (file, ingest record) with (resource_id, metric, source_metric) rows."""
    return {
        Path(name).stem: (
            name,
            pd.DataFrame(rows, columns=["resource_id", "metric", "source_metric"]),
        )
        for name, rows in files
    }


def test_series_index_lists_each_series_with_its_file():
    index = series_index.series_index(
        records(
            ("cpu.csv", [("vm1", "cpu_utilization", "CPU"), ("vm2", "cpu_utilization", "CPU")]),
            ("mem.csv", [("vm1", "memory_utilization", "mem")]),
            ("empty.csv", []),
        )
    )
    assert tuple(index.columns) == series_index.SERIES_INDEX_COLUMNS
    assert list(zip(index["resource_id"], index["source_file"], strict=True)) == [
        ("vm1", "cpu.csv"),
        ("vm1", "mem.csv"),
        ("vm2", "cpu.csv"),
    ]


@pytest.mark.parametrize(
    ("files", "series", "count"),
    [
        # the same series, two months in two files
        (
            [
                ("2024-01.csv", [("vm1", "cpu_utilization", "cpu_utilization")]),
                ("2024-02.csv", [("vm1", "cpu_utilization", "cpu_utilization")]),
            ],
            ("vm1", "cpu_utilization"),
            1,
        ),
        # two source names that map to one metric, in two files
        (
            [
                ("a.csv", [("r|1", "a_m", "a|m"), ("s2", "x", "x")]),
                ("b.parquet", [("r|1", "a_m", "a_m"), ("s2", "x", "X")]),
                ("c.csv", [("r|1", "a_m", "A M")]),
            ],
            ("r|1", "a_m"),
            2,
        ),
    ],
)
def test_a_series_in_two_files_stops_the_run_naming_both(files, series, count):
    with pytest.raises(InputDataError) as err:
        series_index.series_index(records(*files))
    message = str(err.value)
    assert message.startswith(f"{files[0][0]}, column 'resource_id': series resource_id")
    assert f"{series[0]!r}, metric {series[1]!r}" in message
    assert f"also in {files[1][0]}" in message
    assert f"({count} series split over several files)" in message
    assert ("and 1 more file(s)" in message) == (len(files) > 2)


def test_the_in_memory_panel_refuses_a_series_split_over_files_too(tmp_path, cfg):
    data = tmp_path / "input"
    data.mkdir()
    long_csv(data / "jan.csv", hours("vm1", "cpu_utilization", 10, start="2024-01-01"))
    long_csv(data / "feb.csv", hours("vm1", "cpu_utilization", 20, start="2024-02-01"))
    long_csv(data / "mem.csv", hours("vm1", "memory_utilization", 20, start="2024-02-01"))
    one = {**cfg, "data": {**cfg["data"], "path": str(data)}}
    with pytest.raises(InputDataError, match=r"feb\.csv.*also in .*jan\.csv"):
        features.panel_from_local_files(one)
    (data / "jan.csv").unlink()
    panel = features.panel_from_local_files(one)
    assert sorted(panel["series_id"].unique()) == ["vm1|cpu_utilization", "vm1|memory_utilization"]
    assert np.isfinite(panel["y"]).all()


# --------------------------------------------------------------------------- whitespace in ids


def test_ids_with_surrounding_whitespace_are_one_name_flagged_and_logged(tmp_path, cfg, caplog):
    # "vm1", "vm1 " and "\tvm1" are one resource (spreadsheet exports pad cells); that merge is
    # counted per series and named in a warning, never silent. Inner spaces are part of the id.
    rows = hours("vm1", "cpu_utilization", 10, n=24)
    rows += hours("vm1 ", "cpu_utilization", 10, n=24, start="2024-05-02")
    rows += hours("\tvm1", "cpu_utilization", 10, n=24, start="2024-05-03")
    rows += hours("vm 2", "cpu_utilization", 20) + hours("vm3", " memory_utilization ", 30)
    path = long_csv(tmp_path / "fleet.csv", rows)
    with caplog.at_level("WARNING", logger="capforecast"):
        result = ingest.ingest_file(path, data_settings(cfg["data"]), etl_settings(cfg["etl"]))
    trimmed = result.series.set_index(["resource_id", "metric"])["ids_trimmed"].to_dict()
    assert trimmed == {
        ("vm1", "cpu_utilization"): True,
        ("vm 2", "cpu_utilization"): False,
        ("vm3", "memory_utilization"): True,
    }
    warning = [r.getMessage() for r in caplog.records if "surrounding whitespace" in r.getMessage()]
    assert len(warning) == 1
    for shown in ("'vm1 ' -> 'vm1'", "'\\tvm1' -> 'vm1'", "' memory_utilization ' -> "):
        assert shown in warning[0]
    assert "3 identifiers" in warning[0]

    raw = result.raw
    checked = validate.validate_rows(raw, etl_settings(cfg["etl"]), path.name)
    clean = resample.resample_series(checked.kept, etl_settings(cfg["etl"]))
    table = quality.quality_table(
        checked, clean, raw, etl_settings(cfg["etl"]), "fleet", path.name, result.series
    ).set_index("resource_id")
    flagged = table["flags"].str.split(";").map(lambda f: "id_whitespace_trimmed" in f)
    assert flagged.to_dict() == {"vm1": True, "vm 2": False, "vm3": True}
    assert table.loc["vm1", "rows_in"] == 72  # the three spellings' rows, one series
    assert table["rows_in"].sum() == len(raw)


def test_ids_without_surrounding_whitespace_raise_no_flag(tmp_path, cfg, caplog):
    path = long_csv(tmp_path / "fleet.csv", hours("vm1", "cpu_utilization", 10, n=24))
    with caplog.at_level("WARNING", logger="capforecast"):
        result = ingest.ingest_file(path, data_settings(cfg["data"]), etl_settings(cfg["etl"]))
    assert not result.series["ids_trimmed"].any()
    assert not [r for r in caplog.records if "whitespace" in r.getMessage()]
