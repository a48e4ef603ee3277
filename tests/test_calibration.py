"""Conformal interval scaling: too-narrow intervals restored, calibrated ones left alone."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from capforecast.errors import ForecastInputError
from capforecast.forecast.calibration import (
    POOLED,
    StreamedCalibration,
    apply_interval_scaling,
    calibrate_without_peeking,
    fit_interval_scaling,
    interval_coverage,
)

QUANTILES = (0.1, 0.5, 0.9)
Z90 = 1.2815515655446004  # standard normal 0.9 quantile
START = pd.Timestamp("2026-01-01", tz="UTC")
HOUR = pd.Timedelta("1h")


def gaussian_backtest(
    width_factor: float,
    *,
    series: int = 12,
    windows: int = 4,
    horizon: int = 24,
    seed: int = 7,
    sigma_by_series: dict[int, float] | None = None,
) -> pd.DataFrame:
    """Predictions whose P10/P90 are ``width_factor`` times the true N(m, sigma) quantiles."""
    rng = np.random.default_rng(seed)
    frames = []
    for s in range(series):
        sigma = (sigma_by_series or {}).get(s, 1.0 + s % 3)
        for window in range(windows):
            cutoff = START + (100 + horizon * window) * HOUR
            median = 50.0 + 5 * np.sin(np.arange(horizon) / 4)
            frames.append(
                pd.DataFrame(
                    {
                        "model": "selected",
                        "series_id": f"s{s}",
                        "window": window,
                        "is_selection_window": window == 0,
                        "cutoff": cutoff,
                        "timestamp": pd.date_range(cutoff + HOUR, periods=horizon, freq="h"),
                        "y": median + rng.normal(0.0, sigma, horizon),
                        "mean": median,
                        "q0.1": median - width_factor * Z90 * sigma,
                        "q0.5": median,
                        "q0.9": median + width_factor * Z90 * sigma,
                    }
                )
            )
    return pd.concat(frames, ignore_index=True)


def test_too_narrow_intervals_get_nominal_coverage_on_held_out_windows():
    predictions = gaussian_backtest(0.5, windows=6)
    before = interval_coverage(predictions[predictions["window"] >= 2])
    calibrated, tables = calibrate_without_peeking(predictions, QUANTILES)
    # Window 0 is a selection window: its residuals calibrate nothing, so window 1 has no
    # usable earlier window and stays as it is; windows 2+ are calibrated from 1, 2, ...
    held_out = calibrated[calibrated["window"] >= 2]
    after = interval_coverage(held_out)
    assert before < 0.6
    assert abs(after - 0.8) <= 0.05
    # the fitted factors undo the halving (about 2), and were applied to every held-out row
    pooled = tables[tables["series_id"] == POOLED]
    assert set(tables["window"]) == {2, 3, 4, 5}
    assert pooled["scale"].to_numpy() == pytest.approx(np.full(len(pooled), 2.0), rel=0.25)
    assert held_out["interval_scaled"].all()
    assert not calibrated.loc[calibrated["window"] <= 1, "interval_scaled"].any()
    # the median and mean never move
    pd.testing.assert_series_equal(calibrated["q0.5"], predictions["q0.5"], check_names=False)
    pd.testing.assert_series_equal(calibrated["mean"], predictions["mean"], check_names=False)


def test_selection_window_residuals_never_calibrate():
    # A selection window whose intervals are far too narrow must not narrow or widen the next.
    predictions = gaussian_backtest(1.0, windows=3, seed=5)
    first = predictions["window"] == 0
    median = predictions.loc[first, "q0.5"]
    predictions.loc[first, "q0.1"] = median - 0.01
    predictions.loc[first, "q0.9"] = median + 0.01
    calibrated, tables = calibrate_without_peeking(predictions, QUANTILES)
    later = calibrated["window"] == 1
    pd.testing.assert_frame_equal(
        calibrated.loc[later, ["q0.1", "q0.9"]], predictions.loc[later, ["q0.1", "q0.9"]]
    )
    assert 1 not in set(tables["window"])


def test_well_calibrated_intervals_are_left_unchanged():
    predictions = gaussian_backtest(1.0, windows=4, seed=3)
    calibrated, tables = calibrate_without_peeking(predictions, QUANTILES)
    for window in range(1, 4):
        past = predictions[predictions["window"] < window]
        assert abs(interval_coverage(past) - 0.8) <= 0.05  # the premise: within tolerance
    assert not tables["applied"].any() and (tables["scale"] == 1.0).all()
    columns = ["q0.1", "q0.5", "q0.9"]
    pd.testing.assert_frame_equal(calibrated[columns], predictions[columns])
    assert abs(interval_coverage(calibrated[calibrated["window"] >= 1]) - 0.8) <= 0.05


def test_series_with_enough_points_get_their_own_factor():
    # s0 is three times noisier than its intervals say; the others are right.
    predictions = gaussian_backtest(
        1.0, series=4, windows=6, sigma_by_series={0: 3.0, 1: 1.0, 2: 1.0, 3: 1.0}
    )
    predictions.loc[predictions["series_id"] == "s0", ["q0.1", "q0.9"]] = predictions.loc[
        predictions["series_id"] == "s0", ["q0.5"]
    ].to_numpy() + np.array([-Z90, Z90])
    table = fit_interval_scaling(predictions, QUANTILES, min_points=100, prior_points=0).set_index(
        ["series_id", "quantile"]
    )
    assert table.loc[("s0", 0.9), "scale"] == pytest.approx(3.0, rel=0.3)
    assert table.loc[("s1", 0.9), "scale"] == pytest.approx(1.0, rel=0.3)
    assert table.loc[("s0", 0.9), "source"] == "series"
    # With a prior the series' own factor moves toward the pooled one, geometrically by weight:
    # a prior of as many points as the series has lands halfway in logs.
    n = int(table.loc[("s0", 0.9), "n_points"])
    pooled = float(table.loc[(POOLED, 0.9), "scale"])
    shrunk = fit_interval_scaling(predictions, QUANTILES, min_points=100, prior_points=n).set_index(
        ["series_id", "quantile"]
    )
    own = float(table.loc[("s0", 0.9), "scale"])
    assert shrunk.loc[("s0", 0.9), "scale"] == pytest.approx(np.sqrt(own * pooled))
    assert pooled < shrunk.loc[("s0", 0.9), "scale"] < own
    # with too few points per series only the pooled factor exists
    pooled_only = fit_interval_scaling(predictions, QUANTILES, min_points=10_000)
    assert set(pooled_only["series_id"]) == {POOLED}


def test_apply_interval_scaling_by_hand():
    forecast = pd.DataFrame(
        {
            "series_id": ["a", "b"],
            "mean": [50.0, 10.0],
            "q0.1": [40.0, 8.0],
            "q0.5": [50.0, 10.0],
            "q0.9": [60.0, 11.0],
        }
    )
    table = pd.DataFrame(
        {
            "series_id": ["a", "a", POOLED, POOLED],
            "quantile": [0.1, 0.9, 0.1, 0.9],
            "scale": [2.0, 3.0, 0.5, 4.0],
        }
    )
    out = apply_interval_scaling(forecast, table, QUANTILES, bounds={"a": (0.0, 100.0)})
    # a: own factors, 50 - 2*10 = 30 and 50 + 3*10 = 80; b: pooled, 10 - 0.5*2, 10 + 4*1
    assert out["q0.1"].tolist() == [30.0, 9.0]
    assert out["q0.9"].tolist() == [80.0, 14.0]
    capped = apply_interval_scaling(
        forecast, table.assign(scale=10.0), QUANTILES, bounds={"a": (0.0, 100.0)}
    )
    assert capped.loc[0, "q0.9"] == 100.0 and capped.loc[0, "q0.1"] == 0.0


def test_a_quantile_on_its_bound_is_never_narrowed_off_it():
    # A CPU pegged at 100 % in its busy hours: its P90 sits on the bound. Narrowing factors
    # (fitted on the rest of the fleet) must not pull it inside, where every pegged hour would
    # fall beyond P90; the same factors narrow the quantiles that are not on a bound.
    forecast = pd.DataFrame(
        {
            "series_id": ["pegged", "pegged", "idle", "free"],
            "mean": [95.0, 50.0, 2.0, 50.0],
            "q0.1": [80.0, 40.0, 0.0, 40.0],
            "q0.5": [95.0, 50.0, 2.0, 50.0],
            "q0.9": [100.0, 60.0, 5.0, 60.0],
        }
    )
    table = pd.DataFrame(
        {"series_id": [POOLED, POOLED], "quantile": [0.1, 0.9], "scale": [0.5, 0.5]}
    )
    bounds = {"pegged": (0.0, 100.0), "idle": (0.0, 100.0)}  # "free" has no known bounds
    out = apply_interval_scaling(forecast, table, QUANTILES, bounds=bounds)
    assert out["q0.9"].tolist() == [100.0, 55.0, 3.5, 55.0]
    assert out["q0.1"].tolist() == [87.5, 45.0, 0.0, 45.0]
    # Widening factors still widen (and clip back to the bound).
    wide = apply_interval_scaling(forecast, table.assign(scale=2.0), QUANTILES, bounds=bounds)
    assert wide["q0.9"].tolist() == [100.0, 70.0, 8.0, 70.0]
    assert wide["q0.1"].tolist() == [65.0, 30.0, 0.0, 30.0]


def test_calibration_of_a_window_ignores_its_own_and_later_actuals():
    predictions = gaussian_backtest(0.5, windows=3)
    changed = predictions.copy()
    from_window_1 = changed["window"] >= 1
    changed.loc[from_window_1, "y"] = changed.loc[from_window_1, "y"] * 10.0
    first, _ = calibrate_without_peeking(predictions, QUANTILES)
    second, _ = calibrate_without_peeking(changed, QUANTILES)
    keep = first["window"] <= 1
    pd.testing.assert_frame_equal(
        first.loc[keep, ["q0.1", "q0.9"]], second.loc[keep, ["q0.1", "q0.9"]]
    )
    # window 2 is fitted on window 1, whose actuals did change
    assert not np.allclose(first.loc[~keep, "q0.9"], second.loc[~keep, "q0.9"])


def test_calibration_needs_the_p10_p90_levels():
    with pytest.raises(ForecastInputError, match=r"0\.1 and 0\.9"):
        fit_interval_scaling(gaussian_backtest(1.0, series=1, windows=1), (0.25, 0.5, 0.75))


def _streamed(predictions, shards, **kwargs):
    """StreamedCalibration over ``predictions`` cut into ``shards`` groups of series (the
    shards fed in reverse order the second time round, as any order must do)."""
    ids = sorted(predictions["series_id"].unique())
    parts = [predictions[predictions["series_id"].isin(ids[k::shards])] for k in range(shards)]
    streamed = StreamedCalibration(QUANTILES, **kwargs)
    for part in parts:
        streamed.add(part)
    calibrated = [streamed.calibrate(part) for part in parts[::-1]]
    out = pd.concat(calibrated).sort_values(["series_id", "window", "timestamp"], kind="stable")
    return out.reset_index(drop=True), streamed.table()


@pytest.mark.parametrize("width, min_points", [(0.5, 30), (0.5, 10_000), (1.0, 30), (2.5, 50)])
@pytest.mark.parametrize("shards", [1, 3, 5])
def test_streamed_calibration_equals_the_whole_table(width, min_points, shards):
    """Shard by shard: the same calibrated rows and the same fitted table as
    calibrate_without_peeking and fit_interval_scaling on the whole fleet, per-series factors,
    bounds and selection windows included."""
    predictions = gaussian_backtest(width, series=11, windows=5, horizon=24, seed=11)
    # One series lacks its last window, one its selection window, one reaches the bounds.
    predictions = predictions[~((predictions["series_id"] == "s4") & (predictions["window"] == 4))]
    predictions = predictions[~((predictions["series_id"] == "s7") & (predictions["window"] == 0))]
    predictions.loc[predictions["series_id"] == "s2", ["mean", "q0.1", "q0.5", "q0.9"]] -= 48.0
    predictions = predictions.sort_values(["series_id", "window", "timestamp"], ignore_index=True)
    bounds = {f"s{s}": (0.0, 100.0) for s in range(11)}
    whole, _ = calibrate_without_peeking(
        predictions, QUANTILES, min_points=min_points, bounds=bounds
    )
    scored = predictions[~predictions["is_selection_window"]]
    table = fit_interval_scaling(scored, QUANTILES, min_points=min_points)
    calibrated, streamed_table = _streamed(
        predictions, shards, min_points=min_points, bounds=bounds
    )
    if width != 1.0:
        assert whole["interval_scaled"].any(), "calibration must be exercised"
    if min_points == 30:
        assert (table["source"] == "series").any(), "per-series factors must be exercised"
    pd.testing.assert_frame_equal(calibrated, whole)
    pd.testing.assert_frame_equal(streamed_table, table)


def test_streamed_calibration_of_nothing_is_the_fit_of_an_empty_table():
    empty = gaussian_backtest(1.0).iloc[:0]
    streamed = StreamedCalibration(QUANTILES)
    streamed.add(empty)
    assert streamed.calibrate(empty)["interval_scaled"].empty
    pd.testing.assert_frame_equal(streamed.table(), fit_interval_scaling(empty, QUANTILES))
