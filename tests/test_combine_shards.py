"""combine_forecasts one shard at a time gives the rows the whole fleet combined at once gives
(the rule's former code, kept here as the reference), whatever the sharding."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from capforecast.config import validated_config
from capforecast.contracts import quantile_column, series_id
from capforecast.forecast import no_data, shards
from capforecast.forecast.calibration import POOLED
from capforecast.forecast.combine import combine_forecast_files, forecast_files_by_shard
from capforecast.forecast.evaluate import combine_selected
from capforecast.forecast.fit import model_quantiles
from capforecast.forecast.panel import series_bounds
from capforecast.settings import forecast_settings

CONFIG = validated_config({})
SETTINGS = forecast_settings(CONFIG["forecast"])
PERCENT = CONFIG["etl"]["percent_metrics"]
LEVELS = model_quantiles(SETTINGS)
MODELS = ("theta", "predict_linear", "seasonal_naive_daily")
START = pd.Timestamp("2026-03-01", tz="UTC")
KEYS = ["series_id", "resource_id", "metric"]


def fleet(n_resources: int = 7, horizon: int = 12, seed: int = 3) -> pd.DataFrame:
    """Every model's final forecast of 2 metrics per resource; cpu forecasts run above 100 and
    one series starts an hour later (the fleet's present)."""
    rng = np.random.default_rng(seed)
    frames = []
    for r in range(n_resources):
        for metric in ("cpu_utilization", "network_in_bytes"):
            start = START + pd.Timedelta(hours=1 if (r, metric) == (3, "network_in_bytes") else 0)
            for model in MODELS:
                if (r, model) == (5, "theta"):
                    continue  # a model without this series: the weights renormalise
                level = rng.uniform(40, 110) if metric == "cpu_utilization" else 5e6
                median = level + rng.normal(0, level * 0.05, horizon)
                spread = rng.uniform(0.05, 0.3) * level
                frame = pd.DataFrame(
                    {
                        "model": model,
                        "series_id": series_id(f"i-{r}", metric),
                        "resource_id": f"i-{r}",
                        "metric": metric,
                        "timestamp": pd.date_range(start, periods=horizon, freq="h"),
                        "mean": median,
                        "model_used": model,
                        "fit_seconds": rng.uniform(0.1, 1.0),
                    }
                )
                for q in LEVELS:
                    frame[quantile_column(q)] = median + (q - 0.5) * 2 * spread
                frames.append(frame)
    return pd.concat(frames, ignore_index=True)


def selection_table(forecasts: pd.DataFrame) -> pd.DataFrame:
    """Two models per series with uneven weights; one series left out (equal weights)."""
    rows = []
    for i, sid in enumerate(sorted(forecasts["series_id"].unique())):
        if i == 4:
            continue
        first, second = MODELS[i % 3], MODELS[(i + 1) % 3]
        rows += [(sid, first, 0.7), (sid, second, 0.3)]
    table = pd.DataFrame(rows, columns=["series_id", "model", "weight"])
    return table.assign(combination="median")


def calibration_table(forecasts: pd.DataFrame) -> pd.DataFrame:
    """Own factors for some series, a pooled one for the rest."""
    rows = []
    for q in sorted(set(LEVELS) - {0.5}):
        rows.append((POOLED, q, 1.2))
        for sid in sorted(forecasts["series_id"].unique())[::3]:
            rows.append((sid, q, 0.8))
    return pd.DataFrame(rows, columns=["series_id", "quantile", "scale"])


def quality_table(forecasts: pd.DataFrame) -> pd.DataFrame:
    """Every series kept rows, but two series of the quality table kept none."""
    kept = forecasts[["resource_id", "metric"]].drop_duplicates().assign(rows_kept=100)
    empty = pd.DataFrame(
        {
            "resource_id": ["i-0", "i-gone"],
            "metric": ["disk_used_percent", "cpu_utilization"],
            "rows_kept": 0,
        }
    )
    return pd.concat([kept, empty], ignore_index=True)


def reference_combine(forecasts, selection, calibration, quality) -> pd.DataFrame:
    """The whole fleet at once: the rule's code before it streamed shards."""
    candidates = {
        str(model): frame.reset_index(drop=True)
        for model, frame in forecasts.groupby("model", sort=False)
    }
    keys = pd.concat(candidates.values())[KEYS].drop_duplicates("series_id")
    selected = combine_selected(
        candidates, selection, calibration, SETTINGS, bounds=series_bounds(keys, PERCENT)
    )
    selected = selected.drop(columns=["resource_id", "metric"], errors="ignore").merge(
        keys, on="series_id", how="left", validate="many_to_one"
    )
    selected["model"] = "selected"
    empty = no_data.forecast_rows(quality, selected)
    return pd.concat([selected, empty, *candidates.values()], ignore_index=True)


def write_shards(forecasts: pd.DataFrame, root, n_shards: int) -> list:
    """Each model's rows in hash shards of one group, plus an empty shard file."""
    paths = []
    for shard in range(n_shards):
        rows = shards.select_shard(forecasts, shard, n_shards)
        for model in MODELS:
            path = root / "grp" / str(shard) / f"{model}.parquet"
            path.parent.mkdir(parents=True, exist_ok=True)
            rows[rows["model"] == model].to_parquet(path, index=False)
            paths.append(path)
    empty = root / "other" / "0" / "theta.parquet"
    empty.parent.mkdir(parents=True)
    pd.DataFrame().to_parquet(empty, index=False)
    return [*paths, empty]


def comparable(frame: pd.DataFrame) -> pd.DataFrame:
    order = ["model", "series_id", "timestamp"]
    frame = frame.sort_values(order).reset_index(drop=True)
    frame = frame[sorted(frame.columns)]
    # Object columns of all-NaN rows read back as Arrow strings or nulls: compare as text.
    for column in frame.columns:
        if frame[column].dtype == object:
            frame[column] = frame[column].astype("string")
    return frame


@pytest.mark.parametrize("n_shards", [1, 3, 5])
def test_streamed_combine_equals_the_whole_fleet_combined_at_once(tmp_path, n_shards):
    forecasts = fleet()
    selection, calibration = selection_table(forecasts), calibration_table(forecasts)
    quality = quality_table(forecasts)
    paths = write_shards(forecasts, tmp_path / "shards", n_shards)
    output = tmp_path / "forecasts.parquet"
    summary = combine_forecast_files(
        paths,
        selection,
        calibration,
        quality,
        output,
        forecast_cfg=SETTINGS,
        percent_metrics=PERCENT,
    )
    got = pd.read_parquet(output)
    expected = reference_combine(forecasts, selection, calibration, quality)
    pd.testing.assert_frame_equal(comparable(got), comparable(expected), check_dtype=False)
    # Not vacuous: calibration, bounds, fallbacks and the no-data rows all acted.
    selected = got[got["model"] == "selected"]
    assert selected["interval_scaled"].any() and selected["selection_fallback"].any()
    assert selected.loc[selected["metric"] == "cpu_utilization", "q0.9"].max() <= 100.0
    no_rows = selected[selected["model_used"] == no_data.NO_DATA_MODEL_USED]
    assert sorted(no_rows["series_id"].unique()) == [
        "i-0|disk_used_percent",
        "i-gone|cpu_utilization",
    ]
    # ... on the timestamps of the series that starts latest
    assert no_rows["timestamp"].min() == START + pd.Timedelta(hours=1)
    assert summary.series == forecasts["series_id"].nunique() and summary.without_data == 2
    assert summary.models == {*MODELS, "selected"}
    # Selected rows first (the risk stage reads only those).
    models = got["model"].to_numpy()
    assert (models[: len(selected)] == "selected").all()


def test_shards_are_read_one_at_a_time_in_a_stable_order(tmp_path):
    paths = write_shards(fleet(n_resources=3), tmp_path, 2)
    groups = forecast_files_by_shard(reversed(paths))
    assert [[p.relative_to(tmp_path).as_posix() for p in g] for g in groups] == [
        [f"grp/{k}/{m}.parquet" for m in sorted(MODELS)] for k in range(2)
    ] + [["other/0/theta.parquet"]]


def test_a_column_null_in_one_shard_takes_the_type_of_the_others(tmp_path):
    forecasts = fleet(n_resources=2).assign(note=None)
    forecasts.loc[forecasts["resource_id"] == "i-1", "note"] = "restarted"
    paths = []
    for shard, resource in enumerate(("i-0", "i-1")):  # i-0's notes are all null
        for model, rows in forecasts[forecasts["resource_id"] == resource].groupby("model"):
            path = tmp_path / "grp" / str(shard) / f"{model}.parquet"
            path.parent.mkdir(parents=True, exist_ok=True)
            rows.to_parquet(path, index=False)
            paths.append(path)
    assert str(pq.read_schema(paths[0]).field("note").type) == "null"
    output = tmp_path / "forecasts.parquet"
    combine_forecast_files(
        paths,
        selection_table(forecasts),
        calibration_table(forecasts),
        quality_table(forecasts),
        output,
        forecast_cfg=SETTINGS,
        percent_metrics=PERCENT,
    )
    got = pd.read_parquet(output)
    assert str(pq.read_schema(output).field("note").type) == "string"
    candidates = got[got["model"] != "selected"]
    assert candidates.loc[candidates["resource_id"] == "i-1", "note"].eq("restarted").all()
    assert candidates.loc[candidates["resource_id"] == "i-0", "note"].isna().all()
