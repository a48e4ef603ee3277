"""Rule forecast_<family>: refit one model on the full history of one shard and forecast the
horizon.

The same `capforecast.forecast.fit.fit_forecast` runs inside the SageMaker container
(`python -m capforecast.train`), so local and remote training cannot drift apart.
"""

from capforecast.forecast import fit, shards
from capforecast.rulekit import LOG, ensure_parent, run_rule, timed
from capforecast.settings import backtest_settings, forecast_settings, model_settings


def main(smk) -> None:
    model = smk.wildcards.model
    shard, models_dir = smk.wildcards.shard, smk.output.get("models")
    panel = shards.load_shard(smk.input.features, shard, smk.params.n_shards)
    if shards.write_if_empty(panel, smk.output.forecast, models_dir):
        return
    with timed(f"fit {model} on {panel['series_id'].nunique()} series"):
        forecast = fit.fit_forecast(
            model,
            panel,
            forecast_cfg=forecast_settings(smk.params.forecast),
            backtest_cfg=backtest_settings(smk.params.backtest),
            models_cfg=model_settings(smk.params.models),
            percent_metrics=smk.params.percent_metrics,
            n_jobs=smk.threads,
            model_dir=models_dir,
            freq=smk.params.freq,
        )
    ensure_parent(smk.output.forecast)
    forecast.to_parquet(smk.output.forecast, index=False)
    fallbacks = forecast.loc[forecast["model_used"] != model, "series_id"].nunique()
    LOG.info("%s: %d rows; %d series used a fallback model", model, len(forecast), fallbacks)


run_rule(main, snakemake)
