"""Rule leaderboard: score every model over every shard, choose per series without peeking,
calibrate, rank."""

from capforecast.forecast.evaluate import evaluate_shards, series_metrics, shard_sources
from capforecast.forecast.panel import series_bounds
from capforecast.rulekit import LOG, ensure_parent, run_rule
from capforecast.settings import backtest_settings, forecast_settings, selection_settings
from capforecast.spreadsheet import write_csv


def main(smk) -> None:
    # One shard in memory at a time: a fleet's predictions are many times its history.
    sources = shard_sources(smk.input.predictions, smk.input.features, smk.params.shard_groups)
    result = evaluate_shards(
        sources,
        backtest_cfg=backtest_settings(smk.params.backtest),
        forecast_cfg=forecast_settings(smk.params.forecast),
        selection_cfg=selection_settings(smk.params.selection),
        bounds=series_bounds(series_metrics(smk.input.features), smk.params.percent_metrics),
        # Its outputs are small tables: the fleet's `selected` backtest is not gathered.
        keep_predictions=False,
    )
    ensure_parent(*smk.output)
    result.metrics.to_parquet(smk.output.metrics, index=False)
    write_csv(result.leaderboard, smk.output.leaderboard)
    result.selection.to_parquet(smk.output.selection, index=False)
    result.calibration.to_parquet(smk.output.calibration, index=False)
    LOG.info("leaderboard:\n%s", result.leaderboard.to_string(index=False))


run_rule(main, snakemake)
