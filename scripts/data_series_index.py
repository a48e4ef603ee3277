"""Rule series_index: which input file each series comes from; a series in two files stops the
run here, right after ingest (before any model is scored)."""

import pandas as pd

from capforecast.data import series_index
from capforecast.rulekit import LOG, ensure_parent, run_rule


def main(smk) -> None:
    ingested = {
        partition: (source, pd.read_parquet(record))
        for partition, source, record in zip(
            smk.params.partitions, smk.params.sources, smk.input.series, strict=True
        )
    }
    index = series_index.series_index(ingested)
    ensure_parent(smk.output.index)
    index.to_parquet(smk.output.index, index=False)
    LOG.info("%d series from %d input files, each from one file", len(index), len(ingested))


run_rule(main, snakemake)
