"""Rule combine_forecasts: the `selected` forecast (calibrated) next to every candidate, over
every shard, one shard at a time."""

import pandas as pd

from capforecast.csv_tables import read_csv_table
from capforecast.forecast.combine import combine_forecast_files
from capforecast.rulekit import LOG, run_rule
from capforecast.settings import forecast_settings


def main(smk) -> None:
    summary = combine_forecast_files(
        smk.input.forecasts,
        pd.read_parquet(smk.input.selection),
        pd.read_parquet(smk.input.calibration),
        read_csv_table(smk.input.quality),
        smk.output.forecasts,
        forecast_cfg=forecast_settings(smk.params.forecast),
        percent_metrics=smk.params.percent_metrics,
    )
    LOG.info(
        "%d series (%d without data); models: %s",
        summary.series + summary.without_data,
        summary.without_data,
        sorted(summary.models),
    )


run_rule(main, snakemake)
