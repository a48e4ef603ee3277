"""Rule forecast_<family>: refit one model on the full history of one shard and forecast the
horizon.

The same `capforecast.forecast.fit.fit_forecast` runs inside the SageMaker container
(`python -m capforecast.train`), so local and remote training cannot drift apart.
"""

from pathlib import Path

import pandas as pd

from capforecast.forecast import fit, history_check, shards
from capforecast.rulekit import LOG, ensure_parent, run_rule, timed
from capforecast.settings import backtest_settings, forecast_settings, model_settings


def main(smk) -> None:
    model = smk.wildcards.model
    partition = shards.load_partition(smk.input.features)
    panel = shards.select_shard(partition, int(smk.wildcards.shard), smk.params.n_shards)
    ensure_parent(smk.output.forecast)
    if panel.empty:
        LOG.info("%s: shard %s has no series", model, smk.wildcards.shard)
        pd.DataFrame().to_parquet(smk.output.forecast, index=False)
        if smk.output.get("models"):
            Path(smk.output.models).mkdir(parents=True, exist_ok=True)
        return
    # The backtest of this run needs it too: fail now rather than after this fit.
    history_check.check_panel(partition, smk.params.backtest, smk.params.freq)
    with timed(f"fit {model} on {panel['series_id'].nunique()} series"):
        forecast = fit.fit_forecast(
            model,
            panel,
            forecast_cfg=forecast_settings(smk.params.forecast),
            backtest_cfg=backtest_settings(smk.params.backtest),
            models_cfg=model_settings(smk.params.models),
            percent_metrics=smk.params.percent_metrics,
            n_jobs=smk.threads,
            model_dir=smk.output.get("models"),
            freq=smk.params.freq,
        )
    forecast.to_parquet(smk.output.forecast, index=False)
    fallbacks = forecast.loc[forecast["model_used"] != model, "series_id"].nunique()
    LOG.info("%s: %d rows; %d series used a fallback model", model, len(forecast), fallbacks)


run_rule(main, snakemake)
