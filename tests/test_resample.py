"""Regular grids (capforecast.data.resample) and the per-series quality table
(capforecast.data.quality)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest

from capforecast.config import validated_config
from capforecast.contracts import CLEAN_COLUMNS, QUALITY_COLUMNS
from capforecast.data import quality, resample, validate
from capforecast.settings import EtlSettings, etl_settings

T0 = pd.Timestamp("2024-05-01 00:00", tz="UTC")


@pytest.fixture(scope="module")
def etl() -> EtlSettings:
    return etl_settings(validated_config({})["etl"])


def kept_frame(minutes, values, resource_id="i-1", metric="cpu_utilization") -> pd.DataFrame:
    return pd.DataFrame(
        {
            "timestamp": T0 + pd.to_timedelta(np.asarray(minutes), unit="min"),
            "resource_id": resource_id,
            "metric": metric,
            "value": np.asarray(values, dtype="float64"),
        }
    )


def hourly(etl: EtlSettings, **overrides) -> EtlSettings:
    return dataclasses.replace(etl, **{"freq": "1h", **overrides})


# --------------------------------------------------------------------------- resample


def test_bins_hold_mean_max_and_count(etl):
    minutes = [7, 12, 47, 67, 125, 130, 175]
    values = [1.0, 5.0, 3.0, 2.0, 10.0, 0.0, 4.0]
    clean = resample.resample_series(kept_frame(minutes, values), hourly(etl))
    assert tuple(clean.columns) == CLEAN_COLUMNS
    assert clean["timestamp"].tolist() == [T0 + pd.Timedelta(hours=h) for h in range(3)]
    assert clean["value"].tolist() == pytest.approx([3.0, 2.0, 14.0 / 3])
    assert clean["value_max"].tolist() == [5.0, 2.0, 10.0]
    assert clean["n_obs"].tolist() == [3, 1, 3]
    assert not clean["is_filled"].any() and not clean["is_gap"].any()
    assert str(clean["timestamp"].dtype) == "datetime64[ns, UTC]"
    assert clean["n_obs"].dtype == np.int64 and clean["is_gap"].dtype == bool


def test_short_gap_interpolated_long_gap_left_missing(etl):
    # Observed hours: 0, 1, then empty 2-3 (2 bins), 4, then empty 5-8 (4 bins), 9.
    hours = [0, 1, 4, 9]
    values = [10.0, 20.0, 50.0, 0.0]
    kept = kept_frame([h * 60 + 1 for h in hours], values)
    clean = resample.resample_series(kept, hourly(etl, max_fill_gap=3))
    assert len(clean) == 10
    by_hour = clean.set_index(((clean["timestamp"] - T0) / pd.Timedelta(hours=1)).astype(int))
    assert by_hour.loc[[2, 3], "is_filled"].all()
    expected = [20.0 + (50.0 - 20.0) * k / 3 for k in (1, 2)]
    assert by_hour.loc[[2, 3], "value"].tolist() == pytest.approx(expected)
    assert by_hour.loc[[2, 3], "value_max"].tolist() == pytest.approx(expected)
    assert (by_hour.loc[[2, 3], "n_obs"] == 0).all()
    assert by_hour.loc[5:8, "is_gap"].all() and by_hour.loc[5:8, "value"].isna().all()
    assert by_hour.loc[5:8, "value_max"].isna().all()
    assert not by_hour.loc[5:8, "is_filled"].any()
    assert int(clean["is_filled"].sum()) == 2 and int(clean["is_gap"].sum()) == 4


def test_gap_of_exactly_max_fill_gap_is_filled(etl):
    kept = kept_frame([0, 4 * 60], [0.0, 8.0])  # 3 empty bins between
    filled = resample.resample_series(kept, hourly(etl, max_fill_gap=3))
    assert filled["is_filled"].sum() == 3
    assert filled["value"].tolist() == pytest.approx([0.0, 2.0, 4.0, 6.0, 8.0])
    not_filled = resample.resample_series(kept, hourly(etl, max_fill_gap=2))
    assert not_filled["is_gap"].sum() == 3 and not_filled["is_filled"].sum() == 0
    never = resample.resample_series(kept, hourly(etl, max_fill_gap=0))
    assert never["is_gap"].sum() == 3


def test_series_get_their_own_grid_and_never_mix(etl):
    a = kept_frame([0, 180], [1.0, 4.0], resource_id="a")
    b = kept_frame([60, 120], [100.0, 200.0], resource_id="b")
    c = kept_frame([0, 120], [7.0, 9.0], resource_id="a", metric="memory_utilization")
    shuffled = pd.concat([b, a, c]).sample(frac=1.0, random_state=3)
    clean = resample.resample_series(shuffled, hourly(etl))
    keys = list(zip(clean["resource_id"], clean["metric"], strict=True))
    assert keys == sorted(keys)  # sorted by resource_id, metric, then time
    a_cpu = clean[(clean["resource_id"] == "a") & (clean["metric"] == "cpu_utilization")]
    assert a_cpu["value"].tolist() == pytest.approx([1.0, 2.0, 3.0, 4.0])  # from a only
    b_cpu = clean[clean["resource_id"] == "b"]
    assert b_cpu["timestamp"].tolist() == [T0 + pd.Timedelta(hours=h) for h in (1, 2)]
    a_mem = clean[clean["metric"] == "memory_utilization"]
    assert a_mem["value"].tolist() == pytest.approx([7.0, 8.0, 9.0])


def test_matches_pandas_resample_reference(etl):
    rng = np.random.default_rng(11)
    frames = []
    for k in range(4):
        minutes = np.sort(rng.choice(np.arange(0, 3000, 5), size=400, replace=False)) + k
        frames.append(kept_frame(minutes, rng.gamma(2.0, 10.0, 400), resource_id=f"i-{k}"))
    kept = pd.concat(frames, ignore_index=True)
    cfg = hourly(etl, freq="15min", max_fill_gap=0)
    clean = resample.resample_series(kept, cfg)
    for rid, part in kept.groupby("resource_id"):
        series = part.set_index("timestamp")["value"].resample("15min")
        reference = pd.DataFrame(
            {"value": series.mean(), "value_max": series.max(), "n_obs": series.count()}
        )
        got = clean[clean["resource_id"] == rid].set_index("timestamp")
        assert got.index.equals(reference.index)
        np.testing.assert_allclose(got["value"], reference["value"])
        np.testing.assert_allclose(got["value_max"], reference["value_max"])
        assert got["n_obs"].tolist() == reference["n_obs"].tolist()
        assert got["is_gap"].tolist() == (reference["n_obs"] == 0).tolist()


def test_empty_input_gives_empty_clean_frame(etl):
    clean = resample.resample_series(kept_frame([], []), hourly(etl))
    assert clean.empty and tuple(clean.columns) == CLEAN_COLUMNS
    assert str(clean["timestamp"].dtype) == "datetime64[ns, UTC]"


def test_rejects_unvalidated_values(etl):
    with pytest.raises(ValueError, match="NaN"):
        resample.resample_series(kept_frame([0, 5], [1.0, np.nan]), hourly(etl))


# --------------------------------------------------------------------------- quality


def run_quality(raw: pd.DataFrame, etl: EtlSettings) -> pd.DataFrame:
    result = validate.validate_rows(raw, etl, "src.csv")
    clean = resample.resample_series(result.kept, etl)
    return quality.quality_table(result, clean, raw, etl, "part", "src.csv")


def test_quality_gaps_coverage_and_fill_counts(etl):
    # Hours observed: 0,1,4,9 -> gaps of 2 bins (filled) and 4 bins (left missing).
    hours = [0, 1, 4, 9]
    raw = kept_frame([h * 60 for h in hours], [1.0] * 4)
    cfg = hourly(etl, max_fill_gap=3)
    table = run_quality(raw, cfg)
    assert tuple(table.columns) == QUALITY_COLUMNS
    row = table.iloc[0]
    assert row["expected_bins"] == 10 and row["observed_bins"] == 4
    assert row["coverage"] == pytest.approx(0.4)
    assert row["gap_count"] == 2 and row["longest_gap_bins"] == 4
    assert row["filled_points"] == 2 and row["unfilled_points"] == 4
    assert row["history_hours"] == pytest.approx(10.0)
    assert row["first_timestamp"] == T0 and row["last_timestamp"] == T0 + pd.Timedelta(hours=9)
    assert row["partition"] == "part" and row["source_file"] == "src.csv"
    flags = row["flags"].split(";")
    assert {"too_short", "low_coverage", "long_gaps", "irregular"} <= set(flags)
    assert "duplicates" not in flags and "quarantined_rows" not in flags


def test_quality_all_quarantined_series_still_listed(etl):
    raw = pd.concat(
        [
            kept_frame([0, 5], [1.0, 2.0], resource_id="good"),
            kept_frame([0, 5], [-1.0, np.nan], resource_id="bad"),
        ],
        ignore_index=True,
    )
    table = run_quality(raw, hourly(etl)).set_index("resource_id")
    assert list(table.index) == ["bad", "good"]
    bad = table.loc["bad"]
    assert bad["coverage"] == 0.0 and bad["expected_bins"] == 0
    assert bad["rows_in"] == 2 and bad["rows_quarantined"] == 2 and bad["rows_kept"] == 0
    assert pd.isna(bad["first_timestamp"])
    assert {"all_quarantined", "quarantined_rows", "too_short"} <= set(bad["flags"].split(";"))
    assert "all_quarantined" not in table.loc["good", "flags"]


def test_quality_pegged_only_for_percent_metrics(etl):
    level = etl.pegged_level
    values = [level, level + 0.5, 50.0, 10.0]  # half the samples at the ceiling
    raw = pd.concat(
        [
            kept_frame([0, 5, 10, 15], values, metric="cpu_utilization"),
            kept_frame([0, 5, 10, 15], values, metric="network_in_bytes"),
        ],
        ignore_index=True,
    )
    table = run_quality(raw, hourly(etl)).set_index("metric")
    assert table.loc["cpu_utilization", "pegged_fraction"] == pytest.approx(0.5)
    assert "pegged" in table.loc["cpu_utilization", "flags"].split(";")
    assert table.loc["network_in_bytes", "pegged_fraction"] == 0.0
    assert "pegged" not in table.loc["network_in_bytes", "flags"].split(";")


def test_quality_history_threshold_and_step_statistics(etl):
    min_hours = etl.min_history_hours
    n_bins = int(min_hours)  # exactly the minimum number of hourly bins: long enough
    minutes = np.arange(0, n_bins * 60, 5)
    long_enough = kept_frame(minutes, np.ones(len(minutes)), resource_id="long")
    shorter = kept_frame(minutes[:-12], np.ones(len(minutes) - 12), resource_id="short")
    raw = pd.concat([long_enough, shorter], ignore_index=True)
    table = run_quality(raw, hourly(etl)).set_index("resource_id")
    assert table.loc["long", "history_hours"] == pytest.approx(n_bins)
    assert not table.loc["long", "too_short"]
    assert table.loc["short", "too_short"]
    assert table.loc["long", "median_step_seconds"] == 300.0
    assert table.loc["long", "irregular_fraction"] == 0.0
    assert table.loc["long", "flags"] == ""


def test_quality_counts_duplicates_and_unsorted_from_validation(etl):
    raw = kept_frame([10, 0, 0, 5, 15], [1.0, 2.0, 4.0, 3.0, 1.0])
    table = run_quality(raw, hourly(etl))
    row = table.iloc[0]
    assert row["duplicates"] == 1 and row["unsorted_rows"] == 3  # 0, 0 and 5 arrive after 10
    assert row["rows_in"] == 5 and row["rows_kept"] == 5
    assert "duplicates" in row["flags"].split(";")
