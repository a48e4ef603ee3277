"""Rule leaderboard: score every model, choose per series without peeking, calibrate, rank."""

import pandas as pd

from capforecast import calibration, metrics, selection, train
from capforecast.panel import series_bounds
from capforecast.rulekit import LOG, ensure_parent, run_rule


def main(smk) -> None:
    bt, fc = smk.params.backtest, smk.params.forecast
    panel = train.load_panel(smk.input.features)
    bounds = series_bounds(panel, smk.params.percent_metrics)
    predictions = pd.concat([pd.read_parquet(p) for p in smk.input.predictions], ignore_index=True)
    history = panel[["series_id", "timestamp", "y"]]
    scored = metrics.score_predictions(predictions, history, bt["season"], fc["quantiles"])

    selected, choices = selection.select_without_peeking(scored, predictions, smk.params.selection)
    if fc["calibrate"]:
        selected, _ = calibration.calibrate_without_peeking(
            selected, train.model_quantiles(fc), bounds=bounds
        )
        calibration_table = calibration.fit_interval_scaling(selected, train.model_quantiles(fc))
    else:
        calibration_table = pd.DataFrame()
    selected_scores = metrics.score_predictions(selected, history, bt["season"], fc["quantiles"])
    all_scores = pd.concat([scored, selected_scores], ignore_index=True)
    board = metrics.leaderboard(all_scores)
    final = selection.final_selection(scored, smk.params.selection)

    ensure_parent(*smk.output)
    all_scores.to_parquet(smk.output.metrics, index=False)
    board.to_csv(smk.output.leaderboard, index=False)
    final.to_parquet(smk.output.selection, index=False)
    selected.to_parquet(smk.output.selected_predictions, index=False)
    calibration_table.to_parquet(smk.output.calibration, index=False)
    LOG.info("leaderboard:\n%s", board.to_string(index=False))
    LOG.info("window choices:\n%s", choices.head(20).to_string(index=False))


run_rule(main, snakemake)
