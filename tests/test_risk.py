"""Capacity risk (Module 05) on hand-built forecasts with answers known from their construction."""

from __future__ import annotations

import dataclasses
import itertools
import math
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from capforecast.config import validated_config
from capforecast.contracts import CLEAN_COLUMNS, RESOURCE_COLUMNS, quantile_column
from capforecast.data import resample, validate
from capforecast.errors import ConfigError, ForecastInputError
from capforecast.risk.assess import assess_risk
from capforecast.risk.probability import (
    breach_probabilities,
    exceedance_probability,
    first_crossings,
)
from capforecast.risk.rightsizing import HOURS_PER_MONTH
from capforecast.settings import RiskSettings, etl_settings, risk_settings

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


def history(
    resource_id: str, metric: str, values, *, value_max=None, hours=None, lag_hours: int = 0
) -> pd.DataFrame:
    """Cleaned hourly history ending one hour (plus ``lag_hours``) before START."""
    values = np.asarray(values, dtype=float)
    if hours is not None:
        values = np.resize(values, hours)
    n = len(values)
    end = START - lag_hours * HOUR
    frame = pd.DataFrame(
        {
            "timestamp": pd.date_range(end - n * HOUR, periods=n, freq="h"),
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


def config(catalogue: dict | None = None, **risk) -> RiskSettings:
    """Risk settings of a validated config with these ``risk`` keys and the test catalogue."""
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
    cfg = validated_config({"risk": base, "etl": {"freq": "1h", "pegged_level": 99.0}})
    return dataclasses.replace(risk_settings(cfg), catalogue=catalogue or CATALOGUE)


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


def test_fan_ramp_breach_by_t_combines_the_comonotone_bound_and_independent_days():
    ramp = 50.0 + 0.4 * np.arange(120)
    sd = 4.0
    forecasts = fan("r1", CPU, ramp, sd)
    tables = breach_probabilities(forecasts, {CPU: {"warning": 70, "critical": 80}})
    step = tables.per_step
    exceed = step["p_exceed_critical"].to_numpy()
    # No history: max(comonotone, days as independent blocks), computed here by hand.
    comonotone = np.maximum.accumulate(exceed)
    expected, survived = [], 1.0
    for day in range(5):
        part = exceed[24 * day : 24 * (day + 1)]
        expected.extend(1.0 - survived * (1.0 - np.maximum.accumulate(part)))
        survived *= 1.0 - part.max()
    expected = np.maximum(comonotone, expected)
    assert np.allclose(step["p_breach_critical"], expected)
    assert (step["p_breach_critical"] >= comonotone - 1e-12).all()
    assert step["recurrence_critical"].isna().all()
    eta = first_crossings(step, "critical").iloc[0]
    # Never later than the hour the stored quantile reaches 80 (the comonotone bound's ETA) ...
    for prob, level in ((0.1, 0.9), (0.5, 0.5), (0.9, 0.1)):
        hour = int(np.argmax(ramp + Z[level] * sd >= 80))
        assert eta[f"eta_p{round(prob * 100)}"] <= START + hour * HOUR
    # ... and the P50 ETA is where the combined probability first reaches 0.5.
    assert eta["eta_p50"] == START + int(np.argmax(expected >= 0.5)) * HOUR
    # The day of the median crossing is the first day whose P(breach by end of day) >= 0.5.
    daily = tables.daily.set_index("day")["p_breach_critical"]
    median_day = eta["eta_p50"].floor("D")
    assert daily[median_day] >= 0.5
    assert daily[median_day - pd.Timedelta(days=1)] < 0.5
    assert list(tables.daily.columns[:3]) == ["resource_id", "metric", "day"]
    assert daily.is_monotonic_increasing


def test_a_weekly_recurring_breach_is_not_argued_away_by_the_fan():
    # Pegged for a few hours every week of the last four; the fan spreads that over the hours.
    hours = pd.date_range(START - pd.Timedelta(days=28), START - HOUR, freq="h")
    values = np.full(len(hours), 30.0)
    values[np.arange(len(hours)) % 168 == 100] = 100.0
    history = pd.DataFrame(
        {"resource_id": "r1", "metric": CPU, "timestamp": hours, "value": values}
    )
    forecasts = fan("r1", CPU, np.full(168, 40.0), 15.0)
    levels = {CPU: {"warning": 70, "critical": 90}}
    without = breach_probabilities(forecasts, levels).per_step
    with_history = breach_probabilities(forecasts, levels, history=history).per_step
    assert (with_history["recurrence_critical"] == 1.0).all()
    week = with_history["p_breach_critical"].iloc[-1]
    # mean(days, recurrence 1.0 over a whole week): at least a half, above the fan alone.
    assert week >= 0.5 and week > without["p_breach_critical"].iloc[-1]
    # Half of the weeks: the recurrence estimate is 1 - 0.5 ** (elapsed weeks).
    values[(np.arange(len(hours)) // 168) % 2 == 0] = 30.0  # weeks 1 and 3 of 4 stay calm
    half = history.assign(value=values)
    step = breach_probabilities(forecasts, levels, history=half).per_step
    # Weeks 0 and 2 back reached it, 1 and 3 did not; week k back weighs 0.7 ** k.
    share = (1 + 0.7**2) / (1 + 0.7 + 0.7**2 + 0.7**3)
    assert step["recurrence_critical"].to_numpy() == pytest.approx(share)
    days = breach_probabilities(forecasts, levels).per_step["p_breach_critical"].iloc[-1]
    assert step["p_breach_critical"].iloc[-1] == pytest.approx(max(days, (days + share) / 2))
    # A series that never reached it has recurrence 0: the fan alone, halved, but never below
    # the comonotone lower bound.
    calm = history.assign(value=30.0)
    step = breach_probabilities(forecasts, levels, history=calm).per_step
    assert (step["recurrence_critical"] == 0.0).all()
    comonotone = step["p_exceed_critical"].cummax()
    assert (step["p_breach_critical"] >= comonotone - 1e-12).all()
    assert step["p_breach_critical"].iloc[-1] <= without["p_breach_critical"].iloc[-1]


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
    # Two mid.2x (2 vCPU, 8 GiB) at CPU P90 84 % and memory P90 50 %, rounded once:
    # CPU: 2 x 0.84 x 2 = 3.36 vCPU x 1.1 (buffer) = 3.696 / 1.4 vCPU per instance at the 70 %
    #      target = 2.64 -> 3.  Memory: 2 x 0.5 x 8 = 8 GiB x 1.1 / 5.6 GiB = 1.57 -> 2.
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
    assert web["cpu_required_instances"] == 3
    assert web["memory_required_instances"] == 2
    assert web["recommended_instances"] == 3
    assert web["binding_dimension"] == "cpu"
    assert web["current_instances"] == 2
    assert web["advice"] == "scale_out"
    assert web["monthly_cost_delta_usd"] == pytest.approx(1 * 0.10 * HOURS_PER_MONTH)
    assert not web["below_observed_peak"]


def test_scale_in_below_the_observed_peak_is_flagged():
    # Forecast 10 % CPU, 10 % memory on 3 instances: 0.6 vCPU x 1.1 / 1.4 = 0.47 -> 1 instance.
    # The history peaked at 95 % CPU: 3 x 0.95 x 2 = 5.7 vCPU -> ceil(5.7 / 1.4) = 5 instances.
    ids = ("w1", "w2", "w3")
    forecasts = pd.concat([fan(r, m, flat(10)) for r in ids for m in (CPU, MEM)])
    past = pd.concat(
        [history(r, CPU, [10.0, 95.0], hours=336) for r in ids]
        + [history(r, MEM, [10.0], hours=336) for r in ids]
    )
    table = resources(*[(r, "web", "mid.2x") for r in ids])
    web = assess_risk(forecasts, past, table, config()).service_capacity.iloc[0]
    assert web["recommended_instances"] == 1
    assert web["advice"] == "scale_in"
    assert web["observed_peak_instances"] == 5
    assert web["below_observed_peak"]
    assert "below observed peak" in web["note"]


def test_right_sizing_picks_the_cheapest_adequate_type_with_exact_cost():
    # big.4x (4 vCPU, 16 GiB, 0.20 $/h) at P90 10 % CPU and 15 % memory: 0.4 vCPU, 2.4 GiB.
    # Peak + 10 % buffer at most 70 % needs >= 0.629 vCPU and >= 3.77 GiB: tight.1x (3 GiB)
    # fails; small.2x (2 vCPU 22 %, 4 GiB 66 %) at 0.04 $/h is the cheapest that fits, cheaper
    # than the smaller lean.1x (0.045 $/h).
    # (The step limit is lowered here: small.2x keeps a quarter of big.4x's memory.)
    forecasts, past, table = one_resource(flat(10), flat(15), instance_type="big.4x")
    result = assess_risk(forecasts, past, table, config(downsize_floor=0.1))
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
    assert cpu["finding"] == "at_risk"  # 85 % is above the 80 % critical level
    assert cpu["sizing"] == "upsize"
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
            "minimum 0",
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
    with pytest.raises(
        ConfigError, match=re.escape("risk.service_overrides.web.cpu_utilization.critical")
    ):
        assess_risk(
            forecasts, past, table, config(service_overrides={"web": {CPU: {"critical": 150}}})
        )


# --- live, lagging and stopped series --------------------------------------------------------


def lagging_resource(resource_id: str, lag: int, cpu_mean, mem_mean):
    """Forecasts and 14 days of history of a mid.2x whose data ends ``lag`` hours early."""
    start = START - lag * HOUR
    forecasts = pd.concat(
        [fan(resource_id, CPU, cpu_mean, start=start), fan(resource_id, MEM, mem_mean, start=start)]
    )
    past = pd.concat(
        [history(resource_id, m, [50.0], hours=336, lag_hours=lag) for m in (CPU, MEM)]
    )
    return forecasts, past, resources((resource_id, "web", "mid.2x"))


@pytest.mark.parametrize("lag", [1, 23, 24])
def test_a_series_ending_up_to_the_gap_before_the_fleet_is_live_and_scored(lag):
    forecasts, past, table = one_resource(flat(30), flat(30))
    cpu_ramp = 60.0 + np.arange(96)  # critical 80 after 20 h of its own forecast
    mem_ramp = 95.0 + 0.5 * np.arange(96)  # 100 % after 10 h
    late_fc, late_past, late_table = lagging_resource("r2", lag, cpu_ramp, mem_ramp)
    result = assess_risk(
        pd.concat([forecasts, late_fc]),
        pd.concat([past, late_past]),
        pd.concat([table, late_table]),
        config(),
    )
    cpu, mem = row(result.risk_report, "r2", CPU), row(result.risk_report, "r2", MEM)
    assert cpu["finding"] == "at_risk" and cpu["metric_risk_score"] == 4
    assert cpu["reporting_lag_hours"] == lag
    assert cpu["last_observed"] == START - (lag + 1) * HOUR
    assert f"reporting_lag_{lag}h" in cpu["metric_reason_codes"]
    assert "stopped" not in cpu["reason_codes"]
    # ETAs are absolute times on the series' own forecast; act_by and days_until_full are
    # measured from the fleet's forecast start (START), never negative.
    eta = START + (20 - lag) * HOUR
    assert cpu["eta_p50"] == eta
    assert cpu["act_by"] == eta - pd.Timedelta(days=3) and cpu["act_by_basis"] == "critical"
    assert cpu["act_now"]
    assert mem["days_until_full"] == pytest.approx(max(0.0, (10 - lag) / 24))
    assert result.summary["findings"]["stopped_reporting"] == 0
    assert result.summary["top_at_risk"][0]["resource_id"] == "r2"
    assert "r2" in set(result.daily_breach["resource_id"])


def test_a_missing_last_hourly_sample_does_not_hide_a_series():
    """The issue's case: the last bin of one series is a gap (missing or quarantined)."""
    forecasts, past, table = one_resource(flat(30), flat(30))
    ramp = 60.0 + np.arange(96)
    gappy = pd.concat([fan("r2", CPU, ramp), fan("r2", MEM, flat(30))])
    gappy_past = pd.concat([history("r2", m, [50.0], hours=336) for m in (CPU, MEM)])
    last_bin = gappy_past["timestamp"] == gappy_past["timestamp"].max()
    gappy_past.loc[last_bin, ["value", "value_max"]] = np.nan
    gappy_past.loc[last_bin, "is_gap"] = True
    result = assess_risk(
        pd.concat([forecasts, gappy]),
        pd.concat([past, gappy_past]),
        pd.concat([table, resources(("r2", "web", "mid.2x"))]),
        config(),
    )
    cpu = row(result.risk_report, "r2", CPU)
    assert cpu["reporting_lag_hours"] == 1
    assert cpu["finding"] == "at_risk" and cpu["risk_score"] == 4


@pytest.mark.parametrize("lag", [25, 72])
def test_a_series_silent_for_longer_than_the_gap_stopped_reporting(lag):
    forecasts, past, table = one_resource(flat(30), flat(30))
    ramp = 60.0 + np.arange(96)  # would be at risk, were it live
    late_fc, late_past, late_table = lagging_resource("r2", lag, ramp, flat(30))
    inputs = (
        pd.concat([forecasts, late_fc]),
        pd.concat([past, late_past]),
        pd.concat([table, late_table]),
    )
    result = assess_risk(*inputs, config())
    for metric in (CPU, MEM):
        stopped = row(result.risk_report, "r2", metric)
        assert stopped["finding"] == stopped["metric_finding"] == "stopped_reporting"
        assert stopped["risk_score"] == 0 and stopped["metric_risk_score"] == 0
        assert pd.isna(stopped["act_by"]) and pd.isna(stopped["act_by_basis"])
        assert not stopped["act_now"]
        assert pd.isna(stopped["recommended_instance_type"])  # never sized
    # Its forecast stays on record (P(critical) = 1) but drives nothing, not even a reason code.
    assert row(result.risk_report, "r2", CPU)["p_breach_critical"] == 1.0
    assert row(result.risk_report, "r2", CPU)["reason_codes"] == (
        "cpu_stopped_reporting;memory_stopped_reporting"
    )
    assert set(result.daily_breach["resource_id"]) == {"r1"}
    summary = result.summary
    assert summary["findings"] == {
        "at_risk": 0,
        "under_provisioned": 0,
        "over_provisioned": 0,
        "optimized": 1,
        "stopped_reporting": 1,
        "no_data": 0,
    }
    assert sum(summary["risk_scores"].values()) == summary["scored_resources"] == 1
    assert summary["stopped_series"] == 2
    assert summary["stopped_reporting"] == [
        {
            "resource_id": "r2",
            "service": "web",
            "last_observed": (START - (lag + 1) * HOUR).isoformat(),
            "reporting_lag_hours": lag,
        }
    ]
    assert summary["top_at_risk"] == []
    # The capacity plan sums live demand only: r1's 30 % of 2 vCPU.
    web = result.service_capacity.iloc[0]
    assert web["cpu_peak_demand_p90_vcpu"] == pytest.approx(0.6)
    assert "1 instance(s) without a live CPU or memory forecast" in web["note"]
    # A longer configured gap makes the same series live, and at risk.
    relaxed = assess_risk(*inputs, config(stopped_reporting_hours=lag + 1))
    assert row(relaxed.risk_report, "r2", CPU)["finding"] == "at_risk"


def test_stopped_reporting_hours_has_a_schema_default_and_is_validated():
    assert validated_config({})["risk"]["stopped_reporting_hours"] == 24
    with pytest.raises(ConfigError, match=re.escape("'risk.stopped_reporting_hours'")):
        validated_config({"risk": {"stopped_reporting_hours": 0}})


# --- right-sizing that does no harm -----------------------------------------------------------


def pegged_cpu_history(resource_id: str = "r1") -> pd.DataFrame:
    """14 days of CPU history whose last 36 hours sit at the ceiling, calm memory."""
    return pd.concat(
        [
            history(resource_id, CPU, np.r_[np.full(300, 10.0), np.full(36, 100.0)]),
            history(resource_id, MEM, [10.0], hours=336),
        ]
    )


def test_a_pegged_resource_is_upsized_never_downsized():
    # A calm 10 % forecast of a CPU pegged for 36 hours: the forecast is a lower bound of the
    # demand (the old rule shrank such VMs to the cheapest type).
    forecasts, _, table = one_resource(flat(10), flat(10))
    cpu = row(assess_risk(forecasts, pegged_cpu_history(), table, config()).risk_report, "r1", CPU)
    assert cpu["saturated"] and cpu["finding"] == "under_provisioned"
    # Cheapest type with more vCPU than mid.2x and at least its 8 GiB: wide.4x.
    assert cpu["sizing"] == "upsize" and cpu["recommended_instance_type"] == "wide.4x"
    assert cpu["monthly_cost_delta_usd"] == pytest.approx((0.15 - 0.10) * HOURS_PER_MONTH)
    assert "cpu_pegged_upsize" in cpu["reason_codes"]
    # Already at the catalogue's most vCPU: hold (scale out / investigate), never smaller.
    big_fc, _, big_table = one_resource(flat(10), flat(10), instance_type="big.4x")
    big = row(assess_risk(big_fc, pegged_cpu_history(), big_table, config()).risk_report, "r1", CPU)
    assert big["sizing"] == "hold" and big["recommended_instance_type"] == "big.4x"
    assert big["monthly_cost_delta_usd"] == 0
    assert "largest_type_in_catalogue" in big["reason_codes"]


def test_a_resource_pegged_earlier_in_its_history_is_not_over_provisioned():
    # A big.4x idle now, whose hourly CPU maxima hit 100 % in every third hour of its first
    # week (11 % of its 3 weeks; the last week is calm, so it is not saturated now).
    hours = 21 * 24
    maxima = np.where((np.arange(hours) < 168) & (np.arange(hours) % 3 == 0), 100.0, 30.0)
    forecasts, _, table = one_resource(flat(10), flat(10), instance_type="big.4x")
    past = pd.concat(
        [
            history("r1", CPU, [10.0], hours=hours, value_max=maxima),
            history("r1", MEM, [10.0], hours=hours),
        ]
    )
    result = assess_risk(forecasts, past, table, config())
    cpu = row(result.risk_report, "r1", CPU)
    assert not cpu["saturated"] and cpu["pegged_in_history"]
    assert cpu["metric_finding"] == "optimized"
    assert "pegged_in_history" in cpu["metric_reason_codes"]
    assert cpu["sizing"] == "hold" and cpu["monthly_cost_delta_usd"] == 0
    assert result.summary["total_monthly_savings_usd"] == 0
    # The same idle resource without those peaks is over-provisioned and shrunk.
    calm = past.assign(value_max=past["value"])
    shrunk = row(assess_risk(forecasts, calm, table, config()).risk_report, "r1", CPU)
    assert shrunk["finding"] == "over_provisioned" and shrunk["sizing"] == "downsize"


def test_a_resource_short_on_disk_is_never_shrunk():
    forecasts, past, table = one_resource(flat(10), flat(10), instance_type="big.4x")
    disk = fan("r1", DISK, flat(85))  # above the 80 % warning level the whole horizon
    disk_past = history("r1", DISK, [85.0], hours=336)
    report = assess_risk(
        pd.concat([forecasts, disk]), pd.concat([past, disk_past]), table, config()
    ).risk_report
    cpu = row(report, "r1", CPU)
    assert cpu["metric_finding"] == "over_provisioned"  # CPU alone would be shrunk
    assert cpu["finding"] == "under_provisioned"
    assert cpu["sizing"] == "hold" and cpu["recommended_instance_type"] == "big.4x"
    assert "capacity_needed_elsewhere" in cpu["reason_codes"]


def test_right_sizing_never_shrinks_a_resource_that_needs_capacity():
    """Every catalogue type x CPU x memory level: only over-provisioned resources get cheaper,
    and nothing that needs capacity gets less of any dimension or a lower price."""
    levels = (10.0, 50.0, 75.0, 92.0)
    fleet = [
        (f"{kind}-{cpu:g}-{mem:g}", kind, cpu, mem)
        for kind in CATALOGUE
        for cpu in levels
        for mem in levels
    ]
    forecasts = pd.concat(
        [fan(r, CPU, flat(cpu), sd=2.0) for r, _, cpu, _ in fleet]
        + [fan(r, MEM, flat(mem), sd=2.0) for r, _, _, mem in fleet]
    )
    past = pd.concat(
        [history(r, CPU, [cpu], hours=336) for r, _, cpu, _ in fleet]
        + [history(r, MEM, [mem], hours=336) for r, _, _, mem in fleet]
    )
    table = resources(*[(r, "web", kind) for r, kind, _, _ in fleet])
    report = assess_risk(forecasts, past, table, config()).risk_report
    per_resource = report.drop_duplicates("resource_id").set_index("resource_id")
    catalogue = pd.DataFrame(CATALOGUE).T.astype({"vcpu": float, "memory_gib": float})
    now = catalogue.loc[per_resource["instance_type"]].set_index(per_resource.index)
    new = catalogue.loc[per_resource["recommended_instance_type"]].set_index(per_resource.index)
    needy = per_resource["finding"].isin(["at_risk", "under_provisioned"])
    assert needy.sum() > 40 and (per_resource["finding"] == "over_provisioned").sum() > 0
    for column in ("vcpu", "memory_gib", "hourly_price_usd"):
        assert (new.loc[needy, column] >= now.loc[needy, column]).all(), column
    cheaper = per_resource["monthly_cost_delta_usd"] < 0
    assert cheaper.any()
    assert (per_resource.loc[cheaper, "finding"] == "over_provisioned").all()


@pytest.mark.parametrize(("buffer_pct", "expected"), [(0, "small.2x"), (10, "mid.2x")])
def test_right_sizing_keeps_the_buffer_above_the_forecast_peak(buffer_pct, expected):
    # big.4x (4 vCPU, 16 GiB) at P90 10 % CPU and 17 % memory = 2.72 GiB: 68 % of small.2x's
    # 4 GiB is under the 70 % target alone but 74.8 % with a 10 % buffer; mid.2x's 8 GiB
    # (34 %, 37.4 % with the buffer) is the cheapest that keeps it.
    forecasts, past, table = one_resource(flat(10), flat(17), instance_type="big.4x")
    cfg = config(buffer_pct=buffer_pct, downsize_floor=0.1)
    cpu = row(assess_risk(forecasts, past, table, cfg).risk_report, "r1", CPU)
    assert cpu["finding"] == "over_provisioned" and cpu["sizing"] == "downsize"
    assert cpu["recommended_instance_type"] == expected


@pytest.mark.parametrize(
    ("observed", "missing", "capacity", "expected"),
    [(CPU, "memory", "memory_gib", "mem.2x"), (MEM, "cpu", "vcpu", "wide.4x")],
)
def test_an_unobserved_dimension_does_not_veto_and_is_never_shrunk(
    observed, missing, capacity, expected
):
    # A big.4x idling at 12 % on its only observed dimension (CloudWatch without the agent has
    # no memory): over-provisioned on what is seen; candidates keep the unseen dimension.
    cfg = config(
        catalogue={
            **CATALOGUE,
            "mem.2x": {"vcpu": 2, "memory_gib": 16, "hourly_price_usd": 0.12, "family": "mem"},
        }
    )
    result = assess_risk(
        fan("r1", observed, flat(12)),
        history("r1", observed, [12.0], hours=336),
        resources(("r1", "web", "big.4x")),
        cfg,
    )
    seen = row(result.risk_report, "r1", observed)
    assert seen["finding"] == "over_provisioned"
    assert f"{missing}_not_observed" in seen["reason_codes"]
    assert f"{missing}_not_shrunk" in seen["reason_codes"]
    assert seen["sizing"] == "downsize" and seen["recommended_instance_type"] == expected
    assert cfg.catalogue[expected][capacity] >= CATALOGUE["big.4x"][capacity]
    assert seen["monthly_cost_delta_usd"] < 0
    assert f"{missing} not sized" in result.service_capacity.iloc[0]["note"]


# --- service capacity rounds once --------------------------------------------------------------


@pytest.mark.parametrize("buffer_pct", [0, 10])
def test_a_service_at_exactly_its_target_gets_no_extra_instance(buffer_pct):
    # Ten mid.2x whose P90 CPU plus buffer is exactly the 70 % target: ten instances are right
    # (rounding twice, ceil(ceil(9.09) x 1.1) = 11, added one to every loaded service).
    ids = [f"w{i}" for i in range(10)]

    def plan(level: float) -> pd.Series:
        forecasts = pd.concat(
            [fan(r, CPU, flat(level)) for r in ids] + [fan(r, MEM, flat(30)) for r in ids]
        )
        past = pd.concat([history(r, m, [30.0], hours=336) for r in ids for m in (CPU, MEM)])
        table = resources(*[(r, "web", "mid.2x") for r in ids])
        cfg = config(buffer_pct=buffer_pct)
        return assess_risk(forecasts, past, table, cfg).service_capacity.iloc[0]

    at_target = 70.0 / (1 + buffer_pct / 100)
    web = plan(at_target)
    assert web["cpu_required_instances"] == 10
    assert web["recommended_instances"] == 10 and web["advice"] == "hold"
    assert web["monthly_cost_delta_usd"] == 0
    assert plan(at_target * 1.01)["recommended_instances"] == 11


def test_a_service_with_a_pegged_instance_is_never_told_to_scale_in():
    ids = ("w1", "w2", "w3")
    forecasts = pd.concat([fan(r, m, flat(10)) for r in ids for m in (CPU, MEM)])
    past = pd.concat(
        [pegged_cpu_history("w1")]
        + [history(r, m, [10.0], hours=336) for r in ids[1:] for m in (CPU, MEM)]
    )
    table = resources(*[(r, "web", "mid.2x") for r in ids])
    web = assess_risk(forecasts, past, table, config()).service_capacity.iloc[0]
    assert web["saturated"]
    assert web["recommended_instances"] == 3 and web["advice"] == "hold"
    assert "no scale-in while instances are pegged" in web["note"]


# --- honest summary ---------------------------------------------------------------------------


def test_summary_counts_at_risk_by_finding_and_savings_from_over_provisioned_only():
    specs = {
        "a1": ("mid.2x", 60.0 + 0.5 * np.arange(96), flat(40)),  # crosses critical 80
        "u1": ("mid.2x", flat(75), flat(40)),  # above target and warning, P(critical) = 0
        "o1": ("big.4x", flat(10), flat(10)),  # idle: shrink to tight.1x (0.03 USD/h)
    }
    forecasts = pd.concat(
        [fan(r, CPU, cpu) for r, (_, cpu, _) in specs.items()]
        + [fan(r, MEM, mem) for r, (_, _, mem) in specs.items()]
    )
    past = pd.concat(
        [history(r, CPU, cpu[:1], hours=336) for r, (_, cpu, _) in specs.items()]
        + [history(r, MEM, mem[:1], hours=336) for r, (_, _, mem) in specs.items()]
    )
    table = resources(*[(r, "web", kind) for r, (kind, _, _) in specs.items()])
    stopped_fc, stopped_past, stopped_table = lagging_resource("s1", 48, flat(10), flat(10))
    result = assess_risk(
        pd.concat([forecasts, stopped_fc]),
        pd.concat([past, stopped_past]),
        pd.concat([table, stopped_table]),
        config(downsize_floor=0.1),
    )
    summary = result.summary
    assert summary["findings"] == {
        "at_risk": 1,
        "under_provisioned": 1,
        "over_provisioned": 1,
        "optimized": 0,
        "stopped_reporting": 1,
        "no_data": 0,
    }
    assert {top["resource_id"] for top in summary["top_at_risk"]} == {"a1"}
    assert row(result.risk_report, "u1", CPU)["p_breach_critical"] == 0
    shrink = (0.03 - 0.20) * HOURS_PER_MONTH
    grow = (0.15 - 0.10) * HOURS_PER_MONTH  # u1 and a1 both move to wide.4x
    assert summary["total_monthly_savings_usd"] == pytest.approx(-shrink, abs=0.01)
    assert summary["total_monthly_cost_delta_usd"] == pytest.approx(shrink + 2 * grow, abs=0.01)
    assert "act_by_basis" in summary["assumptions"]["act_by"]


# --- real data: pegged Bitbrains VMs ----------------------------------------------------------

BITBRAINS = Path(__file__).resolve().parent / "data" / "bitbrains-rnd"
# The m5.2xlarge VMs of the issue, pegged at 100 % CPU a fifth to a quarter of the time, and an
# idle m5.4xlarge that right-sizing should shrink.
PEGGED_VMS = ("bb-vm055", "bb-vm067", "bb-vm069", "bb-vm071")
# Idle for its first six weeks (CPU and memory under 4 % at the 99th percentile), m5.xlarge.
IDLE_VM = "bb-vm111"
TRACE_START = pd.Timestamp("2013-07-01", tz="UTC")


def bitbrains_weeks(ids, weeks: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Validated hourly data of the VMs: the first ``weeks`` weeks and the week after."""
    etl = etl_settings(validated_config({})["etl"])
    frames = []
    for resource_id in ids:
        raw = pd.read_parquet(BITBRAINS / "long" / f"{resource_id}.parquet")
        kept = validate.validate_rows(raw, etl, f"{resource_id}.parquet").kept
        frames.append(resample.resample_series(kept, etl))
    clean = pd.concat(frames, ignore_index=True)
    cut = TRACE_START + pd.Timedelta(weeks=weeks)
    held_back = clean[
        (clean["timestamp"] >= cut) & (clean["timestamp"] < cut + pd.Timedelta(weeks=1))
    ]
    return clean[clean["timestamp"] < cut], held_back


def calm_forecast(clean: pd.DataFrame, hours: int = 168) -> pd.DataFrame:
    """Flat at each series' median of its last week, fan from its interquartile spread: a
    smooth forecast that misses the pegged hours (the case in which right-sizing did harm)."""
    frames = []
    for (resource_id, metric), part in clean.dropna(subset=["value"]).groupby(
        ["resource_id", "metric"]
    ):
        last_week = part["value"].tail(168)
        spread = (last_week.quantile(0.75) - last_week.quantile(0.25)) / 1.349
        start = part["timestamp"].max() + HOUR
        frame = fan(resource_id, metric, np.full(hours, last_week.median()), spread, start=start)
        levels = [quantile_column(level) for level in LEVELS]
        frame[levels] = frame[levels].clip(lower=0)
        frames.append(frame)
    return pd.concat(frames, ignore_index=True)


@pytest.mark.skipif(not BITBRAINS.is_dir(), reason="Bitbrains fixture not present")
def test_pegged_bitbrains_vms_are_never_downsized():
    ids = (*PEGGED_VMS, IDLE_VM)
    history_weeks, held_back = bitbrains_weeks(ids, weeks=6)
    table = pd.read_csv(BITBRAINS / "resources.csv")
    table = table[table["resource_id"].isin(ids)]
    result = assess_risk(
        calm_forecast(history_weeks), history_weeks, table, risk_settings(validated_config({}))
    )
    per_resource = result.risk_report.drop_duplicates("resource_id").set_index("resource_id")
    cpu = result.risk_report[result.risk_report["metric"] == CPU].set_index("resource_id")
    catalogue = pd.DataFrame(validated_config({})["catalogue"]).T
    for vm in PEGGED_VMS:
        assert cpu.loc[vm, "saturated"] or cpu.loc[vm, "pegged_in_history"], vm
        assert per_resource.loc[vm, "finding"] != "over_provisioned", vm
        old = catalogue.loc[per_resource.loc[vm, "instance_type"]]
        new = catalogue.loc[per_resource.loc[vm, "recommended_instance_type"]]
        assert new["vcpu"] >= old["vcpu"] and new["memory_gib"] >= old["memory_gib"], vm
        assert per_resource.loc[vm, "monthly_cost_delta_usd"] >= 0, vm
    assert cpu.loc[list(PEGGED_VMS), "saturated"].sum() >= 3
    # The held-back week proves the call: every one of them hit the ceiling again.
    week_cpu = held_back[held_back["metric"] == CPU]
    pegged_again = (week_cpu["value_max"] >= 99).groupby(week_cpu["resource_id"]).mean()
    assert (pegged_again[list(PEGGED_VMS)] >= 0.1).all()
    # Right-sizing still shrinks what is idle: the savings are the idle VM's only.
    assert per_resource.loc[IDLE_VM, "finding"] == "over_provisioned"
    idle_delta = per_resource.loc[IDLE_VM, "monthly_cost_delta_usd"]
    assert idle_delta < 0
    assert result.summary["total_monthly_savings_usd"] == pytest.approx(-idle_delta, abs=0.01)


def test_right_sizing_never_goes_below_the_peak_of_the_last_four_weeks():
    # A big.4x forecast idle at 2 % CPU and memory; three weeks ago its memory peaked at 25 %
    # (4 GiB of 16). On the forecast alone the cheapest fit is tight.1x (3 GiB): 133 % of it.
    hours = 21 * 24
    memory = np.where(np.arange(hours) == 24, 25.0, 2.0)
    forecasts, _, table = one_resource(flat(2), flat(2), instance_type="big.4x")
    past = pd.concat(
        [history("r1", CPU, [2.0], hours=hours), history("r1", MEM, memory, hours=hours)]
    )
    report = assess_risk(forecasts, past, table, config(downsize_floor=0.1)).risk_report
    mem = row(report, "r1", MEM)
    assert mem["finding"] == "over_provisioned" and mem["sizing"] == "downsize"
    # 4 GiB plus the 10 % buffer must stay under the 70 % target: mid.2x (8 GiB) is cheapest.
    assert mem["recommended_instance_type"] == "mid.2x"
    # Five weeks ago is outside the lookback: the same peak then no longer holds the size up.
    old = np.where(np.arange(35 * 24) == 24, 25.0, 2.0)
    past = pd.concat(
        [history("r1", CPU, [2.0], hours=35 * 24), history("r1", MEM, old, hours=35 * 24)]
    )
    report = assess_risk(forecasts, past, table, config(downsize_floor=0.1)).risk_report
    assert row(report, "r1", MEM)["recommended_instance_type"] == "tight.1x"


@pytest.mark.parametrize(
    ("metric", "short"),
    [
        (NET, True),  # bytes moved rising past anything seen: more load
        ("request_latency", True),
        ("memory_available_bytes", False),  # free memory rising: good news
        ("aws_ec2_cpu_credit_balance", False),  # unclassified: direction unknown
    ],
)
def test_growth_past_the_observed_peak_is_a_shortage_only_for_demand_metrics(metric, short):
    forecasts, past, table = one_resource(flat(30), flat(30))
    rising = 1000.0 + 10.0 * np.arange(96)
    forecasts = pd.concat([forecasts, fan("r1", metric, rising)])
    past = pd.concat([past, history("r1", metric, [800.0, 1000.0], hours=48)])
    series = row(assess_risk(forecasts, past, table, config()).risk_report, "r1", metric)
    assert series["headroom_pct"] < 0 and series["trend_per_day"] > 0
    assert bool(series["metric_finding"] == "under_provisioned") is short
    assert bool(series["metric_risk_score"] == 1) is short


@pytest.mark.parametrize(
    ("floor", "expected", "sizing"),
    [
        (0.5, "mid.2x", "downsize"),  # keeps half of big.4x's 4 vCPU and 16 GiB
        (0.25, "small.2x", "downsize"),  # a quarter of the memory is allowed
        (0.1, "tight.1x", "downsize"),  # the cheapest that fits the idle peak
        (1.0, "big.4x", "keep"),  # never smaller
    ],
)
def test_a_downsize_keeps_at_least_the_floor_of_every_dimension(floor, expected, sizing):
    # big.4x idle at 5 % CPU and 10 % memory: tight.1x (0.03 $/h) fits the peak plus buffer.
    forecasts, past, table = one_resource(flat(5), flat(10), instance_type="big.4x")
    cfg = config(downsize_floor=floor)
    cpu = row(assess_risk(forecasts, past, table, cfg).risk_report, "r1", CPU)
    assert cpu["finding"] == "over_provisioned"
    assert (cpu["sizing"], cpu["recommended_instance_type"]) == (sizing, expected)
    new = CATALOGUE[expected]
    assert new["vcpu"] >= floor * 4 and new["memory_gib"] >= floor * 16
    if sizing == "keep":
        assert "downsize_step_limited" in cpu["reason_codes"]


def test_the_risk_rule_reads_only_selected_rows_and_the_history_it_uses(tmp_path):
    from capforecast.risk.assess import HISTORY_COLUMNS, read_clean_history, read_selected_forecasts

    stamps = pd.date_range("2026-01-01", periods=3, freq="1h", tz="UTC")
    forecasts = pd.DataFrame(
        {
            "model": ["selected", "theta", "selected", "theta", "selected", "theta"],
            "resource_id": "i-1",
            "metric": "cpu_utilization",
            "timestamp": stamps.repeat(2),
            "q0.5": [1.0, 9.0, 2.0, 9.0, 3.0, 9.0],
        }
    )
    path = tmp_path / "forecasts.parquet"
    forecasts.to_parquet(path, index=False)
    selected = read_selected_forecasts(path)
    assert selected["model"].eq("selected").all() and selected["q0.5"].tolist() == [1.0, 2.0, 3.0]
    # Without a selected row the whole table comes back, so the error can name its models.
    forecasts.assign(model="theta").to_parquet(path, index=False)
    assert len(read_selected_forecasts(path)) == len(forecasts)
    clean = pd.DataFrame(
        {
            "timestamp": stamps,
            "resource_id": "i-1",
            "metric": "cpu_utilization",
            "value": [1.0, 2.0, 3.0],
            "value_max": [1.5, 2.5, 3.5],
            "n_obs": 12,
            "is_gap": False,
        }
    )
    parts = [tmp_path / "a.parquet", tmp_path / "b.parquet"]
    clean.to_parquet(parts[0], index=False)
    clean.drop(columns="value_max").to_parquet(parts[1], index=False)
    history = read_clean_history(parts)
    assert list(history.columns) == list(HISTORY_COLUMNS)
    assert len(history) == 6 and history["value_max"].isna().sum() == 3
