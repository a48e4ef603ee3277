"""Rule combine_forecasts: the `selected` forecast (calibrated) next to every candidate, over
every shard."""

import pandas as pd

from capforecast.csv_tables import read_csv_table
from capforecast.forecast import no_data, shards
from capforecast.forecast.evaluate import combine_selected
from capforecast.forecast.panel import series_bounds
from capforecast.rulekit import LOG, ensure_parent, run_rule
from capforecast.settings import forecast_settings


def main(smk) -> None:
    # Every model's shards, one frame per model.
    forecasts = shards.read_shards(smk.input.forecasts)
    candidates = {
        str(model): frame.reset_index(drop=True)
        for model, frame in forecasts.groupby("model", sort=False)
    }
    keys = pd.concat(candidates.values())[["series_id", "resource_id", "metric"]]
    keys = keys.drop_duplicates("series_id")
    bounds = series_bounds(keys, smk.params.percent_metrics)
    selected = combine_selected(
        candidates,
        pd.read_parquet(smk.input.selection),
        pd.read_parquet(smk.input.calibration),
        forecast_settings(smk.params.forecast),
        bounds=bounds,
    )
    selected = selected.drop(columns=["resource_id", "metric"], errors="ignore").merge(
        keys, on="series_id", how="left", validate="many_to_one"
    )
    selected["model"] = "selected"
    # Series that kept no row never reached a model: NaN rows flagged none (no_data).
    empty = no_data.forecast_rows(read_csv_table(smk.input.quality), selected)
    selected = pd.concat([selected, empty], ignore_index=True)
    combined = pd.concat([selected, *candidates.values()], ignore_index=True)
    ensure_parent(smk.output.forecasts)
    combined.to_parquet(smk.output.forecasts, index=False)
    LOG.info(
        "%d series (%d without data); models: %s",
        selected["series_id"].nunique(),
        empty["series_id"].nunique(),
        sorted(combined["model"].unique()),
    )


run_rule(main, snakemake)
