"""Rule holdout_partition: the held-back actuals of one partition, cleaned like the history."""

from pathlib import Path

from capforecast.data import columnar, holdout
from capforecast.rulekit import LOG, ensure_parent, run_rule
from capforecast.settings import etl_settings
from capforecast.spreadsheet import write_csv


def main(smk) -> None:
    cut = holdout.cut_from_config(smk.params.cut)
    source_file = Path(smk.params.source_file).name
    raw = columnar.read_parquet(smk.input.raw)  # resource_id, metric as categoricals
    actuals, _, accounting = holdout.holdout_actuals(
        raw, etl_settings(smk.params.etl), source_file, smk.wildcards.partition, cut
    )
    ensure_parent(*smk.output)
    actuals.to_parquet(smk.output.actuals, index=False)
    write_csv(accounting, smk.output.reconciliation)
    row = accounting.iloc[0]
    LOG.info(
        "%s: %d rows in [%s, %s): kept %d, quarantined %d; %d rows beyond the horizon",
        source_file,
        row["rows_in"],
        cut.history_end.isoformat(),
        cut.actuals_end.isoformat(),
        row["rows_kept"],
        row["rows_quarantined"],
        row["rows_beyond_horizon"],
    )


run_rule(main, snakemake)
