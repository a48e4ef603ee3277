# data.source cloudwatch: one ingest job per service (data.cloudwatch.services), writing what
# ingest_partition writes for a file plus EC2's resources table of the service's instances.
# It fetches only what is new since its store's last samples (capforecast/aws/cloudwatch.py);
# `until` (data.cloudwatch.end, else now rounded down to etl.freq) reruns it once per new bin.


rule ingest_cloudwatch:
    output:
        raw="results/raw/{partition}.parquet",
        series="results/raw/{partition}.series.parquet",
        resources="results/raw/{partition}.resources.parquet",
    log:
        "results/logs/ingest/{partition}.log",
    wildcard_constraints:
        partition=CLOUDWATCH_PARTITIONS,
    conda:
        "../envs/aws.yaml"
    params:
        service=lambda wildcards: CLOUDWATCH_SERVICES[wildcards.partition],
        # This service's selection and the shared settings: another service's edit keeps it.
        cloudwatch=lambda wildcards: cloudwatch_service_settings(
            CLOUDWATCH_SERVICES[wildcards.partition]
        ),
        until=CLOUDWATCH_UNTIL,
        # The reader's settings, as for a file (rules/ingest.smk).
        data=rules.ingest_partition.params.data,
        etl=rules.ingest_partition.params.etl,
        # What capforecast.aws.session reads (not the SageMaker settings).
        aws=config_keys("aws", "region", "endpoint_url", "retry_mode", "max_attempts"),
        catalogue=config["catalogue"],
        code=script_digest("ingest_cloudwatch.py"),
    script:
        "../scripts/ingest_cloudwatch.py"
