"""Rule ingest_partition: one source file -> raw long format (every row kept) and the
per-series ingest record (metric names mapped, 0-1 scales converted)."""

from pathlib import Path

from capforecast.data import columnar, ingest
from capforecast.rulekit import LOG, ensure_parent, run_rule
from capforecast.settings import data_settings, etl_settings


def main(smk) -> None:
    result = ingest.ingest_file(
        Path(smk.input.source), data_settings(smk.params.data), etl_settings(smk.params.etl)
    )
    ensure_parent(smk.output.raw, smk.output.series)
    columnar.write_parquet(result.raw, smk.output.raw)  # ids written as plain strings
    result.series.to_parquet(smk.output.series, index=False)
    LOG.info("%s: %d rows, %d series", smk.input.source, len(result.raw), len(result.series))


run_rule(main, snakemake)
