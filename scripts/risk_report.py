"""Rule risk_report: breach probabilities, ETAs, capacity plan and right-sizing per resource."""

import json

import pandas as pd

from capforecast.csv_tables import read_csv_table
from capforecast.risk import assess as risk
from capforecast.rulekit import LOG, ensure_parent, run_rule
from capforecast.settings import risk_settings
from capforecast.spreadsheet import write_csv


def main(smk) -> None:
    forecasts = risk.read_selected_forecasts(smk.input.forecasts)
    # One partition's history in memory at a time: the fleet's is many times its forecasts.
    history = risk.clean_history_parts(smk.input.clean)
    resources = pd.read_parquet(smk.input.resources)
    quality = read_csv_table(smk.input.quality)
    settings = risk_settings(smk.params.config)
    result = risk.assess_risk(forecasts, history, resources, settings, quality=quality)
    ensure_parent(*smk.output)
    result.risk_report.to_parquet(smk.output.report_parquet, index=False)
    write_csv(result.risk_report, smk.output.report_csv, date_format="%Y-%m-%dT%H:%M:%SZ")
    result.daily_breach.to_parquet(smk.output.daily_breach, index=False)
    write_csv(result.service_capacity, smk.output.service_capacity)
    with open(smk.output.summary, "w") as fh:
        json.dump(result.summary, fh, indent=2, default=str)
    LOG.info("findings: %s", result.summary["findings"])


run_rule(main, snakemake)
