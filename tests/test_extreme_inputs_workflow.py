"""Extreme values, timestamps at the edges and config that used to fail late, through the
Snakemake CLI on tiny local inputs (cheapest models): quarantined with a reason and reported,
never a non-finite number downstream; bad config stops before any job in one line."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from test_workflow import CONFIGS, NAB, snakemake

pytestmark = pytest.mark.slow

FLOAT_MAX = "1.7976931348623157e308"
# (row to overwrite in the network file, its new value): values no NIC can move in 5 minutes.
IMPOSSIBLE_VALUES = {10: FLOAT_MAX, 500: "1e300", 2000: "4e14"}
# Timestamps appended to the request-count file: beyond pandas, before and after the window.
EDGE_TIMESTAMPS = ["9999-12-31 00:00:00", "1970-01-01 00:00:00", "2262-04-12 00:00:00"]


def hostile_inputs(tmp_path: Path) -> Path:
    data = tmp_path / "input"
    data.mkdir()
    network = (NAB / "ec2_network_in_257a54.csv").read_text().splitlines()
    for row, value in IMPOSSIBLE_VALUES.items():
        stamp, _ = network[row + 1].split(",")
        network[row + 1] = f"{stamp},{value}"
    (data / "ec2_network_in_257a54.csv").write_text("\n".join(network) + "\n")
    requests = (NAB / "elb_request_count_8c0756.csv").read_text().splitlines()
    requests += [f"{stamp},5" for stamp in EDGE_TIMESTAMPS]
    (data / "elb_request_count_8c0756.csv").write_text("\n".join(requests) + "\n")
    return data


def local_config(tmp_path: Path, data: Path, **sections) -> Path:
    cfg = yaml.safe_load((CONFIGS / "tiny_local.yaml").read_text())
    cfg["data"]["path"] = str(data)
    cfg.update(sections)
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_extreme_values_and_edge_timestamps_are_quarantined_and_never_reach_forecasts(tmp_path):
    data = hostile_inputs(tmp_path)
    cfg = local_config(tmp_path, data, report={"top_n": 2, "sample_series": 2})
    snakemake(tmp_path, "--cores", "2", "--configfile", str(cfg))
    results = tmp_path / "results"

    recon = pd.read_csv(results / "quality" / "reconciliation.csv").set_index("source_file")
    assert recon["balanced"].all()
    for file in data.iterdir():
        assert recon.at[file.name, "rows_in"] == len(file.read_text().splitlines()) - 1
    quarantine = pd.read_parquet(results / "quality" / "quarantine.parquet")
    by_reason = quarantine.groupby(["source_file", "reason"])["row"].apply(sorted).to_dict()
    assert by_reason == {
        ("ec2_network_in_257a54.csv", "above_physical_limit"): sorted(IMPOSSIBLE_VALUES),
        ("elb_request_count_8c0756.csv", "timestamp_outside_window"): [4032, 4033, 4034],
    }
    quality = pd.read_csv(results / "quality" / "data_quality.csv").set_index("source_file")
    assert "quarantined_rows" in quality.at["ec2_network_in_257a54.csv", "flags"]
    # The grid of the request series covers its two weeks, not 1970 .. 2262.
    assert quality.at["elb_request_count_8c0756.csv", "expected_bins"] < 24 * 15

    clean = pd.concat(pd.read_parquet(p) for p in (results / "clean").glob("*.parquet"))
    observed = clean.loc[~clean["is_gap"], ["value", "value_max"]].to_numpy()
    assert np.isfinite(observed).all() and observed.max() < 1e12
    forecasts = pd.read_parquet(results / "forecast" / "forecasts.parquet")
    levels = [c for c in forecasts.columns if c.startswith("q")]
    assert forecasts["series_id"].nunique() == 2
    assert np.isfinite(forecasts[levels].to_numpy()).all()
    risk = pd.read_csv(results / "risk" / "risk_report.csv")
    numbers = risk.select_dtypes("number").to_numpy()
    assert not np.isinf(numbers).any()
    for name in ("data_quality", "forecast_backtest", "capacity_risk"):
        assert (results / "reports" / f"{name}.html").stat().st_size > 0


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("forecast: {horizon: 24.0}\n", "forecast.horizon"),
        ("etl: {value_limits: {max_bytes_per_second: 1.0e9}}\n", "etl.value_limits"),
        ("backtest: {season: 400}\n", "backtest.season"),  # longer than the synthetic history
    ],
)
def test_config_that_used_to_fail_late_stops_before_any_job(tmp_path, text, key):
    bad = tmp_path / "bad.yaml"
    bad.write_text(text)
    proc = snakemake(tmp_path, "--cores", "1", "--configfile", str(bad), check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    lines = [line for line in out.splitlines() if "Invalid configuration" in line]
    assert len(lines) == 1 and f"config key '{key}" in lines[0], out
    assert "Traceback" not in out
    assert not (tmp_path / "results").exists()


def test_a_season_longer_than_the_local_history_stops_the_run_in_one_line(tmp_path):
    """The fleet-wide check (rule history_check) sees every partition: one line naming the
    key, the fleet's longest series and the largest season that fits; nothing is scored."""
    data = tmp_path / "input"
    data.mkdir()
    shutil.copy(NAB / "ec2_cpu_utilization_24ae8d.csv", data)  # 14 days: 337 hourly bins
    # The other partition is shorter: the fleet's longest series is the one above.
    lines = (NAB / "ec2_cpu_utilization_53ea38.csv").read_text().splitlines()
    (data / "ec2_cpu_utilization_53ea38.csv").write_text("\n".join(lines[:2001]) + "\n")
    cfg = local_config(tmp_path, data, backtest={"windows": 2, "horizon": 24, "season": 150})
    proc = snakemake(tmp_path, "--cores", "1", "--configfile", str(cfg), "forecast", check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    errors = [line for line in out.splitlines() if line.startswith("capforecast error:")]
    assert len(errors) == 1, out
    assert errors[0].startswith("capforecast error: config key 'backtest.season'")
    assert "longest series of the fleet ('ec2_cpu_utilization_24ae8d|cpu_utilization')" in errors[0]
    assert "spans 337 steps" in errors[0] and "at most 132" in errors[0]
    assert "Error in rule history_check" in out
    assert "Traceback" not in out
    # It runs before the aggregates: nothing is scored or forecast.
    results = tmp_path / "results"
    assert (results / "features").is_dir()
    assert not (results / "backtest" / "leaderboard.csv").exists()
    assert not (results / "forecast" / "forecasts.parquet").exists()
