"""The vectorised helpers of the forecast stage give what the obvious per-series code gives.

Each is checked against the pandas / numpy reference it replaced, on random panels with gaps
(missing rows and NaN values), unsorted rows and all-NaN stretches.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest

from capforecast.contracts import quantile_column
from capforecast.forecast.backtest import regular_grid
from capforecast.forecast.models.base import (
    ForecastRows,
    fill_missing,
    future_timestamps,
    iter_series,
    quantile_frame,
)
from capforecast.forecast.models.profiles import _nanmedian_columns


def random_panel(seed: int, n_series: int = 7) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    frames = []
    for i in range(n_series):
        start = pd.Timestamp("2026-01-01", tz="UTC") + pd.Timedelta(hours=int(rng.integers(0, 30)))
        n = int(rng.integers(1, 80))
        frame = pd.DataFrame(
            {
                "series_id": f"s{i}|{rng.integers(100)}",
                "timestamp": pd.date_range(start, periods=n, freq="1h"),
                "y": rng.normal(size=n),
            }
        )
        frame.loc[rng.random(n) < 0.2, "y"] = np.nan
        frames.append(frame[rng.random(n) > 0.15])  # missing rows, not just NaN
    panel = pd.concat(frames, ignore_index=True)
    return panel.sample(frac=1.0, random_state=seed).reset_index(drop=True)


def reference_grid(panel: pd.DataFrame) -> pd.DataFrame:
    parts = []
    for sid, rows in panel.groupby("series_id", sort=True):
        rows = rows.set_index("timestamp").sort_index()
        full = pd.date_range(rows.index[0], rows.index[-1], freq="1h")
        part = rows.reindex(full)[["y"]].rename_axis("timestamp").reset_index()
        part.insert(0, "series_id", sid)
        parts.append(part)
    return pd.concat(parts, ignore_index=True)


@pytest.mark.parametrize("seed", range(6))
def test_regular_grid_is_a_per_series_reindex(seed):
    panel = random_panel(seed)
    panel = panel[panel.groupby("series_id")["timestamp"].transform("size") > 0]
    pd.testing.assert_frame_equal(regular_grid(panel, "1h"), reference_grid(panel))


@pytest.mark.parametrize("seed", range(6))
def test_iter_series_is_groupby_in_order_of_appearance(seed):
    panel = random_panel(seed)
    got = [(sid, y, last) for sid, y, last in iter_series(panel)]
    expected = list(panel.groupby("series_id", sort=False))
    assert [sid for sid, _, _ in got] == [str(sid) for sid, _ in expected]
    for (_, y, last), (_, group) in zip(got, expected, strict=True):
        np.testing.assert_array_equal(y, group["y"].to_numpy(dtype=float))
        assert last == group["timestamp"].iloc[-1]
    assert list(iter_series(panel.iloc[:0])) == []


def test_forecast_rows_build_what_quantile_frames_build():
    quantiles = (0.1, 0.5, 0.9)
    rng = np.random.default_rng(3)
    rows = ForecastRows(5, "1h", quantiles)
    frames = []
    for i in range(4):
        last = pd.Timestamp("2026-03-01", tz="UTC") + pd.Timedelta(hours=7 * i)
        mean = rng.normal(size=5)
        values = {q: mean + q for q in quantiles}
        rows.add(f"s{i}", last, mean, values)
        frames.append(quantile_frame(f"s{i}", future_timestamps(last, 5, "1h"), mean, values))
    pd.testing.assert_frame_equal(rows.frame(), pd.concat(frames, ignore_index=True))
    empty = ForecastRows(5, "1h", quantiles).frame()
    assert empty.empty
    assert list(empty.columns) == [
        "series_id",
        "timestamp",
        "mean",
        *[quantile_column(q) for q in quantiles],
    ]


def reference_fill(values: np.ndarray, season: int | None) -> np.ndarray:
    """One season back (then two, ...) position by position, then pandas' interpolation."""
    filled = values.copy()
    if season:
        for t in range(season, filled.size):
            if np.isnan(filled[t]):
                filled[t] = filled[t - season]
    return pd.Series(filled).interpolate(method="linear").ffill().bfill().to_numpy()


@pytest.mark.parametrize("season", [None, 3])
def test_fill_missing_matches_the_per_position_reference(season):
    rng = np.random.default_rng(5)
    for _ in range(300):
        values = rng.normal(size=int(rng.integers(1, 30)))
        values[rng.random(values.size) < rng.random()] = np.nan
        got = fill_missing(values, season)
        np.testing.assert_array_equal(got, reference_fill(values, season))
        assert np.isnan(got).all() == np.isnan(values).all()


def test_nanmedian_columns_is_numpys_nanmedian():
    rng = np.random.default_rng(1)
    for _ in range(1000):
        values = rng.normal(size=(int(rng.integers(1, 16)), int(rng.integers(1, 40))))
        values[rng.random(values.shape) < rng.random()] = np.nan
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            expected = np.nanmedian(values, axis=0)
        np.testing.assert_array_equal(_nanmedian_columns(values), expected)
