"""Rule quality: fleet-wide quality, quarantine and row-reconciliation tables."""

import pandas as pd

from capforecast.contracts import QUARANTINE_COLUMNS
from capforecast.csv_tables import read_csv_table
from capforecast.data import quality as quality_table
from capforecast.errors import CapForecastError
from capforecast.rulekit import LOG, ensure_parent, run_rule
from capforecast.spreadsheet import write_csv


def main(smk) -> None:
    quality = pd.concat([read_csv_table(p) for p in smk.input.quality], ignore_index=True)
    quality = quality_table.mark_unclassified(quality, smk.params.known_metrics)
    quality_table.log_unclassified(quality)
    quality = quality_table.mark_capacity_issues(quality, pd.read_parquet(smk.input.resources))
    skipped = quality_table.skipped_files_table(smk.params.skipped_files)
    quarantined = [pd.read_parquet(p) for p in smk.input.quarantine]
    quarantined = [q for q in quarantined if len(q)]
    quarantine = (
        pd.concat(quarantined, ignore_index=True)
        if quarantined
        else pd.DataFrame({c: pd.Series(dtype="object") for c in QUARANTINE_COLUMNS})
    )
    reconciliation = pd.concat(
        [read_csv_table(p) for p in smk.input.reconciliation], ignore_index=True
    )
    unbalanced = reconciliation[~reconciliation["balanced"].astype(bool)]
    if len(unbalanced):
        raise CapForecastError(
            f"row counts do not reconcile for {', '.join(unbalanced['source_file'])}"
        )
    ensure_parent(*smk.output)
    write_csv(quality, smk.output.quality)
    quarantine.to_parquet(smk.output.quarantine, index=False)
    write_csv(reconciliation, smk.output.reconciliation)
    write_csv(skipped, smk.output.skipped_files)
    totals = reconciliation[["rows_in", "rows_kept", "rows_repaired", "rows_quarantined"]].sum()
    LOG.info(
        "fleet rows: %s; %d series; %d entries of data.path not read",
        totals.to_dict(),
        len(quality),
        len(skipped),
    )


run_rule(main, snakemake)
