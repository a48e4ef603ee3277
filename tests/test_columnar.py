"""The data stage's columnar helpers (capforecast.data.columnar), and the promise that comes with
them: validation, resampling and the quality table give the same results whether the
identifiers are object columns or categoricals, and whatever order the rows arrive in."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from capforecast.config import validated_config
from capforecast.contracts import RAW_COLUMNS
from capforecast.data import columnar, quality, resample, validate
from capforecast.settings import EtlSettings, etl_settings


@pytest.fixture(scope="module")
def etl() -> EtlSettings:
    return etl_settings(validated_config({})["etl"])


def hostile_raw(seed: int = 3) -> pd.DataFrame:
    """Six series of 5-minute samples with what validation has to deal with: missing and blank
    ids, whitespace, NaN/inf/negative values, percentages to repair and to quarantine, missing
    and out-of-window timestamps, duplicates, a gap, jitter, rows out of time order."""
    rng = np.random.default_rng(seed)
    t0 = pd.Timestamp("2024-05-01", tz="UTC")
    frames = []
    for i, metric in enumerate(["cpu_utilization", "network_in_bytes"] * 3):
        n = 600
        minutes = np.arange(n) * 5.0
        if i == 2:
            minutes = minutes + rng.integers(-1, 2, n) * 0.5  # jitter: an irregular series
        if i == 3:
            minutes = np.delete(minutes, np.arange(100, 160))  # a gap
        frames.append(
            pd.DataFrame(
                {
                    "timestamp": t0 + pd.to_timedelta(minutes, unit="min"),
                    "resource_id": f"vm-{i // 2}",
                    "metric": metric,
                    "value": rng.uniform(0, 99, len(minutes)),
                }
            )
        )
    raw = pd.concat(frames, ignore_index=True)
    raw["resource_id"] = raw["resource_id"].astype(object)
    raw["metric"] = raw["metric"].astype(object)
    n = len(raw)
    pick = rng.permutation(n)
    raw.loc[pick[:5], "resource_id"] = None
    raw.loc[pick[5:8], "metric"] = None
    raw.loc[pick[8:12], "value"] = np.nan
    raw.loc[pick[12:14], "value"] = np.inf
    raw.loc[pick[14:16], "value"] = -1.0
    cpu = np.flatnonzero((raw["metric"] == "cpu_utilization").to_numpy())
    raw.loc[cpu[:6], "value"] = 102.0  # repaired
    raw.loc[cpu[6:9], "value"] = 150.0  # quarantined
    raw.loc[pick[16:19], "timestamp"] = pd.NaT
    raw.loc[pick[19:21], "timestamp"] = pd.Timestamp("1971-01-01", tz="UTC")
    raw.loc[pick[21:23], "value"] = 1e300
    duplicates = raw.iloc[pick[30:60]].assign(value=lambda f: f["value"] * 1.01)
    raw = pd.concat([raw, duplicates], ignore_index=True)
    raw = raw.sample(frac=1.0, random_state=seed).reset_index(drop=True)
    # In time order across series, but for a few samples of one series swapped with the next.
    raw = raw.sort_values("timestamp", kind="stable", na_position="first").reset_index(drop=True)
    series = np.flatnonzero(
        ((raw["resource_id"] == "vm-1") & (raw["metric"] == "cpu_utilization")).to_numpy()
    )
    order = np.arange(len(raw))
    for k in range(10, 200, 20):
        order[series[k]], order[series[k + 1]] = series[k + 1], series[k]
    return raw.iloc[order].reset_index(drop=True)[list(RAW_COLUMNS)]


def as_categorical(raw: pd.DataFrame, shuffle_categories: bool = False) -> pd.DataFrame:
    out = raw.copy()
    for col in ("resource_id", "metric"):
        cat = out[col].astype("category")
        if shuffle_categories:
            cats = list(cat.cat.categories)[::-1]
            cat = cat.cat.reorder_categories(cats)
        out[col] = cat
    return out


def etl_outputs(raw: pd.DataFrame, etl: EtlSettings) -> dict:
    result = validate.validate_rows(raw, etl, "file.parquet")
    clean = resample.resample_series(result.kept, etl)
    table = quality.quality_table(result, clean, raw, etl, "p", "file.parquet")
    kept = columnar.as_object_columns(result.kept, ("resource_id", "metric"))
    return {
        "counts": result.counts,
        "series_counts": result.series_counts,
        "quarantine": result.quarantine,
        "kept": kept,
        "clean": clean,
        "quality": table,
    }


def assert_same(a: dict, b: dict) -> None:
    assert a["counts"] == b["counts"]
    for name in ("series_counts", "quarantine", "kept", "clean", "quality"):
        pd.testing.assert_frame_equal(a[name], b[name], check_exact=True)


@pytest.mark.parametrize("shuffle_categories", [False, True])
def test_categorical_ids_give_the_same_results_as_object_ids(etl, shuffle_categories):
    raw = hostile_raw()
    expected = etl_outputs(raw, etl)
    assert expected["counts"]["rows_quarantined"] > 0
    assert expected["counts"]["rows_repaired"] > 0
    assert expected["counts"]["duplicates"] > 0
    assert expected["counts"]["unsorted_rows"] > 0
    assert (expected["quality"]["irregular_fraction"] > 0).any()
    assert_same(etl_outputs(as_categorical(raw, shuffle_categories), etl), expected)


def test_results_do_not_depend_on_the_row_order(etl):
    """Grouped by series, in time order across series, or shuffled: the same kept rows, clean
    data and quality table (only the quarantine's row numbers and the unsorted count move)."""
    raw = hostile_raw()
    base = etl_outputs(raw, etl)
    grouped = raw.sort_values(["resource_id", "metric"], kind="stable").index.to_numpy()
    for order in (grouped, np.random.default_rng(0).permutation(len(raw))):
        other = etl_outputs(raw.iloc[order].reset_index(drop=True), etl)
        for name in ("kept", "clean"):
            pd.testing.assert_frame_equal(other[name], base[name], check_exact=False, rtol=1e-12)
        cols = [c for c in base["quality"].columns if c not in ("flags", "unsorted_rows")]
        pd.testing.assert_frame_equal(
            other["quality"][cols], base["quality"][cols], check_exact=False, rtol=1e-12
        )
        assert other["counts"]["rows_quarantined"] == base["counts"]["rows_quarantined"]


def test_kept_frame_shares_no_memory_with_the_raw_frame(etl):
    raw = as_categorical(hostile_raw().dropna().query("value >= 0 and value < 100"))
    raw = raw.sort_values(["resource_id", "metric", "timestamp"]).drop_duplicates(
        ["resource_id", "metric", "timestamp"]
    )
    raw = raw[raw["timestamp"] > pd.Timestamp("2000-01-01", tz="UTC")].reset_index(drop=True)
    kept = validate.validate_rows(raw, etl, "f").kept
    assert len(kept) == len(raw)
    for col in RAW_COLUMNS:
        a = raw[col].cat.codes if col in ("resource_id", "metric") else raw[col]
        b = kept[col].cat.codes if col in ("resource_id", "metric") else kept[col]
        assert not np.shares_memory(np.asarray(a.array), np.asarray(b.array)), col


def test_parquet_round_trip_writes_the_bytes_of_an_object_frame(tmp_path):
    frame = pd.DataFrame(
        {
            "timestamp": pd.to_datetime(["2024-01-01", "2024-01-02", None], utc=True),
            "resource_id": pd.Series(["b", None, "a"], dtype=object),
            "metric": pd.Series(["cpu", "cpu", "mem"], dtype=object),
            "value": [1.0, np.nan, 3.0],
        }
    )
    frame.to_parquet(tmp_path / "object.parquet", index=False)
    columnar.write_parquet(as_categorical(frame, True), tmp_path / "categorical.parquet")
    assert (tmp_path / "object.parquet").read_bytes() == (
        tmp_path / "categorical.parquet"
    ).read_bytes()
    back = columnar.read_parquet(tmp_path / "categorical.parquet")
    assert columnar.is_categorical(back["resource_id"])
    assert list(back["resource_id"].cat.categories) == ["a", "b"]
    pd.testing.assert_frame_equal(columnar.as_object_columns(back, columnar.ID_COLUMNS), frame)
    # A column with no names at all stays what pandas writes for it.
    empty = frame.assign(resource_id=pd.Series([None] * 3, dtype=object))
    empty.to_parquet(tmp_path / "object_empty.parquet", index=False)
    columnar.write_parquet(
        empty.assign(resource_id=empty["resource_id"].astype("category")),
        tmp_path / "categorical_empty.parquet",
    )
    assert (tmp_path / "object_empty.parquet").read_bytes() == (
        tmp_path / "categorical_empty.parquet"
    ).read_bytes()


@pytest.mark.parametrize("layout", ["sorted", "grouped", "interleaved", "random"])
def test_code_helpers_match_numpy(layout):
    rng = np.random.default_rng(1)
    code = np.repeat(np.arange(50), 40)
    ts = np.tile(np.arange(40), 50) * 300
    if layout == "grouped":
        blocks = rng.permutation(50)
        order = np.concatenate([np.arange(b * 40, (b + 1) * 40) for b in blocks])
        code, ts = code[order], ts[order]
    elif layout == "interleaved":
        order = np.lexsort((code, ts))
        code, ts = code[order], ts[order]
    elif layout == "random":
        order = rng.permutation(len(code))
        code, ts = code[order], ts[order]
    present, counts = columnar.code_counts(code)
    np.testing.assert_array_equal(present, np.unique(code))
    np.testing.assert_array_equal(counts, np.unique(code, return_counts=True)[1])
    np.testing.assert_array_equal(columnar.distinct(code), np.unique(code))
    np.testing.assert_array_equal(columnar.count_in(code[::3], present), np.bincount(code[::3]))
    order = columnar.series_time_order(code, ts)
    want = np.lexsort((ts, code))
    got = np.arange(len(code)) if order is None else order
    np.testing.assert_array_equal(got, want)


def test_features_sort_by_series_id_like_sort_values(etl):
    """build_features sorts by the series id's rank and the timestamp on integer keys: the same
    rows in the same order as sort_values on the id strings, also when the ids sort otherwise
    than (resource_id, metric) ("a b|m" < "a|m") and for rows in any order."""
    from capforecast.contracts import series_id
    from capforecast.data.features import FEATURE_COLUMNS, build_features

    clean = resample.resample_series(validate.validate_rows(hostile_raw(), etl, "f").kept, etl)
    clean.loc[: len(clean) // 3, "resource_id"] = "a b"
    clean.loc[len(clean) // 3 :, "resource_id"] = clean["resource_id"].str.replace("vm-", "a|")
    for frame in (clean, clean.sample(frac=1.0, random_state=2).reset_index(drop=True)):
        got = build_features(frame)
        ids = [series_id(r, m) for r, m in zip(frame["resource_id"], frame["metric"], strict=True)]
        want = (
            frame.assign(series_id=ids)
            .rename(columns={"value": "y"})
            .assign(
                hour=lambda f: f["timestamp"].dt.hour.astype("int8"),
                dayofweek=lambda f: f["timestamp"].dt.dayofweek.astype("int8"),
            )
            .sort_values(["series_id", "timestamp"], ignore_index=True)[list(FEATURE_COLUMNS)]
        )
        pd.testing.assert_frame_equal(got, want, check_exact=True)
