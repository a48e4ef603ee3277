"""Rule backtest_<family>: rolling-origin backtest of one model on one shard, identical windows
for all."""

import time

from capforecast import train_backtest
from capforecast.forecast import backtest, shards
from capforecast.rulekit import LOG, ensure_parent, run_rule
from capforecast.settings import backtest_settings, forecast_settings, model_settings


def main(smk) -> None:
    model = smk.wildcards.model
    wc = smk.wildcards
    panel = shards.load_shard(smk.input.features, wc.shard, smk.params.n_shards)
    if shards.write_if_empty(panel, smk.output.predictions):
        return
    start = time.perf_counter()
    predictions = train_backtest.backtest_predictions(
        model,
        panel,
        backtest_cfg=backtest_settings(smk.params.backtest),
        forecast_cfg=forecast_settings(smk.params.forecast),
        models_cfg=model_settings(smk.params.models),
        percent_metrics=smk.params.percent_metrics,
        freq=smk.params.freq,
        n_jobs=smk.threads,
    )
    skipped = backtest.skipped_table(predictions)
    ensure_parent(smk.output.predictions)
    predictions.to_parquet(smk.output.predictions, index=False)
    LOG.info(
        "%s: %d prediction rows over %d series in %.1f s; %d series-windows skipped",
        model,
        len(predictions),
        predictions["series_id"].nunique(),
        time.perf_counter() - start,
        len(skipped),
    )
    for row in skipped.head(20).itertuples():
        LOG.info("skipped %s window %s: %s", row.series_id, row.window, row.reason)


run_rule(main, snakemake)
