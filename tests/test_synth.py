"""Synthetic fleet: determinism, isolation between services, contracts, scenario shapes, truth."""

from __future__ import annotations

import copy
import json

import numpy as np
import pandas as pd
import pytest

from capforecast.config import load_config, validated_config
from capforecast.contracts import RAW_COLUMNS, RESOURCE_COLUMNS
from capforecast.data import synth
from capforecast.errors import ConfigError

START = "2026-03-02"  # a Monday
DAYS = 10


def _config(services: list[dict], **synthetic) -> dict:
    raw = {
        "synthetic": {
            "seed": 7,
            "start": START,
            "days": DAYS,
            "missing_rate": 0.02,
            "new_instance_fraction": 0.0,
            "decommissioned_fraction": 0.0,
            "services": services,
            **synthetic,
        }
    }
    return validated_config(raw)


SCENARIO_SERVICES = [
    {
        "name": "web",
        "instances": 2,
        "instance_type": "m5.large",
        "scenario": "saturating",
        "saturating_metric": "cpu_utilization",
        "base_level": 45.0,
    },
    {
        "name": "catalog",
        "instances": 2,
        "instance_type": "r5.large",
        "scenario": "growing",
        "base_level": 30.0,
    },
    {
        "name": "payments",
        "instances": 2,
        "instance_type": "m5.large",
        "scenario": "flat",
        "base_level": 35.0,
    },
    {
        "name": "batch",
        "instances": 2,
        "instance_type": "c5.xlarge",
        "scenario": "over_provisioned",
        "base_level": 6.0,
    },
]


@pytest.fixture(scope="module")
def cfg() -> dict:
    return _config(copy.deepcopy(SCENARIO_SERVICES))


@pytest.fixture(scope="module")
def plan(cfg) -> pd.DataFrame:
    return synth.plan_fleet(cfg)


@pytest.fixture(scope="module")
def raw(cfg, plan) -> dict[str, pd.DataFrame]:
    return {
        svc["name"]: synth.generate_service(plan, svc["name"], cfg) for svc in SCENARIO_SERVICES
    }


def _hourly(frame: pd.DataFrame, metric: str) -> pd.DataFrame:
    """Hourly mean per resource of one metric (wide: one column per resource)."""
    part = frame.loc[frame["metric"] == metric]
    return part.pivot_table(
        index=pd.Grouper(key="timestamp", freq="1h"), columns="resource_id", values="value"
    )


def _slope_per_history(series: pd.Series) -> float:
    """Least-squares slope of an hourly series, times the history length in hours."""
    clean = series.dropna()
    hours = (clean.index - clean.index[0]) / pd.Timedelta(hours=1)
    return float(np.polyfit(hours, clean.to_numpy(), 1)[0]) * DAYS * 24


# ------------------------------------------------------------------ determinism and isolation


def test_same_seed_gives_identical_plan_data_and_truth(cfg, plan, raw):
    again = synth.plan_fleet(cfg)
    pd.testing.assert_frame_equal(plan, again)
    pd.testing.assert_frame_equal(raw["web"], synth.generate_service(again, "web", cfg))
    assert synth.ground_truth(plan, cfg) == synth.ground_truth(again, cfg)


def test_different_seed_gives_different_data(cfg, raw):
    other = copy.deepcopy(cfg)
    other["synthetic"]["seed"] = cfg["synthetic"]["seed"] + 1
    frame = synth.generate_service(synth.plan_fleet(other), "web", other)
    merged = raw["web"].merge(frame, on=["timestamp", "resource_id", "metric"], suffixes=("", "_b"))
    assert len(merged) > 0.9 * len(raw["web"])
    assert not np.allclose(merged["value"], merged["value_b"])


def test_changing_one_service_leaves_the_others_byte_identical(cfg, plan, raw):
    services = copy.deepcopy(SCENARIO_SERVICES)
    services[0].update(instances=5, base_level=60.0, scenario="growing")  # web changes
    services[2]["instance_type"] = "c5.large"  # payments changes too
    changed_cfg = _config(services)
    changed_plan = synth.plan_fleet(changed_cfg)
    for untouched in ("catalog", "batch"):
        before = plan.loc[plan["service"] == untouched].reset_index(drop=True)
        after = changed_plan.loc[changed_plan["service"] == untouched].reset_index(drop=True)
        pd.testing.assert_frame_equal(before, after)
        pd.testing.assert_frame_equal(
            raw[untouched], synth.generate_service(changed_plan, untouched, changed_cfg)
        )
    changed_web = synth.generate_service(changed_plan, "web", changed_cfg)
    assert changed_web["resource_id"].nunique() == 5


# ------------------------------------------------------------------ contracts


def test_raw_columns_dtypes_and_bounds(plan, raw):
    for service, frame in raw.items():
        assert tuple(frame.columns) == RAW_COLUMNS
        assert str(frame["timestamp"].dtype) == "datetime64[ns, UTC]"
        assert frame["resource_id"].map(type).eq(str).all()
        assert frame["metric"].map(type).eq(str).all()
        assert frame["value"].dtype == np.float64
        assert not frame.isna().any().any()
        assert set(frame["metric"]) == set(synth.METRICS)
        expected_ids = set(plan.loc[plan["service"] == service, "resource_id"])
        assert set(frame["resource_id"]) == expected_ids
        percent = frame["metric"].isin(synth.PERCENT_METRICS)
        assert frame.loc[percent, "value"].between(0.0, 100.0).all()
        assert (frame.loc[~percent, "value"] >= 0.0).all()
        assert not frame.duplicated(["timestamp", "resource_id", "metric"]).any()


@pytest.mark.parametrize("freq", ["5min", "15min"])
def test_timestamps_lie_on_the_configured_grid_within_each_lifetime(freq):
    cfg = _config(copy.deepcopy(SCENARIO_SERVICES[:1]), freq=freq, new_instance_fraction=0.5)
    plan = synth.plan_fleet(cfg)
    frame = synth.generate_service(plan, "web", cfg)
    step = pd.Timedelta(freq)
    offsets = frame["timestamp"] - pd.Timestamp(START, tz="UTC")
    assert (offsets % step == pd.Timedelta(0)).all()
    for (rid, _metric), series in frame.groupby(["resource_id", "metric"])["timestamp"]:
        row = plan.set_index("resource_id").loc[rid]
        assert series.is_monotonic_increasing
        assert series.min() >= row["launch_time"] and series.max() < row["end_time"]
        assert series.diff().dropna().mode().iloc[0] == step


def test_resources_table_comes_from_the_catalogue(cfg, plan):
    table = synth.resources_table(plan)
    assert tuple(table.columns) == RESOURCE_COLUMNS
    for col in ("vcpu", "memory_gib", "hourly_price_usd"):
        assert table[col].dtype == np.float64
    for col in ("resource_id", "service", "instance_type", "region"):
        assert table[col].map(type).eq(str).all()
    assert table["resource_id"].is_unique
    assert len(table) == sum(s["instances"] for s in SCENARIO_SERVICES)
    for row in table.itertuples():
        entry = cfg["catalogue"][row.instance_type]
        assert row.hourly_price_usd == entry["hourly_price_usd"]
        assert row.vcpu == entry["vcpu"] and row.memory_gib == entry["memory_gib"]
        assert row.region == cfg["synthetic"]["region"]
    by_service = table.groupby("service")["instance_type"].first().to_dict()
    assert by_service == {s["name"]: s["instance_type"] for s in SCENARIO_SERVICES}


def test_unknown_service_and_bad_frequency_are_config_errors(cfg, plan):
    with pytest.raises(ConfigError, match=r"synthetic\.services.*'nope'.*web"):
        synth.generate_service(plan, "nope", cfg)
    bad = copy.deepcopy(cfg)
    bad["synthetic"]["freq"] = "0min"
    with pytest.raises(ConfigError, match=r"synthetic\.freq"):
        synth.plan_fleet(bad)


# ------------------------------------------------------------------ scenario shapes


def test_saturating_metric_climbs_to_the_ceiling(cfg, raw):
    cpu = raw["web"].loc[raw["web"]["metric"] == "cpu_utilization"]
    end = pd.Timestamp(START, tz="UTC") + pd.Timedelta(days=DAYS)
    early = cpu.loc[cpu["timestamp"] < cpu["timestamp"].min() + pd.Timedelta(days=2), "value"]
    late = cpu.loc[cpu["timestamp"] >= end - pd.Timedelta(days=2), "value"]
    assert late.mean() > 1.2 * early.mean()
    assert late.quantile(0.95) > 90
    # Pegged samples near the end, like a fleet running out of CPU.
    assert (late >= cfg["etl"]["pegged_level"]).any()
    for rid, series in _hourly(raw["web"], "cpu_utilization").items():
        assert _slope_per_history(series) > 0.3 * series.mean(), rid


def test_over_provisioned_runs_low(raw):
    frame = raw["batch"]
    assert frame.loc[frame["metric"] == "cpu_utilization", "value"].mean() < 15
    assert frame.loc[frame["metric"] == "memory_utilization", "value"].mean() < 25


def test_flat_has_no_strong_trend_while_growing_does(raw):
    for rid, series in _hourly(raw["payments"], "cpu_utilization").items():
        assert abs(_slope_per_history(series)) < 0.1 * series.mean(), rid
    for rid, series in _hourly(raw["catalog"], "cpu_utilization").items():
        assert _slope_per_history(series) > 0.2 * series.mean(), rid


def test_daily_and_weekly_seasonality(plan, raw):
    """CPU is higher at the service's planned peak hour than 12 h later, and on weekdays."""
    cpu = raw["payments"].loc[raw["payments"]["metric"] == "cpu_utilization"]
    peak = round(plan.loc[plan["service"] == "payments", "peak_hour"].iloc[0]) % 24
    hour = cpu["timestamp"].dt.hour
    assert (
        cpu.loc[hour == peak, "value"].mean()
        > 1.2 * cpu.loc[hour == (peak + 12) % 24, "value"].mean()
    )
    weekend = cpu["timestamp"].dt.dayofweek >= 5
    assert cpu.loc[~weekend, "value"].mean() > cpu.loc[weekend, "value"].mean()


def test_network_follows_cpu(raw):
    frame = raw["web"]
    wide = frame.pivot_table(index=["resource_id", "timestamp"], columns="metric", values="value")
    for rid, part in wide.groupby(level="resource_id"):
        for metric in ("network_in_bytes", "network_out_bytes"):
            assert part["cpu_utilization"].corr(part[metric]) > 0.8, (rid, metric)


# ------------------------------------------------------------------ lifecycles and gaps


def test_new_and_decommissioned_instances_have_shorter_histories():
    service = {**SCENARIO_SERVICES[2], "instances": 4}
    cfg = _config([service], new_instance_fraction=0.5, decommissioned_fraction=0.25)
    plan = synth.plan_fleet(cfg)
    start = pd.Timestamp(START, tz="UTC")
    end = start + pd.Timedelta(days=DAYS)
    # 0.5 x 4 and 0.25 x 4 are whole numbers: randomised rounding gives them exactly.
    assert plan["lifecycle"].value_counts().to_dict() == {
        "new": 2,
        "decommissioned": 1,
        "steady": 1,
    }
    frame = synth.generate_service(plan, "payments", cfg)
    span = frame.groupby("resource_id")["timestamp"].agg(["min", "max"])
    for row in plan.itertuples():
        first, last = span.loc[row.resource_id, "min"], span.loc[row.resource_id, "max"]
        if row.lifecycle == "new":
            assert row.launch_time > start and first >= row.launch_time
            assert row.end_time == end
        elif row.lifecycle == "decommissioned":
            assert row.launch_time == start and row.end_time < end
            assert last < row.end_time
        else:
            assert (row.launch_time, row.end_time) == (start, end)
            assert last - first > pd.Timedelta(days=DAYS - 1)


def test_default_config_has_a_new_instance_with_under_a_week_of_history(project_root):
    cfg = load_config(project_root / "config" / "config.yaml")
    plan = synth.plan_fleet(cfg)
    end = pd.Timestamp(cfg["synthetic"]["start"], tz="UTC") + pd.Timedelta(
        days=cfg["synthetic"]["days"]
    )
    new = plan.loc[plan["lifecycle"] == "new"]
    assert ((end - new["launch_time"]) < pd.Timedelta(days=7)).any()


def test_missing_samples_follow_missing_rate_and_include_outages(cfg, plan, raw):
    freq = pd.Timedelta(cfg["synthetic"]["freq"])
    complete_cfg = copy.deepcopy(cfg)
    complete_cfg["synthetic"]["missing_rate"] = 0.0
    for service in ("web", "batch"):
        rows = plan.loc[plan["service"] == service]
        expected = int(((rows["end_time"] - rows["launch_time"]) / freq).sum()) * len(synth.METRICS)
        complete = synth.generate_service(plan, service, complete_cfg)
        assert len(complete) == expected  # no missing rate: every grid point is there
        observed = len(raw[service])
        missing = 1 - observed / expected
        assert missing > cfg["synthetic"]["missing_rate"] * 0.5
        # Outages take every metric of an instance out for hours at a time.
        times = raw[service].drop_duplicates(["resource_id", "timestamp"])
        times = times.sort_values(["resource_id", "timestamp"])
        gaps = times.groupby("resource_id")["timestamp"].diff()
        assert gaps.max() >= pd.Timedelta(hours=2)
        assert complete.groupby(["resource_id", "metric"])["timestamp"].diff().max() == freq


# ------------------------------------------------------------------ ground truth


def test_ground_truth_saturation_lies_inside_the_horizon_and_matches_the_plan(cfg, plan):
    truth = json.loads(json.dumps(synth.ground_truth(plan, cfg)))  # JSON round trip
    end = pd.Timestamp(START, tz="UTC") + pd.Timedelta(days=DAYS)
    horizon = cfg["synthetic"]["horizon"] * pd.Timedelta(cfg["etl"]["freq"])
    thresholds = cfg["synthetic"]["thresholds"]["cpu_utilization"]
    web = plan.loc[plan["service"] == "web"]
    assert truth["services"]["web"]["instances"] == web["resource_id"].tolist()
    assert truth["services"]["web"]["saturating_metric"] == "cpu_utilization"
    for row in web.itertuples():
        cpu = truth["resources"][row.resource_id]["metrics"]["cpu_utilization"]
        hit = pd.Timestamp(cpu["levels"]["100"])
        assert end < hit <= end + horizon
        assert hit == row.saturation_time
        times = [pd.Timestamp(cpu["levels"][f"{lvl:g}"]) for lvl in synth.CROSSING_LEVELS]
        assert times == sorted(times)  # a higher level is never reached earlier
        assert cpu["warning"]["level"] == thresholds["warning"]
        assert cpu["critical"]["level"] == thresholds["critical"]
        assert cpu["critical"]["time"] == cpu["levels"][f"{thresholds['critical']:g}"]


def test_ground_truth_growing_stays_under_critical_within_the_horizon(cfg, plan):
    truth = synth.ground_truth(plan, cfg)
    end = pd.Timestamp(START, tz="UTC") + pd.Timedelta(days=DAYS)
    horizon = cfg["synthetic"]["horizon"] * pd.Timedelta(cfg["etl"]["freq"])
    critical = cfg["synthetic"]["thresholds"]["cpu_utilization"]["critical"]
    for rid in truth["services"]["catalog"]["instances"]:
        cpu = truth["resources"][rid]["metrics"]["cpu_utilization"]
        assert cpu["peak_in_horizon"] < critical
        when = cpu["critical"]["time"]
        assert when is None or pd.Timestamp(when) >= end + horizon
        assert truth["resources"][rid]["saturation_time"] is None


def test_ground_truth_lists_scenarios_and_only_scores_growth(cfg, plan):
    truth = synth.ground_truth(plan, cfg)
    ids = plan.groupby("scenario")["resource_id"].apply(list).to_dict()
    assert truth["over_provisioned"] == ids["over_provisioned"]
    assert truth["flat"] == ids["flat"]
    assert set(truth["resources"]) == set(ids["saturating"]) | set(ids["growing"])


def test_saturation_day_moves_the_crossing(cfg):
    services = copy.deepcopy(SCENARIO_SERVICES[:1])
    end = pd.Timestamp(START, tz="UTC") + pd.Timedelta(days=DAYS)  # a Thursday
    hits = []
    for day in (1.5, 5.5):  # Friday and Tuesday (weekday peaks, no weekend in between)
        services[0]["saturation_day"] = day
        shifted_cfg = _config(services)
        plan = synth.plan_fleet(shifted_cfg)
        target = end + pd.Timedelta(days=day)
        # The crossing is the last daily peak before the target, so within a day of it.
        assert (plan["saturation_time"] <= target).all()
        assert (plan["saturation_time"] > target - pd.Timedelta(days=1)).all()
        hits.append(plan["saturation_time"].max())
    assert hits[1] - hits[0] > pd.Timedelta(days=3)
