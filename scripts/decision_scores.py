"""Rule decision_scores: score the risk report against the held-back actuals."""

import json

import pandas as pd

from capforecast.csv_tables import read_csv_table
from capforecast.data import holdout
from capforecast.decision import scores as decision
from capforecast.decision import tables as decision_report
from capforecast.rulekit import LOG, ensure_parent, run_rule
from capforecast.spreadsheet import write_csv


def main(smk) -> None:
    settings = smk.params.settings
    cut = holdout.cut_from_config(settings["cut"])
    accounting = pd.concat([read_csv_table(p) for p in smk.input.holdout_reconciliation])
    counted = ("rows_in", "rows_kept", "rows_quarantined", "rows_beyond_horizon")
    result = decision.score_decisions(
        pd.read_parquet(smk.input.risk_report),
        pd.concat([pd.read_parquet(p) for p in smk.input.clean], ignore_index=True),
        pd.concat([pd.read_parquet(p) for p in smk.input.actuals], ignore_index=True),
        pd.read_parquet(smk.input.resources),
        cut,
        percent_metrics=settings["percent_metrics"],
        statistic=settings["statistic"],
        predict_linear_window_hours=settings["predict_linear_window_hours"],
        catalogue=settings["catalogue"],
        holdout_rows={name: int(accounting[name].sum()) for name in counted},
    )
    ensure_parent(*smk.output)
    iso = "%Y-%m-%dT%H:%M:%SZ"
    write_csv(result.series_scores, smk.output.series_scores, date_format=iso)
    write_csv(result.summary, smk.output.summary)
    write_csv(result.rightsizing, smk.output.rightsizing)
    with open(smk.output.summary_json, "w") as fh:
        json.dump(result.summary_json, fh, indent=2)
    LOG.info("decision backtest %s:\n%s", cut.history_end.isoformat(), result.summary.to_string())
    LOG.info("%s", decision_report.rightsizing_markdown(result.summary_json["rightsizing"]))


run_rule(main, snakemake)
