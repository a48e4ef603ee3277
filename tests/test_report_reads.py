"""What the report notebooks read of a fleet: small tables made a file (or a batch of rows) at a
time, and the rows of the series they draw, give the same numbers as the whole tables.

The notebooks never hold the fleet's history or forecasts (10,000 series are gigabytes): the
data-quality histograms, the forecast digest (headline, fallbacks, series choice) and the
history percentiles are built partition by partition or batch by batch, then the charts read
their few series with row filters.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from test_reports import make_clean, make_forecasts, make_risk

from capforecast.contracts import series_id
from capforecast.reports import capacity_risk, common, data_quality, forecast_backtest


def partition_files(tmp_path: Path, clean: pd.DataFrame) -> list[Path]:
    """The clean frame written as three partitions (one per resource)."""
    paths = []
    for resource, part in clean.groupby("resource_id", sort=True):
        path = tmp_path / f"{resource}.parquet"
        part.reset_index(drop=True).to_parquet(path, index=False)
        paths.append(path)
    return paths


def messy_forecasts() -> pd.DataFrame:
    """Forecasts in no particular order, with a fallback label on some first rows only and a
    missing model_used on others: the digest must keep each series' first row's label and its
    first label given."""
    forecasts = make_forecasts(make_clean())
    forecasts = forecasts.sample(frac=1.0, random_state=4).reset_index(drop=True)
    first = forecasts.groupby(["model", "series_id"]).head(1).index
    forecasts.loc[first[::2], "model_used"] = "seasonal_naive_daily (fallback: too_short)"
    forecasts.loc[first[1::3], "model_used"] = None
    return forecasts


@pytest.mark.parametrize("batch_rows", [7, 100, 100_000])
def test_forecast_digest_read_in_batches_equals_the_whole_table(tmp_path, batch_rows):
    forecasts = messy_forecasts()
    path = tmp_path / "forecasts.parquet"
    forecasts.to_parquet(path, index=False)
    digest = forecast_backtest.read_forecast_digest(path, batch_rows=batch_rows)
    pd.testing.assert_frame_equal(digest, forecast_backtest.forecast_digest(forecasts))
    # What the report reads of it: the same as from the whole table.
    board = pd.DataFrame({"model": ["selected", "auto_ets"], "wql_relgm": [0.8, 1.0]})
    metrics = pd.DataFrame(columns=["model", "series_id", "window", "is_selection_window"])
    assert forecast_backtest.backtest_headline(
        board, digest
    ) == forecast_backtest.backtest_headline(board, forecasts)
    fallbacks = forecast_backtest.fallback_table(metrics, digest)
    assert len(fallbacks) > 0
    pd.testing.assert_frame_equal(fallbacks, forecast_backtest.fallback_table(metrics, forecasts))
    for n in (0, 2, 10):
        assert forecast_backtest.sample_series_ids(
            digest, n
        ) == forecast_backtest.sample_series_ids(forecasts, n)


def test_forecast_digest_of_an_empty_file(tmp_path):
    forecasts = make_forecasts(make_clean()).iloc[:0]
    path = tmp_path / "forecasts.parquet"
    forecasts.to_parquet(path, index=False)
    digest = forecast_backtest.read_forecast_digest(path)
    assert digest.empty and "model_used" in digest
    assert "No final forecast rows" in forecast_backtest.backtest_headline(
        pd.DataFrame({"model": ["selected"]}), digest
    )


def test_history_percentiles_read_per_partition_equal_the_whole_history(tmp_path):
    clean = make_clean()
    files = partition_files(tmp_path, clean)
    # A series split over two files is computed over both.
    early = clean["timestamp"] < clean["timestamp"][5]
    moved = clean[(clean["resource_id"] == "i-web-1") & early]
    extra = tmp_path / "extra.parquet"
    moved.to_parquet(extra, index=False)
    whole = forecast_backtest.history_p99(pd.concat([clean, moved], ignore_index=True))
    streamed = forecast_backtest.read_history_p99([*files, extra])
    pd.testing.assert_series_equal(streamed, whole)
    forecasts = make_forecasts(clean)
    for n in (1, 3, 6):
        assert forecast_backtest.growth_ranked_series(
            forecast_backtest.forecast_digest(forecasts), streamed, n
        ) == forecast_backtest.growth_ranked_series(forecasts, clean, n)


def test_value_histograms_read_per_partition_equal_the_whole_table(tmp_path):
    clean = make_clean()
    # Ranges that differ between partitions, and a metric found in one partition only.
    clean.loc[clean["resource_id"] == "i-db-1", "value"] *= 3.0
    odd = clean[clean["resource_id"] == "i-web-2"].assign(metric="disk_used_percent")
    clean = pd.concat([clean, odd], ignore_index=True)
    streamed = data_quality.read_value_histograms(partition_files(tmp_path, clean))
    whole = data_quality.value_histograms(clean)
    assert list(streamed) == list(whole) == sorted(clean["metric"].unique())
    for metric, (counts, edges) in whole.items():
        np.testing.assert_array_equal(streamed[metric][0], counts)
        np.testing.assert_array_equal(streamed[metric][1], edges)
        # What Axes.hist counts on the values themselves (gap bins left out).
        shown = clean[(clean["metric"] == metric) & ~clean["is_gap"] & clean["value"].notna()]
        expected = np.histogram(shown["value"], bins=data_quality.VALUE_BINS)
        np.testing.assert_array_equal(counts, expected[0])
        np.testing.assert_array_equal(edges, expected[1])
    figure = data_quality.value_distribution_figure(streamed)
    assert len(figure.axes) == len(whole)
    assert [p.get_height() for p in figure.axes[0].patches] == list(whole[sorted(whole)[0]][0])


def test_read_series_reads_only_the_series_asked_for(tmp_path):
    clean = make_clean()
    files = partition_files(tmp_path, clean)
    everything = common.read_files(files)
    wanted = [series_id("i-web-1", "cpu_utilization"), series_id("i-db-1", "memory_utilization")]
    # The row filters also match i-web-1 memory and i-db-1 cpu: those rows are dropped.
    rows = common.read_series(files, wanted)
    keep = common.with_series_id(everything)["series_id"].isin(wanted)
    pd.testing.assert_frame_equal(rows, everything[keep].reset_index(drop=True))
    none = common.read_series(files, [])
    assert none.empty and list(none.columns) == list(everything.columns)
    forecasts = make_forecasts(clean)
    path = tmp_path / "forecasts.parquet"
    forecasts.to_parquet(path, index=False)
    final = common.read_series(path, wanted, model="selected")
    assert set(final["series_id"]) == set(wanted) and set(final["model"]) == {"selected"}
    selected = forecasts["model"] == "selected"
    assert len(final) == (selected & forecasts["series_id"].isin(wanted)).sum()


def test_risk_charts_need_only_the_rows_of_the_series_they_draw(tmp_path):
    risk, clean = make_risk(), make_clean()
    forecasts = make_forecasts(clean)
    shown = capacity_risk.top_risk_series(risk, 2)
    assert len(shown) == 2
    path = tmp_path / "forecasts.parquet"
    forecasts.to_parquet(path, index=False)
    files = partition_files(tmp_path, clean)
    few = capacity_risk.risk_fan_charts(
        risk, common.read_series(files, shown), common.read_series(path, shown), 2
    )
    whole = capacity_risk.risk_fan_charts(risk, clean, forecasts, 2)
    for ax_few, ax_whole in zip(few.axes, whole.axes, strict=True):
        assert ax_few.get_title() == ax_whole.get_title()
        for line_few, line_whole in zip(ax_few.lines, ax_whole.lines, strict=True):
            np.testing.assert_array_equal(line_few.get_xydata(), line_whole.get_xydata())
    assert capacity_risk.top_risk_series(risk.iloc[:0], 2) == []
