"""Rule clean_partition: validate rows, resample to the modelling grid, write quality tables."""

from pathlib import Path

import pandas as pd

from capforecast.data import columnar, holdout, quality, resample
from capforecast.rulekit import LOG, ensure_parent, run_rule, timed
from capforecast.settings import etl_settings
from capforecast.spreadsheet import write_csv


def main(smk) -> None:
    partition = smk.wildcards.partition
    source_file = Path(smk.params.source_file).name
    raw = columnar.read_parquet(smk.input.raw)  # resource_id, metric as categoricals
    ingest_series = pd.read_parquet(smk.input.series)
    etl = etl_settings(smk.params.etl)
    history_end = holdout.parse_history_end(smk.params.history_end, etl.freq)
    with timed(f"clean {partition}"):
        result, history, held_back = holdout.validate_history(raw, etl, source_file, history_end)
        clean = resample.resample_series(result.kept, etl)
        table = quality.quality_table(
            result, clean, history, etl, partition, source_file, ingest_series
        )
        reconciliation = holdout.reconciliation_with_held_back(
            quality.file_reconciliation(result, source_file, partition), held_back
        )
    ensure_parent(*smk.output)
    clean.to_parquet(smk.output.clean, index=False)
    write_csv(table, smk.output.quality)
    result.quarantine.to_parquet(smk.output.quarantine, index=False)
    write_csv(reconciliation, smk.output.reconciliation)
    LOG.info(
        "%s: rows in %d, kept %d (repaired %d), quarantined %d, held back %d; "
        "%d series, %d flagged too_short",
        source_file,
        int(reconciliation["rows_in"].iloc[0]),
        result.counts["rows_kept"],
        result.counts["rows_repaired"],
        result.counts["rows_quarantined"],
        held_back,
        len(table),
        int(table["too_short"].sum()),
    )


run_rule(main, snakemake)
