"""Rolling-origin backtest: cutoff arithmetic, no leakage, shared windows, skips, the panel."""

from __future__ import annotations

import importlib.util

import numpy as np
import pandas as pd
import pytest

from capforecast.config import validated_config
from capforecast.contracts import quantile_column
from capforecast.data.features import build_features
from capforecast.errors import ConfigError, ForecastInputError, InputDataError
from capforecast.forecast.backtest import (
    REASON_MODEL_OMITTED,
    REASON_NOT_STARTED,
    REASON_TOO_SHORT,
    backtest_cutoffs,
    plan_backtest,
    run_backtest,
    skipped_table,
)
from capforecast.forecast.models import MODEL_REGISTRY
from capforecast.forecast.models.base import ForecastRequest, finalize_forecast, future_timestamps
from capforecast.forecast.panel import series_bounds
from capforecast.settings import ModelSettings, model_settings

QUANTILES = (0.1, 0.5, 0.9)
START = pd.Timestamp("2026-01-01", tz="UTC")

# The models settings with every schema default (what the workflow passes to a model).
SCHEMA_MODELS = model_settings(validated_config({})["models"])


def hourly_series(sid: str, values: np.ndarray, start: pd.Timestamp = START) -> pd.DataFrame:
    stamps = pd.date_range(start, periods=len(values), freq="h")
    return pd.DataFrame({"series_id": sid, "timestamp": stamps, "y": values.astype(float)})


def daily_pattern(n: int, level: float, amplitude: float, phase: int = 0) -> np.ndarray:
    hours = np.arange(n) + phase
    return level + amplitude * np.sin(2 * np.pi * hours / 24)


def _frame(request: ForecastRequest, rows: list[dict]) -> pd.DataFrame:
    return finalize_forecast(pd.DataFrame(rows), request)


def seasonal_naive_model(request: ForecastRequest, cfg: ModelSettings) -> pd.DataFrame:
    """Test model: repeat the last season; intervals from the seasonal differences' spread."""
    rows = []
    for sid, part in request.history.groupby("series_id"):
        y = part["y"].to_numpy()
        last = y[-request.season :]
        spread = np.nanstd(y[request.season :] - y[: -request.season]) or 1.0
        stamps = future_timestamps(part["timestamp"].iloc[-1], request.horizon, request.freq)
        for h, ts in enumerate(stamps):
            point = last[h % request.season]
            row = {"series_id": sid, "timestamp": ts, "mean": point, "model_used": "snaive"}
            for q in request.quantiles:
                z = {0.1: -1.2816, 0.5: 0.0, 0.9: 1.2816}[q]
                row[quantile_column(q)] = point + z * spread
            rows.append(row)
    return _frame(request, rows)


def mean_model(request: ForecastRequest, cfg: ModelSettings) -> pd.DataFrame:
    """Test model: the mean of the whole history (any leaked future value would move it)."""
    rows = []
    for sid, part in request.history.groupby("series_id"):
        level, spread = part["y"].mean(), part["y"].std()
        stamps = future_timestamps(part["timestamp"].iloc[-1], request.horizon, request.freq)
        for ts in stamps:
            row = {"series_id": sid, "timestamp": ts, "mean": level, "model_used": "mean"}
            row.update({quantile_column(q): level + (q - 0.5) * 2 * spread for q in QUANTILES})
            rows.append(row)
    return _frame(request, rows)


# --- cutoff arithmetic -------------------------------------------------------------------


def statsforecast_train_lengths(n: int, windows: int, horizon: int, step: int) -> list[int]:
    """Training lengths statsforecast's own cross_validation uses (from its cutoff column)."""
    from statsforecast import StatsForecast
    from statsforecast.models import Naive

    stamps = pd.date_range("2024-01-01", periods=n, freq="h")
    frame = pd.DataFrame({"unique_id": "a", "ds": stamps, "y": np.arange(n, dtype=float)})
    cv = StatsForecast(models=[Naive()], freq="h").cross_validation(
        df=frame, h=horizon, n_windows=windows, step_size=step
    )
    return [int(stamps.get_loc(c)) + 1 for c in sorted(cv["cutoff"].unique())]


@pytest.mark.skipif(importlib.util.find_spec("statsforecast") is None, reason="needs statsforecast")
@pytest.mark.parametrize(
    ("n", "windows", "horizon", "step"),
    [(100, 3, 24, 24), (100, 3, 24, 12), (120, 4, 10, 25), (50, 1, 7, 3), (200, 5, 24, 6)],
)
def test_cutoffs_match_statsforecast_cross_validation(n, windows, horizon, step):
    assert backtest_cutoffs(n, windows, horizon, step) == statsforecast_train_lengths(
        n, windows, horizon, step
    )


@pytest.mark.parametrize(("n", "windows", "horizon"), [(100, 3, 24), (73, 2, 7), (10, 1, 9)])
def test_default_step_is_horizon_and_windows_end_at_n(n, windows, horizon):
    cutoffs = backtest_cutoffs(n, windows, horizon)
    assert cutoffs == [n - k * horizon for k in range(windows, 0, -1)]
    assert cutoffs[-1] + horizon == n


def test_cutoffs_reject_a_grid_too_short_for_the_windows():
    with pytest.raises(ConfigError, match=r"backtest.windows.*need at least 73 .* has 72"):
        backtest_cutoffs(72, 3, 24)


# --- the panel ---------------------------------------------------------------------------


def clean_frame() -> pd.DataFrame:
    stamps = pd.date_range(START, periods=3, freq="h")
    return pd.DataFrame(
        {
            "timestamp": list(stamps) * 2,
            "resource_id": ["i-1"] * 3 + ["i-2"] * 3,
            "metric": ["cpu_utilization"] * 3 + ["network_in_bytes"] * 3,
            "value": [1.0, np.nan, 3.0, 10.0, 20.0, 30.0],
            "value_max": [1.5, np.nan, 3.5, 11.0, 21.0, 31.0],
            "n_obs": [12, 0, 12, 12, 12, 12],
            "is_filled": False,
            "is_gap": [False, True, False, False, False, False],
        }
    )


def test_series_bounds_cap_percent_metrics_only():
    panel = build_features(clean_frame())
    bounds = series_bounds(panel, ["cpu_utilization", "memory_utilization"])
    assert bounds == {
        "i-1|cpu_utilization": (0.0, 100.0),
        "i-2|network_in_bytes": (0.0, None),
    }


# --- windows, skips and leakage ----------------------------------------------------------


HOUR = pd.Timedelta("1h")


def fleet_panel(n: int = 24 * 8) -> pd.DataFrame:
    """A full series, two launched late, one decommissioned early."""
    full = hourly_series("full", daily_pattern(n, 50, 10))
    late = hourly_series("late", daily_pattern(100, 30, 5), START + pd.Timedelta(hours=n - 100))
    new = hourly_series("new", daily_pattern(40, 30, 5), START + pd.Timedelta(hours=n - 40))
    gone = hourly_series("gone", daily_pattern(n - 70, 20, 3))
    return pd.concat([full, late, new, gone], ignore_index=True)


def test_windows_are_end_aligned_per_series_and_skips_are_recorded():
    n, horizon, step = 24 * 8, 24, 24
    panel = fleet_panel(n)
    predictions = run_backtest(
        panel,
        seasonal_naive_model,
        "snaive",
        windows=2,
        horizon=horizon,
        step=step,
        quantiles=QUANTILES,
        season=24,
        selection_windows=1,
        model_cfg=SCHEMA_MODELS,
    )
    assert predictions.groupby("window")["is_selection_window"].first().tolist() == [
        True,
        False,
        False,
    ]
    lasts = panel.groupby("series_id")["timestamp"].max()
    skipped = skipped_table(predictions).set_index(["series_id", "window"])["reason"]
    for sid, last in lasts.items():
        # statsforecast semantics on each series' own grid: cutoffs n-3H, n-2H, n-H of *it*.
        cutoffs = [last - (n - c) * HOUR for c in backtest_cutoffs(n, 3, horizon, step)]
        for window, cutoff in enumerate(cutoffs):
            part = predictions[
                (predictions["series_id"] == sid) & (predictions["window"] == window)
            ]
            train = int(((panel["series_id"] == sid) & (panel["timestamp"] <= cutoff)).sum())
            if train == 0:
                assert skipped[(sid, window)] == REASON_NOT_STARTED
            elif train < 48:
                assert skipped[(sid, window)] == f"{REASON_TOO_SHORT} ({train} < 48)"
            else:
                assert (part["cutoff"] == cutoff).all()
                expected = pd.date_range(cutoff, periods=horizon + 1, freq="h")[1:]
                assert list(part["timestamp"]) == list(expected)
    # the decommissioned series is scored on its own last windows, not skipped
    assert set(predictions.loc[predictions["series_id"] == "gone", "window"]) == {0, 1, 2}
    assert len(skipped) == 4 * 3 - predictions.groupby(["series_id", "window"]).ngroups
    reasons = set(skipped.str.split(" [(]").str[0])
    assert reasons == {REASON_NOT_STARTED, REASON_TOO_SHORT}
    # actuals are the panel's values
    merged = predictions.merge(panel, on=["series_id", "timestamp"], how="left")
    np.testing.assert_array_equal(merged["y_x"].to_numpy(), merged["y_y"].to_numpy())


def test_changing_data_after_a_cutoff_leaves_that_window_unchanged():
    panel = hourly_series("a", daily_pattern(24 * 6, 40, 8))
    panel = pd.concat([panel, hourly_series("b", daily_pattern(24 * 6, 70, 4, 5))])
    kwargs = dict(
        windows=3, horizon=24, step=24, quantiles=QUANTILES, season=24, model_cfg=SCHEMA_MODELS
    )
    before = run_backtest(panel, mean_model, "mean", **kwargs)
    first_cutoff = before.loc[before["window"] == 0, "cutoff"].iloc[0]
    changed = panel.copy()
    changed.loc[changed["timestamp"] > first_cutoff, "y"] += 1000.0
    after = run_backtest(changed, mean_model, "mean", **kwargs)
    forecast_cols = ["mean", *[quantile_column(q) for q in QUANTILES]]
    w0_before, w0_after = before[before["window"] == 0], after[after["window"] == 0]
    pd.testing.assert_frame_equal(
        w0_before[forecast_cols].reset_index(drop=True),
        w0_after[forecast_cols].reset_index(drop=True),
    )
    np.testing.assert_allclose(w0_after["y"].to_numpy(), w0_before["y"].to_numpy() + 1000.0)
    # the later windows do train on the changed data, so the model would notice a leak
    later = before["window"] > 0
    assert (after.loc[later, "mean"].to_numpy() > before.loc[later, "mean"].to_numpy()).all()


def test_autoets_form_reuse_does_not_leak_later_data():
    # AutoETS keeps the form it chose in a series' earliest window for the later ones: changing
    # data after window 1's cutoff must leave windows 0 and 1 exactly as they were.
    rng = np.random.default_rng(4)
    hours = np.arange(24 * 9)
    values = 50 + 8 * np.sin(2 * np.pi * hours / 24) + rng.normal(0, 1, hours.size)
    panel = hourly_series("a|cpu_utilization", values)
    kwargs = dict(
        windows=3, horizon=24, step=24, quantiles=QUANTILES, season=24, model_cfg=SCHEMA_MODELS
    )
    before = run_backtest(panel, MODEL_REGISTRY["autoets"], "autoets", **kwargs)
    cutoff = before.loc[before["window"] == 1, "cutoff"].iloc[0]
    changed = panel.copy()
    late = changed["timestamp"] > cutoff
    changed.loc[late, "y"] = changed.loc[late, "y"] * 0.2 + 5
    after = run_backtest(changed, MODEL_REGISTRY["autoets"], "autoets", **kwargs)
    columns = ["mean", *[quantile_column(q) for q in QUANTILES]]
    for window in (0, 1):
        pd.testing.assert_frame_equal(
            before.loc[before["window"] == window, columns].reset_index(drop=True),
            after.loc[after["window"] == window, columns].reset_index(drop=True),
        )
    last = before["window"] == 2
    assert not np.allclose(before.loc[last, "mean"], after.loc[last, "mean"])


def test_model_sees_history_up_to_the_cutoff_only():
    panel = hourly_series("a", daily_pattern(24 * 5, 40, 8))
    seen = []

    def recording_model(request: ForecastRequest, cfg: ModelSettings) -> pd.DataFrame:
        seen.append(request.history["timestamp"].max())
        return mean_model(request, cfg)

    predictions = run_backtest(
        panel,
        recording_model,
        "rec",
        windows=2,
        horizon=12,
        step=6,
        quantiles=QUANTILES,
        model_cfg=SCHEMA_MODELS,
    )
    assert seen == list(predictions.groupby("window")["cutoff"].first())


def test_fit_seconds_model_cfg_and_model_omissions():
    panel = pd.concat(
        [hourly_series(s, daily_pattern(24 * 4, 10 + i, 2)) for i, s in enumerate("abc")]
    )

    received = []

    def picky_model(request: ForecastRequest, cfg: ModelSettings) -> pd.DataFrame:
        received.append(cfg)
        out = mean_model(request, cfg)
        return out[out["series_id"] != "c"]

    predictions = run_backtest(
        panel,
        picky_model,
        "picky",
        windows=2,
        horizon=24,
        quantiles=QUANTILES,
        model_cfg=SCHEMA_MODELS,
    )
    assert set(predictions["series_id"]) == {"a", "b"}
    skipped = skipped_table(predictions)
    assert skipped[["series_id", "window", "reason"]].values.tolist() == [
        ["c", 0, REASON_MODEL_OMITTED],
        ["c", 1, REASON_MODEL_OMITTED],
    ]
    # model_cfg reached the model, in every window
    assert len(received) == 2 and all(cfg is SCHEMA_MODELS for cfg in received)
    row = predictions.iloc[0]
    history = panel[
        (panel["series_id"] == row["series_id"]) & (panel["timestamp"] <= row["cutoff"])
    ]
    np.testing.assert_allclose(row["q0.9"] - row["q0.5"], 0.8 * history["y"].std())
    per_window = predictions.groupby("window")["fit_seconds"].agg(["min", "max"])
    assert (per_window["min"] == per_window["max"]).all() and (per_window["min"] >= 0).all()


def test_bounds_are_applied_and_bad_timestamps_rejected():
    panel = hourly_series("a|cpu_utilization", np.full(24 * 3, 99.0) + np.arange(72) % 2)

    def wide_model(request: ForecastRequest, cfg: ModelSettings) -> pd.DataFrame:
        out = mean_model(request, cfg)
        out["q0.9"] = out["q0.5"] + 50.0
        return out

    predictions = run_backtest(
        panel,
        wide_model,
        "wide",
        windows=1,
        horizon=24,
        quantiles=QUANTILES,
        bounds=series_bounds(panel, ["cpu_utilization"]),
        model_cfg=SCHEMA_MODELS,
    )
    assert predictions["q0.9"].max() == 100.0

    def shifted_model(request: ForecastRequest, cfg: ModelSettings) -> pd.DataFrame:
        out = mean_model(request, cfg)
        out["timestamp"] = out["timestamp"] + pd.Timedelta("1h")
        return out

    with pytest.raises(
        ForecastInputError, match=r"model 'shifted' window 0.*outside its test window"
    ):
        run_backtest(
            panel,
            shifted_model,
            "shifted",
            windows=1,
            horizon=24,
            quantiles=QUANTILES,
            model_cfg=SCHEMA_MODELS,
        )


def test_off_grid_timestamps_are_rejected():
    panel = hourly_series("a", np.arange(100.0))
    panel.loc[10, "timestamp"] += pd.Timedelta("5min")
    with pytest.raises(InputDataError, match=r"row 10.*not on the 1h grid"):
        plan_backtest(panel, windows=1, horizon=24)


# --- integration with the real models ----------------------------------------------------


@pytest.mark.slow
def test_real_models_run_through_the_backtest():
    hours = np.arange(24 * 6)
    rng = np.random.default_rng(5)
    panel = pd.concat(
        [
            hourly_series(
                "i-1|cpu_utilization",
                40 + 10 * np.sin(2 * np.pi * hours / 24) + rng.normal(0, 1, hours.size),
            ),
            hourly_series("i-2|cpu_utilization", 60 + 0.05 * hours + rng.normal(0, 2, hours.size)),
        ]
    )
    bounds = series_bounds(panel, ["cpu_utilization"])
    for name in ("seasonal_naive_daily", "autotheta"):
        predictions = run_backtest(
            panel,
            MODEL_REGISTRY[name],
            name,
            windows=2,
            horizon=24,
            quantiles=QUANTILES,
            season=24,
            bounds=bounds,
            selection_windows=1,
            model_cfg=SCHEMA_MODELS,
        )
        assert len(predictions) == 2 * 3 * 24 and skipped_table(predictions).empty
        values = predictions[[quantile_column(q) for q in QUANTILES]].to_numpy()
        assert np.isfinite(values).all() and (np.diff(values, axis=1) >= 0).all()
        assert values.min() >= 0 and values.max() <= 100
        assert predictions["model_used"].str.startswith(name).all()
        if name == "seasonal_naive_daily":
            # the median repeats the day before each cutoff
            for (sid, _), part in predictions.groupby(["series_id", "window"]):
                day = panel[
                    (panel["series_id"] == sid) & (panel["timestamp"] <= part["cutoff"].iloc[0])
                ]
                np.testing.assert_allclose(part["q0.5"], day["y"].to_numpy()[-24:])
