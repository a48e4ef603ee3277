"""Decision backtest scoring (capforecast.decision.scores, capforecast.decision.tables) on
hand-built frames whose answers are worked out in the comments."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from capforecast.config import validated_config
from capforecast.data.holdout import Cut
from capforecast.decision import scores as decision
from capforecast.decision import tables as decision_report

CUT = Cut(history_end=pd.Timestamp("2026-01-10", tz="UTC"), freq=pd.Timedelta("1h"), horizon=24)
CPU, MEMORY = "cpu_utilization", "memory_utilization"
CATALOGUE = validated_config({})["catalogue"]
HOUR = pd.Timedelta(hours=1)


def clean_rows(resource: str, metric: str, start: pd.Timestamp, values, value_max=None):
    values = np.asarray(values, dtype=float)
    return pd.DataFrame(
        {
            "timestamp": start + HOUR * np.arange(len(values)),
            "resource_id": resource,
            "metric": metric,
            "value": values,
            "value_max": values if value_max is None else np.asarray(value_max, dtype=float),
            "n_obs": 12,
            "is_filled": False,
            "is_gap": False,
        }
    )


def history() -> pd.DataFrame:
    """Ten days before the cut.

    A ramps by 2 points an hour over its last day, ending at 80 one hour before the cut: the
    predict_linear line reaches 90 at cut + 4 h; its last-week peak is 80 (no alert).
    B idles at 40 with a spike of 95 three days before the cut (last-week alert, flat line).
    C sits at 60, D at 30 with a 99 spike eight days before the cut (outside the last week).
    E stopped reporting two days before the cut.
    """
    hours = 240
    start = CUT.history_end - hours * HOUR
    ramp = np.r_[np.full(hours - 24, 34.0), 34.0 + 2 * np.arange(24)]
    b = np.full(hours, 40.0)
    b[hours - 72] = 95.0
    d = np.full(hours, 30.0)
    d[hours - 8 * 24] = 99.0
    return pd.concat(
        [
            clean_rows("vm-a", CPU, start, ramp),
            clean_rows("vm-b", CPU, start, b),
            clean_rows("vm-c", CPU, start, np.full(hours, 60.0)),
            clean_rows("vm-d", CPU, start, d, value_max=d + 5),
            clean_rows("vm-e", CPU, start, np.full(hours - 48, 50.0)),
        ],
        ignore_index=True,
    )


def actuals() -> pd.DataFrame:
    """The 24 h after the cut. A: 85 then 95 from cut + 5 h (first crossing). B: 50. C: 70 then
    92 from cut + 10 h. D: 20 (hourly maxima 93). E: nothing. F: a VM that started after the cut.
    """
    start = CUT.history_end
    return pd.concat(
        [
            clean_rows("vm-a", CPU, start, np.r_[np.full(5, 85.0), np.full(19, 95.0)]),
            clean_rows("vm-b", CPU, start, np.full(24, 50.0)),
            clean_rows("vm-c", CPU, start, np.r_[np.full(10, 70.0), np.full(14, 92.0)]),
            clean_rows("vm-d", CPU, start, np.full(24, 20.0), value_max=np.full(24, 93.0)),
            clean_rows("vm-f", CPU, start, np.full(24, 99.0)),
        ],
        ignore_index=True,
    )


def risk_report() -> pd.DataFrame:
    """The product's calls: A at_risk (P 0.9, median ETA cut + 3 h), B at_risk (P 0.6, a false
    alarm), C under_provisioned (P 0.3), D optimized (P 0), E at_risk but without actuals."""
    rows = [
        ("vm-a", "at_risk", 0.9, CUT.history_end + 3 * HOUR),
        ("vm-b", "at_risk", 0.6, CUT.history_end + 20 * HOUR),
        ("vm-c", "under_provisioned", 0.3, pd.NaT),
        ("vm-d", "optimized", 0.0, pd.NaT),
        ("vm-e", "at_risk", 0.95, CUT.history_end - 10 * HOUR),
    ]
    return pd.DataFrame(
        {
            "resource_id": [r[0] for r in rows],
            "metric": CPU,
            "service": "svc",
            "instance_type": "m5.large",
            "critical_threshold": 90.0,
            "metric_finding": [r[1] for r in rows],
            "p_breach_critical": [r[2] for r in rows],
            "eta_p50": pd.to_datetime([r[3] for r in rows], utc=True),
            "peak_p90": 80.0,
            "recommended_instance_type": "m5.large",
            "monthly_cost_delta_usd": 0.0,
        }
    )


def scores(statistic: str = "mean") -> pd.DataFrame:
    return decision.series_scores(
        risk_report(),
        history(),
        actuals(),
        CUT,
        percent_metrics=[CPU, MEMORY],
        statistic=statistic,
        predict_linear_window_hours=24,
    )


def test_series_outcomes_and_calls():
    table = scores().set_index("resource_id")
    assert table.loc["vm-a", "first_crossing"] == CUT.history_end + 5 * HOUR
    assert table.loc["vm-c", "first_crossing"] == CUT.history_end + 10 * HOUR
    assert list(table["breached"]) == [True, False, True, False, False, True]
    assert table.loc["vm-a", "actual_peak"] == 95.0
    assert table.loc["vm-e", "not_scored_reason"] == "no_actuals"
    assert table.loc["vm-f", "not_scored_reason"] == "no_call"
    assert table.loc["vm-f", "critical_threshold"] == 90.0  # the metric's threshold
    assert table["scored"].sum() == 4
    assert table.loc["vm-a", "eta_p50_error_hours"] == -2.0
    # predict_linear: 80 + 2 (i + 1) >= 90 first at i = 4.
    assert list(table["predict_linear_alert"]) == [True, False, False, False, False, False]
    assert table.loc["vm-a", "predict_linear_eta"] == CUT.history_end + 4 * HOUR
    assert table.loc["vm-a", "predict_linear_eta_error_hours"] == -1.0
    assert table.loc["vm-b", "last_week_peak"] == 95.0
    assert table.loc["vm-d", "last_week_peak"] == 30.0  # its 99 spike is 8 days old
    assert list(table["last_week_peak_alert"]) == [False, True, False, False, False, False]


def test_method_summary_matches_hand_counts():
    summary = decision.method_summary(scores()).set_index("method")
    product = summary.loc[decision.PRODUCT_AT_RISK]
    # A true positive, B false positive, C missed; D true negative; E and F not scored.
    assert (product["true_positives"], product["false_positives"]) == (1, 1)
    assert product["false_negatives"] == 1 and product["series"] == 4
    assert product["precision"] == product["recall"] == product["f1"] == 0.5
    # Brier: ((0.9 - 1)^2 + 0.6^2 + (0.3 - 1)^2 + 0) / 4; base rate 1/2 -> climatology 1/4.
    assert product["brier"] == pytest.approx(0.215)
    assert product["brier_climatology"] == pytest.approx(0.25)
    assert product["brier_skill"] == pytest.approx(1 - 0.215 / 0.25)
    assert (product["eta_n"], product["eta_mae_hours"], product["eta_bias_hours"]) == (1, 2, -2)

    wider = summary.loc[decision.PRODUCT_AT_RISK_OR_UNDER]
    assert wider["precision"] == pytest.approx(2 / 3) and wider["recall"] == 1.0
    assert wider["f1"] == pytest.approx(0.8)

    linear = summary.loc[decision.PREDICT_LINEAR]
    assert (linear["precision"], linear["recall"]) == (1.0, 0.5)
    assert linear["f1"] == pytest.approx(2 / 3)
    assert linear["brier"] == pytest.approx(0.25)  # one miss out of four, 0/1 probabilities
    assert (linear["eta_n"], linear["eta_mae_hours"]) == (1, 1.0)

    peak = summary.loc[decision.LAST_WEEK_PEAK]
    assert (peak["precision"], peak["recall"], peak["f1"]) == (0.0, 0.0, 0.0)
    assert peak["brier"] == pytest.approx(0.75)
    assert peak["brier_skill"] == pytest.approx(-2.0)
    assert peak["eta_n"] == 0 and math.isnan(peak["eta_mae_hours"])


def test_the_forecast_statistic_decides_what_a_breach_is():
    table = scores("max").set_index("resource_id")
    assert bool(table.loc["vm-d", "breached"])  # hourly maxima of 93
    assert table.loc["vm-d", "last_week_peak"] == 35.0  # maxima are the means + 5 there


def test_undefined_ratios_are_nan_not_zero():
    quiet = scores()
    quiet = quiet[quiet["resource_id"].isin(["vm-b", "vm-d"])].copy()
    for column in ("call_at_risk", "call_at_risk_or_under", "last_week_peak_alert"):
        quiet[column] = False
    quiet["p_breach_critical"] = 0.0
    quiet["last_week_peak_p"] = 0.0
    summary = decision.method_summary(quiet).set_index("method")
    row = summary.loc[decision.PRODUCT_AT_RISK]
    assert row["breached"] == 0 and row["alerts"] == 0
    assert math.isnan(row["precision"]) and math.isnan(row["recall"]) and math.isnan(row["f1"])
    assert row["brier"] == 0.0 and row["brier_climatology"] == 0.0
    assert math.isnan(row["brier_skill"])


def sizing_inputs() -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """R1, R2, R4: m5.xlarge (4 vCPU, 16 GiB) -> m5.large (2, 8): peaks double. R3 keeps its
    type. R4's resources row says 0 vCPU (unknown capacity). R5 grows m5.large -> m5.xlarge."""
    ids = ["r1", "r2", "r3", "r4", "r5"]
    current = ["m5.xlarge", "m5.xlarge", "m5.xlarge", "m5.xlarge", "m5.large"]
    recommended = ["m5.large", "m5.large", "m5.xlarge", "m5.large", "m5.xlarge"]
    report = pd.DataFrame(
        {
            "resource_id": ids,
            "service": "svc",
            "instance_type": current,
            "recommended_instance_type": recommended,
            "monthly_cost_delta_usd": [-70.08, -70.08, 0.0, -70.08, 70.08],
        }
    )
    resources = pd.DataFrame(
        {
            "resource_id": ids,
            "service": "svc",
            "instance_type": current,
            "vcpu": [4.0, 4.0, 4.0, 0.0, 2.0],
            "memory_gib": [16.0, 16.0, 16.0, 16.0, 8.0],
        }
    )
    # Actual peaks: r1 CPU 60 (-> 120 %), r2 memory 48 (-> 96 %, over critical 95 but fits).
    peaks = {
        "r1": (60.0, 30.0),
        "r2": (40.0, 48.0),
        "r3": (99.0, 99.0),
        "r4": (10.0, 10.0),
        "r5": (95.0, 50.0),
    }
    outcomes = pd.DataFrame(
        [
            {"resource_id": r, "metric": m, "actual_peak": p, "critical_threshold": c}
            for r, (cpu, mem) in peaks.items()
            for m, p, c in ((CPU, cpu, 90.0), (MEMORY, mem, 95.0))
        ]
    )
    return report, resources, outcomes


def test_rightsizing_check_moves_actual_peaks_to_the_recommended_type():
    check = decision.rightsizing_check(*sizing_inputs(), CATALOGUE).set_index("resource_id")
    assert list(check.index) == ["r1", "r2", "r4", "r5"]  # r3 keeps its type
    assert check.loc["r1", "cpu_peak_on_recommended"] == 120.0
    assert bool(check.loc["r1", "harmful"]) and bool(check.loc["r1", "over_critical"])
    assert check.loc["r2", "memory_peak_on_recommended"] == 96.0
    assert not bool(check.loc["r2", "harmful"]) and bool(check.loc["r2", "over_critical"])
    assert not bool(check.loc["r4", "checked"])
    assert "cpu_capacity_unknown" in check.loc["r4", "note"]
    assert check.loc["r5", "cpu_peak_on_recommended"] == 47.5
    assert list(check["change"]) == ["downsize", "downsize", "unknown", "upsize"]
    counts = decision.rightsizing_counts(check.reset_index())
    assert counts == {
        "changed": 4,
        "downsize": 2,
        "checked": 3,
        "not_checked": 1,
        "harmful": 1,
        "harmful_downsize": 1,
        "over_critical": 2,
    }


def decision_inputs(folder):
    """The decision inputs of the capacity-risk report, as its rule declares them."""
    return {
        "decision_summary": folder / "summary.json",
        "decision_series_scores": folder / "series_scores.csv",
        "decision_rightsizing": folder / "rightsizing_check.csv",
    }


def test_report_section_shows_the_run_s_backtest_or_how_to_run_one(tmp_path):
    resources = sizing_inputs()[1]
    result = decision.score_decisions(
        risk_report(),
        history(),
        actuals(),
        resources.iloc[:0],
        CUT,
        percent_metrics=[CPU],
        statistic="mean",
        predict_linear_window_hours=24,
        catalogue=CATALOGUE,
    )
    assert result.summary_json["series"] == {"no_actuals": 1, "no_call": 1, "scored": 4}
    result.series_scores.to_csv(tmp_path / "series_scores.csv", index=False)
    decision.rightsizing_check(*sizing_inputs(), CATALOGUE).to_csv(
        tmp_path / "rightsizing_check.csv", index=False
    )
    (tmp_path / "summary.json").write_text(json.dumps(result.summary_json))
    text = decision_report.report_section(decision_inputs(tmp_path))
    assert "History cut at **2026-01-10T00:00:00+00:00**" in text
    product = (
        "| capforecast: at_risk | 4 | 2 | 2 | 1 | 0.500 | 0.500 | 0.500 | 0.2150 | 0.14 | 2.0 (1) |"
    )
    assert product in text
    assert (
        "| last week's peak >= critical | 4 | 2 | 1 | 0 | 0.000 | 0.000 | 0.000 | 0.7500 |" in text
    )
    assert "not scored: no_actuals 1, no_call 1" in text
    # The harmful one; ids and names are escaped Markdown (decision_report shows data literally).
    assert "| r1 | m5\\.xlarge | m5\\.large | 120.0 | 60.0 |" in text
    assert "Breaches not called at_risk (1, first 1)" in text and "| vm\\-c |" in text
    assert decision_report.report_section({}) == decision_report.HOW_TO_RUN
