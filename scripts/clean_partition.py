"""Rule clean_partition: validate rows, resample to the modelling grid, write quality tables."""

from pathlib import Path

import pandas as pd

from capforecast import quality, resample, validate
from capforecast.rulekit import LOG, ensure_parent, run_rule, timed


def main(smk) -> None:
    partition = smk.wildcards.partition
    source_file = Path(smk.params.source_file).name
    raw = pd.read_parquet(smk.input.raw)
    with timed(f"clean {partition}"):
        result = validate.validate_rows(raw, smk.params.etl, source_file)
        clean = resample.resample_series(result.kept, smk.params.etl)
        table = quality.quality_table(result, clean, raw, smk.params.etl, partition, source_file)
        reconciliation = quality.file_reconciliation(result, source_file, partition)
    ensure_parent(*smk.output)
    clean.to_parquet(smk.output.clean, index=False)
    table.to_csv(smk.output.quality, index=False)
    result.quarantine.to_parquet(smk.output.quarantine, index=False)
    reconciliation.to_csv(smk.output.reconciliation, index=False)
    LOG.info(
        "%s: rows in %d, kept %d (repaired %d), quarantined %d; %d series, %d flagged too_short",
        source_file,
        result.counts["rows_in"],
        result.counts["rows_kept"],
        result.counts["rows_repaired"],
        result.counts["rows_quarantined"],
        len(table),
        int(table["too_short"].sum()),
    )


run_rule(main, snakemake)
