"""Model selection: no peeking, ensemble weights and quantile averaging, final combination."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from capforecast.config import validated_config
from capforecast.contracts import quantile_column
from capforecast.errors import ConfigError, ForecastInputError
from capforecast.forecast.backtest import run_backtest
from capforecast.forecast.metrics import RELGM_CLIP, leaderboard, score_predictions
from capforecast.forecast.models.base import ForecastRequest, finalize_forecast, future_timestamps
from capforecast.forecast.selection import (
    MAX_PRIOR_WEIGHT,
    MIN_PRIOR_WEIGHT,
    PRIOR_VARIANCE_WINDOWS,
    REASON_DEFAULT,
    REASON_OTHER_METRIC,
    REASON_SCORED,
    SELECTED,
    combine_final_forecasts,
    empirical_bayes_weights,
    final_selection,
    relative_log_scores,
    select_without_peeking,
    shrunk_scores,
)
from capforecast.settings import (
    ModelSettings,
    SelectionSettings,
    model_settings,
    selection_settings,
)

QUANTILES = (0.1, 0.5, 0.9)
START = pd.Timestamp("2026-01-01", tz="UTC")
HOUR = pd.Timedelta("1h")
Q_COLUMNS = [quantile_column(q) for q in QUANTILES]
SCHEMA_SELECTION = validated_config({})["selection"]


def settings(**overrides) -> SelectionSettings:
    """The schema's selection settings with ``overrides``."""
    return selection_settings({**SCHEMA_SELECTION, **overrides})


def constant_predictions(
    model: str,
    quantile_values: tuple[float, float, float],
    windows: int,
    horizon: int = 4,
    step: int = 4,
    series: tuple[str, ...] = ("s",),
) -> pd.DataFrame:
    """Predictions of a model forecasting the same quantiles at every step."""
    rows = []
    for sid in series:
        for window in range(windows):
            cutoff = START + (20 + step * window) * HOUR
            stamps = pd.date_range(cutoff + HOUR, periods=horizon, freq="h")
            frame = pd.DataFrame(
                {
                    "model": model,
                    "series_id": sid,
                    "window": window,
                    "is_selection_window": window == 0,
                    "cutoff": cutoff,
                    "timestamp": stamps,
                    "y": 1.0,
                    "mean": quantile_values[1],
                    "model_used": model,
                    "fit_seconds": 0.25,
                }
            )
            for column, value in zip(Q_COLUMNS, quantile_values, strict=True):
                frame[column] = value
            rows.append(frame)
    return pd.concat(rows, ignore_index=True)


def metrics_table(scores: dict[str, list[float]], series: str = "s") -> pd.DataFrame:
    """Hand-made metrics: ``scores[model][window]`` is both the WQL and the MASE."""
    rows = [
        {
            "model": m,
            "series_id": series,
            "window": w,
            "wql": v,
            "mase": v,
            "is_selection_window": w == 0,
        }
        for m, values in scores.items()
        for w, v in enumerate(values)
    ]
    return pd.DataFrame(rows)


def geometric_mean(values: list[float]) -> float:
    return float(np.exp(np.mean(np.log(values))))


def test_selection_uses_only_earlier_windows():
    # Windows 0-1 favour A; window 2 alone would pick B; windows 0-2 together favour B
    # (scores are compared as ratios, so B's 200x better window 2 outweighs two 5x worse ones).
    scores = {"A": [0.1, 0.1, 2.0, 0.1], "B": [0.5, 0.5, 0.01, 0.1]}
    assert geometric_mean(scores["B"][:3]) < geometric_mean(scores["A"][:3])
    predictions = pd.concat(
        [
            constant_predictions("A", (0.5, 1.0, 1.5), 4),
            constant_predictions("B", (1.5, 2.0, 2.5), 4),
        ]
    )
    cfg = settings(strategy="best", metric="wql", top_k=1)
    selected, choices = select_without_peeking(metrics_table(scores), predictions, cfg)

    assert set(selected["model"]) == {SELECTED}
    median = selected.groupby("window")["q0.5"].agg(["min", "max"])
    assert (median["min"] == median["max"]).all()
    # window 0: no earlier scores -> equal-weight ensemble of A and B
    assert median.loc[0, "min"] == pytest.approx((1.0 + 2.0) / 2)
    assert set(choices.loc[choices["window"] == 0, "reason"]) == {REASON_DEFAULT}
    # windows 1 and 2 come from A although window 2's own score favours B
    assert median.loc[1, "min"] == 1.0 and median.loc[2, "min"] == 1.0
    window2 = choices[choices["window"] == 2].iloc[0]
    assert (window2["model"], window2["n_windows"], window2["reason"]) == ("A", 2, REASON_SCORED)
    assert window2["metric_value"] == pytest.approx(np.mean(scores["A"][:2]))
    # window 3 sees window 2 as well: B
    assert median.loc[3, "min"] == 2.0
    # the final selection uses all windows: B again
    assert geometric_mean(scores["B"]) < geometric_mean(scores["A"])
    final = final_selection(metrics_table(scores), cfg)
    assert final[["series_id", "model", "weight", "n_windows"]].values.tolist() == [
        ["s", "B", 1.0, 4]
    ]
    assert final["metric_value"].iloc[0] == pytest.approx(np.mean(scores["B"]))
    # the selected rows keep the backtest layout
    assert selected.groupby("window")["is_selection_window"].first().tolist() == [
        True,
        False,
        False,
        False,
    ]
    # fit time of the components: both models in window 0, one model afterwards
    fit = selected.groupby("window")["fit_seconds"].first()
    assert fit.tolist() == [0.5, 0.25, 0.25, 0.25]


def test_overlapping_windows_are_not_used_before_their_actuals_are_known():
    # step 2 < horizon 4: window w-1's test ends after window w's cutoff.
    scores = {"A": [0.1, 0.1, 0.1], "B": [0.5, 0.5, 0.5]}
    predictions = pd.concat(
        [
            constant_predictions("A", (0.5, 1.0, 1.5), 3, horizon=4, step=2),
            constant_predictions("B", (1.5, 2.0, 2.5), 3, horizon=4, step=2),
        ]
    )
    _, choices = select_without_peeking(
        metrics_table(scores), predictions, settings(strategy="best", metric="wql")
    )
    by_window = choices.groupby("window").agg(reason=("reason", "first"), n=("n_windows", "max"))
    assert by_window["reason"].tolist() == [REASON_DEFAULT, REASON_DEFAULT, REASON_SCORED]
    assert by_window.loc[2, "n"] == 1  # only window 0 ended by window 2's cutoff


def test_ensemble_weights_sum_to_one_and_quantiles_are_vincentised_and_monotone():
    scores = {"A": [0.1, 0.1], "B": [0.2, 0.2], "C": [0.4, 0.4]}
    # B's quantiles cross (q0.1 above its median): the average must still come out sorted.
    values = {"A": (0.0, 1.0, 2.0), "B": (5.0, 1.5, 4.0), "C": (9.0, 9.0, 9.0)}
    predictions = pd.concat([constant_predictions(m, v, 2) for m, v in values.items()])
    cfg = settings(strategy="ensemble", metric="mase", top_k=2, combination="mean")
    selected, choices = select_without_peeking(metrics_table(scores), predictions, cfg)
    weights = choices.groupby(["series_id", "window"])["weight"].sum()
    assert weights.to_numpy() == pytest.approx(np.ones(len(weights)))
    window1 = choices[choices["window"] == 1].set_index("model")["weight"]
    # inverse-error weights over the top 2: (1/0.1, 1/0.2) normalised (exp(-score) is the
    # inverse of each model's error relative to the median model, so the ratio is the same)
    assert window1.to_dict() == pytest.approx({"A": 2 / 3, "B": 1 / 3})
    averaged = [2 / 3 * a + 1 / 3 * b for a, b in zip(values["A"], values["B"], strict=True)]
    row = selected[selected["window"] == 1].iloc[0]
    assert row[Q_COLUMNS].to_numpy(dtype=float) == pytest.approx(sorted(averaged))
    assert (np.diff(selected[Q_COLUMNS].to_numpy(dtype=float), axis=1) >= 0).all()
    assert row["model_used"] == "A+B"


def fleet_metrics(scores: dict[str, dict[str, float]]) -> pd.DataFrame:
    """One window (0) per series: ``scores[series][model]`` is both the WQL and the MASE."""
    rows = [
        {"model": m, "series_id": sid, "window": 0, "wql": v, "mase": v}
        for sid, by_model in scores.items()
        for m, v in by_model.items()
    ]
    return pd.DataFrame(rows).assign(is_selection_window=True)


def test_shrinkage_borrows_the_fleet_record():
    # On s1, B is slightly better in its only window; on s2 and s3 it is 10x worse than A.
    scores = {
        "s1": {"A": 1.0, "B": 0.9},
        "s2": {"A": 0.1, "B": 1.0},
        "s3": {"A": 0.1, "B": 1.0},
    }
    metrics = fleet_metrics(scores)
    own_only = final_selection(
        metrics, settings(strategy="best", metric="wql", shrinkage=0)
    ).set_index("series_id")
    assert own_only.loc["s1", "model"] == "B"
    shrunk = final_selection(
        metrics, settings(strategy="best", metric="wql", shrinkage=1)
    ).set_index("series_id")
    assert shrunk["model"].to_dict() == {"s1": "A", "s2": "A", "s3": "A"}
    # the score of A on s1: (own relative log score + fleet mean) / (1 + 1), with each window's
    # values relative to the median of the two models (their average)
    relative = {
        (sid, m): np.log(v / np.median(list(by_model.values())))
        for sid, by_model in scores.items()
        for m, v in by_model.items()
    }
    fleet_a = np.mean([relative[(sid, "A")] for sid in scores])
    assert shrunk.loc["s1", "score"] == pytest.approx((relative[("s1", "A")] + fleet_a) / 2)
    # metric_value stays the plain mean of the series' own windows
    assert shrunk.loc["s1", "metric_value"] == pytest.approx(1.0)


def test_relative_log_scores_tie_zeros_and_clip():
    metrics = fleet_metrics(
        {"zeros": {"A": 0.0, "B": 0.0, "C": 0.0}, "one_bad": {"A": 0.0, "B": 0.0, "C": 2.0}}
    )
    scored = relative_log_scores(metrics, "wql").set_index(["series_id", "model"])["relative"]
    assert scored.loc["zeros"].tolist() == [0.0, 0.0, 0.0]
    # median 0: the perfect ones tie with it, a positive value is clipped as infinitely worse
    assert scored.loc[("one_bad", "A")] == 0.0
    assert scored.loc[("one_bad", "C")] == pytest.approx(-np.log(RELGM_CLIP))


def test_copies_of_one_model_count_once():
    # "weekly" fell back to the daily seasonal naive: same forecasts, same scores.
    predictions = pd.concat(
        [
            constant_predictions("daily", (0.5, 1.0, 1.5), 2),
            constant_predictions("weekly", (0.5, 1.0, 1.5), 2).assign(
                model_used="seasonal_naive_daily (fallback: too_short)"
            ),
            constant_predictions("other", (2.5, 3.0, 3.5), 2),
        ]
    ).assign(model_used=lambda f: f["model_used"].replace({"daily": "seasonal_naive_daily"}))
    scores = {"daily": [0.1, 0.1], "weekly": [0.1, 0.1], "other": [0.3, 0.3]}
    cfg = settings(strategy="ensemble", metric="wql", top_k=2)
    selected, choices = select_without_peeking(metrics_table(scores), predictions, cfg)
    for window in (0, 1):
        chosen = choices[choices["window"] == window].set_index("model")["weight"]
        assert chosen.to_dict() == pytest.approx({"daily": 0.5, "other": 0.5})
    # two distinct models: their median is their average, not the copy's value
    assert set(selected["q0.5"]) == {2.0}


def test_median_combination_ignores_one_broken_model():
    values = {"A": (1.0, 2.0, 3.0), "B": (1.5, 2.5, 3.5), "C": (100.0, 200.0, 300.0)}
    scores = {"A": [0.1, 0.1], "B": [0.2, 0.2], "C": [0.3, 0.3]}
    predictions = pd.concat([constant_predictions(m, v, 2) for m, v in values.items()])
    median, choices = select_without_peeking(
        metrics_table(scores), predictions, settings(metric="wql", top_k=3)
    )
    window1 = median[median["window"] == 1].iloc[0]
    assert window1[Q_COLUMNS].tolist() == list(values["B"])
    assert window1["mean"] == values["B"][1]
    assert choices.loc[choices["window"] == 1, "weight"].tolist() == pytest.approx([1 / 3] * 3)
    assert set(choices["combination"]) == {"median"}
    mean, _ = select_without_peeking(
        metrics_table(scores), predictions, settings(metric="wql", top_k=3, combination="mean")
    )
    assert mean.loc[mean["window"] == 1, "q0.5"].iloc[0] > 2 * values["B"][1]


def test_combine_final_forecasts_follows_the_selection_combination():
    forecasts = {
        "A": final_forecast(["s"], (1.0, 2.0, 3.0)),
        "B": final_forecast(["s"], (2.0, 3.0, 4.0)),
        "C": final_forecast(["s"], (90.0, 95.0, 99.0)),
    }
    selection = pd.DataFrame(
        {"series_id": "s", "model": ["A", "B", "C"], "weight": 1 / 3, "combination": "median"}
    )
    out = combine_final_forecasts(forecasts, selection)
    assert out[Q_COLUMNS].drop_duplicates().values.tolist() == [[2.0, 3.0, 4.0]]
    mean = combine_final_forecasts(forecasts, selection.assign(combination="mean"))
    assert mean["q0.5"].iloc[0] == pytest.approx((2.0 + 3.0 + 95.0) / 3)
    with pytest.raises(ForecastInputError, match="combination"):
        combine_final_forecasts(forecasts, selection.drop(columns="combination"))


def test_missing_metric_falls_back_to_the_other_metric():
    metrics = metrics_table({"A": [0.3], "B": [0.1]})
    metrics["wql"] = np.nan  # e.g. an all-zero series: WQL undefined
    final = final_selection(metrics, settings(strategy="best", metric="wql"))
    assert final[["model", "reason"]].values.tolist() == [["B", REASON_OTHER_METRIC]]


def test_selection_settings_are_the_schema_defaults_and_invalid_values_fail_validation():
    with pytest.raises(ConfigError, match=r"selection\.strategy.*allowed: best, ensemble"):
        validated_config({"selection": {"strategy": "vote"}})
    with pytest.raises(ConfigError, match=r"selection\.combination.*allowed: median, mean"):
        validated_config({"selection": {"combination": "mode"}})
    with pytest.raises(ConfigError, match=r"selection\.shrinkage.*minimum 0; or the word auto"):
        validated_config({"selection": {"shrinkage": -1}})
    with pytest.raises(ConfigError, match=r"selection\.shrinkage.*'fast'.*or the word auto"):
        validated_config({"selection": {"shrinkage": "fast"}})
    # The schema is the one place the defaults live (the metric once drifted to wql here).
    assert selection_settings(validated_config({})["selection"]) == SelectionSettings(
        strategy="ensemble", metric="mase", top_k=3, shrinkage="auto", combination="median"
    )


def final_forecast(series: list[str], q: tuple[float, float, float], horizon: int = 3):
    rows = []
    for sid in series:
        for ts in pd.date_range(START, periods=horizon, freq="h"):
            rows.append(
                {
                    "series_id": sid,
                    "timestamp": ts,
                    "mean": q[1],
                    "model_used": "x",
                    **dict(zip(Q_COLUMNS, q, strict=True)),
                }
            )
    return pd.DataFrame(rows)


def test_combine_final_forecasts_weights_falls_back_and_bounds():
    forecasts = {
        "A": final_forecast(["s1|cpu", "s2", "s3"], (80.0, 90.0, 120.0)),
        "B": final_forecast(["s1|cpu", "s2"], (10.0, 20.0, 30.0)),
        "C": final_forecast(["s1|cpu", "s2", "s3", "s4", "s5"], (1.0, 2.0, 3.0)),
    }
    selection = pd.DataFrame(
        {
            "series_id": ["s1|cpu", "s1|cpu", "s2", "s3", "s3", "s5"],
            "model": ["A", "B", "B", "B", "A", "B"],
            "weight": [0.5, 0.5, 1.0, 0.6, 0.4, 1.0],
            "combination": "mean",
        }
    )
    out = combine_final_forecasts(forecasts, selection, bounds={"s1|cpu": (0.0, 100.0)})
    assert set(out["model"]) == {SELECTED} and len(out) == 5 * 3
    first = out.groupby("series_id").first()
    # s1: half A, half B; q0.9 = (120 + 30) / 2 = 75 (already within 100)
    assert first.loc["s1|cpu", Q_COLUMNS].tolist() == pytest.approx([45.0, 55.0, 75.0])
    assert first.loc["s2", "q0.5"] == 20.0 and not first.loc["s2", "selection_fallback"]
    # s3: B has no forecast -> A alone, flagged
    assert first.loc["s3", "q0.5"] == 90.0 and first.loc["s3", "selection_fallback"]
    assert "renormalised" in first.loc["s3", "fallback_reason"]
    # s4 is not in the selection, s5's only selected model is missing: C alone, flagged
    for sid in ("s4", "s5"):
        assert first.loc[sid, "q0.5"] == 2.0 and first.loc[sid, "selection_fallback"]
    assert "not in selection" in first.loc["s4", "fallback_reason"]
    # bounds: a cpu forecast above 100 is clipped
    only_a = combine_final_forecasts(
        forecasts, selection.iloc[[0]].assign(weight=1.0), bounds={"s1|cpu": (0.0, 100.0)}
    )
    assert only_a.loc[only_a["series_id"] == "s1|cpu", "q0.9"].max() == 100.0
    assert (np.diff(out[Q_COLUMNS].to_numpy(dtype=float), axis=1) >= 0).all()


def repeat_day_model(request: ForecastRequest, cfg: ModelSettings) -> pd.DataFrame:
    rows = []
    for sid, part in request.history.groupby("series_id"):
        y = part["y"].to_numpy()
        stamps = future_timestamps(part["timestamp"].iloc[-1], request.horizon, request.freq)
        for h, ts in enumerate(stamps):
            point = y[-request.season + h % request.season]
            rows.append(
                {
                    "series_id": sid,
                    "timestamp": ts,
                    "mean": point,
                    "model_used": "day",
                    "q0.1": point - 2,
                    "q0.5": point,
                    "q0.9": point + 2,
                }
            )
    return finalize_forecast(pd.DataFrame(rows), request)


def flat_mean_model(request: ForecastRequest, cfg: dict) -> pd.DataFrame:
    rows = []
    for sid, part in request.history.groupby("series_id"):
        level = part["y"].mean()
        stamps = future_timestamps(part["timestamp"].iloc[-1], request.horizon, request.freq)
        rows += [
            {
                "series_id": sid,
                "timestamp": ts,
                "mean": level,
                "model_used": "flat",
                "q0.1": level - 5,
                "q0.5": level,
                "q0.9": level + 5,
            }
            for ts in stamps
        ]
    return finalize_forecast(pd.DataFrame(rows), request)


def test_selected_row_reaches_the_leaderboard_end_to_end():
    hours = np.arange(24 * 7)
    panel = pd.concat(
        [
            pd.DataFrame(
                {
                    "series_id": sid,
                    "timestamp": START + hours * HOUR,
                    "y": 50 + amp * np.sin(2 * np.pi * hours / 24),
                }
            )
            for sid, amp in (("daily", 20.0), ("flat", 0.0))
        ]
    )
    panel.loc[panel["series_id"] == "flat", "y"] += np.random.default_rng(0).normal(0, 1, 24 * 7)
    kwargs = dict(
        windows=2,
        horizon=24,
        quantiles=QUANTILES,
        season=24,
        selection_windows=1,
        model_cfg=model_settings(validated_config({})["models"]),
    )
    predictions = pd.concat(
        [
            run_backtest(panel, repeat_day_model, "seasonal_naive_daily", **kwargs),
            run_backtest(panel, flat_mean_model, "flat_mean", **kwargs),
        ]
    )
    metrics = score_predictions(predictions, panel, 24, QUANTILES)
    # Two series, each with a specialist: the fleet-wide record (one model perfect on one
    # series, the other twice as bad there) says nothing about the other series, so rank on
    # each series' own windows (see test_shrinkage_borrows_the_fleet_record for the default).
    selected, choices = select_without_peeking(
        metrics, predictions, settings(strategy="best", metric="mase", shrinkage=0)
    )
    metrics = pd.concat([metrics, score_predictions(selected, panel, 24, QUANTILES)])
    board = leaderboard(metrics).set_index("model")
    assert SELECTED in board.index and board.loc[SELECTED, "n_windows"] == 2
    scored_choices = choices[choices["window"] >= 1].set_index("series_id")["model"]
    # the sine is repeated exactly by the seasonal naive; the noisy flat series is not
    assert scored_choices.loc["daily"].unique().tolist() == ["seasonal_naive_daily"]
    assert scored_choices.loc["flat"].unique().tolist() == ["flat_mean"]
    assert board.loc[SELECTED, "mase_relgm"] < board.loc["flat_mean", "mase_relgm"]
    assert board.loc[SELECTED, "mase_relgm"] < 1.0


def windowed_metrics(ratios: dict[str, list[float]]) -> pd.DataFrame:
    """Models A, B and C on each series, one row per window: A and C score 1 and B
    ``ratios[sid][w]`` (both as WQL and MASE), so the median model scores 1 and B's relative
    log score is ``log ratio``."""
    rows = [
        {"model": m, "series_id": sid, "window": w, "wql": v, "mase": v}
        for sid, by_window in ratios.items()
        for w, ratio in enumerate(by_window)
        for m, v in (("A", 1.0), ("B", ratio), ("C", 1.0))
    ]
    return pd.DataFrame(rows).assign(is_selection_window=False)


def test_auto_shrinkage_trusts_a_consistent_series_and_not_a_noisy_one():
    # The fleet favours A (B is 2x worse on ten series). On "steady", B is ~3x better in every
    # window; on "erratic", B is 2x better on average (in logs) but swings 8x either way.
    erratic = [8 * 0.5, 0.5 / 8] * 2
    ratios = {"steady": [0.35] * 4, "erratic": erratic, **{f"s{i}": [2.0] * 4 for i in range(10)}}
    metrics = windowed_metrics(ratios)

    def chosen(shrinkage: float | str) -> pd.Series:
        picked = final_selection(metrics, settings(strategy="best", shrinkage=shrinkage))
        return picked.set_index("series_id")["model"]

    auto = chosen("auto")
    assert (auto["steady"], auto["erratic"]) == ("B", "A")
    assert (auto[[f"s{i}" for i in range(10)]] == "A").all()
    # No fixed weight tells the two apart: 10 pulls both to the fleet's A, 1 and 0 keep B on both.
    assert [(chosen(k)["steady"], chosen(k)["erratic"]) for k in (10, 1, 0)] == [
        ("A", "A"),
        ("B", "B"),
        ("B", "B"),
    ]


def test_auto_shrinkage_weights_follow_the_formula():
    ratios = {"a": [0.5, 0.6, 0.4], "b": [2.0, 3.0, 1.0], "c": [1.0, 4.0]}
    relative = relative_log_scores(windowed_metrics(ratios), "mase")
    per_series = (
        relative.groupby(["series_id", "model"])["relative"]
        .agg(series_mean="mean", series_var="var", n_windows="count")
        .reset_index()
    )
    weights = pd.Series(empirical_bayes_weights(per_series), index=per_series.index)
    b_rows = per_series[per_series["model"] == "B"]
    # by hand for model B: pooled within variance over series with 2+ windows, each series'
    # own variance smoothed toward it, tau2 = spread of the means less their sampling noise
    pooled = b_rows["series_var"].mean()
    dof = b_rows["n_windows"] - 1
    noise = (dof * b_rows["series_var"] + PRIOR_VARIANCE_WINDOWS * pooled) / (
        dof + PRIOR_VARIANCE_WINDOWS
    )
    tau2 = b_rows["series_mean"].var() - (noise / b_rows["n_windows"]).mean()
    expected = np.clip(noise / max(tau2, 1e-3), MIN_PRIOR_WEIGHT, MAX_PRIOR_WEIGHT)
    assert weights[b_rows.index].to_numpy() == pytest.approx(expected.to_numpy())
    assert tau2 > 1e-3 and (expected > MIN_PRIOR_WEIGHT).any()  # not all at a bound
    # One series alone has no spread between series: its fleet mean is its own mean, so its
    # score is its own mean whatever the weight, and no score is lost to a NaN.
    alone = windowed_metrics({"a": ratios["a"]})
    scores = shrunk_scores(alone, "mase", "auto").set_index("model")["score"]
    assert scores["B"] == pytest.approx(np.mean(np.log(ratios["a"])))
    assert scores[["A", "C"]].tolist() == pytest.approx([0.0, 0.0])
