"""Decision backtest end to end: Snakemake on the tiny synthetic fleet cut two days before its
end (data.history_end), the `decision` target and the capacity-risk report that shows it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from test_workflow import CONFIGS, snakemake

from capforecast.config import validated_config

pytestmark = pytest.mark.slow

# The tiny fleet runs 12 days from 2026-08-01 at 15-minute samples; forecast.horizon is 48 h.
CUT = pd.Timestamp("2026-08-11T00:00:00Z")
ACTUALS_END = CUT + pd.Timedelta(hours=48)
CATALOGUE = validated_config({})["catalogue"]


def cut_config(tmp_path: Path, history_end: str) -> Path:
    cfg = yaml.safe_load((CONFIGS / "tiny_synthetic.yaml").read_text())
    # alpha's CPU reaches 100 % one day before the data ends: inside the held-back window.
    cfg["synthetic"]["services"][0]["saturation_day"] = -1.0
    cfg["models"]["enabled"] = ["seasonal_naive_daily", "predict_linear"]
    cfg["data"] = {"history_end": history_end}
    path = tmp_path / "cut.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.fixture(scope="module")
def decision_run(tmp_path_factory) -> Path:
    workdir = tmp_path_factory.mktemp("decision")
    config = cut_config(workdir, "2026-08-11T00:00:00Z")
    snakemake(
        workdir,
        "--cores",
        "2",
        "--configfile",
        str(config),
        "decision",
        "results/reports/capacity_risk.html",
    )
    return workdir / "results"


def raw_rows(results: Path) -> pd.DataFrame:
    return pd.concat(
        [pd.read_parquet(p).assign(partition=p.stem) for p in (results / "raw").glob("*.parquet")],
        ignore_index=True,
    )


def test_rows_after_the_cut_are_held_back_and_counted(decision_run):
    raw = raw_rows(decision_run)
    recon = pd.read_csv(decision_run / "quality" / "reconciliation.csv").set_index("partition")
    held = raw[raw["timestamp"] >= CUT].groupby("partition").size()
    assert held.sum() > 0
    pd.testing.assert_series_equal(
        recon["rows_held_back"].sort_index(), held.sort_index(), check_names=False
    )
    assert (recon["rows_in"] == raw.groupby("partition").size().reindex(recon.index)).all()
    assert recon["balanced"].all()
    clean = pd.concat(pd.read_parquet(p) for p in (decision_run / "clean").glob("*.parquet"))
    assert clean["timestamp"].max() < CUT
    forecasts = pd.read_parquet(decision_run / "forecast" / "forecasts.parquet")
    assert forecasts.loc[forecasts["model"] == "selected", "timestamp"].min() == CUT
    summary = json.loads((decision_run / "risk" / "summary.json").read_text())
    assert pd.Timestamp(summary["forecast_start"]) == CUT


def hourly_actuals(raw: pd.DataFrame) -> pd.DataFrame:
    """Hourly means of the raw samples inside the window, computed without the library."""
    window = raw[(raw["timestamp"] >= CUT) & (raw["timestamp"] < ACTUALS_END)]
    return (
        window.set_index("timestamp")
        .groupby(["resource_id", "metric"])["value"]
        .resample("1h")
        .mean()
        .dropna()
        .rename("expected")
        .reset_index()
    )


def test_held_back_actuals_are_the_window_s_hourly_means(decision_run):
    actuals = pd.concat(
        pd.read_parquet(p) for p in (decision_run / "holdout").glob("*.parquet")
    ).dropna(subset=["value"])
    assert actuals["timestamp"].min() == CUT and actuals["timestamp"].max() < ACTUALS_END
    both = actuals.merge(
        hourly_actuals(raw_rows(decision_run)), on=["resource_id", "metric", "timestamp"]
    )
    # Every observed actual bin matches (the synthetic percentages never need repairs).
    assert len(both) == actuals["n_obs"].gt(0).sum()
    np.testing.assert_allclose(both["value"], both["expected"])


def test_series_scores_follow_the_actuals(decision_run):
    scores = pd.read_csv(decision_run / "decision" / "series_scores.csv")
    risk = pd.read_parquet(decision_run / "risk" / "risk_report.parquet")
    percent = risk[risk["critical_threshold"].notna()]
    assert len(scores) == len(percent) == 15  # 5 instances x 3 percentage metrics
    expected = hourly_actuals(raw_rows(decision_run))
    expected = expected.merge(
        percent[["resource_id", "metric", "critical_threshold"]], on=["resource_id", "metric"]
    )
    crossings = (
        expected[expected["expected"] >= expected["critical_threshold"]]
        .groupby(["resource_id", "metric"])["timestamp"]
        .min()
    )
    breached = scores[scores["breached"]].set_index(["resource_id", "metric"])
    assert set(breached.index) == set(crossings.index)
    assert len(crossings) >= 2  # the saturating CPUs of alpha, at least
    assert {r for r, m in crossings.index if m == "cpu_utilization"} >= {
        "i-alpha-001",
        "i-alpha-002",
    }
    got = pd.to_datetime(breached["first_crossing"], utc=True).sort_index()
    pd.testing.assert_series_equal(got, crossings.sort_index(), check_names=False)
    assert not scores.loc[scores["resource_id"].str.startswith("i-beta"), "breached"].any()

    summary = pd.read_csv(decision_run / "decision" / "summary.csv").set_index("method")
    assert list(summary.index) == [
        "capforecast_at_risk",
        "capforecast_at_risk_or_under",
        "predict_linear",
        "last_week_peak",
    ]
    scored = scores[scores["scored"]]
    assert (summary["series"] == len(scored)).all()
    assert (
        summary["true_positives"] + summary["false_negatives"] == scored["breached"].sum()
    ).all()
    product = summary.loc["capforecast_at_risk"]
    calls = scored["metric_finding"] == "at_risk"
    assert product["alerts"] == calls.sum()
    assert product["true_positives"] == (calls & scored["breached"]).sum()


def test_rightsizing_check_uses_the_actual_peaks(decision_run):
    check = pd.read_csv(decision_run / "decision" / "rightsizing_check.csv")
    scores = pd.read_csv(decision_run / "decision" / "series_scores.csv")
    resources = pd.read_parquet(decision_run / "resources.parquet").set_index("resource_id")
    risk = pd.read_parquet(decision_run / "risk" / "risk_report.parquet")
    changed = risk.drop_duplicates("resource_id")
    changed = changed[changed["recommended_instance_type"] != changed["instance_type"]]
    assert sorted(check["resource_id"]) == sorted(changed["resource_id"])
    assert len(check)  # the over-provisioned beta VMs get cheaper types
    peaks = scores.set_index(["resource_id", "metric"])["actual_peak"]
    for row in check.itertuples():
        new = CATALOGUE[row.recommended_instance_type]
        expected = peaks[(row.resource_id, "cpu_utilization")] * (
            resources.loc[row.resource_id, "vcpu"] / new["vcpu"]
        )
        assert row.cpu_peak_on_recommended == pytest.approx(expected)
        assert row.harmful == (
            max(row.cpu_peak_on_recommended, row.memory_peak_on_recommended) > 100
        )


def test_capacity_risk_report_shows_the_run_s_backtest(decision_run):
    html = (decision_run / "reports" / "capacity_risk.html").read_text()
    assert "Decision backtest: do the calls hold?" in html
    assert "History cut at" in html and "2026-08-11T00:00:00+00:00" in html
    assert "predict_linear alert (Prometheus style)" in html
    assert "last week&#x27;s peak" in html or "last week's peak" in html


def test_a_cut_leaving_too_few_actuals_stops_before_cleaning(tmp_path):
    config = cut_config(tmp_path, "2026-08-12T00:00:00Z")  # 24 h left, horizon 48
    proc = snakemake(tmp_path, "--cores", "1", "--configfile", str(config), "clean", check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    errors = [line for line in out.splitlines() if line.startswith("capforecast error:")]
    assert len(errors) == 1
    assert "config key 'data.history_end': 2026-08-12T00:00:00+00:00 leaves 24 h" in errors[0]
    assert "Traceback" not in out
    assert not (tmp_path / "results" / "clean").exists()


def test_decision_without_a_cut_names_the_key(tmp_path):
    proc = snakemake(
        tmp_path,
        "-n",
        "--configfile",
        str(CONFIGS / "tiny_synthetic.yaml"),
        "decision",
        check=False,
    )
    assert proc.returncode != 0
    assert "config key 'data.history_end': the decision backtest needs a cut" in (
        proc.stdout + proc.stderr
    )
