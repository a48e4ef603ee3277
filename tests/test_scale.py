"""Percentages on a 0-1 scale (capforecast.data.scale): converted on evidence, never an idle VM.

Real data first: the Bitbrains VMs (percent) must never be converted, whatever window of them
a user hands in, and the same windows divided by 100 mostly must.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from capforecast.config import validated_config
from capforecast.contracts import RAW_COLUMNS
from capforecast.data import quality, resample, scale, validate
from capforecast.settings import EtlSettings, etl_settings

BITBRAINS = Path(__file__).resolve().parent / "data" / "bitbrains-rnd" / "long"
PERCENT = ["cpu_utilization", "memory_utilization"]


@pytest.fixture(scope="module")
def etl() -> EtlSettings:
    return etl_settings(validated_config({})["etl"])


@pytest.fixture(scope="module")
def bitbrains() -> pd.DataFrame:
    frames = [
        pd.read_parquet(f, filters=[("metric", "in", PERCENT)])
        for f in sorted(BITBRAINS.glob("*.parquet"))
    ]
    return pd.concat(frames, ignore_index=True)


def undeclared(raw: pd.DataFrame) -> pd.DataFrame:
    keys = raw[["resource_id", "metric"]].dropna().drop_duplicates()
    return keys.assign(declared_scale=None)


def decide(
    raw: pd.DataFrame, etl: EtlSettings, declared: pd.DataFrame | None = None
) -> pd.DataFrame:
    given = undeclared(raw) if declared is None else declared
    return scale.decide_scales(raw, given, etl)[0].set_index(["resource_id", "metric"])


def windows(frame: pd.DataFrame, days: int) -> pd.DataFrame:
    """Each VM cut into windows of ``days``; a window becomes a resource of its own, so that one
    call decides every window as if a user had handed in just that stretch."""
    start = frame["timestamp"].min()
    index = ((frame["timestamp"] - start) // pd.Timedelta(days=days)).astype(str)
    return frame.assign(resource_id=frame["resource_id"] + "|" + index)


def converted(table: pd.DataFrame) -> set[str]:
    return {rid for (rid, _), s in table["scale"].items() if s == "fraction"}


def frame_of(series: dict[tuple[str, str], np.ndarray], freq: str = "5min") -> pd.DataFrame:
    parts = []
    for (rid, metric), values in series.items():
        stamps = pd.date_range("2024-05-01", periods=len(values), freq=freq, tz="UTC")
        parts.append(
            pd.DataFrame(
                {
                    "timestamp": stamps,
                    "resource_id": rid,
                    "metric": metric,
                    "value": np.asarray(values, dtype="float64"),
                }
            )
        )
    return pd.concat(parts, ignore_index=True)[list(RAW_COLUMNS)]


def busy_vm(n: int = 288 * 3, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """CPU with a daily cycle between ~0.2 and ~0.8 and memory near 0.45, as fractions."""
    rng = np.random.default_rng(seed)
    day = np.sin(np.arange(n) / 288 * 2 * np.pi)
    cpu = np.clip(0.5 + 0.3 * day + rng.normal(0, 0.03, n), 0, 1)
    mem = np.clip(0.45 + rng.normal(0, 0.01, n), 0, 1)
    return cpu, mem


# --------------------------------------------------------------------------- real data


def test_real_bitbrains_windows_never_convert_and_divided_ones_mostly_do(bitbrains, etl):
    # 3-day windows are the hard case (more windows fit 0-1 by chance); longer ones were
    # measured too (scale.py docstring): no real window converts at any length.
    real = windows(bitbrains, 3)
    assert converted(decide(real, etl)) == set()
    fractions = real.assign(value=real["value"] / 100)
    table = decide(fractions, etl)
    share = len(converted(table)) / table.index.get_level_values(0).nunique()
    assert share >= 0.65, share  # measured 0.68


def test_idle_real_vm_at_one_percent_cpu_stays_percent(bitbrains, etl):
    # bb-vm003 in its second week reads 1.0 % CPU all the time: "pegged" as a fraction.
    vm = bitbrains[bitbrains["resource_id"] == "bb-vm003"]
    start = vm["timestamp"].min() + pd.Timedelta(days=7)
    week = vm[(vm["timestamp"] >= start) & (vm["timestamp"] < start + pd.Timedelta(days=7))]
    cpu = week[week["metric"] == "cpu_utilization"]
    assert cpu["value"].max() <= scale.FRACTION_CEILING  # the trap: CPU alone fits 0-1
    assert (cpu["value"] > 0.5).mean() > 0.9
    alone = decide(cpu, etl)
    assert alone["scale"].tolist() == ["ambiguous"]  # read as percent, flagged
    together = decide(week, etl)
    assert set(together["scale"]) == {"percent"}  # its memory is clearly percent


def test_mostly_off_real_vm_is_not_converted(bitbrains, etl):
    # bb-vm238 days 45-48: CPU and memory both within 0-1.03 %, memory 0 most of the time.
    vm = bitbrains[bitbrains["resource_id"] == "bb-vm238"]
    start = vm["timestamp"].min() + pd.Timedelta(days=45)
    part = vm[(vm["timestamp"] >= start) & (vm["timestamp"] < start + pd.Timedelta(days=3))]
    assert part["value"].max() <= scale.FRACTION_CEILING
    table = decide(part, etl)
    assert "fraction" not in set(table["scale"])


# --------------------------------------------------------------------------- the rules


def test_busy_fraction_vm_is_converted_and_counted(etl):
    cpu, mem = busy_vm()
    cpu[10] = np.nan  # a missing value is not counted as rescaled
    raw = frame_of(
        {
            ("i-1", "cpu_utilization"): cpu,
            ("i-1", "memory_utilization"): mem,
            ("i-1", "network_in_bytes"): np.full(len(cpu), 0.5),
        }
    )
    table, rows = scale.decide_scales(raw, undeclared(raw), etl)
    table = table.set_index("metric")
    assert table.loc["cpu_utilization", "scale"] == "fraction"
    assert table.loc["cpu_utilization", "scale_evidence"] == "values"
    assert table.loc["cpu_utilization", "rows_rescaled"] == len(cpu) - 1
    assert table.loc["memory_utilization", "rows_rescaled"] == len(mem)
    assert table.loc["network_in_bytes", "scale"] == ""  # not a percentage: never touched
    out = scale.rescale(raw, rows)
    is_cpu = (out["metric"] == "cpu_utilization").to_numpy()
    np.testing.assert_allclose(out.loc[is_cpu, "value"], cpu * 100)
    assert (out.loc[out["metric"] == "network_in_bytes", "value"] == 0.5).all()


def test_one_metric_alone_or_a_short_fragment_is_only_ambiguous(etl):
    cpu, mem = busy_vm()
    lone = decide(frame_of({("i-1", "cpu_utilization"): cpu}), etl)
    assert lone["scale"].tolist() == ["ambiguous"]
    short = frame_of(
        {("i-1", "cpu_utilization"): cpu[:200], ("i-1", "memory_utilization"): mem[:200]}
    )
    assert set(decide(short, etl)["scale"]) == {"ambiguous"}  # 200 x 5 min < a day


def test_any_series_off_the_0_1_scale_keeps_the_resource_on_percent(etl):
    cpu, mem = busy_vm()
    raw = frame_of({("i-1", "cpu_utilization"): cpu, ("i-1", "memory_utilization"): mem * 100})
    assert set(decide(raw, etl)["scale"]) == {"percent"}


def test_all_zero_and_constant_series_are_no_evidence(etl):
    cpu, _ = busy_vm()
    n = len(cpu)
    zeros = frame_of(
        {("i-1", "cpu_utilization"): np.zeros(n), ("i-1", "memory_utilization"): np.zeros(n)}
    )
    assert set(decide(zeros, etl)["scale"]) == {"percent"}  # 0 is 0 on either scale: no flag
    stuck = frame_of(
        {
            ("i-1", "cpu_utilization"): np.full(n, 0.42),
            ("i-1", "memory_utilization"): np.full(n, 0.07),
        }
    )
    assert set(decide(stuck, etl)["scale"]) == {"ambiguous"}


def test_a_rare_glitch_does_not_hide_the_scale_and_is_quarantined_after(etl):
    cpu, mem = busy_vm(n=288 * 7)  # one value in 2,016: within scale.GLITCH_SHARE
    mem[100] = 46.0  # one corrupt reading, as the real Bitbrains memory series have
    raw = frame_of({("i-1", "cpu_utilization"): cpu, ("i-1", "memory_utilization"): mem})
    table, rows = scale.decide_scales(raw, undeclared(raw), etl)
    assert set(table["scale"]) == {"fraction"}
    result = validate.validate_rows(scale.rescale(raw, rows), etl, "f.csv")
    assert result.counts["rows_quarantined"] == 1
    assert result.quarantine["reason"].tolist() == ["percent_above_range"]
    assert (
        result.counts["rows_in"] == result.counts["rows_kept"] + result.counts["rows_quarantined"]
    )
    assert result.kept["value"].max() <= 100.0


def test_declared_scales_win_in_auto_mode(etl):
    cpu, _ = busy_vm()
    raw = frame_of(
        {
            ("i-1", "cpu_utilization"): cpu,
            ("i-2", "cpu_utilization"): cpu * 100,
            ("i-3", "cpu_utilization"): cpu,
        }
    )
    declared = pd.DataFrame(
        {
            "resource_id": ["i-1", "i-2", "i-3"],
            "metric": "cpu_utilization",
            "declared_scale": ["fraction", "fraction", "percent"],
        }
    )
    table = (
        decide(raw, etl, declared)["scale_evidence"]
        .to_frame()
        .join(decide(raw, etl, declared)["scale"])
    )
    assert tuple(table.loc[("i-1", "cpu_utilization")]) == ("name", "fraction")
    # Named a fraction but reading up to 80: it was exported as percent already.
    assert tuple(table.loc[("i-2", "cpu_utilization")]) == ("values", "percent")
    assert tuple(table.loc[("i-3", "cpu_utilization")]) == ("name", "percent")


@pytest.mark.parametrize(("mode", "expected"), [("never", "percent"), ("always", "fraction")])
def test_fraction_scale_never_and_always_override_everything(etl, mode, expected):
    cpu, mem = busy_vm()
    raw = frame_of(
        {
            ("i-1", "cpu_utilization"): cpu,
            ("i-1", "memory_utilization"): mem,
            ("i-2", "cpu_utilization"): cpu * 100,
        }
    )
    declared = undeclared(raw).assign(declared_scale=["fraction", None, None])
    table = decide(raw, dataclasses.replace(etl, fraction_scale=mode), declared)
    assert set(table["scale"]) == {expected}
    assert set(table["scale_evidence"]) == {"config"}


def test_quality_table_flags_and_counts_conversions(etl):
    cpu, mem = busy_vm()
    raw = frame_of(
        {
            ("i-1", "cpu_utilization"): cpu,
            ("i-1", "memory_utilization"): mem,
            ("i-2", "cpu_utilization"): cpu,
        }
    )
    table, rows = scale.decide_scales(raw, undeclared(raw), etl)
    series = table.assign(source_metric=table["metric"], name_match="canonical", ids_trimmed=False)
    raw = scale.rescale(raw, rows)
    result = validate.validate_rows(raw, etl, "f.csv")
    clean = resample.resample_series(result.kept, etl)
    q = quality.quality_table(result, clean, raw, etl, "p", "f.csv", series)
    q = q.set_index(["resource_id", "metric"])
    assert q.loc[("i-1", "cpu_utilization"), "rows_rescaled"] == len(cpu)
    assert "fraction_scale_converted" in q.loc[("i-1", "cpu_utilization"), "flags"].split(";")
    assert q.loc[("i-2", "cpu_utilization"), "rows_rescaled"] == 0
    assert "fraction_scale_ambiguous" in q.loc[("i-2", "cpu_utilization"), "flags"].split(";")


@pytest.mark.parametrize(
    ("stray", "inside_wide_window"),
    [("1970-01-01", True), ("1999-06-30", True), ("2262-04-11 23:47:16", False)],
)
def test_a_stray_timestamp_outside_the_window_is_no_evidence_of_a_long_span(
    etl, stray, inside_wide_window
):
    """Two hours of 0-1 data stay ambiguous when one extra sample sits in 1970 or 2262:
    validation quarantines that sample, so it must not stretch the span the rule needs."""
    cpu, mem = busy_vm()
    raw = frame_of({("i-1", "cpu_utilization"): cpu[:24], ("i-1", "memory_utilization"): mem[:24]})
    extra = raw.iloc[:1].assign(timestamp=pd.Timestamp(stray, tz="UTC"))
    with_stray = pd.concat([raw, extra], ignore_index=True)
    assert set(decide(with_stray, etl)["scale"]) == {"ambiguous"}
    # In a window that holds it, the same sample is a real one and makes the span long.
    wide = validated_config({"etl": {"timestamp_min": "1678-01-01", "timestamp_max": "2262-04-11"}})
    expected = {"fraction"} if inside_wide_window else {"ambiguous"}
    assert set(decide(with_stray, etl_settings(wide["etl"]))["scale"]) == expected
