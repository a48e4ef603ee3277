"""Rule ingest_cloudwatch: one service's instances and metrics from CloudWatch (fetched
incrementally) -> raw long format, the per-series ingest record and EC2's resources table."""

from capforecast.aws import cloudwatch
from capforecast.data import columnar
from capforecast.rulekit import ensure_parent, run_rule
from capforecast.settings import data_settings, etl_settings


def main(smk) -> None:
    result, resources, _ = cloudwatch.ingest_service(
        aws=smk.params.aws,
        cloudwatch=smk.params.cloudwatch,
        service=smk.params.service,
        until=smk.params.until,
        data=data_settings(smk.params.data),
        etl=etl_settings(smk.params.etl),
        catalogue=smk.params.catalogue,
    )
    ensure_parent(smk.output.raw, smk.output.series, smk.output.resources)
    columnar.write_parquet(result.raw, smk.output.raw)
    result.series.to_parquet(smk.output.series, index=False)
    resources.to_parquet(smk.output.resources, index=False)


run_rule(main, snakemake)
