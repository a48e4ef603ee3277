"""Row validation (capforecast.validate) and per-file reconciliation (capforecast.quality)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from capforecast import ingest, quality, resample, validate
from capforecast.config import validated_config
from capforecast.contracts import QUARANTINE_COLUMNS, RAW_COLUMNS


@pytest.fixture(scope="module")
def etl() -> dict:
    return validated_config({})["etl"]


T0 = pd.Timestamp("2024-05-01 00:00", tz="UTC")


def raw_frame(rows: list[tuple]) -> pd.DataFrame:
    """Raw long rows from (minutes after T0 or None, resource_id, metric, value)."""
    return pd.DataFrame(
        {
            "timestamp": pd.Series(
                [T0 + pd.Timedelta(minutes=m) if m is not None else pd.NaT for m, *_ in rows],
                dtype="datetime64[ns, UTC]",
            ),
            "resource_id": pd.Series([r[1] for r in rows], dtype=object),
            "metric": pd.Series([r[2] for r in rows], dtype=object),
            "value": pd.Series([r[3] for r in rows], dtype="float64"),
        }
    )


def test_clean_rows_are_kept_unchanged_and_sorted(etl):
    rows = [
        (10, "i-2", "cpu_utilization", 3.0),
        (5, "i-1", "memory_utilization", 2.0),
        (0, "i-1", "cpu_utilization", 1.0),
        (5, "i-1", "cpu_utilization", 4.0),
    ]
    result = validate.validate_rows(raw_frame(rows), etl, "f.csv")
    assert tuple(result.kept.columns) == RAW_COLUMNS
    expected = sorted(rows, key=lambda r: (r[1], r[2], r[0]))
    assert list(zip(result.kept["resource_id"], result.kept["metric"], strict=True)) == [
        (r[1], r[2]) for r in expected
    ]
    assert result.kept["value"].tolist() == [r[3] for r in expected]
    assert result.kept["timestamp"].tolist() == [T0 + pd.Timedelta(minutes=r[0]) for r in expected]
    assert str(result.kept["timestamp"].dtype) == "datetime64[ns, UTC]"
    assert result.counts == {
        "rows_in": 4,
        "rows_kept": 4,
        "rows_repaired": 0,
        "rows_quarantined": 0,
        "duplicates": 0,
        "unsorted_rows": 0,
    }
    assert tuple(result.quarantine.columns) == QUARANTINE_COLUMNS and result.quarantine.empty


def test_each_reason_and_its_precedence(etl):
    tol = etl["percent_repair_tolerance"]
    rows = [
        (None, "i-1", "cpu_utilization", np.nan),  # no timestamp wins over no value
        (1, None, "cpu_utilization", 1.0),
        (2, "  ", "cpu_utilization", 1.0),  # blank id counts as missing
        (3, "i-1", None, 1.0),
        (4, "i-1", "cpu_utilization", np.nan),
        (5, "i-1", "cpu_utilization", np.inf),
        (6, "i-1", "network_in_bytes", -np.inf),  # non-finite before negative
        (7, "i-1", "network_in_bytes", -1.0),
        (8, "i-1", "cpu_utilization", 100.0 + tol + 0.5),
        (9, "i-1", "network_in_bytes", 100.0 + tol + 0.5),  # not a percentage: fine
    ]
    reasons = validate.quarantine_reasons(raw_frame(rows), etl)
    assert reasons.tolist() == [
        "missing_timestamp",
        "missing_resource_id",
        "missing_resource_id",
        "missing_metric",
        "missing_value",
        "non_finite",
        "non_finite",
        "negative_value",
        "percent_above_range",
        None,
    ]
    result = validate.validate_rows(raw_frame(rows), etl, "f.csv")
    q = result.quarantine
    assert q["row"].tolist() == list(range(9))
    assert q["reason"].tolist() == reasons.tolist()[:9]
    assert set(q["source_file"]) == {"f.csv"}
    assert q["value"].iloc[8] == rows[8][3]  # original value, not a clipped one
    assert result.counts["rows_quarantined"] == 9 and result.counts["rows_kept"] == 1


def test_percent_repair_within_tolerance(etl):
    tol = etl["percent_repair_tolerance"]
    rows = [
        (0, "i-1", "cpu_utilization", 100.0),
        (5, "i-1", "cpu_utilization", 100.0 + tol),  # edge of the tolerance: repaired
        (10, "i-1", "cpu_utilization", 100.0 + tol / 2),
        (15, "i-1", "cpu_utilization", 100.0 + tol + 1e-9),  # just above: quarantined
    ]
    result = validate.validate_rows(raw_frame(rows), etl, "f.csv")
    assert result.kept["value"].tolist() == [100.0, 100.0, 100.0]
    assert result.counts["rows_repaired"] == 2
    assert result.quarantine["row"].tolist() == [3]
    assert result.quarantine["reason"].tolist() == ["percent_above_range"]


def test_duplicates_averaged_and_counted(etl):
    rows = [
        (0, "i-1", "cpu_utilization", 10.0),
        (5, "i-1", "cpu_utilization", 20.0),
        (0, "i-1", "cpu_utilization", 30.0),
        (0, "i-1", "cpu_utilization", np.nan),  # quarantined, not part of the mean
        (0, "i-1", "cpu_utilization", 50.0),
        (0, "i-2", "cpu_utilization", 7.0),  # same time, other series: not a duplicate
    ]
    result = validate.validate_rows(raw_frame(rows), etl, "f.csv")
    i1 = result.kept[result.kept["resource_id"] == "i-1"]
    assert i1["value"].tolist() == [pytest.approx((10 + 30 + 50) / 3), 20.0]
    assert result.counts["duplicates"] == 2
    assert result.counts["rows_kept"] == 5 and result.counts["rows_quarantined"] == 1
    assert len(result.kept) == result.counts["rows_kept"] - result.counts["duplicates"]


def test_unsorted_rows_counted_per_series(etl):
    rows = [
        (10, "i-1", "cpu_utilization", 1.0),
        (0, "i-2", "cpu_utilization", 1.0),
        (5, "i-1", "cpu_utilization", 1.0),  # earlier than 10 of its own series
        (20, "i-1", "cpu_utilization", 1.0),
        (15, "i-1", "cpu_utilization", 1.0),  # earlier than 20
        (5, "i-2", "cpu_utilization", 1.0),
    ]
    result = validate.validate_rows(raw_frame(rows), etl, "f.csv")
    assert result.counts["unsorted_rows"] == 2
    per = result.series_counts.set_index("resource_id")["unsorted_rows"]
    assert per.to_dict() == {"i-1": 2, "i-2": 0}
    assert result.kept["timestamp"].is_monotonic_increasing is False  # two series
    for _, part in result.kept.groupby("resource_id"):
        assert part["timestamp"].is_monotonic_increasing


def test_series_counts_include_fully_quarantined_series(etl):
    rows = [
        (0, "i-1", "cpu_utilization", 1.0),
        (0, "i-2", "cpu_utilization", -1.0),
        (5, "i-2", "cpu_utilization", np.nan),
        (5, None, "cpu_utilization", 1.0),  # no series: file totals only
    ]
    result = validate.validate_rows(raw_frame(rows), etl, "f.csv")
    table = result.series_counts.set_index(["resource_id", "metric"])
    assert table.loc[("i-2", "cpu_utilization"), "rows_in"] == 2
    assert table.loc[("i-2", "cpu_utilization"), "rows_kept"] == 0
    assert table.loc[("i-2", "cpu_utilization"), "rows_quarantined"] == 2
    assert table["rows_in"].sum() == result.counts["rows_in"] - 1
    assert (table["rows_in"] == table["rows_kept"] + table["rows_quarantined"]).all()


def test_counts_reconcile_on_random_dirty_data(etl):
    rng = np.random.default_rng(7)
    n = 2_000
    values = rng.normal(50, 40, n)
    values[rng.random(n) < 0.05] = np.nan
    values[rng.random(n) < 0.02] = np.inf
    raw = pd.DataFrame(
        {
            "timestamp": T0 + pd.to_timedelta(rng.integers(0, 300, n) * 5, unit="min"),
            "resource_id": rng.choice(np.array(["a", "b", "c", None], dtype=object), n),
            "metric": rng.choice(np.array(["cpu_utilization", "network_in_bytes"]), n),
            "value": values,
        }
    )
    result = validate.validate_rows(raw, etl, "f.csv")
    c = result.counts
    assert c["rows_in"] == n == c["rows_kept"] + c["rows_quarantined"]
    assert len(result.quarantine) == c["rows_quarantined"]
    assert len(result.kept) == c["rows_kept"] - c["duplicates"]
    assert np.isfinite(result.kept["value"]).all() and (result.kept["value"] >= 0).all()
    assert not result.kept.duplicated(["resource_id", "metric", "timestamp"]).any()
    quarantined_rows = set(result.quarantine["row"])
    assert len(quarantined_rows) == c["rows_quarantined"]
    expected_reasons = validate.quarantine_reasons(raw, etl)
    assert set(np.flatnonzero(expected_reasons.notna().to_numpy())) == quarantined_rows
    recon = quality.file_reconciliation(result, "f.csv", "p")
    assert bool(recon["balanced"].iloc[0])


def test_file_reconciliation_row(etl):
    rows = [(0, "i-1", "cpu_utilization", 101.0), (0, "i-1", "cpu_utilization", -5.0)]
    result = validate.validate_rows(raw_frame(rows), etl, "in/f.csv")
    recon = quality.file_reconciliation(result, "in/f.csv", "f")
    assert recon.to_dict("records") == [
        {
            "source_file": "in/f.csv",
            "partition": "f",
            "rows_in": 2,
            "rows_kept": 1,
            "rows_repaired": 1,
            "rows_quarantined": 1,
            "duplicates": 0,
            "balanced": True,
        }
    ]


def test_empty_raw_frame(etl):
    result = validate.validate_rows(raw_frame([]), etl, "f.csv")
    assert result.counts["rows_in"] == 0 and result.kept.empty and result.quarantine.empty
    assert result.series_counts.empty


def test_nab_fixture_validates_resamples_and_reconciles(nab_dir, etl):
    cfg = validated_config({"data": {"source": "local", "path": str(nab_dir)}})
    patterns = [
        *cfg["data"]["metric_patterns"],
        {"pattern": "^grok_asg", "metric": "cpu_utilization"},
    ]
    data_cfg = {**cfg["data"], "metric_patterns": patterns}
    files = ingest.list_input_files(str(nab_dir))
    for file in files:
        raw = ingest.read_input_file(file, data_cfg)
        source = pd.read_csv(file)
        result = validate.validate_rows(raw, etl, str(file))
        recon = quality.file_reconciliation(result, str(file), ingest.partition_name(file))
        assert recon["rows_in"].iloc[0] == len(source) and bool(recon["balanced"].iloc[0])
        assert result.counts["duplicates"] == source["timestamp"].duplicated().sum()
        assert result.counts["rows_quarantined"] == 0  # NAB has no empty or negative values

        clean = resample.resample_series(result.kept, etl)
        assert clean["n_obs"].sum() == len(result.kept)
        step = pd.Timedelta(etl["freq"])
        assert (clean["timestamp"].diff().dropna() == step).all()
        assert clean["timestamp"].iloc[0] == pd.Timestamp(
            source["timestamp"].min(), tz="UTC"
        ).floor(step)
        observed = clean[clean["n_obs"] > 0]
        assert observed["value"].between(source["value"].min(), source["value"].max()).all()
        assert (observed["value_max"] >= observed["value"] - 1e-9).all()
        table = quality.quality_table(result, clean, raw, etl, "p", str(file))
        assert len(table) == 1
        assert table["rows_in"].iloc[0] == len(source)
        assert table["expected_bins"].iloc[0] == len(clean)
