"""Resources with an impossible or unknown capacity (the Bitbrains set lists three VMs with 0 vCPU
and 0 GiB): flagged at ingest, unsized with a reason code, left out of the capacity plan, and
the run goes on."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import pytest
from test_risk import CPU, MEM, config, fan, flat, history, resources, row

from capforecast.config import validated_config
from capforecast.data import capacity, ingest, quality
from capforecast.risk.assess import assess_risk

BITBRAINS_RESOURCES = "tests/data/bitbrains-rnd/resources.csv"
ZERO_VMS = ["bb-vm050", "bb-vm196", "bb-vm197"]


@pytest.fixture(scope="module")
def catalogue() -> dict:
    return validated_config({})["catalogue"]


@pytest.mark.parametrize(
    ("vcpu", "memory_gib", "code"),
    [
        (0, 0, capacity.CAPACITY_IMPOSSIBLE),
        (-2, 8, capacity.CAPACITY_IMPOSSIBLE),
        (2, 0, capacity.CAPACITY_IMPOSSIBLE),
        (np.inf, 8, capacity.CAPACITY_IMPOSSIBLE),
        (np.nan, 8, capacity.CAPACITY_UNKNOWN),
        (None, None, capacity.CAPACITY_UNKNOWN),
        (2, 8, None),
        (0.5, 0.67, None),  # small, not impossible
    ],
)
def test_capacity_issue_of_one_resource(vcpu, memory_gib, code):
    table = pd.DataFrame({"vcpu": [vcpu], "memory_gib": [memory_gib]})
    assert capacity.capacity_issues(table).iloc[0] == code
    note = capacity.capacity_note({"vcpu": vcpu, "memory_gib": memory_gib})
    assert (note is None) == (code is None)
    if code:
        assert note.startswith(f"{code}: the resources table gives ")


def test_the_bitbrains_zero_vms_are_flagged_at_ingest_and_named_in_the_log(
    project_root, catalogue, caplog
):
    with caplog.at_level(logging.WARNING, logger="capforecast.data.ingest"):
        table = ingest.read_resources_table(project_root / BITBRAINS_RESOURCES, catalogue)
    flagged = table.loc[table["capacity_issue"].notna(), "resource_id"].tolist()
    assert flagged == ZERO_VMS
    assert set(table.loc[table["capacity_issue"].notna(), "capacity_issue"]) == {
        capacity.CAPACITY_IMPOSSIBLE
    }
    warning = " ".join(r.getMessage() for r in caplog.records)
    assert "3 resource(s) with a vCPU or memory size of 0 or less" in warning
    assert all(repr(vm) in warning for vm in ZERO_VMS)


def test_resources_table_flags_every_kind_of_unusable_size(tmp_path, catalogue):
    text = (
        "resource_id,service,instance_type,vcpu,memory_gib\n"
        "ok,web,m5.large,,\n"  # from the catalogue
        "zero,web,m5.large,0,0\n"
        "negative,web,,-4,16\n"
        "infinite,web,,inf,16\n"
        "grouped-only,web,,,\n"  # listed for its service, no size anywhere
        "half,web,,4,\n"
    )
    path = tmp_path / "res.csv"
    path.write_text(text)
    table = ingest.read_resources_table(path, catalogue).set_index("resource_id")
    assert table["capacity_issue"].to_dict() == {
        "ok": None,
        "zero": "capacity_impossible",
        "negative": "capacity_impossible",
        "infinite": "capacity_impossible",
        "grouped-only": "capacity_unknown",
        "half": "capacity_unknown",
    }
    done = ingest.complete_resources(table.reset_index(), ["ok", "not-listed"])
    assert done.set_index("resource_id").loc["not-listed", "capacity_issue"] is None


def test_quality_table_flags_the_series_of_such_resources():
    table = pd.DataFrame(
        {
            "resource_id": ["bb-vm050", "bb-vm050", "vm-ok", "half"],
            "metric": [CPU, MEM, CPU, CPU],
            "flags": ["", "too_short", "", ""],
        }
    )
    listed = pd.DataFrame(
        {
            "resource_id": ["bb-vm050", "vm-ok", "half"],
            "capacity_issue": ["capacity_impossible", None, "capacity_unknown"],
        }
    )
    flags = quality.mark_capacity_issues(table, listed)["flags"].tolist()
    assert flags == [
        "capacity_impossible",
        "too_short;capacity_impossible",
        "",
        "capacity_unknown",
    ]


def fleet_with(zero: list[str], ok: list[str]):
    """Service web: CPU and memory at 60 % for every instance (mid.2x: 2 vCPU, 8 GiB); the
    ``zero`` instances are listed with 0 vCPU and 0 GiB."""
    ids = [*zero, *ok]
    forecasts = pd.concat([fan(r, m, flat(60)) for r in ids for m in (CPU, MEM)])
    past = pd.concat([history(r, m, [60.0], hours=336) for r in ids for m in (CPU, MEM)])
    table = resources(*((r, "web", "mid.2x") for r in ids))
    broken = table["resource_id"].isin(zero)
    table.loc[broken, ["vcpu", "memory_gib"]] = 0.0
    table["capacity_issue"] = capacity.capacity_issues(table)
    return forecasts, past, table


def test_zero_capacity_resources_are_unsized_and_left_out_of_the_plan():
    forecasts, past, table = fleet_with(["bb-vm050", "bb-vm196"], ["vm-1", "vm-2"])
    result = assess_risk(forecasts, past, table, config())
    for vm in ("bb-vm050", "bb-vm196"):
        line = row(result.risk_report, vm, CPU)
        assert line["sizing"] == "unsized"
        assert "capacity_impossible" in line["reason_codes"].split(";")
        assert line["finding"] in {"under_provisioned", "optimized", "at_risk"}  # still assessed
    assert row(result.risk_report, "vm-1", CPU)["sizing"] != "unsized"
    plan = result.service_capacity.set_index("service").loc["web"]
    # Demand of the two usable instances only: 2 x 60 % x 2 vCPU = 2.4 vCPU.
    assert plan["cpu_peak_demand_p90_vcpu"] == pytest.approx(2.4)
    assert (
        "capacity_impossible: 2 instance(s) left out of the plan (bb-vm050, bb-vm196)"
        in (plan["note"])
    )


def test_a_service_of_only_zero_capacity_resources_gets_no_count_advice():
    forecasts, past, table = fleet_with(["bb-vm050", "bb-vm196", "bb-vm197"], [])
    result = assess_risk(forecasts, past, table, config())
    plan = result.service_capacity.set_index("service").loc["web"]
    assert plan["advice"] == "unknown" and np.isnan(plan["recommended_instances"])
    assert "no instance with a usable capacity" in plan["note"]
    assert (result.risk_report["sizing"] == "unsized").all()


def test_a_resource_listed_without_any_size_says_capacity_unknown_not_missing_type():
    forecasts, past, table = fleet_with([], ["grouped-only", "vm-1"])
    table.loc[table["resource_id"] == "grouped-only", ["instance_type", "vcpu", "memory_gib"]] = [
        None,
        np.nan,
        np.nan,
    ]
    table["capacity_issue"] = capacity.capacity_issues(table)
    result = assess_risk(forecasts, past, table, config())
    codes = row(result.risk_report, "grouped-only", CPU)["reason_codes"].split(";")
    assert "capacity_unknown" in codes and "instance_type_unknown" not in codes
    # Without the ingest record (a table built by hand) the older reason stands.
    plain = table.drop(columns="capacity_issue")
    codes = row(assess_risk(forecasts, past, plain, config()).risk_report, "grouped-only", CPU)
    assert "instance_type_unknown" in codes["reason_codes"].split(";")
