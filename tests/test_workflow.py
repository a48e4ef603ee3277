"""Workflow tests: Snakemake CLI on tiny configs (dry run, run, no-op and partial reruns)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from conftest import shared_run_config
from snakemake_cli import planned

ROOT = Path(__file__).resolve().parents[1]
SNAKEMAKE = str(Path(sys.executable).parent / "snakemake")
CONFIGS = ROOT / "tests" / "configs"
NAB = ROOT / "tests" / "data" / "nab-aws-cloudwatch"

pytestmark = pytest.mark.slow


def snakemake(workdir: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    """Run the project's Snakefile with ``workdir`` as working directory (results go there)."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "MPLBACKEND": "Agg"}
    cmd = [SNAKEMAKE, "-s", str(ROOT / "Snakefile"), "--directory", str(workdir), *joined(args)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=1200)
    if check and proc.returncode != 0:
        raise AssertionError(f"snakemake {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}")
    return proc


def joined(args: tuple[str, ...]) -> list[str]:
    """`--configfile X` -> `--configfile=X`: it takes several values and would eat the targets."""
    out: list[str] = []
    for arg in args:
        if out and out[-1] == "--configfile":
            out[-1] = f"--configfile={arg}"
        else:
            out.append(arg)
    return out


def planned_jobs(workdir: Path, *args: str) -> dict[str, int]:
    """Rule -> number of jobs a dry run would execute."""
    return planned(snakemake(workdir, "-n", "--quiet", "rules", *args))


@pytest.fixture(scope="module")
def synthetic_run(tiny_sharded_local_run) -> Path:
    """Full run of the tiny synthetic config up to risk outputs (reports are tested elsewhere):
    the suite's shared one (conftest.tiny_sharded_local_run, two packs of shards), so read it
    or copy it, never write to it. Its config is ``conftest.shared_run_config(run)``."""
    return tiny_sharded_local_run


def test_dry_run_explains_what_and_why(tmp_path):
    proc = snakemake(tmp_path, "-n", "--configfile", str(CONFIGS / "tiny_synthetic.yaml"))
    out = proc.stdout + proc.stderr
    for rule in ("generate_service", "ingest_partition", "clean_partition", "backtest_baseline"):
        assert f"rule {rule}:" in out
    assert "reason: Missing output files" in out


def test_full_run_produces_stage_outputs(synthetic_run):
    results = synthetic_run / "results"
    quality = pd.read_csv(results / "quality" / "data_quality.csv")
    assert len(quality) == 5 * 5  # 5 instances x 5 metrics
    recon = pd.read_csv(results / "quality" / "reconciliation.csv")
    assert recon["balanced"].all()
    assert (recon["rows_in"] == recon["rows_kept"] + recon["rows_quarantined"]).all()
    assert set(recon["partition"]) == {"alpha", "beta", "gamma"}
    leaderboard = pd.read_csv(results / "backtest" / "leaderboard.csv")
    assert {"seasonal_naive_daily", "predict_linear", "theta", "selected"} <= set(
        leaderboard["model"]
    )
    forecasts = pd.read_parquet(results / "forecast" / "forecasts.parquet")
    selected = forecasts[forecasts["model"] == "selected"]
    assert selected.groupby(["resource_id", "metric"]).size().eq(48).all()
    risk = pd.read_parquet(results / "risk" / "risk_report.parquet")
    assert len(risk) == 25
    truth = json.loads((results / "synthetic" / "fleet" / "ground_truth.json").read_text())
    # alpha saturates its CPU: at risk, with the median ETA of the critical level within
    # 6 hours of the injected crossing (tolerance: the forecast's hourly grid plus one
    # daily-peak shoulder).
    alpha_cpu = risk[(risk["service"] == "alpha") & (risk["metric"] == "cpu_utilization")]
    assert len(alpha_cpu) == 2
    for row in alpha_cpu.itertuples():
        assert row.finding == "at_risk"
        injected = pd.Timestamp(
            truth["resources"][row.resource_id]["metrics"]["cpu_utilization"]["critical"]["time"]
        )
        assert abs(row.eta_p50 - injected) <= pd.Timedelta(hours=6), (row.eta_p50, injected)
    # beta is over-provisioned: a cheaper type with a negative monthly cost delta (an instance
    # that stopped reporting is left out: it has no demand to size).
    beta = risk[(risk["service"] == "beta") & ~risk["reason_codes"].str.contains("stopped")]
    assert len(beta) >= 5
    assert (beta["finding"] == "over_provisioned").all()
    assert (beta["monthly_cost_delta_usd"] < 0).all()
    assert set(beta["recommended_instance_type"]) != {"m5.xlarge"}
    # gamma is flat: nothing at risk.
    gamma = risk[risk["service"] == "gamma"]
    assert not (gamma["finding"] == "at_risk").any()
    assert gamma["p_breach_critical"].fillna(0).max() < 0.5
    summary = json.loads((results / "risk" / "summary.json").read_text())
    assert summary["findings"]["at_risk"] == 2
    assert summary["series"] == 25


def test_noop_rerun_does_nothing(synthetic_run, tmp_path):
    # On a copy: even a dry run writes Snakemake's I/O cache into its working directory.
    shutil.copytree(
        synthetic_run, tmp_path, dirs_exist_ok=True, ignore=shutil.ignore_patterns("locks")
    )
    proc = snakemake(tmp_path, "-n", "--configfile", str(shared_run_config(synthetic_run)), "risk")
    assert "Nothing to be done" in proc.stdout + proc.stderr


def test_reproducible_outputs(synthetic_run, tmp_path):
    """Same config and seed -> byte-identical generated and cleaned data."""
    snakemake(
        tmp_path, "--cores", "2", "--configfile", str(shared_run_config(synthetic_run)), "clean"
    )
    for rel in ("results/synthetic/alpha.parquet", "results/clean/beta.parquet"):
        first = pd.read_parquet(synthetic_run / rel)
        second = pd.read_parquet(tmp_path / rel)
        pd.testing.assert_frame_equal(first, second)


def test_a_risk_threshold_edit_keeps_the_generated_fleet(synthetic_run, tmp_path):
    """The generator is calibrated on synthetic.thresholds / synthetic.horizon: editing
    risk.thresholds reruns the risk stage only, not generation and everything after it."""
    shutil.copytree(
        synthetic_run, tmp_path, dirs_exist_ok=True, ignore=shutil.ignore_patterns("locks")
    )
    cfg = yaml.safe_load(shared_run_config(synthetic_run).read_text())
    cfg["risk"] = {"thresholds": {"cpu_utilization": {"warning": 60, "critical": 85}}}
    config = tmp_path / "thresholds.yaml"
    config.write_text(yaml.safe_dump(cfg))
    jobs = planned_jobs(tmp_path, "--configfile", str(config), "risk")
    assert jobs == {"risk_report": 1, "risk": 1}


def test_target_max_forecasts_the_hourly_peaks(synthetic_run, tmp_path):
    """`forecast.target: max` reruns the feature panels (and only them, up to features) and the
    panel's y becomes each hour's maximum instead of its mean."""
    # A copy of the whole run, Snakemake's metadata included (params changes are read from it).
    shutil.copytree(
        synthetic_run, tmp_path, dirs_exist_ok=True, ignore=shutil.ignore_patterns("locks")
    )
    cfg = yaml.safe_load(shared_run_config(synthetic_run).read_text())
    cfg["forecast"]["target"] = "max"
    config = tmp_path / "max.yaml"
    config.write_text(yaml.safe_dump(cfg))
    assert planned_jobs(tmp_path, "--configfile", str(config), "features") == {
        "features_partition": 3,
        "features": 1,
    }
    snakemake(tmp_path, "--cores", "2", "--configfile", str(config), "features")
    for partition in ("alpha", "beta", "gamma"):
        clean = pd.read_parquet(tmp_path / "results" / "clean" / f"{partition}.parquet")
        panel = pd.read_parquet(tmp_path / "results" / "features" / f"{partition}.parquet")
        mean_panel = pd.read_parquet(
            synthetic_run / "results" / "features" / f"{partition}.parquet"
        )
        assert len(panel) == len(clean) == len(mean_panel)
        np.testing.assert_allclose(panel["y"], clean["value_max"].to_numpy(), equal_nan=True)
        observed = panel["y"].notna() & mean_panel["y"].notna()
        assert (panel.loc[observed, "y"] >= mean_panel.loc[observed, "y"] - 1e-9).all()
        assert (panel.loc[observed, "y"] > mean_panel.loc[observed, "y"]).any()


def _local_copy(tmp_path: Path, names: list[str]) -> Path:
    data = tmp_path / "input"
    data.mkdir()
    for name in names:
        shutil.copy(NAB / name, data / name)
    return data


def _local_config(tmp_path: Path, data: Path) -> Path:
    cfg = yaml.safe_load((CONFIGS / "tiny_local.yaml").read_text())
    cfg["data"]["path"] = str(data)
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_one_partition_change_reruns_only_that_partition(tmp_path):
    names = [
        "ec2_cpu_utilization_24ae8d.csv",
        "ec2_cpu_utilization_53ea38.csv",
        "ec2_network_in_257a54.csv",
    ]
    data = _local_copy(tmp_path, names)
    cfg = _local_config(tmp_path, data)
    workdir = tmp_path / "work"
    workdir.mkdir()
    snakemake(workdir, "--cores", "2", "--configfile", str(cfg), "risk")
    before = {
        p.name: p.stat().st_mtime_ns for p in (workdir / "results" / "clean").glob("*.parquet")
    }
    assert len(before) == 3

    # Change one value in one file: only its partition's jobs and the aggregates must rerun.
    target = data / names[1]
    lines = target.read_text().splitlines()
    ts, _ = lines[10].split(",")
    lines[10] = f"{ts},55.5"
    target.write_text("\n".join(lines) + "\n")

    jobs = planned_jobs(workdir, "--configfile", str(cfg), "risk")
    assert jobs.get("ingest_partition") == 1
    assert jobs.get("clean_partition") == 1
    assert jobs.get("features_partition") == 1
    assert jobs.get("quality") == 1
    assert jobs.get("leaderboard") == 1
    assert jobs.get("risk_report") == 1
    assert jobs.get("series_index") == 1
    assert "generate_service" not in jobs
    assert jobs.get("history_check") == 1
    assert sum(jobs.values()) == 1 + 1 + 1 + 1 + 1 + 1 + 1 + 2 + 1 + 2 + 1 + 1 + 1
    # ingest, clean, features (one partition), ingest_resources, series_index, quality,
    # history_check, 2 backtests and 2 final fits (the changed partition's pack: three files of
    # one series each, smaller than a shard, are one pack), leaderboard, combine, risk_report (+
    # the `risk` target itself)

    snakemake(workdir, "--cores", "2", "--configfile", str(cfg), "risk")
    after = {
        p.name: p.stat().st_mtime_ns for p in (workdir / "results" / "clean").glob("*.parquet")
    }
    changed = {name for name in before if after[name] != before[name]}
    assert changed == {"ec2_cpu_utilization_53ea38.parquet"}
    proc = snakemake(workdir, "-n", "--configfile", str(cfg), "risk")
    assert "Nothing to be done" in proc.stdout + proc.stderr


def test_library_edit_triggers_rerun_of_its_rules(synthetic_run, tmp_path):
    """Snakemake does not track imported modules; the code digest param makes it (every
    module in turn: tests/test_rerun_plan.py)."""
    clone = tmp_path / "clone"
    shutil.copytree(
        ROOT, clone, ignore=shutil.ignore_patterns(".venv", "results", ".snakemake", ".git")
    )
    work = tmp_path / "work"
    shutil.copytree(synthetic_run / "results", work / "results")
    shutil.copytree(synthetic_run / ".snakemake", work / ".snakemake")
    # Only the feature panels import it (resample.py, say, reaches the generator through
    # capforecast.config).
    features = clone / "scripts" / "capforecast" / "data" / "features.py"
    features.write_text(features.read_text() + "\n# an edit\n")
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run(
        [
            SNAKEMAKE,
            "-s",
            str(clone / "Snakefile"),
            "--directory",
            str(work),
            "-n",
            "--quiet",
            "rules",
            f"--configfile={shared_run_config(synthetic_run)}",
            "features",
        ],
        capture_output=True,
        text=True,
        env=env,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    assert re.search(r"features_partition\s+3", out), out
    assert "generate_service" not in out
    assert "clean_partition" not in out


def test_bad_config_names_the_key(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("backtest:\n  windows: 0\n")
    proc = snakemake(tmp_path, "-n", "--configfile", str(bad), check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "backtest.windows" in out
    assert "minimum 1" in out


def test_bad_input_file_fails_with_one_clear_line(tmp_path):
    data = tmp_path / "input"
    data.mkdir()
    (data / "broken_cpu.csv").write_text("timestamp;value\n2024-01-01 00:00:00;1.0\n")
    cfg = _local_config(tmp_path, data)
    proc = snakemake(tmp_path, "--cores", "1", "--configfile", str(cfg), "ingest", check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert re.search(r"capforecast error: .*broken_cpu\.csv.*", out), out
    assert "Traceback" not in out


def test_nab_fixture_end_to_end_with_reports(tmp_path):
    """Every stage, reports included, on the 19 real CloudWatch series (local source)."""
    nab_cfg = yaml.safe_load((ROOT / "config" / "nab.yaml").read_text())
    nab_cfg["data"]["path"] = str(NAB)
    nab_cfg["models"] = {"enabled": ["seasonal_naive_daily", "predict_linear", "theta"]}
    nab_cfg["forecast"] = {"horizon": 48}
    nab_cfg["report"] = {"top_n": 3, "sample_series": 2}
    nab = tmp_path / "nab.yaml"
    nab.write_text(yaml.safe_dump(nab_cfg))
    snakemake(tmp_path, "--cores", "2", "--configfile", str(nab))
    results = tmp_path / "results"
    recon = pd.read_csv(results / "quality" / "reconciliation.csv")
    assert len(recon) == 19
    lines = sum(len((NAB / f).read_text().splitlines()) - 1 for f in recon["source_file"])
    assert recon["rows_in"].sum() == lines == 89_822
    assert recon["balanced"].all()
    quality = pd.read_csv(results / "quality" / "data_quality.csv")
    assert len(quality) == 19
    board = pd.read_csv(results / "backtest" / "leaderboard.csv").set_index("model")
    assert board.loc["selected", "n_series"] == 19
    forecasts = pd.read_parquet(results / "forecast" / "forecasts.parquet")
    assert forecasts.loc[forecasts["model"] == "selected", "series_id"].nunique() == 19
    risk = pd.read_csv(results / "risk" / "risk_report.csv")
    assert len(risk) == 19
    for name in ("data_quality", "forecast_backtest", "capacity_risk"):
        html = (results / "reports" / f"{name}.html").read_text()
        assert "data:image/png;base64" in html
    # Snakemake's own report inlines the captions and the marked outputs.
    snakemake(
        tmp_path,
        "--configfile",
        str(nab),
        "--report",
        str(tmp_path / "report.html"),
    )
    assert "Rolling-origin backtest leaderboard" in (tmp_path / "report.html").read_text()


def test_cloudwatch_export_with_fractions_and_an_unclassified_metric(tmp_path):
    """Columns, epoch-ms timestamps, namespaced names and 0-1 fractions as a CloudWatch export
    has them: canonical 0-100 data and findings; a metric nobody mapped is forecast with no
    thresholds, a WARNING on the console and in the logs, and a flag in the quality CSV."""
    data = tmp_path / "input"
    data.mkdir()
    stamps = pd.date_range("2024-05-01", periods=5 * 288, freq="5min", tz="UTC")
    ms = stamps.asi8 // 10**6
    day = np.sin(np.arange(len(stamps)) / 288 * 2 * np.pi)
    rng = np.random.default_rng(3)
    lines = ["Timestamp,InstanceId,MetricName,Value"]
    for instance in ("i-0aaa", "i-0bbb"):
        series = {
            "AWS/EC2:CPUUtilization": np.clip(
                0.55 + 0.2 * day + rng.normal(0, 0.02, len(day)), 0, 1
            ),
            "CWAgent:mem_used_percent": np.clip(0.6 + rng.normal(0, 0.01, len(day)), 0, 1),
            "AWS/EC2:CPUCreditBalance": 200 + rng.normal(0, 5, len(day)),
        }
        for name, values in series.items():
            lines += [f"{t},{instance},{name},{v:.6f}" for t, v in zip(ms, values, strict=True)]
    (data / "cloudwatch.csv").write_text("\n".join(lines) + "\n")
    cfg = yaml.safe_load((CONFIGS / "tiny_cloudwatch.yaml").read_text())
    cfg["data"]["path"] = str(data)
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(cfg))
    proc = snakemake(tmp_path, "--cores", "2", "--configfile", str(config), "risk")
    console = proc.stdout + proc.stderr
    unclassified = "unclassified metric 'aws_ec2_cpu_credit_balance'"
    assert unclassified in console
    results = tmp_path / "results"
    quality_log = (results / "logs" / "quality.log").read_text()
    assert f"WARNING capforecast.data.quality: {unclassified}" in quality_log
    assert "2 series flagged unclassified_metric" in quality_log
    ingest_log = (results / "logs" / "ingest" / "cloudwatch.log").read_text()
    assert "WARNING" in ingest_log and "'AWS/EC2:CPUCreditBalance'" in ingest_log
    assert "4 series given on a 0-1 scale, converted to percent" in ingest_log

    quality = pd.read_csv(results / "quality" / "data_quality.csv").set_index(
        ["resource_id", "metric"]
    )
    assert len(quality) == 6
    flags = quality["flags"].fillna("").str.split(";")
    credit = quality.xs("aws_ec2_cpu_credit_balance", level="metric")
    assert (credit["source_metric"] == "AWS/EC2:CPUCreditBalance").all()
    assert (
        flags.xs("aws_ec2_cpu_credit_balance", level="metric")
        .map(lambda f: "unclassified_metric" in f)
        .all()
    )
    for metric in ("cpu_utilization", "memory_utilization"):
        assert (
            flags.xs(metric, level="metric")
            .map(lambda f: "fraction_scale_converted" in f and "unclassified_metric" not in f)
            .all()
        )
        assert (quality.xs(metric, level="metric")["rows_rescaled"] == len(stamps)).all()
    recon = pd.read_csv(results / "quality" / "reconciliation.csv")
    assert recon["rows_in"].sum() == len(lines) - 1 and recon["balanced"].all()

    clean = pd.read_parquet(results / "clean" / "cloudwatch.parquet")
    cpu = clean.loc[clean["metric"] == "cpu_utilization", "value"]
    assert cpu.between(20, 95).all()  # percent, not 0.2-0.95
    risk = pd.read_csv(results / "risk" / "risk_report.csv").set_index(["resource_id", "metric"])
    cpu_rows = risk.xs("cpu_utilization", level="metric")
    assert (cpu_rows["metric_finding"] != "over_provisioned").all()
    credit_rows = risk.xs("aws_ec2_cpu_credit_balance", level="metric")
    assert credit_rows["metric_reason_codes"].str.contains("no_threshold").all()


def test_no_two_jobs_write_one_file_whatever_the_input_files_are_called(tmp_path):
    """Input files named like the workflow's own files (resources.csv, span.csv, quality.csv)
    must not make two jobs write one output or log: the ingest log of a metrics file named
    resources.csv overwrote the resources table's log, and span.csv the span check's."""
    data = tmp_path / "input"
    data.mkdir()
    for stem in ("resources", "span", "quality", "ingest_resources", "holdout_span"):
        (data / f"{stem}.csv").write_text("timestamp,value\n2024-05-01 00:00:00,1\n")
    cfg = yaml.safe_load((CONFIGS / "tiny_local.yaml").read_text())
    cfg["data"].update(path=str(data), metric="cpu_utilization", history_end="2024-05-01")
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(cfg))
    proc = snakemake(tmp_path, "-n", "--configfile", str(config))
    written = [
        path.strip()
        for line in (proc.stdout + proc.stderr).splitlines()
        if re.match(r"^\s+(output|log|benchmark): ", line)
        for path in line.split(": ", 1)[1].split(", ")
    ]
    assert "results/logs/ingest/resources.log" in written  # the metrics file's own log
    assert "results/logs/holdout/span.log" in written
    duplicates = sorted({path for path in written if written.count(path) > 1})
    assert duplicates == []
