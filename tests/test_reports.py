"""Report helpers (capforecast.reports) on hand-built frames, and every notebook executed
end to end.

The fake ``results/`` tree below follows the file contracts the report notebooks read; it is
tiny (3 resources x 2 metrics, 10 days hourly) so that kernel start-up dominates the run time.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from statistics import NormalDist

import nbformat
import numpy as np
import pandas as pd
import pytest
from matplotlib.collections import PolyCollection

from capforecast.contracts import (
    CLEAN_COLUMNS,
    QUALITY_COLUMNS,
    QUARANTINE_COLUMNS,
    RAW_COLUMNS,
    RESOURCE_COLUMNS,
    RISK_REPORT_COLUMNS,
    SERVICE_CAPACITY_COLUMNS,
    series_id,
)
from capforecast.data.features import build_features
from capforecast.errors import InputDataError
from capforecast.escape import markdown_text
from capforecast.reports import capacity_risk, common, data_quality, exploration, forecast_backtest

PROJECT_ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK_DIR = PROJECT_ROOT / "notebooks"
MAIN_REPORTS = ("data_quality", "forecast_backtest", "capacity_risk")
EXPLORATION = ("01_ingest", "02_clean", "03_features", "04_forecast", "05_risk")

START = pd.Timestamp("2026-09-01", tz="UTC")
HISTORY_HOURS = 240
HORIZON_HOURS = 48
FORECAST_START = START + pd.Timedelta(hours=HISTORY_HOURS)
LEVELS = (0.02, 0.05, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95, 0.98)
SERVICES = {"i-web-1": "web", "i-web-2": "web", "i-db-1": "db"}
METRICS = ("cpu_utilization", "memory_utilization")
CANDIDATES = ("seasonal_naive_daily", "auto_ets")
# The series with a long gap (and flags) in the fake data.
GAPPY = ("i-db-1", "memory_utilization")
GAP_BINS = slice(100, 112)


# --------------------------------------------------------------------------------------------
# Hand-built frames following the contracts
# --------------------------------------------------------------------------------------------


def make_clean() -> pd.DataFrame:
    """Hourly clean data: a daily cycle per series; i-web-1 cpu trends up towards 90 %."""
    hours = np.arange(HISTORY_HOURS)
    frames = []
    pairs = [(r, m) for r in SERVICES for m in METRICS]
    for k, (resource, metric) in enumerate(pairs):
        level = 30.0 + 8 * k
        trend = 0.15 * hours if (resource, metric) == ("i-web-1", "cpu_utilization") else 0.0
        value = level + trend + 5 * np.sin(2 * np.pi * hours / 24) + np.cos(hours * (k + 1))
        is_gap = np.zeros(HISTORY_HOURS, dtype=bool)
        is_filled = np.zeros(HISTORY_HOURS, dtype=bool)
        if (resource, metric) == GAPPY:
            is_gap[GAP_BINS] = True
            is_filled[[50, 51]] = True
        value = np.where(is_gap, np.nan, value)
        frames.append(
            pd.DataFrame(
                {
                    "timestamp": START + pd.to_timedelta(hours, unit="h"),
                    "resource_id": resource,
                    "metric": metric,
                    "value": value,
                    "value_max": value + 3,
                    "n_obs": np.where(is_gap | is_filled, 0, 12),
                    "is_filled": is_filled,
                    "is_gap": is_gap,
                }
            )
        )
    return pd.concat(frames, ignore_index=True)[list(CLEAN_COLUMNS)]


def make_forecasts(clean: pd.DataFrame) -> pd.DataFrame:
    """Forecasts for every series: 'selected' plus two candidates, with all quantile columns."""
    steps = np.arange(1, HORIZON_HOURS + 1)
    rows = []
    for (resource, metric), part in clean.groupby(["resource_id", "metric"]):
        last = part["value"].dropna().iloc[-24:].mean()
        slope = 0.15 if (resource, metric) == ("i-web-1", "cpu_utilization") else 0.0
        for model_index, model in enumerate(("selected", *CANDIDATES)):
            mean = last + slope * steps + 5 * np.sin(2 * np.pi * (HISTORY_HOURS + steps) / 24)
            spread = 2.0 + 0.05 * steps + model_index
            frame = pd.DataFrame(
                {
                    "model": model,
                    "resource_id": resource,
                    "metric": metric,
                    "series_id": series_id(resource, metric),
                    "timestamp": FORECAST_START + pd.to_timedelta(steps - 1, unit="h"),
                    "mean": mean,
                    "model_used": "auto_ets" if model == "selected" else model,
                }
            )
            for q in LEVELS:
                frame[f"q{q:g}"] = mean + NormalDist().inv_cdf(q) * spread
            rows.append(frame)
    return pd.concat(rows, ignore_index=True)


def _metric_rows() -> pd.DataFrame:
    """One row per resource x metric with its metric-level finding and score. Ranking and first
    deadline deliberately differ: i-web-1 cpu has the highest score, i-web-2 memory the earliest
    act_by."""
    t = FORECAST_START
    nat = pd.NaT
    cpu, mem = METRICS
    rows = [
        # resource, metric, finding, score, p_warn, p_crit, eta_p10/p50/p90 and act_by (hours)
        ("i-web-1", cpu, "at_risk", 4, 0.95, 0.8, 30, 36, 44, 20),
        ("i-web-1", mem, "at_risk", 1, 0.3, 0.05, None, None, None, None),
        ("i-web-2", mem, "under_provisioned", 2, 0.6, 0.3, 14, 24, 40, 6),
        ("i-web-2", cpu, "optimized", 0, 0.0, 0.0, None, None, None, None),
        ("i-db-1", cpu, "over_provisioned", 0, 0.0, 0.0, None, None, None, None),
        ("i-db-1", mem, "over_provisioned", 0, 0.0, 0.0, None, None, None, None),
    ]
    # Right-sizing advice is per resource, repeated on each of its metric rows.
    monthly_delta = {"i-web-1": None, "i-web-2": 35.0, "i-db-1": -70.0}
    recommended = {"i-web-1": None, "i-web-2": "m5.2xlarge", "i-db-1": "m5.large"}

    def at(hours: float | None) -> pd.Timestamp:
        return nat if hours is None else t + pd.Timedelta(hours=hours)

    frame = pd.DataFrame(
        {
            "resource_id": [r[0] for r in rows],
            "service": [SERVICES[r[0]] for r in rows],
            "metric": [r[1] for r in rows],
            "finding": [r[2] for r in rows],
            "risk_score": [r[3] for r in rows],
            "confidence": ["high", "low", "medium", "high", "high", "high"],
            "p_breach_warning": [r[4] for r in rows],
            "p_breach_critical": [r[5] for r in rows],
            "eta_p10": [at(r[6]) for r in rows],
            "eta_p50": [at(r[7]) for r in rows],
            "eta_p90": [at(r[8]) for r in rows],
            "act_by": [at(r[9]) for r in rows],
            "days_until_full": [(r[7] / 24 if r[7] else np.nan) for r in rows],
            "headroom_pct": [5.0, 30.0, 10.0, 40.0, 85.0, 80.0],
            "first_to_run_out": [True, False, True, False, False, False],
            "saturated": [False, False, True, False, False, False],
            "recommended_instance_type": [recommended[r[0]] for r in rows],
            "monthly_cost_delta_usd": [monthly_delta[r[0]] for r in rows],
            "reason_codes": ["trend_to_critical", "", "saturated", "", "low_peak", "low_peak"],
        }
    )
    for column in capacity_risk.RISK_TIME_COLUMNS:
        frame[column] = pd.to_datetime(frame[column], utc=True)
    return frame


def make_risk() -> pd.DataFrame:
    """A risk report as the risk stage writes it (every column of RISK_REPORT_COLUMNS, in
    order): the metric-level finding and score of ``_metric_rows``, the resource-level ones
    repeated on every metric row, thresholds, instance types and the rest of the contract."""
    rows = _metric_rows()
    order = ["optimized", "over_provisioned", "under_provisioned", "at_risk"]
    rank = rows["finding"].map(order.index)
    worst = rank.groupby(rows["resource_id"]).transform("max")
    thresholds = {"cpu_utilization": (70.0, 90.0), "memory_utilization": (80.0, 95.0)}
    sizing = {"i-web-1": "hold", "i-web-2": "upsize", "i-db-1": "downsize"}
    risk = rows.assign(
        metric_finding=rows["finding"],
        metric_risk_score=rows["risk_score"],
        metric_reason_codes=rows["reason_codes"],
        finding=worst.map(dict(enumerate(order))),
        risk_score=rows.groupby("resource_id")["risk_score"].transform("max"),
        act_by_basis=np.where(rows["act_by"].notna(), "critical", None),
        act_now=False,
        instance_type=rows["resource_id"].map({"i-db-1": "r5.xlarge"}).fillna("m5.xlarge"),
        warning_threshold=rows["metric"].map(lambda m: thresholds[m][0]),
        critical_threshold=rows["metric"].map(lambda m: thresholds[m][1]),
        eta_warning_p10=pd.NaT,
        eta_warning_p50=pd.NaT,
        eta_warning_p90=pd.NaT,
        headroom_basis="threshold",
        peak_p50=[80.0, 40.0, 70.0, 20.0, 5.0, 10.0],
        peak_p90=[88.0, 55.0, 85.0, 30.0, 9.0, 14.0],
        observed_max=[85.0, 50.0, 90.0, 35.0, 12.0, 15.0],
        trend_per_day=[2.0, 0.1, 1.0, 0.0, 0.0, 0.0],
        pegged_in_history=False,
        history_hours=336.0,
        last_observed=FORECAST_START - pd.Timedelta(hours=1),
        reporting_lag_hours=0.0,
        sizing=rows["resource_id"].map(sizing),
        forecast_start=FORECAST_START,
        forecast_end=FORECAST_START + pd.Timedelta(days=2),
        method="quantile_fan",
    )
    for column in ("eta_warning_p10", "eta_warning_p50", "eta_warning_p90"):
        risk[column] = pd.to_datetime(risk[column], utc=True)
    return risk[list(RISK_REPORT_COLUMNS)]


def make_service_capacity() -> pd.DataFrame:
    """service_capacity.csv as the risk stage writes it (SERVICE_CAPACITY_COLUMNS)."""
    plan = pd.DataFrame(
        {
            "service": ["db", "web"],
            "instance_type": ["r5.xlarge", "m5.xlarge"],
            "current_instances": [1, 2],
            "instances_with_forecasts": [1, 2],
            "vcpu_per_instance": [4.0, 4.0],
            "memory_gib_per_instance": [32.0, 16.0],
            "cpu_peak_demand_p90_vcpu": [0.4, 7.3],
            "recommended_instances": [1, 3],
            "advice": ["right-size", "add 1 instance"],
            "instance_delta": [0, 1],
            "monthly_cost_delta_usd": [-70.0, 140.0],
            "saturated": [False, True],
        }
    )
    return plan.reindex(columns=list(SERVICE_CAPACITY_COLUMNS))


def with_stopped_resource(risk: pd.DataFrame) -> pd.DataFrame:
    """``risk`` plus a resource that stopped reporting days ago, whose stale forecast carries
    the earliest act_by and a risk score (as an old risk report could)."""
    stale = risk.iloc[[0]].assign(
        resource_id="i-gone-1",
        finding=capacity_risk.STOPPED,
        act_by=FORECAST_START - pd.Timedelta(days=4),
        eta_p50=FORECAST_START - pd.Timedelta(days=1),
        monthly_cost_delta_usd=-500.0,
        last_observed=FORECAST_START - pd.Timedelta(days=5),
        reporting_lag_hours=120.0,
    )
    stale = stale.assign(metric_finding=capacity_risk.STOPPED)
    return pd.concat([risk, stale], ignore_index=True)


def make_daily_breach(risk: pd.DataFrame) -> pd.DataFrame:
    """P(breach) per resource x metric x day over the two forecast days."""
    days = [FORECAST_START, FORECAST_START + pd.Timedelta(days=1)]
    rows = []
    for r in risk.itertuples():
        for i, day in enumerate(days):
            factor = 0.5 if i == 0 else 1.0
            rows.append(
                {
                    "resource_id": r.resource_id,
                    "metric": r.metric,
                    "day": day,
                    "p_breach_warning": r.p_breach_warning * factor,
                    "p_breach_critical": r.p_breach_critical * factor,
                }
            )
    return pd.DataFrame(rows)


def make_quality(clean: pd.DataFrame) -> pd.DataFrame:
    """Per-series quality rows; the gappy series and one pegged series are flagged."""
    rows = []
    for (resource, metric), part in clean.groupby(["resource_id", "metric"], sort=True):
        gaps = int(part["is_gap"].sum())
        flags = ""
        if (resource, metric) == GAPPY:
            flags = "long_gap;low_coverage"
        elif (resource, metric) == ("i-web-2", "cpu_utilization"):
            flags = "pegged"
        rows.append(
            {
                "partition": SERVICES[resource],
                "source_file": f"{SERVICES[resource]}.parquet",
                "resource_id": resource,
                "metric": metric,
                "first_timestamp": part["timestamp"].min().isoformat(),
                "last_timestamp": part["timestamp"].max().isoformat(),
                "history_hours": float(len(part)),
                "expected_bins": len(part),
                "observed_bins": len(part) - gaps,
                "coverage": (len(part) - gaps) / len(part),
                "gap_count": 1 if gaps else 0,
                "longest_gap_bins": gaps,
                "filled_points": int(part["is_filled"].sum()),
                "unfilled_points": gaps,
                "duplicates": 0,
                "unsorted_rows": 0,
                "median_step_seconds": 300.0,
                "irregular_fraction": 0.0,
                "rows_in": 12 * len(part),
                "rows_kept": 12 * (len(part) - gaps) - 2,
                "rows_repaired": 1,
                "rows_quarantined": 2,
                "pegged_fraction": 0.3 if flags == "pegged" else 0.0,
                "too_short": False,
                "source_metric": metric,
                "rows_rescaled": 0,
                "flags": flags,
            }
        )
    return pd.DataFrame(rows)[list(QUALITY_COLUMNS)]


def make_quarantine() -> pd.DataFrame:
    reasons = ["non_numeric_value"] * 3 + ["negative_value"] * 2 + ["missing_timestamp"]
    return pd.DataFrame(
        {
            "source_file": "web.parquet",
            "row": np.arange(len(reasons)),
            "timestamp": [START.isoformat()] * len(reasons),
            "resource_id": "i-web-1",
            "metric": "cpu_utilization",
            "value": ["abc", "abc", "abc", "-1", "-2", "5"],
            "reason": reasons,
        }
    )[list(QUARANTINE_COLUMNS)]


def make_leaderboard() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "model": ["seasonal_naive_daily", "auto_ets", "selected"],
            "mase_mean": [1.0, 0.8, 0.7],
            "mase_median": [0.95, 0.75, 0.65],
            "mase_relgm": [1.0, 0.82, 0.71],
            "wql_mean": [0.08, 0.06, 0.05],
            "wql_median": [0.07, 0.05, 0.045],
            "wql_relgm": [1.0, 0.75, 0.62],
            "coverage_p10_p90": [0.7, 0.78, 0.81],
            "bias_mean": [0.1, -0.05, 0.01],
            "fit_seconds": [0.1, 2.5, 0.0],
            "n_series": [6, 6, 6],
            "n_windows": [2, 2, 2],
        }
    )


def make_metrics() -> pd.DataFrame:
    rng = np.random.default_rng(3)
    rows = []
    for model, scale in (("seasonal_naive_daily", 1.0), ("auto_ets", 0.8), ("selected", 0.7)):
        for r in SERVICES:
            for m in METRICS:
                for window in (0, 1, 2):
                    rows.append(
                        {
                            "model": model,
                            "series_id": series_id(r, m),
                            "window": window,
                            "is_selection_window": window == 0,
                            "mase": scale * rng.uniform(0.5, 1.5),
                            "wql": scale * rng.uniform(0.02, 0.1),
                            "coverage_p10_p90": rng.uniform(0.6, 0.9),
                            "bias": rng.normal(0, 0.1),
                            "fit_seconds": 0.1,
                        }
                    )
    return pd.DataFrame(rows)


def build_results_tree(root: Path) -> Path:
    """Write a small ``results/`` tree with every file the notebooks read; returns its path."""
    results = root / "results"
    for sub in ("raw", "clean", "features", "quality", "backtest", "forecast", "risk"):
        (results / sub).mkdir(parents=True, exist_ok=True)
    clean = make_clean()
    partition = clean["resource_id"].map(SERVICES)
    for name, part in clean.groupby(partition):
        part = part.reset_index(drop=True)
        part.to_parquet(results / "clean" / f"{name}.parquet", index=False)
        build_features(part).to_parquet(results / "features" / f"{name}.parquet", index=False)
        raw = part[part["value"].notna()].assign(
            timestamp=lambda f: f["timestamp"] + pd.Timedelta(minutes=5)
        )[list(RAW_COLUMNS)]
        raw.to_parquet(results / "raw" / f"{name}.parquet", index=False)
    pd.DataFrame(
        {
            "resource_id": list(SERVICES),
            "service": list(SERVICES.values()),
            "instance_type": ["m5.xlarge", "m5.xlarge", "r5.xlarge"],
            "vcpu": [4, 4, 4],
            "memory_gib": [16.0, 16.0, 32.0],
            "region": "us-east-1",
            "hourly_price_usd": [0.192, 0.192, 0.252],
        }
    )[list(RESOURCE_COLUMNS)].to_parquet(results / "raw" / "resources.parquet", index=False)

    quality = make_quality(clean)
    quality.to_csv(results / "quality" / "data_quality.csv", index=False)
    make_quarantine().to_parquet(results / "quality" / "quarantine.parquet", index=False)
    recon = quality.groupby(["source_file", "partition"], as_index=False)[
        ["rows_in", "rows_kept", "rows_repaired", "rows_quarantined", "duplicates"]
    ].sum()
    recon["balanced"] = [True, False]
    recon.to_csv(results / "quality" / "reconciliation.csv", index=False)
    pd.DataFrame({"file": ["data/README.md"], "reason": ["unsupported extension '.md'"]}).to_csv(
        results / "quality" / "skipped_files.csv", index=False
    )

    make_leaderboard().to_csv(results / "backtest" / "leaderboard.csv", index=False)
    make_metrics().to_parquet(results / "backtest" / "metrics.parquet", index=False)
    make_forecasts(clean).to_parquet(results / "forecast" / "forecasts.parquet", index=False)

    # The risk stage leaves resources that stopped reporting out of the daily breach table.
    with_stopped_resource(make_risk()).to_parquet(
        results / "risk" / "risk_report.parquet", index=False
    )
    risk = make_risk()
    make_daily_breach(risk).to_parquet(results / "risk" / "daily_breach.parquet", index=False)
    make_service_capacity().to_csv(results / "risk" / "service_capacity.csv", index=False)
    summary = {
        "counts_by_finding": risk["finding"].value_counts().to_dict(),
        "counts_by_risk_score": {
            str(k): int(v) for k, v in risk["risk_score"].value_counts().items()
        },
        "top_at_risk": risk["resource_id"].head(2).tolist(),
        "total_monthly_savings_usd": 70.0,
    }
    (results / "risk" / "summary.json").write_text(json.dumps(summary))
    return results


# --------------------------------------------------------------------------------------------
# Unit tests of the helpers
# --------------------------------------------------------------------------------------------


def test_risk_headline_names_first_action_and_counts() -> None:
    risk = make_risk()
    text = capacity_risk.risk_headline(risk)
    # Earliest act_by wins the "first action", even though another row has a higher score.
    first = risk.loc[risk["act_by"].idxmin()]
    assert first["resource_id"] != capacity_risk.ranked_risks(risk).iloc[0]["resource_id"]
    assert f"**{markdown_text(first['resource_id'])} {markdown_text(first['metric'])}**" in text
    assert first["act_by"].strftime("%Y-%m-%d %H:%M UTC") in text
    # "At risk" is the at_risk finding; under-provisioned resources are counted apart.
    assert "**1 resource at risk**" in text
    assert "1 resource under-provisioned" in text
    # Right-sizing advice is per resource: repeated metric rows must not count twice.
    per_resource = risk.drop_duplicates("resource_id")["monthly_cost_delta_usd"]
    assert f"USD {-per_resource.clip(upper=0).sum():,.0f}/month" in text
    assert "$" not in text  # would be read as LaTeX in the HTML


def test_risk_headline_without_any_risk() -> None:
    risk = make_risk().assign(
        finding="optimized",
        metric_finding="optimized",
        risk_score=0,
        metric_risk_score=0,
        act_by=pd.NaT,
        monthly_cost_delta_usd=np.nan,
    )
    text = capacity_risk.risk_headline(risk)
    assert "No resource at risk" in text
    assert "No action deadline" in text
    assert capacity_risk.ranked_risks(risk, 5).empty
    assert common.is_empty_figure(
        capacity_risk.risk_fan_charts(risk, make_clean(), make_forecasts(make_clean()), 5)
    )


def test_headline_never_acts_on_a_resource_that_stopped_reporting() -> None:
    for risk in (with_stopped_resource(make_risk()),):
        text = capacity_risk.risk_headline(risk)
        first = capacity_risk.first_action(risk)
        assert first["resource_id"] == "i-web-2"  # the earliest act_by of the scored rows
        assert "i-gone-1" not in text
        assert "1 resource stopped reporting: not scored" in text
        assert "**1 resource at risk**" in text
        assert "i-gone-1" not in set(capacity_risk.ranked_risks(risk)["resource_id"])
        # Its (stale) saving is not a saving; it is not over-provisioned.
        assert capacity_risk.monthly_savings(risk)["savings"] == 70.0


def test_stopped_table_lists_each_stopped_resource_once() -> None:
    assert capacity_risk.stopped_table(make_risk()).empty
    table = capacity_risk.stopped_table(with_stopped_resource(make_risk()))
    assert table["resource_id"].tolist() == ["i-gone-1"]
    assert table["reporting_lag_hours"].tolist() == [120.0]
    assert table["last_observed"].iloc[0] == FORECAST_START - pd.Timedelta(days=5)


def test_savings_count_over_provisioned_resources_only() -> None:
    risk = make_risk()
    # An under-provisioned resource with a cheaper type is not a saving (and cannot be one).
    risk.loc[risk["resource_id"] == "i-web-2", "monthly_cost_delta_usd"] = -40.0
    money = capacity_risk.monthly_savings(risk)
    assert money == {"savings": 70.0, "extra_cost": 0.0, "net": -110.0}
    text = capacity_risk.risk_headline(risk)
    assert "1 resource over-provisioned; right-sizing them saves **USD 70/month**" in text


def test_headline_states_what_act_by_rests_on() -> None:
    risk = make_risk().assign(act_by_basis="critical")
    first = capacity_risk.first_action(risk)
    text = capacity_risk.risk_headline(risk)
    assert "Act-by = median ETA of the critical level minus lead time" in text
    warning = risk.assign(act_by_basis=np.where(risk.index == first.name, "warning", "critical"))
    assert "Act-by = median ETA of the warning level (critical not reached" in (
        capacity_risk.risk_headline(warning)
    )
    assert "act_by_basis" in capacity_risk.ranked_risks(risk).columns


def test_backtest_headline_ranks_models_by_the_relgm_ratios() -> None:
    # near_zero wins on wql_mean only (it is good on the series near zero, which dominate a
    # mean); ratio_best has the lowest WQL relgm, mase_best the lowest MASE relgm.
    board = pd.DataFrame(
        {
            "model": ["near_zero", "ratio_best", "mase_best", "selected"],
            "mase_mean": [0.9, 1.0, 0.95, 0.8],
            "mase_relgm": [1.10, 0.80, 0.60, 0.70],
            "wql_mean": [0.01, 0.09, 0.08, 0.05],
            "wql_relgm": [1.20, 0.70, 0.90, 0.65],
        }
    )
    text = forecast_backtest.backtest_headline(board, make_forecasts(make_clean()))
    assert "Best single model by WQL relgm: **ratio\\_best**" in text
    assert "by MASE relgm: **mase\\_best** (MASE relgm 0.600)" in text
    assert markdown_text("near_zero") not in text and "wql_mean" not in text
    assert forecast_backtest.leaderboard_table(board)["model"].tolist()[:2] == [
        "selected",
        "ratio_best",
    ]


def test_ranked_risks_orders_by_score_then_deadline() -> None:
    t = FORECAST_START
    hours = [5, 2, None, 10, 0, None]
    scores = [3, 3, 3, 4, 0, 3]
    risk = pd.DataFrame(
        {
            "resource_id": ["a", "b", "c", "d", "e", "f"],
            "metric": "cpu_utilization",
            "finding": "at_risk",
            "metric_finding": "at_risk",
            "risk_score": scores,
            "metric_risk_score": scores,
            "act_by": [t + pd.Timedelta(hours=h) if h is not None else pd.NaT for h in hours],
            "p_breach_critical": [0.5, 0.4, 0.9, 0.7, 0.0, 0.95],
        }
    ).reindex(columns=list(RISK_REPORT_COLUMNS))  # the rest of the contract left empty
    ranked = capacity_risk.ranked_risks(risk.sample(frac=1, random_state=1))
    # Score 4 first; among score 3 the earliest deadline, then no deadline by P(critical);
    # score 0 is not a risk.
    assert ranked["resource_id"].tolist() == ["d", "b", "a", "f", "c"]
    assert ranked["rank"].tolist() == [1, 2, 3, 4, 5]
    assert capacity_risk.ranked_risks(risk, top_n=2)["resource_id"].tolist() == ["d", "b"]


def test_full_risk_report_ranks_by_metric_score_and_flags_overdue_action() -> None:
    risk = make_risk()
    ranked = capacity_risk.ranked_risks(risk)
    # Resource-level risk_score ties i-web-1's two metrics at 4; the metric score separates them.
    assert ranked["metric_risk_score"].is_monotonic_decreasing
    assert ranked.iloc[0][["resource_id", "metric"]].tolist() == ["i-web-1", "cpu_utilization"]
    assert len(ranked) == int((risk["metric_risk_score"] > 0).sum())

    overdue = risk.copy()
    row = overdue.index[overdue["act_by"].notna()][0]
    overdue.loc[row, "act_by"] = FORECAST_START - pd.Timedelta(hours=3)
    overdue.loc[row, "act_now"] = True
    text = capacity_risk.risk_headline(overdue)
    stamp = (FORECAST_START - pd.Timedelta(hours=3)).strftime("%Y-%m-%d %H:%M UTC")
    assert f"First action **now** (act-by {stamp} has passed)" in text
    named = [markdown_text(overdue.loc[row, c]) for c in ("resource_id", "metric")]
    assert f"**{named[0]} {named[1]}**" in text
    # Thresholds come from the report's own columns.
    levels = capacity_risk.threshold_lookup(risk)
    assert levels["i-db-1|memory_utilization"] == {"warning": 80.0, "critical": 95.0}


def test_findings_count_resources_once_when_finding_is_per_resource() -> None:
    risk = make_risk()
    resources = capacity_risk.findings_table(risk).set_index("finding")
    assert resources.loc["total", "total"] == risk["resource_id"].nunique()
    expected = risk.drop_duplicates("resource_id")["finding"].value_counts()
    assert resources["total"].drop("total").to_dict() == expected.to_dict()
    assert capacity_risk.findings_figure(risk).axes[0].get_ylabel() == "resources"


def test_the_risk_report_fixtures_honour_the_contract() -> None:
    capacity_risk.check_risk_report(make_risk(), make_service_capacity())
    with pytest.raises(InputDataError, match="column 'metric_risk_score'"):
        capacity_risk.check_risk_report(make_risk().drop(columns="metric_risk_score"))


def test_breach_matrix_is_resources_by_days_with_max_over_metrics() -> None:
    risk = make_risk()
    daily = make_daily_breach(risk)
    matrix = capacity_risk.breach_matrix(daily)
    assert matrix.shape == (risk["resource_id"].nunique(), daily["day"].nunique())
    expected_peak = risk.groupby("resource_id")["p_breach_critical"].max()
    last_day = matrix.columns.max()
    for resource, peak in expected_peak.items():
        assert matrix.loc[resource, last_day] == pytest.approx(peak)
    # Rows by peak probability, highest first.
    assert matrix.index[0] == expected_peak.idxmax()
    assert capacity_risk.breach_matrix(daily, max_resources=2).shape == (2, daily["day"].nunique())

    fig = capacity_risk.breach_heatmap(matrix)
    image = fig.axes[0].images[0].get_array()
    np.testing.assert_allclose(np.asarray(image), matrix.to_numpy(dtype=float))


def _band(ax, label: str) -> np.ndarray:
    bands = [c for c in ax.collections if isinstance(c, PolyCollection) and c.get_label() == label]
    assert len(bands) == 1, (
        f"expected one {label} band, got {[c.get_label() for c in ax.collections]}"
    )
    return bands[0].get_paths()[0].vertices


def test_fan_chart_draws_inner_and_outer_bands() -> None:
    clean = make_clean()
    forecasts = make_forecasts(clean)
    sid = series_id("i-web-1", "cpu_utilization")
    fig = common.fan_chart_figure(clean, forecasts, [sid], history_hours=24)
    ax = fig.axes[0]
    final = forecasts[(forecasts["model"] == "selected") & (forecasts["series_id"] == sid)]
    inner = _band(ax, "P10-P90")
    outer = _band(ax, "P2-P98")
    assert inner[:, 1].min() == pytest.approx(final["q0.1"].min())
    assert inner[:, 1].max() == pytest.approx(final["q0.9"].max())
    assert outer[:, 1].min() == pytest.approx(final["q0.02"].min())
    assert outer[:, 1].max() == pytest.approx(final["q0.98"].max())
    history = next(line for line in ax.get_lines() if line.get_label() == "history")
    assert len(history.get_xdata()) == 24  # only the requested tail of the history


def test_fan_chart_with_only_one_band_available() -> None:
    clean = make_clean()
    forecasts = make_forecasts(clean)[
        ["model", "resource_id", "metric", "series_id", "timestamp", "mean", "q0.05", "q0.95"]
    ]
    sid = series_id("i-db-1", "cpu_utilization")
    ax = common.fan_chart_figure(clean, forecasts, [sid]).axes[0]
    assert [c.get_label() for c in ax.collections if isinstance(c, PolyCollection)] == ["P5-P95"]
    assert common.band_levels((0.5,), 0.1, 0.9) is None


def test_risk_fan_charts_mark_thresholds_and_eta() -> None:
    clean = make_clean()
    risk = make_risk()
    fig = capacity_risk.risk_fan_charts(risk, clean, make_forecasts(clean), top_n=1)
    ax = fig.axes[0]
    labels = [line.get_label() for line in ax.get_lines()]
    assert "warning 70" in labels and "critical 90" in labels
    assert "ETA P50" in labels
    assert "i-web-1|cpu_utilization" in ax.get_title()


def test_threshold_lookup_reads_the_levels_the_report_was_judged_against() -> None:
    risk = make_risk()
    risk.loc[risk["metric"] == "memory_utilization", "warning_threshold"] = np.nan
    risk.loc[risk["resource_id"] == "i-web-1", ["warning_threshold", "critical_threshold"]] = np.nan
    levels = capacity_risk.threshold_lookup(risk)
    assert levels["i-db-1|cpu_utilization"] == {"warning": 70.0, "critical": 90.0}
    assert levels["i-db-1|memory_utilization"] == {"critical": 95.0}
    assert "i-web-1|cpu_utilization" not in levels  # no threshold for it
    cfg = {
        "thresholds": {"cpu_utilization": {"warning": 70, "critical": 90}},
        "service_overrides": {"db": {"cpu_utilization": {"warning": 50, "critical": 60}}},
    }
    # A notebook opened by hand shows the schema's levels; the workflow passes the run's.
    defaults = capacity_risk.risk_levels(None, None)
    assert defaults["thresholds"]["cpu_utilization"] == {"warning": 70, "critical": 90}
    table = capacity_risk.thresholds_table(
        capacity_risk.risk_levels(cfg["thresholds"], cfg["service_overrides"])
    )
    assert table.values.tolist() == [
        ["every service", "cpu_utilization", 70.0, 90.0],
        ["service db", "cpu_utilization", 50.0, 60.0],
    ]


def test_quality_headline_and_flagged_table() -> None:
    clean = make_clean()
    quality = make_quality(clean)
    quality.loc[0, "too_short"] = True  # too short without a flag string is still listed
    recon = pd.DataFrame(
        {
            "source_file": ["a.csv", "b.csv"],
            "partition": ["a", "b"],
            "rows_in": [1000, 500],
            "rows_kept": [990, 495],
            "rows_repaired": [3, 0],
            "rows_quarantined": [10, 5],
            "duplicates": [0, 0],
            "balanced": [True, False],
        }
    )
    text = data_quality.quality_headline(quality, recon)
    assert f"**{len(quality)} series**" in text
    assert "Rows read 1,500: kept 1,485 (repaired 3), quarantined 15 (1.0%)" in text
    flagged = (quality["flags"].fillna("") != "") | quality["too_short"]
    assert f"**{int(flagged.sum())} series flagged**" in text
    assert "**1 source file does not reconcile**" in text
    table = data_quality.flagged_series_table(quality)
    assert len(table) == int(flagged.sum())
    assert table["coverage"].is_monotonic_increasing
    assert data_quality.flag_counts(quality).set_index("flag")["series"].to_dict() == {
        "long_gap": 1,
        "low_coverage": 1,
        "pegged": 1,
    }
    reasons = data_quality.quarantine_reason_counts(make_quarantine())
    assert reasons["reason"].tolist()[0] == "non_numeric_value"
    assert reasons["rows"].sum() == len(make_quarantine())


def test_rightsizing_table_and_fleet_savings() -> None:
    risk = make_risk()
    table = capacity_risk.rightsizing_table(risk)
    # One row per resource with a non-zero delta, biggest saving first.
    assert table["resource_id"].tolist() == ["i-db-1", "i-web-2"]
    money = capacity_risk.monthly_savings(table)
    assert money == {"savings": 70.0, "extra_cost": 35.0, "net": -35.0}


def test_styled_tables_show_readable_numbers_and_utc_times() -> None:
    act_by = FORECAST_START + pd.Timedelta(hours=20)
    table = pd.DataFrame(
        {"cost": [12345.678], "wql": [0.04567], "mase": [1.2345], "act_by": [act_by]}
    )
    html = common.styled(table).to_html()
    assert "12,346" in html and "0.046" in html and "1.23" in html
    assert act_by.strftime("%Y-%m-%d %H:%M UTC") in html
    assert common.format_timestamp(pd.NaT) == "-"


def test_service_plan_orders_biggest_change_first() -> None:
    plan = make_service_capacity().assign(instance_delta=[-1, 3])
    table = capacity_risk.service_plan_table(plan)
    assert table["service"].tolist() == ["web", "db"]
    assert list(table.columns) == list(SERVICE_CAPACITY_COLUMNS)


def test_leaderboard_highlights_selected_row() -> None:
    board = make_leaderboard()
    table = forecast_backtest.leaderboard_table(board)
    assert table["wql_relgm"].is_monotonic_increasing
    row = table.index[table["model"] == "selected"][0]
    html = forecast_backtest.style_leaderboard(board).to_html()
    rule = re.search(r"([^{}]*)\{\s*background-color: #fff3b0", html)
    assert rule is not None
    selectors = re.findall(r"_row(\d+)_col\d+", rule.group(1))
    assert selectors and {int(s) for s in selectors} == {row}


def test_backtest_headline_and_error_boxplots() -> None:
    clean = make_clean()
    forecasts = make_forecasts(clean)
    text = forecast_backtest.backtest_headline(make_leaderboard(), forecasts)
    assert "over 6 series x 2 windows" in text
    assert (
        "Best single model by WQL relgm: **auto\\_ets** (WQL relgm 0.750, MASE relgm 0.820)" in text
    )
    assert (
        "Selected forecast** over 6 series x 2 windows: WQL relgm 0.620, MASE relgm 0.710" in text
    )
    assert f"Final forecast: {clean.groupby(['resource_id', 'metric']).ngroups} series" in text
    assert "auto\\_ets (6)" in text  # names from the data are escaped Markdown

    metrics = make_metrics()
    fig = forecast_backtest.error_boxplots(metrics)
    assert len(fig.axes) == 2
    labels = [t.get_text() for t in fig.axes[0].get_xticklabels()]
    assert sorted(labels) == sorted(metrics["model"].unique())
    errors = forecast_backtest.per_series_errors(metrics)
    # The selection window (window 0) is left out of the per-series means.
    scored = metrics[~metrics["is_selection_window"]]
    one = scored[
        (scored["model"] == "auto_ets") & (scored["series_id"] == "i-db-1|cpu_utilization")
    ]
    got = errors[
        (errors["model"] == "auto_ets") & (errors["series_id"] == "i-db-1|cpu_utilization")
    ]
    assert got["mase"].iloc[0] == pytest.approx(one["mase"].mean())


def test_series_choice_is_reproducible_and_growth_ranks_trend_first() -> None:
    clean = make_clean()
    forecasts = make_forecasts(clean)
    picked = forecast_backtest.sample_series_ids(forecasts, 3)
    assert picked == forecast_backtest.sample_series_ids(forecasts, 3)
    assert len(set(picked)) == 3
    assert (
        len(forecast_backtest.sample_series_ids(forecasts, 100)) == forecasts["series_id"].nunique()
    )
    ranked = forecast_backtest.growth_ranked_series(forecasts, clean, 2)
    assert ranked[0] == "i-web-1|cpu_utilization"


def test_read_helpers_name_the_missing_path(tmp_path: Path) -> None:
    with pytest.raises(InputDataError, match="no parquet partitions found"):
        common.read_partitions(tmp_path)
    with pytest.raises(InputDataError, match=re.escape(str(tmp_path / "x.csv"))):
        common.read_table(tmp_path / "x.csv")
    (tmp_path / "p1.parquet").write_bytes(b"")
    make_clean().head(3).to_parquet(tmp_path / "p1.parquet")
    make_clean().head(2).to_parquet(tmp_path / "resources.parquet")
    frame = common.read_partitions(tmp_path, exclude=["resources.parquet"])
    assert len(frame) == 3 and set(frame["partition"]) == {"p1"}


def test_results_dir_falls_back_to_the_project_root(tmp_path: Path, monkeypatch) -> None:
    project = tmp_path / "project"
    (project / "results").mkdir(parents=True)
    elsewhere = tmp_path / "notebooks"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert common.resolve_results_dir("results", project) == project / "results"
    (elsewhere / "results").mkdir()
    assert common.resolve_results_dir("results", project) == Path("results")
    assert common.resolve_results_dir(tmp_path, project) == tmp_path


EMPTY_CLEAN = pd.DataFrame(columns=list(CLEAN_COLUMNS))
EMPTY_FIGURES = {
    "coverage": lambda: data_quality.coverage_figure(pd.DataFrame(columns=list(QUALITY_COLUMNS))),
    "gaps": lambda: data_quality.gaps_figure(pd.DataFrame(columns=list(QUALITY_COLUMNS))),
    "values": lambda: data_quality.value_distribution_figure(EMPTY_CLEAN),
    "quarantine": lambda: data_quality.quarantine_reasons_figure(
        pd.DataFrame(columns=list(QUARANTINE_COLUMNS))
    ),
    "errors": lambda: forecast_backtest.error_boxplots(
        pd.DataFrame(columns=["model", "series_id", "mase"])
    ),
    "fan": lambda: common.fan_chart_figure(EMPTY_CLEAN, pd.DataFrame(columns=["model"]), []),
    "heatmap": lambda: capacity_risk.breach_heatmap(
        capacity_risk.breach_matrix(pd.DataFrame(columns=["resource_id", "metric", "day"]))
    ),
    "risk_fans": lambda: capacity_risk.risk_fan_charts(
        make_risk().iloc[0:0], EMPTY_CLEAN, pd.DataFrame(columns=["model"]), 5
    ),
    "findings": lambda: capacity_risk.findings_figure(make_risk().iloc[0:0]),
    "raw": lambda: exploration.samples_per_hour_figure(pd.DataFrame(columns=list(RAW_COLUMNS))),
    "clean": lambda: exploration.clean_series_figure(EMPTY_CLEAN, []),
    "profile": lambda: exploration.hourly_profile_figure(pd.DataFrame()),
}


@pytest.mark.parametrize("name", sorted(EMPTY_FIGURES))
def test_figures_on_empty_input_say_no_data(name: str) -> None:
    fig = EMPTY_FIGURES[name]()
    assert common.is_empty_figure(fig)
    fig.canvas.draw()  # renders without error


def test_empty_tables_keep_their_columns() -> None:
    empty_risk = make_risk().iloc[0:0]
    assert "act_by" in capacity_risk.ranked_risks(empty_risk, 3).columns
    assert "monthly_cost_delta_usd" in capacity_risk.rightsizing_table(empty_risk).columns
    assert capacity_risk.monthly_savings(empty_risk) == {
        "savings": 0.0,
        "extra_cost": 0.0,
        "net": 0.0,
    }
    assert "No resource at risk" in capacity_risk.risk_headline(empty_risk)


# --------------------------------------------------------------------------------------------
# Notebooks executed with papermill on the fake results tree
# --------------------------------------------------------------------------------------------


def execute_notebook(name: str, results: Path, out_dir: Path, **params: object) -> Path:
    """Run ``notebooks/<name>.ipynb`` like the workflow does (cwd = project root)."""
    import papermill

    output = out_dir / f"{name}.ipynb"
    papermill.execute_notebook(
        str(NOTEBOOK_DIR / f"{name}.ipynb"),
        str(output),
        parameters={"results_dir": str(results), **params},
        kernel_name="python3",
        cwd=str(PROJECT_ROOT),
        progress_bar=False,
    )
    return output


def to_html(notebook: Path) -> str:
    """Convert as the render_report rule does."""
    from capforecast.reports.html import notebook_html

    return notebook_html(notebook, hide_code=True)


def outputs(notebook: Path) -> list[dict]:
    nb = nbformat.read(notebook, as_version=4)
    return [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]


@pytest.mark.parametrize("name", MAIN_REPORTS + EXPLORATION)
def test_notebook_files_are_parameterised(name: str) -> None:
    nb = nbformat.read(NOTEBOOK_DIR / f"{name}.ipynb", as_version=4)
    nbformat.validate(nb)
    assert nb.metadata["kernelspec"]["name"] == "python3"
    assert nb.metadata["language_info"]["name"] == "python"
    code_cells = [c for c in nb.cells if c.cell_type == "code"]
    assert "capforecast" in code_cells[0].source and "sys.path" not in code_cells[0].source
    params = [c for c in code_cells if "parameters" in c.metadata.get("tags", [])]
    assert len(params) == 1
    namespace: dict[str, object] = {}
    exec(params[0].source, namespace)
    assert namespace["results_dir"] == "results"
    if name in MAIN_REPORTS:
        assert namespace["top_n"] == 10 and namespace["sample_series"] == 6
    assert all(not c.get("outputs") for c in code_cells), "commit notebooks without outputs"


@pytest.fixture(scope="module")
def executed(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("reports")
    results = build_results_tree(root)
    out_dir = root / "executed"
    out_dir.mkdir()
    done = {
        name: execute_notebook(name, results, out_dir, top_n=3, sample_series=2)
        for name in MAIN_REPORTS
    }
    done.update({name: execute_notebook(name, results, out_dir) for name in EXPLORATION})
    return done


@pytest.mark.slow
@pytest.mark.parametrize("name", MAIN_REPORTS + EXPLORATION)
def test_notebook_runs_without_errors_and_plots(executed: dict[str, Path], name: str) -> None:
    found = outputs(executed[name])
    assert not [o for o in found if o["output_type"] == "error"]
    images = [o for o in found if "image/png" in o.get("data", {})]
    assert images, f"{name} produced no figure"


@pytest.mark.slow
def test_capacity_risk_report_says_what_to_do_first(executed: dict[str, Path]) -> None:
    risk = make_risk()  # the scored resources; the stopped one has an earlier act_by
    first = risk.loc[risk["act_by"].idxmin()]
    markdown = [
        "".join(o["data"]["text/markdown"])
        for o in outputs(executed["capacity_risk"])
        if "text/markdown" in o.get("data", {})
    ]
    headline = markdown[0]
    assert f"{markdown_text(first['resource_id'])} {markdown_text(first['metric'])}" in headline
    assert first["act_by"].strftime("%Y-%m-%d %H:%M UTC") in headline
    assert "i-gone-1" not in headline and "1 resource stopped reporting" in headline
    html = to_html(executed["capacity_risk"])
    stopped_section = html[html.index("Stopped reporting") :]
    assert "i-gone-1" in stopped_section[: stopped_section.index("Top risks")]


@pytest.mark.slow
def test_data_quality_report_lists_the_files_it_did_not_read(executed: dict[str, Path]) -> None:
    html = to_html(executed["data_quality"])
    section = html[html.index("Files not read") :]
    assert "data/README.md" in section and "unsupported extension" in section


@pytest.mark.slow
@pytest.mark.parametrize("name", MAIN_REPORTS)
def test_html_report_is_self_contained_without_code(executed: dict[str, Path], name: str) -> None:
    html = to_html(executed[name])
    sources = re.findall(r'<img[^>]*\bsrc="([^"]*)"', html)
    assert sources, "no images in the HTML"
    assert all(s.startswith("data:image/png;base64,") for s in sources)
    assert "sys.path.insert" not in html
    assert "common.read_table" not in html and "common.read_partitions" not in html
    assert "Headline" in html  # markdown cells stay
    # opens offline: no script or stylesheet from anywhere else
    assert not re.findall(r'<(?:script|link)[^>]*\b(?:src|href)="(?:https?:)?//', html)
    assert "jp-Notebook" in html  # still JupyterLab's styling


def declared_inputs(results: Path, name: str) -> dict[str, object]:
    """The inputs the render_report rule declares for report ``name``, as it passes them."""
    inputs: dict[str, object] = {
        key: str(results / relative) for key, relative in common.REPORT_INPUTS[name].items()
    }
    inputs["clean"] = [str(p) for p in sorted((results / "clean").glob("*.parquet"))]
    return inputs


@pytest.mark.slow
def test_risk_report_reads_its_declared_inputs_and_shows_the_run_s_thresholds(
    tmp_path: Path,
) -> None:
    """The workflow passes the rule's inputs and the validated risk levels (papermill
    parameters): under another config's thresholds the page shows those, not the defaults,
    and no results directory is searched."""
    results = build_results_tree(tmp_path)
    thresholds = {
        "cpu_utilization": {"warning": 61.5, "critical": 83.5},
        "memory_utilization": {"warning": 72.5, "critical": 91.5},
    }
    overrides = {"db": {"cpu_utilization": {"critical": 77.5}}}
    notebook = execute_notebook(
        "capacity_risk",
        tmp_path / "nowhere",  # results_dir: nothing may be read from it
        tmp_path,
        inputs=declared_inputs(results, "capacity_risk"),
        thresholds=thresholds,
        service_overrides=overrides,
        top_n=3,
        sample_series=2,
    )
    html = to_html(notebook)
    section = html[html.index("Thresholds") : html.index("All findings")]
    for level in ("61.5", "83.5", "72.5", "91.5", "77.5"):
        assert level in section
    assert "every service" in section and "service db" in section
    # No notebook prompts in the page, and wide tables scroll instead of being cut off.
    assert not re.search(r"In&nbsp;\[|Out\[\d*\]:|In \[\d*\]:", html)
    assert not re.search(r'class="[^"]*\bjp-(?:In|Out)putPrompt', html)
    assert "overflow-x: auto" in html


@pytest.mark.slow
@pytest.mark.parametrize("name", ["data_quality", "forecast_backtest"])
def test_reports_read_their_declared_inputs(tmp_path: Path, name: str) -> None:
    results = build_results_tree(tmp_path)
    notebook = execute_notebook(
        name, tmp_path / "nowhere", tmp_path, inputs=declared_inputs(results, name)
    )
    assert not [o for o in outputs(notebook) if o["output_type"] == "error"]


def test_fallbacks_are_named_in_the_forecast_report() -> None:
    metrics = pd.DataFrame(
        {
            "model": ["seasonal_naive_weekly"] * 3 + ["theta"],
            "series_id": ["a|cpu_utilization", "a|cpu_utilization", "b|cpu_utilization", "a|x"],
            "window": [1, 2, 1, 1],
            "is_selection_window": [False, False, False, False],
            "model_used": [
                "seasonal_naive_daily (fallback: too_short)",
                "seasonal_naive_daily (fallback: too_short)",
                "seasonal_naive_weekly",
                "theta",
            ],
        }
    )
    forecasts = pd.DataFrame(
        {
            "model": ["prophet", "prophet", "selected"],
            "series_id": ["a|cpu_utilization"] * 3,
            "timestamp": pd.date_range("2026-01-01", periods=3, freq="h", tz="UTC"),
            "model_used": ["seasonal_naive_daily (fallback: model_failed)"] * 2 + ["theta"],
        }
    )
    table = forecast_backtest.fallback_table(metrics, forecasts)
    assert table[["stage", "model", "series_id"]].values.tolist() == [
        ["backtest", "seasonal_naive_weekly", "a|cpu_utilization"],
        ["final", "prophet", "a|cpu_utilization"],
    ]
    assert table["windows"].iloc[0] == 2
    board = pd.DataFrame(
        {"model": ["seasonal_naive_weekly", "theta"], "n_fallback": [2, 0], "wql_relgm": [1, 1]}
    )
    assert "seasonal\\_naive\\_weekly (2)" in forecast_backtest.backtest_headline(board, forecasts)
    assert forecast_backtest.fallback_table(metrics.iloc[2:], forecasts.iloc[2:]).empty
