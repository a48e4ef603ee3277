"""One tiny local fleet with the identity and file payloads, run through the workflow up to the
risk report: series never merge (a "|" in resource ids, NA-like and zero-padded ids), every file
of the folder is read or listed as skipped (gzip CSV, upper-case parquet, a README, a hidden
file, a subfolder), a series whose rows were all quarantined reaches the forecasts and the risk
report as no_data, and the Bitbrains-style 0 vCPU / 0 GiB VM is flagged and left unsized. A
second run stops right after ingest on a series split over two files.

Cheapest models, one week of hourly data, two partitions.
"""

from __future__ import annotations

import gzip
import json
import re

import numpy as np
import pandas as pd
import pytest
import yaml
from test_workflow import CONFIGS, snakemake

from capforecast.csv_tables import read_csv_table

pytestmark = pytest.mark.slow

HOURS = pd.date_range("2024-05-01", periods=7 * 24, freq="h", tz="UTC")
# (resource_id, metric as the file has it) -> base level of the daily cycle
CPU_FILE = {
    ("a|b", "cpu_utilization"): 20.0,
    ("a", "b|cpu_utilization"): 60.0,  # metric read as b_cpu_utilization: not a|b's CPU
    ("NA", "cpu_utilization"): 30.0,
    ("0012", "cpu_utilization"): 40.0,
    ("vm-neg", "cpu_utilization"): -20.0,  # every value negative: all quarantined
    ("bb-vm050", "cpu_utilization"): 50.0,
}
MEM_FILE = {
    ("a|b", "memory_utilization"): 35.0,
    ("NA", "memory_utilization"): 45.0,
    ("bb-vm050", "memory_utilization"): 55.0,
}
RESOURCES = """resource_id,service,instance_type,vcpu,memory_gib
a|b,web,m5.large,,
a,web,m5.large,,
NA,web,m5.large,,
0012,web,m5.large,,
vm-neg,web,m5.large,,
bb-vm050,svc-0cpu-0g,t3.medium,0.0,0.0
"""


def long_frame(series: dict[tuple[str, str], float]) -> pd.DataFrame:
    cycle = 5 * np.sin(np.arange(len(HOURS)) / 24 * 2 * np.pi)
    return pd.concat(
        [
            pd.DataFrame(
                {"timestamp": HOURS, "resource_id": r, "metric": m, "value": level + cycle}
            )
            for (r, m), level in series.items()
        ],
        ignore_index=True,
    )


def write_config(tmp_path, data, **extra) -> str:
    cfg = yaml.safe_load((CONFIGS / "tiny_local.yaml").read_text())
    cfg["data"].update(path=str(data), format="long", **extra)
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return str(path)


@pytest.fixture(scope="module")
def odd_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("odd_inputs")
    data = root / "input"
    data.mkdir()
    cpu = long_frame(CPU_FILE)
    cpu["timestamp"] = cpu["timestamp"].dt.strftime("%Y-%m-%dT%H:%M:%SZ")
    (data / "cpu.csv.gz").write_bytes(gzip.compress(cpu.to_csv(index=False).encode()))
    long_frame(MEM_FILE).to_parquet(data / "MEM.PARQUET", index=False)
    (data / "README.md").write_text("where these came from\n")
    (data / ".cpu.csv.swp").write_text("editor junk\n")
    (data / "old").mkdir()
    (data / "resources.csv").write_text(RESOURCES)
    config = write_config(root, data, resources=str(data / "resources.csv"))
    proc = snakemake(root, "--cores", "2", "--configfile", config, "risk")
    return root / "results", proc.stdout + proc.stderr


def test_every_entry_of_the_folder_is_read_or_listed_as_skipped(odd_run):
    results, _ = odd_run
    skipped = read_csv_table(results / "quality" / "skipped_files.csv")
    reasons = {name.rsplit("/", 1)[-1]: reason for name, reason in skipped.to_numpy()}
    assert set(reasons) == {"README.md", ".cpu.csv.swp", "old", "resources.csv"}
    assert reasons["old"].startswith("a directory")
    recon = read_csv_table(results / "quality" / "reconciliation.csv")
    assert sorted(recon["source_file"]) == ["MEM.PARQUET", "cpu.csv.gz"]
    rows = recon.set_index("source_file")["rows_in"]
    assert rows["cpu.csv.gz"] == len(CPU_FILE) * len(HOURS)
    assert rows["MEM.PARQUET"] == len(MEM_FILE) * len(HOURS)
    assert recon["balanced"].all()


def test_ids_stay_exact_and_series_never_merge(odd_run):
    results, _ = odd_run
    quality = read_csv_table(results / "quality" / "data_quality.csv")
    keys = set(zip(quality["resource_id"], quality["metric"], strict=True))
    assert keys == {
        ("a|b", "cpu_utilization"),
        ("a", "b_cpu_utilization"),
        ("NA", "cpu_utilization"),
        ("0012", "cpu_utilization"),
        ("vm-neg", "cpu_utilization"),
        ("bb-vm050", "cpu_utilization"),
        ("a|b", "memory_utilization"),
        ("NA", "memory_utilization"),
        ("bb-vm050", "memory_utilization"),
    }
    forecasts = pd.read_parquet(results / "forecast" / "forecasts.parquet")
    selected = forecasts[forecasts["model"] == "selected"]
    level = selected.groupby(["resource_id", "metric"])["q0.5"].median()
    # Each forecast is credited to its own resource: a|b's CPU near 20, a's b_cpu near 60.
    assert abs(level[("a|b", "cpu_utilization")] - 20) < 6
    assert abs(level[("a", "b_cpu_utilization")] - 60) < 6
    assert abs(level[("0012", "cpu_utilization")] - 40) < 6
    ids = selected.drop_duplicates("series_id").set_index("series_id")
    assert ids.loc["a|b|cpu_utilization", "resource_id"] == "a|b"
    assert ids.loc["a|b_cpu_utilization", "resource_id"] == "a"
    risk = read_csv_table(results / "risk" / "risk_report.csv")
    assert set(zip(risk["resource_id"], risk["metric"], strict=True)) == keys


def test_an_all_quarantined_series_is_no_data_end_to_end(odd_run):
    results, _ = odd_run
    quality = read_csv_table(results / "quality" / "data_quality.csv").set_index("resource_id")
    assert "all_quarantined" in quality.loc["vm-neg", "flags"].split(";")
    forecasts = pd.read_parquet(results / "forecast" / "forecasts.parquet")
    neg = forecasts[(forecasts["model"] == "selected") & (forecasts["resource_id"] == "vm-neg")]
    assert len(neg) == 24 and neg["q0.9"].isna().all()
    assert set(neg["model_used"]) == {"none (no_data)"}
    risk = read_csv_table(results / "risk" / "risk_report.csv").set_index("resource_id")
    assert risk.loc["vm-neg", "finding"] == risk.loc["vm-neg", "metric_finding"] == "no_data"
    assert risk.loc["vm-neg", "reason_codes"] == "cpu_no_data"
    summary = json.loads((results / "risk" / "summary.json").read_text())
    assert summary["no_data"] == [{"resource_id": "vm-neg", "metric": "cpu_utilization"}]
    assert summary["findings"]["no_data"] == 1


def test_a_zero_capacity_vm_is_flagged_unsized_and_the_run_goes_on(odd_run):
    results, console = odd_run
    assert "1 resource(s) with a vCPU or memory size of 0 or less" in console
    quality = read_csv_table(results / "quality" / "data_quality.csv")
    flagged = quality.loc[quality["flags"].fillna("").str.contains("capacity_impossible")]
    assert sorted(flagged["metric"]) == ["cpu_utilization", "memory_utilization"]
    assert set(flagged["resource_id"]) == {"bb-vm050"}
    risk = read_csv_table(results / "risk" / "risk_report.csv")
    vm = risk[risk["resource_id"] == "bb-vm050"]
    assert (vm["sizing"] == "unsized").all()
    assert vm["reason_codes"].str.split(";").map(lambda c: "capacity_impossible" in c).all()
    plan = read_csv_table(results / "risk" / "service_capacity.csv").set_index("service")
    assert plan.loc["svc-0cpu-0g", "advice"] == "unknown"
    assert (
        "capacity_impossible: 1 instance(s) left out of the plan" in plan.loc["svc-0cpu-0g", "note"]
    )


def test_a_series_split_over_two_files_stops_before_any_model(tmp_path):
    data = tmp_path / "input"
    data.mkdir()
    frame = long_frame({("vm1", "CPUUtilization"): 30.0, ("vm2", "cpu_utilization"): 10.0})
    frame.iloc[: len(frame) // 4].to_csv(data / "2024-05-a.csv", index=False)
    frame.iloc[len(frame) // 4 :].to_csv(data / "2024-05-b.csv", index=False)
    proc = snakemake(
        tmp_path, "--cores", "1", "--configfile", write_config(tmp_path, data), "risk", check=False
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0 and "Traceback" not in out
    line = re.search(r"capforecast error: (.*)", out)
    assert line, out
    assert "2024-05-a.csv" in line.group(1) and "also in" in line.group(1)
    assert "2024-05-b.csv" in line.group(1) and "'vm1'" in line.group(1)
    assert not (tmp_path / "results" / "backtest").exists()
