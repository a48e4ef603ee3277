"""Rule ingest_partition, data.source s3: one object (downloaded by the storage plugin) -> raw
long format and the per-series ingest record, as for a local file; errors name the s3:// URI."""

from capforecast.aws import s3_source
from capforecast.data import columnar
from capforecast.rulekit import LOG, ensure_parent, run_rule
from capforecast.settings import data_settings, etl_settings


def main(smk) -> None:
    uri = smk.params.source_file
    result = s3_source.ingest_object(
        smk.input.source, uri, data_settings(smk.params.data), etl_settings(smk.params.etl)
    )
    ensure_parent(smk.output.raw, smk.output.series)
    columnar.write_parquet(result.raw, smk.output.raw)
    result.series.to_parquet(smk.output.series, index=False)
    LOG.info("%s: %d rows, %d series", uri, len(result.raw), len(result.series))


run_rule(main, snakemake)
