"""Capacity risk (Module 05) on hand-built forecasts with answers known from their construction."""

from __future__ import annotations

import itertools
import math
import re

import numpy as np
import pandas as pd
import pytest

from capforecast.contracts import CLEAN_COLUMNS, RESOURCE_COLUMNS, quantile_column
from capforecast.errors import ConfigError, ForecastInputError
from capforecast.rightsizing import HOURS_PER_MONTH
from capforecast.risk import assess_risk
from capforecast.risk_probability import (
    breach_probabilities,
    exceedance_probability,
    first_crossings,
)

START = pd.Timestamp("2026-09-12", tz="UTC")
HOUR = pd.Timedelta(hours=1)
LEVELS = (0.02, 0.05, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95, 0.98)
# Standard normal quantiles of LEVELS: a symmetric fan of half-width z * sd.
Z = dict(
    zip(LEVELS, (-2.054, -1.645, -1.2816, -0.674, 0.0, 0.674, 1.2816, 1.645, 2.054), strict=True)
)
CPU, MEM, DISK, NET = (
    "cpu_utilization",
    "memory_utilization",
    "disk_used_percent",
    "network_in_bytes",
)

# A small catalogue with known answers (prices in USD per hour).
CATALOGUE = {
    "big.4x": {"vcpu": 4, "memory_gib": 16, "hourly_price_usd": 0.20, "family": "big"},
    "mid.2x": {"vcpu": 2, "memory_gib": 8, "hourly_price_usd": 0.10, "family": "mid"},
    "wide.4x": {"vcpu": 4, "memory_gib": 8, "hourly_price_usd": 0.15, "family": "wide"},
    "small.2x": {"vcpu": 2, "memory_gib": 4, "hourly_price_usd": 0.04, "family": "small"},
    "lean.1x": {"vcpu": 1, "memory_gib": 4, "hourly_price_usd": 0.045, "family": "lean"},
    "tight.1x": {"vcpu": 1, "memory_gib": 3, "hourly_price_usd": 0.03, "family": "tight"},
}


def fan(resource_id: str, metric: str, mean, sd: float = 0.0, start=START) -> pd.DataFrame:
    """Selected forecast rows: quantile q = mean + z_q * sd (sd = 0 gives a zero-width fan)."""
    mean = np.asarray(mean, dtype=float)
    frame = pd.DataFrame(
        {
            "resource_id": resource_id,
            "metric": metric,
            "timestamp": pd.date_range(start, periods=len(mean), freq="h"),
            "model": "selected",
            "mean": mean,
        }
    )
    for level in LEVELS:
        frame[quantile_column(level)] = mean + Z[level] * sd
    return frame


def history(resource_id: str, metric: str, values, *, value_max=None, hours=None) -> pd.DataFrame:
    """Cleaned hourly history ending one hour before START."""
    values = np.asarray(values, dtype=float)
    if hours is not None:
        values = np.resize(values, hours)
    n = len(values)
    frame = pd.DataFrame(
        {
            "timestamp": pd.date_range(START - n * HOUR, periods=n, freq="h"),
            "resource_id": resource_id,
            "metric": metric,
            "value": values,
            "value_max": values if value_max is None else np.resize(value_max, n),
            "n_obs": 12,
            "is_filled": False,
            "is_gap": False,
        }
    )
    return frame[list(CLEAN_COLUMNS)]


def resources(*rows: tuple[str, str, str | None]) -> pd.DataFrame:
    """Resources table from (resource_id, service, instance_type); capacities from CATALOGUE."""
    records = []
    for resource_id, service, instance_type in rows:
        entry = CATALOGUE.get(instance_type or "", {})
        records.append(
            {
                "resource_id": resource_id,
                "service": service,
                "instance_type": instance_type,
                "vcpu": entry.get("vcpu", np.nan),
                "memory_gib": entry.get("memory_gib", np.nan),
                "region": "us-east-1",
                "hourly_price_usd": entry.get("hourly_price_usd", np.nan),
            }
        )
    return pd.DataFrame(records, columns=list(RESOURCE_COLUMNS))


def config(**risk) -> dict:
    base = {
        "thresholds": {
            CPU: {"warning": 70, "critical": 80},
            MEM: {"warning": 80, "critical": 95},
            DISK: {"warning": 80, "critical": 95},
        },
        "lead_time_days": 2,
        "safety_margin_days": 1,
        "target_utilization": 70,
        "buffer_pct": 10,
        "low_water_pct": 20,
    }
    base.update(risk)
    return {"risk": base, "catalogue": CATALOGUE, "etl": {"freq": "1h", "pegged_level": 99.0}}


def flat(level: float, hours: int = 96) -> np.ndarray:
    return np.full(hours, float(level))


def one_resource(cpu_mean, mem_mean, *, sd=0.0, instance_type="mid.2x", hist_hours=14 * 24):
    """Forecasts + 14 days of flat history for resource r1 of service web."""
    forecasts = pd.concat([fan("r1", CPU, cpu_mean, sd), fan("r1", MEM, mem_mean, sd)])
    past = pd.concat(
        [
            history("r1", CPU, [cpu_mean[0]], hours=hist_hours),
            history("r1", MEM, [mem_mean[0]], hours=hist_hours),
        ]
    )
    return forecasts, past, resources(("r1", "web", instance_type))


def row(report: pd.DataFrame, resource_id: str, metric: str) -> pd.Series:
    found = report[(report["resource_id"] == resource_id) & (report["metric"] == metric)]
    assert len(found) == 1
    return found.iloc[0]


# --- breach probabilities -------------------------------------------------------------------


def test_zero_width_ramp_eta_is_the_exact_crossing_hour():
    ramp = 60.3 + 0.5 * np.arange(96)  # first value >= 80 at hour 40 (60.3 + 20 = 80.3)
    crossing = int(np.argmax(ramp >= 80))
    warn_crossing = int(np.argmax(ramp >= 70))
    forecasts, past, table = one_resource(ramp, flat(40))
    report = assess_risk(forecasts, past, table, config()).risk_report
    cpu = row(report, "r1", CPU)
    for column in ("eta_p10", "eta_p50", "eta_p90"):
        assert cpu[column] == START + crossing * HOUR
    assert cpu["eta_warning_p50"] == START + warn_crossing * HOUR
    assert cpu["p_breach_critical"] == 1.0
    assert cpu["eta_p50"].tz is not None


def test_fan_ramp_etas_follow_the_quantiles_and_the_day_table():
    ramp = 50.0 + 0.4 * np.arange(120)
    sd = 4.0
    forecasts = fan("r1", CPU, ramp, sd)
    tables = breach_probabilities(forecasts, {CPU: {"warning": 70, "critical": 80}})
    eta = first_crossings(tables.per_step, "critical").iloc[0]
    # With linear interpolation between stored levels, P(X >= c) >= 1 - p exactly when the
    # stored quantile q_p reaches c: the ETAs are the hours q0.9, q0.5 and q0.1 reach 80.
    for prob, level in ((0.1, 0.9), (0.5, 0.5), (0.9, 0.1)):
        hour = int(np.argmax(ramp + Z[level] * sd >= 80))
        assert eta[f"eta_p{round(prob * 100)}"] == START + hour * HOUR
    # The day of the median crossing is the first day whose P(breach by end of day) >= 0.5.
    daily = tables.daily.set_index("day")["p_breach_critical"]
    median_day = eta["eta_p50"].floor("D")
    assert daily[median_day] >= 0.5
    assert daily[median_day - pd.Timedelta(days=1)] < 0.5
    assert list(tables.daily.columns[:3]) == ["resource_id", "metric", "day"]
    assert daily.is_monotonic_increasing


def test_interior_probabilities_interpolate_between_stored_levels():
    quantiles = np.array([[10.0, 20.0, 30.0, 40.0, 50.0]])
    levels = (0.1, 0.25, 0.5, 0.75, 0.9)
    at = lambda c: exceedance_probability(levels, quantiles, np.array([c]))[0]  # noqa: E731
    assert at(30.0) == pytest.approx(0.5)
    assert at(35.0) == pytest.approx(0.375)  # halfway between levels 0.5 and 0.75
    assert at(20.0) == pytest.approx(0.75)
    # Upper tail: positive but below the mass above the top quantile, decaying with distance.
    assert 0 < at(60.0) < at(55.0) < 0.1
    # Lower tail: at least the mass above the lowest quantile.
    assert 0.9 <= at(5.0) <= 1.0
    # A zero-width fan is deterministic.
    point = np.full((1, 5), 42.0)
    assert exceedance_probability(levels, point, np.array([42.0]))[0] == 1.0
    assert exceedance_probability(levels, point, np.array([42.5]))[0] == 0.0


def test_breach_probability_decreases_as_the_threshold_rises():
    rng = np.random.default_rng(7)
    mean = 55 + np.cumsum(rng.normal(0.2, 1.0, 72))
    forecasts = fan("r1", CPU, mean, sd=6.0)
    thresholds = [40, 55, 62, 70, 78, 85, 95, 110]
    finals, steps = [], []
    for c in thresholds:
        per_step = breach_probabilities(forecasts, {CPU: {"warning": c, "critical": c}}).per_step
        steps.append(per_step["p_exceed_critical"].to_numpy())
        finals.append(per_step["p_breach_critical"].iloc[-1])
        cumulative = per_step["p_breach_critical"].to_numpy()
        assert np.all(np.diff(cumulative) >= 0)  # P(breach by t) never decreases in t
        assert np.all((cumulative >= 0) & (cumulative <= 1))
    for lower, higher in itertools.pairwise(steps):
        assert np.all(higher <= lower + 1e-12)
    assert all(b <= a + 1e-12 for a, b in itertools.pairwise(finals))
    assert finals[0] > finals[-1]


def test_comonotone_probability_is_the_max_and_below_independent_steps():
    mean = np.array([70.0, 78.0, 74.0, 79.0])
    per_step = breach_probabilities(
        fan("r1", CPU, mean, sd=3.0), {CPU: {"warning": 75, "critical": 80}}
    ).per_step
    steps = per_step["p_exceed_critical"].to_numpy()
    assert per_step["p_breach_critical"].iloc[-1] == pytest.approx(steps.max())
    assert per_step["p_breach_critical"].iloc[-1] <= 1 - np.prod(1 - steps)


def test_sample_paths_use_the_fraction_of_crossing_paths():
    times = pd.date_range(START, periods=4, freq="h")
    paths = {0: [50, 85, 60, 60], 1: [50, 60, 70, 90], 2: [50, 60, 70, 75], 3: [40, 40, 40, 40]}
    samples = pd.concat(
        pd.DataFrame(
            {"resource_id": "r1", "metric": CPU, "timestamp": times, "sample": k, "value": v}
        )
        for k, v in paths.items()
    )
    forecasts = fan("r1", CPU, [50.0, 60.0, 60.0, 60.0])
    per_step = breach_probabilities(
        forecasts, {CPU: {"warning": 70, "critical": 80}}, samples=samples
    ).per_step
    assert (per_step["method"] == "sample_paths").all()
    # Crossing 80 by each hour: none, path 0, path 0 (it fell back), paths 0 and 1.
    assert per_step["p_breach_critical"].tolist() == [0.0, 0.25, 0.25, 0.5]
    assert per_step["p_exceed_critical"].tolist() == [0.0, 0.25, 0.0, 0.25]


# --- act-by, days until full, headroom ---------------------------------------------------------


def test_act_by_is_median_eta_minus_lead_and_margin():
    ramp = 40.0 + 0.25 * np.arange(168)  # reaches 80 at hour 160: act_by = day 6.67 - 3 days
    forecasts, past, table = one_resource(ramp, flat(40, 168))
    cfg = config(lead_time_days=2, safety_margin_days=1.5)
    cpu = row(assess_risk(forecasts, past, table, cfg).risk_report, "r1", CPU)
    eta = START + int(np.argmax(ramp >= 80)) * HOUR
    assert cpu["eta_p50"] == eta
    assert cpu["act_by"] == eta - pd.Timedelta(days=3.5)
    assert cpu["act_by_basis"] == "critical"
    assert not cpu["act_now"]
    # A lead time longer than the time left makes act_by past: act now, critical risk.
    urgent = row(
        assess_risk(forecasts, past, table, config(lead_time_days=7)).risk_report, "r1", CPU
    )
    assert urgent["act_by"] == eta - pd.Timedelta(days=8)
    assert urgent["act_now"]
    assert urgent["finding"] == "at_risk"
    assert urgent["risk_score"] == 4


def test_act_by_falls_back_to_warning_and_days_until_full_uses_100_percent():
    reaches_75 = np.minimum(60.0 + 0.5 * np.arange(96), 75.0)  # warning 70, never critical 80
    full_ramp = 80.0 + 0.25 * np.arange(96)  # memory reaches 100 at hour 80
    forecasts, past, table = one_resource(reaches_75, full_ramp)
    report = assess_risk(forecasts, past, table, config()).risk_report
    cpu, mem = row(report, "r1", CPU), row(report, "r1", MEM)
    warn_eta = START + int(np.argmax(reaches_75 >= 70)) * HOUR
    assert pd.isna(cpu["eta_p50"])
    assert cpu["act_by"] == warn_eta - pd.Timedelta(days=3)
    assert cpu["act_by_basis"] == "warning"
    assert math.isnan(cpu["days_until_full"])
    assert mem["days_until_full"] == pytest.approx(int(np.argmax(full_ramp >= 100)) / 24)
    # Headroom at the P90 peak in points: critical - peak (zero-width fan: P90 = mean).
    assert cpu["headroom_pct"] == pytest.approx(80 - 75)
    assert mem["headroom_pct"] == pytest.approx(95 - full_ramp.max())


def test_byte_headroom_is_relative_to_the_observed_maximum_and_has_no_probabilities():
    forecasts, past, table = one_resource(flat(30), flat(30))
    net = fan("r1", NET, np.full(96, 1200.0))
    past = pd.concat([past, history("r1", NET, [800.0, 1000.0], hours=48)])
    report = assess_risk(pd.concat([forecasts, net]), past, table, config()).risk_report
    network = row(report, "r1", NET)
    assert network["headroom_pct"] == pytest.approx(100 * (1000 - 1200) / 1000)
    assert math.isnan(network["p_breach_critical"]) and math.isnan(network["p_breach_warning"])
    assert pd.isna(network["eta_p50"])
    assert "no_threshold" in network["metric_reason_codes"]


def test_service_overrides_change_the_thresholds_of_one_service():
    ramp = 60.0 + 0.5 * np.arange(96)
    forecasts = pd.concat(
        [fan(r, m, ramp if m == CPU else flat(40)) for r in ("a1", "b1") for m in (CPU, MEM)]
    )
    past = pd.concat([history(r, m, [40.0], hours=336) for r in ("a1", "b1") for m in (CPU, MEM)])
    table = resources(("a1", "api", "mid.2x"), ("b1", "batch", "mid.2x"))
    cfg = config(service_overrides={"api": {CPU: {"critical": 75}}})
    report = assess_risk(forecasts, past, table, cfg).risk_report
    assert row(report, "a1", CPU)["eta_p50"] == START + int(np.argmax(ramp >= 75)) * HOUR
    assert row(report, "b1", CPU)["eta_p50"] == START + int(np.argmax(ramp >= 80)) * HOUR
    assert row(report, "a1", CPU)["warning_threshold"] == 70  # merged with the global level


# --- capacity plan and right-sizing -----------------------------------------------------------


def test_recommended_instance_count_on_a_hand_computed_service():
    # Two mid.2x (2 vCPU, 8 GiB) at CPU P90 84 % and memory P90 50 %.
    # CPU: 2 x 0.84 x 2 = 3.36 vCPU; one instance at 70 % target = 1.4 vCPU -> ceil(2.4) = 3;
    #      buffer 10 %: ceil(3.3) = 4.  Memory: 2 x 0.5 x 8 = 8 GiB / 5.6 -> 2; ceil(2.2) = 3.
    forecasts = pd.concat(
        [fan(r, CPU, flat(84)) for r in ("w1", "w2")]
        + [fan(r, MEM, flat(50)) for r in ("w1", "w2")]
    )
    past = pd.concat([history(r, m, [50.0], hours=336) for r in ("w1", "w2") for m in (CPU, MEM)])
    table = resources(("w1", "web", "mid.2x"), ("w2", "web", "mid.2x"))
    plan = assess_risk(forecasts, past, table, config()).service_capacity.set_index("service")
    web = plan.loc["web"]
    assert web["cpu_peak_demand_p90_vcpu"] == pytest.approx(3.36)
    assert web["memory_peak_demand_p90_gib"] == pytest.approx(8.0)
    assert web["cpu_required_instances"] == 4
    assert web["memory_required_instances"] == 3
    assert web["recommended_instances"] == 4
    assert web["binding_dimension"] == "cpu"
    assert web["current_instances"] == 2
    assert web["advice"] == "scale_out"
    assert web["monthly_cost_delta_usd"] == pytest.approx(2 * 0.10 * HOURS_PER_MONTH)
    assert not web["below_observed_peak"]


def test_scale_in_below_the_observed_peak_is_flagged():
    # Forecast 10 % CPU, 10 % memory on 3 instances: 0.6 vCPU -> 1 instance (buffer: ceil(1.1) = 2).
    # The history peaked at 95 % CPU: 3 x 0.95 x 2 = 5.7 vCPU -> ceil(5.7 / 1.4) = 5 instances.
    ids = ("w1", "w2", "w3")
    forecasts = pd.concat([fan(r, m, flat(10)) for r in ids for m in (CPU, MEM)])
    past = pd.concat(
        [history(r, CPU, [10.0, 95.0], hours=336) for r in ids]
        + [history(r, MEM, [10.0], hours=336) for r in ids]
    )
    table = resources(*[(r, "web", "mid.2x") for r in ids])
    web = assess_risk(forecasts, past, table, config()).service_capacity.iloc[0]
    assert web["recommended_instances"] == 2
    assert web["advice"] == "scale_in"
    assert web["observed_peak_instances"] == 5
    assert web["below_observed_peak"]
    assert "below observed peak" in web["note"]


def test_right_sizing_picks_the_cheapest_adequate_type_with_exact_cost():
    # big.4x (4 vCPU, 16 GiB, 0.20 $/h) at P90 10 % CPU and 15 % memory: 0.4 vCPU, 2.4 GiB.
    # At most 70 % needs >= 0.571 vCPU and >= 3.43 GiB: tight.1x (3 GiB -> 80 %, 0.03 $/h)
    # fails; small.2x (2 vCPU 20 %, 4 GiB 60 %) at 0.04 $/h is the cheapest that fits, cheaper
    # than the smaller lean.1x (0.045 $/h).
    forecasts, past, table = one_resource(flat(10), flat(15), instance_type="big.4x")
    result = assess_risk(forecasts, past, table, config())
    cpu = row(result.risk_report, "r1", CPU)
    assert cpu["finding"] == "over_provisioned"
    assert cpu["recommended_instance_type"] == "small.2x"
    assert cpu["monthly_cost_delta_usd"] == pytest.approx((0.04 - 0.20) * 730)
    assert result.summary["total_monthly_savings_usd"] == pytest.approx(
        (0.20 - 0.04) * 730, abs=0.01
    )
    assert result.summary["total_monthly_cost_delta_usd"] == pytest.approx(
        (0.04 - 0.20) * 730, abs=0.01
    )
    assert "cpu_over_provisioned;memory_over_provisioned" in cpu["reason_codes"]


def test_right_sizing_grows_an_under_provisioned_type_to_the_cheapest_larger_fit():
    # mid.2x (2 vCPU, 8 GiB) at P90 85 % CPU: larger types keeping >= 8 GiB are wide.4x
    # (CPU 42.5 %, 0.15 $/h) and big.4x (0.20 $/h); small.2x has less memory and is excluded.
    forecasts, past, table = one_resource(flat(85), flat(40))
    cpu = row(assess_risk(forecasts, past, table, config()).risk_report, "r1", CPU)
    assert cpu["sizing"] == "under_provisioned"
    assert cpu["recommended_instance_type"] == "wide.4x"
    assert cpu["monthly_cost_delta_usd"] == pytest.approx((0.15 - 0.10) * 730)


def test_first_to_run_out_picks_the_earlier_dimension_then_the_likelier():
    cpu_ramp = 60.0 + 0.2 * np.arange(120)  # critical 80 at hour 100
    mem_ramp = 85.0 + 0.2 * np.arange(120)  # critical 95 at hour 50
    forecasts, past, table = one_resource(cpu_ramp, mem_ramp)
    result = assess_risk(forecasts, past, table, config())
    assert set(result.risk_report["first_to_run_out"]) == {MEM}
    assert result.service_capacity.iloc[0]["first_to_run_out"] == MEM
    # Same median crossing hour: the dimension more likely to breach wins (memory here, so the
    # alphabetical order of the metric names cannot be what decides).
    plateau = np.r_[np.full(50, 70.0), np.full(70, 80.5)]  # CPU critical 80, barely above
    steep = np.r_[np.full(50, 85.0), np.linspace(95, 100, 70)]  # memory critical 95 from hour 50
    forecasts, past, table = one_resource(plateau, steep, sd=3.0)
    report = assess_risk(forecasts, past, table, config()).risk_report
    cpu, mem = row(report, "r1", CPU), row(report, "r1", MEM)
    assert cpu["eta_p50"] == mem["eta_p50"] == START + 50 * HOUR
    assert mem["p_breach_critical"] > cpu["p_breach_critical"]
    assert cpu["first_to_run_out"] == MEM


# --- history evidence: saturation and confidence -----------------------------------------------


def test_pegged_history_sets_the_saturation_flag():
    forecasts, _, table = one_resource(flat(95), flat(40))
    pegged = history("r1", CPU, np.r_[np.full(300, 60.0), np.full(36, 100.0)])
    calm = history("r1", MEM, [40.0], hours=336)
    report = assess_risk(forecasts, pd.concat([pegged, calm]), table, config()).risk_report
    cpu, mem = row(report, "r1", CPU), row(report, "r1", MEM)
    assert cpu["saturated"] and not mem["saturated"]
    assert "demand_hidden_by_ceiling" in cpu["metric_reason_codes"]
    assert "cpu_demand_hidden_by_ceiling" in cpu["reason_codes"]


def test_a_run_of_hourly_maxima_at_the_ceiling_also_counts_as_saturated():
    forecasts, _, table = one_resource(flat(60), flat(40))
    means = np.full(336, 60.0)
    run = np.where(np.arange(336) >= 330, 100.0, 70.0)  # the last 6 hours peak at 100
    short_run = np.where(np.arange(336) >= 331, 100.0, 70.0)  # only 5 hours
    calm = history("r1", MEM, [40.0], hours=336)
    flagged = assess_risk(
        forecasts, pd.concat([history("r1", CPU, means, value_max=run), calm]), table, config()
    ).risk_report
    unflagged = assess_risk(
        forecasts,
        pd.concat([history("r1", CPU, means, value_max=short_run), calm]),
        table,
        config(),
    ).risk_report
    assert row(flagged, "r1", CPU)["saturated"]
    assert not row(unflagged, "r1", CPU)["saturated"]


def test_short_history_lowers_confidence():
    ramp = 40.0 + 0.1 * np.arange(96)
    long_fc, long_past, table = one_resource(ramp, flat(40), sd=2.0, hist_hours=14 * 24)
    short_fc, short_past, _ = one_resource(ramp, flat(40), sd=2.0, hist_hours=96)
    long_cpu = row(assess_risk(long_fc, long_past, table, config()).risk_report, "r1", CPU)
    short_cpu = row(assess_risk(short_fc, short_past, table, config()).risk_report, "r1", CPU)
    assert short_cpu["history_hours"] == 96
    assert short_cpu["confidence"] == pytest.approx(long_cpu["confidence"] * 96 / 168, abs=1e-3)
    assert short_cpu["confidence"] < long_cpu["confidence"]
    assert "short_history" in short_cpu["metric_reason_codes"]
    assert "short_history" not in long_cpu["metric_reason_codes"]
    # The width part: P10-P90 spans 2 x 1.2816 x 2 points of 100.
    assert long_cpu["confidence"] == pytest.approx(1 - 2 * 1.2816 * 2 / 100, abs=1e-3)


def test_quality_table_supplies_history_length_and_pegging_without_history():
    forecasts, _, table = one_resource(flat(30), flat(30), sd=2.0)
    quality = pd.DataFrame(
        {
            "resource_id": ["r1", "r1"],
            "metric": [CPU, MEM],
            "history_hours": [84.0, 400.0],
            "pegged_fraction": [0.5, 0.0],
            "too_short": [False, False],
        }
    )
    report = assess_risk(forecasts, None, table, config(), quality).risk_report
    cpu, mem = row(report, "r1", CPU), row(report, "r1", MEM)
    assert cpu["history_hours"] == 84.0 and mem["history_hours"] == 400.0
    assert cpu["confidence"] == pytest.approx(mem["confidence"] * 84 / 168, abs=1e-3)
    assert cpu["saturated"] and not mem["saturated"]


def test_a_series_whose_data_ended_early_is_marked():
    forecasts, past, table = one_resource(flat(30), flat(30))
    early = fan("r2", CPU, flat(30), start=START - 24 * HOUR)
    early_mem = fan("r2", MEM, flat(30), start=START - 24 * HOUR)
    table = pd.concat([table, resources(("r2", "web", "mid.2x"))])
    result = assess_risk(pd.concat([forecasts, early, early_mem]), past, table, config())
    assert "stopped_reporting" in row(result.risk_report, "r2", CPU)["metric_reason_codes"]
    assert "stopped_reporting" not in row(result.risk_report, "r1", CPU)["metric_reason_codes"]
    assert result.summary["generated_at"] == START.isoformat()


# --- report layout and summary ----------------------------------------------------------------


def test_report_is_sorted_and_summary_is_reproducible():
    risky = 60.0 + 0.5 * np.arange(96)
    forecasts = pd.concat(
        [
            fan("a1", CPU, risky),
            fan("a1", MEM, flat(40)),
            fan("b1", CPU, flat(10)),
            fan("b1", MEM, flat(10)),
        ]
    )
    past = pd.concat([history(r, m, [30.0], hours=336) for r in ("a1", "b1") for m in (CPU, MEM)])
    table = resources(("a1", "api", "mid.2x"), ("b1", "batch", "mid.2x"))
    first = assess_risk(forecasts, past, table, config())
    second = assess_risk(forecasts, past, table, config())
    report = first.risk_report
    assert report["risk_score"].is_monotonic_decreasing
    assert report.iloc[0]["resource_id"] == "a1" and report.iloc[0]["metric"] == CPU
    summary = first.summary
    assert summary == second.summary
    assert summary["generated_at"] == START.isoformat()
    assert summary["findings"]["at_risk"] == 1 and summary["findings"]["over_provisioned"] == 1
    assert summary["risk_scores"]["4"] == 1 and summary["risk_scores"]["0"] == 1
    top = summary["top_at_risk"][0]
    assert top["resource_id"] == "a1"
    assert top["eta_p50"] == (START + int(np.argmax(risky >= 80)) * HOUR).isoformat()
    for column in (
        "resource_id",
        "service",
        "metric",
        "finding",
        "risk_score",
        "confidence",
        "eta_p10",
        "eta_p50",
        "eta_p90",
        "act_by",
        "days_until_full",
        "headroom_pct",
        "first_to_run_out",
        "saturated",
        "recommended_instance_type",
        "monthly_cost_delta_usd",
        "reason_codes",
    ):
        assert column in report.columns
    assert list(first.daily_breach.columns) == [
        "resource_id",
        "metric",
        "day",
        "p_breach_warning",
        "p_breach_critical",
    ]


def test_resource_without_instance_type_is_reported_unsized():
    forecasts, past, _ = one_resource(flat(30), flat(30))
    table = resources(("r1", "unassigned", None))
    cpu = row(assess_risk(forecasts, past, table, config()).risk_report, "r1", CPU)
    assert cpu["sizing"] == "unsized"
    assert "instance_type_unknown" in cpu["reason_codes"]


# --- bad input --------------------------------------------------------------------------------


def test_empty_forecasts_are_rejected():
    _, past, table = one_resource(flat(30), flat(30))
    with pytest.raises(ForecastInputError, match="forecasts: the table is empty"):
        assess_risk(fan("r1", CPU, flat(30)).iloc[:0], past, table, config())


def test_forecasts_without_selected_rows_are_rejected():
    forecasts, past, table = one_resource(flat(30), flat(30))
    with pytest.raises(ForecastInputError, match=r"no rows with model == 'selected'.*autoets"):
        assess_risk(forecasts.assign(model="autoets"), past, table, config())


def test_a_missing_dimension_metric_is_named():
    forecasts, past, table = one_resource(flat(30), flat(30))
    with pytest.raises(ForecastInputError, match="'memory_utilization' is missing entirely"):
        assess_risk(forecasts[forecasts["metric"] == CPU], past, table, config())


def test_instance_type_absent_from_the_catalogue_is_named():
    forecasts, past, _ = one_resource(flat(30), flat(30))
    table = resources(("r1", "web", None)).assign(instance_type="x9.huge")
    with pytest.raises(
        ForecastInputError, match=re.escape("resource 'r1' has instance type 'x9.huge'")
    ):
        assess_risk(forecasts, past, table, config())


@pytest.mark.parametrize(
    ("thresholds", "key", "problem"),
    [
        (
            {CPU: {"warning": 90, "critical": 80}},
            "risk.thresholds.cpu_utilization",
            "must not exceed",
        ),
        (
            {CPU: {"warning": -5, "critical": 80}},
            "risk.thresholds.cpu_utilization.warning",
            "negative",
        ),
        (
            {MEM: {"warning": 80, "critical": 120}},
            "risk.thresholds.memory_utilization.critical",
            "above 100",
        ),
    ],
)
def test_out_of_range_thresholds_are_rejected(thresholds, key, problem):
    forecasts, past, table = one_resource(flat(30), flat(30))
    with pytest.raises(ConfigError, match=rf"'{key}'.*{problem}"):
        assess_risk(forecasts, past, table, config(thresholds=thresholds))


def test_out_of_range_service_override_is_rejected():
    forecasts, past, table = one_resource(flat(30), flat(30))
    cfg = config(service_overrides={"web": {CPU: {"critical": 150}}})
    with pytest.raises(
        ConfigError, match=re.escape("risk.service_overrides.web.cpu_utilization.critical")
    ):
        assess_risk(forecasts, past, table, cfg)


def test_a_stopped_series_never_drives_an_action():
    """A decommissioned instance whose last forecast crossed critical is not the top risk."""
    forecasts, past, table = one_resource(flat(30), flat(30))
    ramp = 60.0 + 1.0 * np.arange(96)  # crosses 90 (critical) after 30 h
    early = fan("r2", CPU, ramp, start=START - 72 * HOUR)
    early_mem = fan("r2", MEM, flat(30), start=START - 72 * HOUR)
    live = fan("r3", CPU, ramp, start=START)
    live_mem = fan("r3", MEM, flat(30), start=START)
    table = pd.concat([table, resources(("r2", "web", "mid.2x"), ("r3", "web", "mid.2x"))])
    result = assess_risk(
        pd.concat([forecasts, early, early_mem, live, live_mem]), past, table, config()
    )
    stopped, running = row(result.risk_report, "r2", CPU), row(result.risk_report, "r3", CPU)
    assert stopped["p_breach_critical"] == pytest.approx(running["p_breach_critical"])
    assert running["finding"] == "at_risk" and running["metric_risk_score"] == 4
    assert stopped["metric_finding"] == "optimized"
    assert stopped["metric_risk_score"] == 0
    assert not stopped["act_now"]
    assert pd.isna(stopped["recommended_instance_type"])  # nothing to right-size any more
    assert result.risk_report.iloc[0]["resource_id"] == "r3"
