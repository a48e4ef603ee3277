"""The leaderboard's streamed steps equal the whole-table steps on the whole fleet, exactly.

``evaluate_shards`` never holds the fleet's `selected` backtest: each shard's combination is set
aside, calibrated with fleet-wide pooled factors (``calibration.StreamedCalibration``) and scored
on its own. On the real NAB series with cheap models (tests/test_evaluate_shards.py's backtest),
as they are and with intervals narrowed until calibration applies, every output must equal what
selecting, fitting the scaling, calibrating without peeking and scoring give on the whole fleet
at once, however the fleet is cut into shards.
"""

from __future__ import annotations

import pandas as pd
import pytest

# The module's NAB backtest, as fixture nab_backtest here.
from test_evaluate_shards import backtest as nab_backtest  # noqa: F401
from test_evaluate_shards import shards_of

from capforecast.contracts import quantile_column
from capforecast.forecast import calibration, metrics, selection
from capforecast.forecast.evaluate import Evaluation, evaluate_shards
from capforecast.forecast.fit import model_quantiles

FIELDS = ("metrics", "leaderboard", "selection", "calibration", "window_choices")


def whole_table_evaluation(
    predictions, history, *, backtest_cfg, forecast_cfg, selection_cfg, bounds
) -> Evaluation:
    """The leaderboard's steps on the whole fleet at once, with the whole-table functions."""
    season, quantiles = backtest_cfg.season, list(forecast_cfg.quantiles)
    candidates = predictions[predictions["model"] != selection.SELECTED]
    scores = metrics.score_predictions(candidates, history, season, quantiles)
    selected, choices = selection.select_without_peeking(scores, predictions, selection_cfg)
    table = pd.DataFrame()
    if forecast_cfg.calibrate:
        levels = model_quantiles(forecast_cfg)
        scored = selected[~selected["is_selection_window"].astype(bool)]
        table = calibration.fit_interval_scaling(scored, levels)
        selected, _ = calibration.calibrate_without_peeking(selected, levels, bounds=bounds)
    all_scores = pd.concat(
        [scores, metrics.score_predictions(selected, history, season, quantiles)],
        ignore_index=True,
    )
    return Evaluation(
        metrics=all_scores,
        leaderboard=metrics.leaderboard(all_scores),
        selection=selection.final_selection(scores, selection_cfg),
        selected_predictions=selected,
        calibration=table,
        window_choices=choices,
    )


def narrowed(predictions: pd.DataFrame, factor: float) -> pd.DataFrame:
    """Every model's quantiles pulled towards its median: the `selected` intervals then cover
    far less than 80 % and calibration widens them."""
    out = predictions.copy()
    median = out[quantile_column(0.5)]
    for column in [c for c in out.columns if c.startswith("q") and c != quantile_column(0.5)]:
        out[column] = median + factor * (out[column] - median)
    return out


@pytest.mark.parametrize("factor", [None, 0.3])
@pytest.mark.parametrize("n_shards", [1, 4])
def test_shards_equal_the_whole_table_steps(request, factor, n_shards):
    predictions, history, settings = request.getfixturevalue("nab_backtest")
    if factor is not None:
        predictions = narrowed(predictions, factor)
    whole = whole_table_evaluation(predictions, history, **settings)
    if factor is not None:
        assert whole.calibration["applied"].all(), "calibration must be applied"
        assert whole.selected_predictions["interval_scaled"].any()
    shards = shards_of(predictions, history, n_shards)
    parts = evaluate_shards(shards, **settings)
    for field in (*FIELDS, "selected_predictions"):
        pd.testing.assert_frame_equal(
            getattr(parts, field).reset_index(drop=True),
            getattr(whole, field).reset_index(drop=True),
            obj=field,
        )
    # What the leaderboard rule asks for: the same tables, the fleet's backtest not gathered.
    lean = evaluate_shards(shards[::-1], **settings, keep_predictions=False)
    assert lean.selected_predictions is None
    for field in FIELDS:
        pd.testing.assert_frame_equal(getattr(lean, field), getattr(parts, field), obj=field)
