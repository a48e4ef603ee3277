"""Row validation (capforecast.data.validate) and per-file reconciliation
(capforecast.data.quality)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from capforecast.config import validated_config
from capforecast.contracts import QUARANTINE_COLUMNS, RAW_COLUMNS
from capforecast.data import ingest, partitions, quality, resample, validate
from capforecast.errors import ConfigError
from capforecast.settings import EtlSettings, data_settings, etl_settings


@pytest.fixture(scope="module")
def etl() -> EtlSettings:
    return etl_settings(validated_config({})["etl"])


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


def row_reasons(raw: pd.DataFrame, etl) -> pd.Series:
    """Reason each raw row is quarantined (None for rows kept), as validate_rows reports it."""
    result = validate.validate_rows(raw, etl, "rows.csv")
    reasons = pd.Series([None] * len(raw), dtype=object)
    reasons.iloc[result.quarantine["row"].to_numpy()] = result.quarantine["reason"].to_numpy()
    return reasons


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
    tol = etl.percent_repair_tolerance
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
    reasons = row_reasons(raw_frame(rows), etl)
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
    tol = etl.percent_repair_tolerance
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
    for _, part in result.kept.groupby("resource_id", observed=True):
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
    assert set(np.flatnonzero(row_reasons(raw, etl).notna().to_numpy())) == quarantined_rows
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
        raw = ingest.read_input_file(file, data_settings(data_cfg))
        source = pd.read_csv(file)
        result = validate.validate_rows(raw, etl, str(file))
        recon = quality.file_reconciliation(result, str(file), partitions.partition_name(file))
        assert recon["rows_in"].iloc[0] == len(source) and bool(recon["balanced"].iloc[0])
        assert result.counts["duplicates"] == source["timestamp"].duplicated().sum()
        assert result.counts["rows_quarantined"] == 0  # NAB has no empty or negative values

        clean = resample.resample_series(result.kept, etl)
        assert clean["n_obs"].sum() == len(result.kept)
        step = pd.Timedelta(etl.freq)
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


# ------------------------------------------------ physical limits and the plausible window
FIVE_MINUTES = 300  # seconds between the samples of raw_frame series below


def five_minute_rows(rid: str, metric: str, values: list[float]) -> list[tuple]:
    return [(5 * i, rid, metric, v) for i, v in enumerate(values)]


@pytest.mark.parametrize(
    ("metric", "impossible", "possible"),
    [
        # byte counters: 1e12 B/s x 300 s = 3e14 per sample
        ("network_in_bytes", 1.7976931348623157e308, 2.9e14),
        ("disk_write_bytes", 3.1e14, 2.9e14),
        ("network_out_bytes", 1e300, 7.5e10),
        # counts: 1e9 per second x 300 s = 3e11 per sample
        ("request_count", 3.5e11, 2.5e11),
        # any other metric, named or not: 1e18
        ("memory_available_bytes", 1.7e308, 9e17),
        ("queue_depth", 1.1e18, 1e17),
        ("request_latency", 1e200, 5e4),
    ],
)
def test_values_no_metric_can_have_are_quarantined(etl, metric, impossible, possible):
    values = [1.0, possible, impossible, 2.0, impossible]
    result = validate.validate_rows(raw_frame(five_minute_rows("i-1", metric, values)), etl, "f")
    assert result.quarantine[["row", "reason"]].values.tolist() == [
        [2, "above_physical_limit"],
        [4, "above_physical_limit"],
    ]
    assert result.quarantine["value"].tolist() == [impossible, impossible]
    assert result.kept["value"].tolist() == [1.0, possible, 2.0]
    clean = resample.resample_series(result.kept, etl)
    assert np.isfinite(clean[["value", "value_max"]].to_numpy()).all()


def test_percentages_keep_their_own_reason_above_every_limit(etl):
    rows = five_minute_rows("i-1", "cpu_utilization", [50.0, 1.7e308, 104.0])
    result = validate.validate_rows(raw_frame(rows), etl, "f")
    assert result.quarantine["reason"].tolist() == ["percent_above_range"]
    assert result.kept["value"].tolist() == [50.0, 100.0]  # 104 within tolerance: repaired


@pytest.mark.parametrize(
    ("step_seconds", "value", "kept"),
    [
        (300, 5e14, False),  # 5-minute samples: at most 3e14
        (3600, 5e14, True),  # hourly sums: at most 3.6e15
        (3600, 4e15, False),
        (0.1, 9e11, True),  # sub-second samples: never below one second's worth (per-second rates)
        (0.1, 1.1e12, False),
    ],
)
def test_byte_ceiling_grows_with_the_series_sample_period(etl, step_seconds, value, kept):
    stamps = [T0 + pd.Timedelta(seconds=step_seconds * i) for i in range(6)]
    raw = pd.DataFrame(
        {
            "timestamp": pd.Series(stamps, dtype="datetime64[ns, UTC]"),
            "resource_id": "i-1",
            "metric": "disk_read_bytes",
            "value": [1e6, 2e6, value, 3e6, 4e6, 5e6],
        }
    )
    reasons = row_reasons(raw, etl).tolist()
    assert reasons == [None, None, None if kept else "above_physical_limit", None, None, None]


def test_single_sample_series_uses_the_modelling_step_as_its_period(etl):
    # No step to measure: the sample stands for one etl.freq bin (1 h: 3.6e15 bytes).
    rows = [(0, "i-1", "network_in_bytes", 3.5e15), (0, "i-2", "network_in_bytes", 3.7e15)]
    reasons = row_reasons(raw_frame(rows), etl).tolist()
    assert reasons == [None, "above_physical_limit"]


def test_value_limits_are_configurable_per_metric_kind():
    etl = etl_settings(
        validated_config(
            {
                "etl": {
                    "value_limits": {
                        "byte_metrics": ["network_in_bytes", "nic_rx"],
                        "max_bytes_per_second": 1.25e9,  # a 10 Gbit/s fleet
                        "count_metrics": ["request_count", "jobs"],
                        "max_counts_per_second": 1000,
                        "max_value": 1e12,
                    }
                }
            }
        )["etl"]
    )
    rows = [
        *five_minute_rows("i-1", "nic_rx", [1e9, 3.8e11, 3.7e11]),  # 1.25e9 x 300 = 3.75e11
        *five_minute_rows("i-1", "jobs", [10.0, 3.1e5, 2.9e5]),  # 1000 x 300 = 3e5
        *five_minute_rows("i-1", "disk_write_bytes", [1.0, 1.1e12, 9e11]),  # no longer bytes
    ]
    reasons = row_reasons(raw_frame(rows), etl).tolist()
    limit = "above_physical_limit"
    assert reasons == [None, limit, None, None, limit, None, None, limit, None]


@pytest.mark.parametrize(
    ("minutes", "outside"),
    [
        (None, False),  # the series' own samples
        (-(pd.Timestamp("2024-05-01") - pd.Timestamp("1970-01-01")).total_seconds() / 60, True),
        (
            -(pd.Timestamp("2024-05-01") - pd.Timestamp("1999-12-31 23:59")).total_seconds() / 60,
            True,
        ),
        (-(pd.Timestamp("2024-05-01") - pd.Timestamp("2000-01-01")).total_seconds() / 60, False),
        ((pd.Timestamp("2100-01-01") - pd.Timestamp("2024-05-01")).total_seconds() / 60, False),
        (
            (pd.Timestamp("2100-01-01 00:01") - pd.Timestamp("2024-05-01")).total_seconds() / 60,
            True,
        ),
        ((pd.Timestamp("2262-04-11") - pd.Timestamp("2024-05-01")).total_seconds() / 60, True),
    ],
)
def test_timestamps_outside_the_window_are_quarantined_and_the_grid_stays_bounded(
    etl, minutes, outside
):
    rows = five_minute_rows("i-1", "cpu_utilization", [10.0, 20.0, 30.0])
    if minutes is not None:
        rows.append((minutes, "i-1", "cpu_utilization", 40.0))
    result = validate.validate_rows(raw_frame(rows), etl, "f")
    expected = [[3, "timestamp_outside_window"]] if outside else []
    assert result.quarantine[["row", "reason"]].values.tolist() == expected
    assert result.counts["rows_in"] == result.counts["rows_kept"] + len(expected)
    clean = resample.resample_series(result.kept, etl)
    first, last = result.kept["timestamp"].min(), result.kept["timestamp"].max()
    assert len(clean) == (last.floor("1h") - first.floor("1h")) // pd.Timedelta("1h") + 1
    assert len(clean) <= 876_600 + 1  # never more bins than the window holds


def test_window_is_fixed_config_not_the_clock(schema):
    """A rerun next month gives the same result: the window is two fixed instants of the
    config, and a future-dated sample is quarantined only when timestamp_max says so."""
    etl_schema = schema["properties"]["etl"]["properties"]
    assert etl_schema["timestamp_min"]["default"] == "2000-01-01T00:00:00Z"
    assert etl_schema["timestamp_max"]["default"] == "2100-01-01T00:00:00Z"
    next_year = (pd.Timestamp.now(tz="UTC") - T0).total_seconds() / 60 + 365 * 24 * 60
    rows = [(0, "i-1", "cpu_utilization", 1.0), (next_year, "i-1", "cpu_utilization", 2.0)]
    default = etl_settings(validated_config({})["etl"])
    assert row_reasons(raw_frame(rows), default).tolist() == [None, None]
    with pytest.raises(ConfigError, match=r"synthetic\.start"):  # the synthetic fleet is 2026
        validated_config({"etl": {"timestamp_max": "2024-06-01"}})
    local = etl_settings(
        validated_config(
            {"data": {"source": "local", "path": "x"}, "etl": {"timestamp_max": "2024-06-01"}}
        )["etl"]
    )
    assert row_reasons(raw_frame(rows), local).tolist() == [
        None,
        "timestamp_outside_window",
    ]


@pytest.mark.parametrize(
    ("fixture", "pattern"),
    [
        ("nab-aws-cloudwatch", "*_network_in_*.csv"),
        ("nab-aws-cloudwatch", "*disk_write_bytes*.csv"),
        ("nab-aws-cloudwatch", "*NetworkIn.csv"),
        ("nab-aws-cloudwatch", "elb_request_count*.csv"),
        ("bitbrains-rnd", "long/*.parquet"),
    ],
)
def test_real_byte_and_count_samples_are_all_kept_with_headroom(project_root, fixture, pattern):
    """The default ceilings never quarantine real data: every byte and count sample of the
    vendored CloudWatch and Bitbrains traces is kept, the largest at least 1000x below it."""
    from capforecast.data import value_limits

    cfg = validated_config({"data": {"source": "local", "path": "x"}})
    files = sorted((project_root / "tests" / "data" / fixture).glob(pattern))
    assert files
    limits = cfg["etl"]["value_limits"]
    rate_of = {m: limits["max_bytes_per_second"] for m in limits["byte_metrics"]}
    rate_of.update({m: limits["max_counts_per_second"] for m in limits["count_metrics"]})
    if fixture == "bitbrains-rnd":
        # Already the raw long format (what ingest writes for it); reading only the byte rows
        # keeps this test at a second rather than the seven that ingesting 6M rows takes.
        import pyarrow.dataset as ds

        rows = ds.field("metric").isin(list(rate_of))
        raw = ds.dataset([str(f) for f in files]).to_table(filter=rows).to_pandas()
    else:
        raw = pd.concat([ingest.read_input_file(f, data_settings(cfg["data"])) for f in files])
    raw = raw[raw["metric"].isin(list(rate_of))].reset_index(drop=True)
    assert len(raw) > 1000
    reasons = row_reasons(raw, etl_settings(cfg["etl"]))
    assert reasons.isna().all(), reasons.value_counts()
    top = int(raw["value"].idxmax())
    codes = validate.series_codes(raw)
    stamps, _ = validate.timestamps_ns(raw)
    periods = value_limits.sample_periods_seconds(
        codes.code, stamps, codes.code == codes.code[top], 3600.0
    )
    assert periods[int(codes.code[top])] == FIVE_MINUTES
    ceiling = rate_of[raw.at[top, "metric"]] * FIVE_MINUTES
    assert raw.at[top, "value"] * 1000 < ceiling
