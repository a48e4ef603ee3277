"""Metrics on hand-computed examples, scale guards, and the leaderboard's relative scores."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from capforecast.forecast.metrics import (
    FLAG_NO_ACTUALS,
    FLAG_ZERO_SCALE,
    LEADERBOARD_COLUMNS,
    RELGM_CLIP,
    SCALE_EPSILON_RELATIVE,
    leaderboard,
    quantile_levels,
    relative_geometric_mean,
    score_predictions,
)

QUANTILES = (0.1, 0.5, 0.9)
START = pd.Timestamp("2026-01-01", tz="UTC")
HOUR = pd.Timedelta("1h")


def panel_of(values: dict[str, list[float]]) -> pd.DataFrame:
    frames = [
        pd.DataFrame(
            {
                "series_id": sid,
                "timestamp": pd.date_range(START, periods=len(y), freq="h"),
                "y": np.asarray(y, dtype=float),
            }
        )
        for sid, y in values.items()
    ]
    return pd.concat(frames, ignore_index=True)


def prediction_rows(
    model: str, sid: str, window: int, cutoff: pd.Timestamp, y, mean, q10, q50, q90, **extra
) -> pd.DataFrame:
    n = len(y)
    return pd.DataFrame(
        {
            "model": model,
            "series_id": sid,
            "window": window,
            "is_selection_window": extra.get("is_selection_window", False),
            "cutoff": cutoff,
            "timestamp": pd.date_range(cutoff + HOUR, periods=n, freq="h"),
            "y": np.asarray(y, dtype=float),
            "mean": np.asarray(mean, dtype=float),
            "q0.1": np.asarray(q10, dtype=float),
            "q0.5": np.asarray(q50, dtype=float),
            "q0.9": np.asarray(q90, dtype=float),
            "model_used": model,
            "fit_seconds": extra.get("fit_seconds", 0.5),
        }
    )


def test_metrics_match_a_hand_computed_example():
    # Training data (season 2): 1 3 1 3 2 4 -> seasonal differences 0 0 1 1 -> scale 0.5.
    train = [1.0, 3.0, 1.0, 3.0, 2.0, 4.0]
    y = [2.0, 5.0]
    panel = panel_of({"s": [*train, *y]})
    cutoff = START + 5 * HOUR
    preds = prediction_rows(
        "m", "s", 0, cutoff, y, mean=[3.0, 3.0], q10=[1.0, 4.0], q50=[2.0, 4.0], q90=[3.0, 4.5]
    )
    row = score_predictions(preds, panel, season=2, quantiles=QUANTILES).iloc[0]
    assert row["scale"] == pytest.approx(0.5)
    assert row["mae"] == pytest.approx((1 + 2) / 2)
    assert row["mase"] == pytest.approx(1.5 / 0.5)
    # pinball: q0.1 -> 0.1*1 + 0.1*1; q0.5 -> 0 + 0.5*1; q0.9 -> 0.1*1 + 0.9*0.5
    pinball_sums = [0.2, 0.5, 0.1 + 0.45]
    assert row["wql"] == pytest.approx(np.mean([2 * p / 7.0 for p in pinball_sums]))
    # y=2 inside [1, 3]; y=5 above [4, 4.5]
    assert row["coverage_p10_p90"] == pytest.approx(0.5)
    # median - y = 0, -1 -> mean -0.5, mean |y| = 3.5
    assert row["bias"] == pytest.approx(-0.5 / 3.5)
    assert row["n_points"] == 2 and row["fit_seconds"] == 0.5 and row["flags"] == ""


def test_scale_uses_only_training_data_up_to_each_cutoff():
    # Seasonal differences (season 1) are 1 before t=4, then 10 after it.
    values = [0.0, 1.0, 2.0, 3.0, 4.0, 14.0, 24.0, 34.0]
    panel = panel_of({"s": values})
    rows = []
    for window, cut in enumerate([3, 5]):
        cutoff = START + cut * HOUR
        y = values[cut + 1 : cut + 3]
        rows.append(prediction_rows("m", "s", window, cutoff, y, y, y, y, y))
    scores = score_predictions(pd.concat(rows), panel, season=1, quantiles=QUANTILES)
    # window 0: diffs of t<=3 = 1,1,1 ; window 1: t<=5 = 1,1,1,1,10
    assert scores["scale"].tolist() == pytest.approx([1.0, 14.0 / 5])
    assert scores["mase"].tolist() == [0.0, 0.0]


def test_zero_scale_falls_back_to_a_tiny_level_relative_epsilon_and_is_flagged():
    panel = panel_of({"flat": [5.0] * 6 + [6.0, 6.0]})
    preds = prediction_rows(
        "m", "flat", 0, START + 5 * HOUR, [6.0, 6.0], [5.0, 5.0], [4, 4], [5, 5], [6, 6]
    )
    row = score_predictions(preds, panel, season=2, quantiles=QUANTILES).iloc[0]
    assert row["scale"] == pytest.approx(SCALE_EPSILON_RELATIVE * 5.0)
    assert row["mase"] == pytest.approx(1.0 / (SCALE_EPSILON_RELATIVE * 5.0))
    assert FLAG_ZERO_SCALE in row["flags"].split(";")


def test_missing_actuals_are_not_scored_and_flagged():
    panel = panel_of({"s": [1.0, 2.0, 1.0, 2.0, 1.0, 2.0, 9.0]})
    cutoff = START + 5 * HOUR
    preds = prediction_rows("m", "s", 0, cutoff, [np.nan, 4.0], [0, 0], [0, 0], [0, 0], [0, 0])
    gone = prediction_rows("m", "t", 0, cutoff, [np.nan] * 2, [0, 0], [0, 0], [0, 0], [0, 0])
    panel = pd.concat([panel, panel_of({"t": [1.0, 2.0, 1.0, 2.0, 1.0, 2.0]})])
    scores = score_predictions(pd.concat([preds, gone]), panel, season=2, quantiles=QUANTILES)
    s_row, t_row = scores.set_index("series_id").loc["s"], scores.set_index("series_id").loc["t"]
    assert s_row["n_points"] == 1 and s_row["mae"] == pytest.approx(4.0)
    assert t_row["n_points"] == 0 and np.isnan(t_row["mase"])
    assert FLAG_NO_ACTUALS in t_row["flags"]


def backtest_like(factor: float, model: str, windows=(0, 1, 2), selection=(0,)) -> pd.DataFrame:
    """Predictions whose every error is ``factor`` times a fixed error pattern."""
    rows = []
    rng = np.random.default_rng(3)
    for sid in ("a", "b", "c"):
        for window in windows:
            cutoff = START + (48 + 4 * window) * HOUR
            y = 10 + rng.random(4) * 5
            err = np.array([1.0, -2.0, 0.5, 3.0])
            rows.append(
                prediction_rows(
                    model,
                    sid,
                    window,
                    cutoff,
                    y,
                    mean=y + factor * err,
                    q10=y + factor * (err - 2.0),
                    q50=y + factor * err,
                    q90=y + factor * (err + 2.5),
                    is_selection_window=window in selection,
                    fit_seconds=factor,
                )
            )
    return pd.concat(rows, ignore_index=True)


def history_panel() -> pd.DataFrame:
    rng = np.random.default_rng(11)
    return panel_of({sid: list(10 + rng.random(70) * 5) for sid in ("a", "b", "c")})


def test_leaderboard_relative_geometric_means():
    preds = pd.concat(
        [backtest_like(1.0, "seasonal_naive_daily"), backtest_like(0.5, "better")],
        ignore_index=True,
    )
    metrics = score_predictions(preds, history_panel(), season=24, quantiles=QUANTILES)
    board = leaderboard(metrics).set_index("model")
    assert list(board.reset_index().columns) == list(LEADERBOARD_COLUMNS)
    base, better = board.loc["seasonal_naive_daily"], board.loc["better"]
    assert base["mase_relgm"] == pytest.approx(1.0) and base["wql_relgm"] == pytest.approx(1.0)
    # every error (point and quantile) is exactly halved: pinball and MAE are both halved
    assert better["mase_relgm"] == pytest.approx(0.5) and better["wql_relgm"] == pytest.approx(0.5)
    assert board.index[0] == "better"
    # selection window 0 is left out: 3 series x 2 scored windows
    assert better["n_series"] == 3 and better["n_windows"] == 2 and better["n_scores"] == 6
    scored = metrics[(metrics["model"] == "better") & ~metrics["is_selection_window"]]
    assert better["wql_median"] == pytest.approx(scored["wql"].median())
    assert better["mase_mean"] == pytest.approx(scored["mase"].mean())
    assert better["fit_seconds"] == pytest.approx(0.5 * 6)
    # coverage pooled over points: interval [err-2, err+2.5]*f around y covers where 0 inside
    err = np.array([1.0, -2.0, 0.5, 3.0])
    assert better["coverage_p10_p90"] == pytest.approx(np.mean((err - 2 <= 0) & (err + 2.5 >= 0)))


def test_relative_geometric_mean_handles_zeros_and_missing_series_explicitly():
    metrics = pd.DataFrame(
        {
            "model": ["base"] * 4 + ["m"] * 3,
            "series_id": ["a", "b", "c", "d", "a", "b", "c"],
            "window": 0,
            "mase": [2.0, 0.0, 1.0, 1.0, 1.0, 0.0, 0.0],
        }
    )
    value, n_series = relative_geometric_mean(metrics, "mase", "m", "base")
    # a: 0.5; b: tie at 0 -> 1; c: 0 / 1 clipped to RELGM_CLIP; d: missing for m -> left out
    assert n_series == 3
    assert value == pytest.approx(np.exp(np.mean(np.log([0.5, 1.0, RELGM_CLIP]))))
    no_baseline, compared = relative_geometric_mean(metrics, "mase", "m", "absent")
    assert np.isnan(no_baseline) and compared == 0


def test_quantile_levels_read_from_columns():
    frame = pd.DataFrame(columns=["mean", "q0.9", "q0.02", "q0.5", "quality"])
    assert quantile_levels(frame) == (0.02, 0.5, 0.9)


def test_leaderboard_counts_fallbacks_of_every_model_and_of_selected():
    rows = []
    for sid, window in (("a|m", 0), ("a|m", 1), ("b|m", 0), ("b|m", 1)):
        for model, used in (
            ("seasonal_naive_weekly", "seasonal_naive_daily (fallback: too_short)"),
            ("theta", "theta"),
            ("selected", "theta+seasonal_naive_daily (fallback: too_short)"),
        ):
            fell = sid == "a|m" or model == "theta"
            rows.append(
                {
                    "model": model,
                    "series_id": sid,
                    "window": window,
                    "is_selection_window": False,
                    "mase": 1.0,
                    "wql": 1.0,
                    "coverage_p10_p90": 0.8,
                    "n_points": 24,
                    "bias": 0.0,
                    "fit_seconds": 0.1,
                    "model_used": used if fell else model,
                    "flags": "",
                }
            )
    board = leaderboard(pd.DataFrame(rows), baseline="theta").set_index("model")
    assert board.loc["seasonal_naive_weekly", "n_fallback"] == 2
    assert board.loc["selected", "n_fallback"] == 2
    assert board.loc["theta", "n_fallback"] == 0
