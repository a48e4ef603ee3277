# Data stage (capforecast.data, scripts/data_*.py): the synthetic fleet, ingest, cleaning and
# features, each per partition (a service or an input file) so a changed partition reruns
# only its own jobs, and fleet-wide tables where the whole fleet is needed.
from capforecast import metric_names as cf_metric_names

# Generate: the embedded synthetic fleet (deterministic by seed).


rule generate_service:
    output:
        raw=f"{SYNTHETIC_DIR}/{{service}}.parquet",
    log:
        "results/logs/generate/{service}.log",
    benchmark:
        "results/benchmarks/generate/{service}.tsv"
    wildcard_constraints:
        service="[a-z][a-z0-9-]*",
    conda:
        "../envs/etl.yaml"
    threads: job_threads("etl")
    resources:
        **job_resources("etl"),
    params:
        # Only this service's settings and the fleet-wide ones: editing one service must not
        # regenerate the others.
        service=lambda wildcards: service_config(wildcards.service),
        fleet=fleet_settings(),
        catalogue=config["catalogue"],
        plan_settings=plan_settings(),
        code=script_digest("data_generate_service.py"),
    script:
        "../scripts/data_generate_service.py"


rule generate_fleet:
    output:
        resources=f"{SYNTHETIC_DIR}/fleet/resources.parquet",
        ground_truth=f"{SYNTHETIC_DIR}/fleet/ground_truth.json",
    log:
        "results/logs/generate/fleet.log",
    conda:
        "../envs/etl.yaml"
    threads: job_threads("light")
    resources:
        **job_resources("light"),
    params:
        synthetic=config["synthetic"],
        catalogue=config["catalogue"],
        plan_settings=plan_settings(),
        code=script_digest("data_generate_fleet.py"),
    script:
        "../scripts/data_generate_fleet.py"


rule generate:
    input:
        expand(
            f"{SYNTHETIC_DIR}/{{service}}.parquet",
            service=[s["name"] for s in config["synthetic"]["services"]],
        ),
        rules.generate_fleet.output,


# Ingest: every source (synthetic output, local files; later S3 and CloudWatch) goes through
# the same reader into the raw long format, one partition per service or input file.


rule ingest_partition:
    input:
        source=partition_source,
    output:
        raw="results/raw/{partition}.parquet",
        series="results/raw/{partition}.series.parquet",
    log:
        "results/logs/ingest/{partition}.log",
    wildcard_constraints:
        partition=FILE_PARTITIONS,
    conda:
        "../envs/etl.yaml"
    threads: job_threads("etl")
    resources:
        **job_resources("etl"),
    params:
        # What capforecast.data.ingest.ingest_file reads: data.history_end, data.resources or the
        # source must not rerun ingest (the cut is made when cleaning).
        data=config_keys(
            "data",
            "format",
            "columns",
            "metric",
            "metric_patterns",
            "metric_names",
            "naive_timezone",
            "timestamp_unit",
        ),
        # Only what the 0-1 scale check reads: other etl settings must not rerun ingest.
        etl={
            key: config["etl"][key]
            for key in (
                "percent_metrics",
                "fraction_scale",
                "timestamp_min",
                "timestamp_max",
            )
        },
        # S3 objects: their URI, for messages (the input is the downloaded copy).
        source_file=lambda wildcards: PARTITION_SOURCES[wildcards.partition],
        code=script_digest(INGEST_SCRIPT),
    script:
        f"../scripts/{INGEST_SCRIPT}"


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
    threads: job_threads("etl")
    resources:
        **job_resources("etl"),
    params:
        service=lambda wildcards: CLOUDWATCH_SERVICES[wildcards.partition],
        # This service's selection and the shared settings: another service's edit keeps it.
        cloudwatch=lambda wildcards: cloudwatch_service_settings(
            CLOUDWATCH_SERVICES[wildcards.partition]
        ),
        until=CLOUDWATCH_UNTIL,
        # The reader's settings, as for a file (ingest_partition).
        data=rules.ingest_partition.params.data,
        etl=rules.ingest_partition.params.etl,
        # What capforecast.aws.session reads (not the SageMaker settings).
        aws=config_keys("aws", "region", "endpoint_url", "retry_mode", "max_attempts"),
        catalogue=config["catalogue"],
        code=script_digest("data_ingest_cloudwatch.py"),
    script:
        "../scripts/data_ingest_cloudwatch.py"


rule ingest_resources:
    input:
        unpack(resources_source),
        raw=expand_partitions("results/raw/{partition}.parquet"),
    output:
        resources="results/resources.parquet",
    log:
        # Not in results/logs/ingest/: a metrics file named resources.csv logs there.
        "results/logs/ingest_resources.log",
    conda:
        "../envs/etl.yaml"
    threads: job_threads("light")
    resources:
        **job_resources("light"),
    params:
        catalogue=config["catalogue"],
        code=script_digest("data_ingest_resources.py"),
    script:
        "../scripts/data_ingest_resources.py"


# One series, one file: a series in two input files stops the run here, right after ingest
# (priority: before jobs ready at the same time); the leaderboard waits for it.
rule series_index:
    input:
        series=expand_partitions("results/raw/{partition}.series.parquet"),
    output:
        index=SERIES_INDEX,
    log:
        "results/logs/series_index.log",
    priority: 10
    conda:
        "../envs/etl.yaml"
    threads: job_threads("light")
    resources:
        **job_resources("light"),
    params:
        partitions=PARTITIONS,
        sources=[PARTITION_SOURCES[p] for p in PARTITIONS],
        code=script_digest("data_series_index.py"),
    script:
        "../scripts/data_series_index.py"


rule ingest:
    input:
        expand_partitions("results/raw/{partition}.parquet"),
        rules.ingest_resources.output,
        rules.series_index.output,


# Clean: validation and ETL per partition, then fleet-wide quality tables.


rule clean_partition:
    input:
        unpack(holdout_span_input),
        raw="results/raw/{partition}.parquet",
        series="results/raw/{partition}.series.parquet",
    output:
        clean="results/clean/{partition}.parquet",
        quality="results/quality/partitions/{partition}.csv",
        quarantine="results/quality/partitions/{partition}.quarantine.parquet",
        reconciliation="results/quality/partitions/{partition}.reconciliation.csv",
    log:
        "results/logs/clean/{partition}.log",
    benchmark:
        "results/benchmarks/clean/{partition}.tsv"
    conda:
        "../envs/etl.yaml"
    threads: job_threads("etl")
    resources:
        **job_resources("etl"),
    params:
        etl=config["etl"],
        # Raw rows at or after it are held back (counted in the reconciliation).
        history_end=config["data"]["history_end"],
        source_file=lambda wildcards: PARTITION_SOURCES[wildcards.partition],
        code=script_digest("data_clean_partition.py"),
    script:
        "../scripts/data_clean_partition.py"


rule quality:
    input:
        quality=expand_partitions("results/quality/partitions/{partition}.csv"),
        quarantine=expand_partitions(
            "results/quality/partitions/{partition}.quarantine.parquet"
        ),
        reconciliation=expand_partitions(
            "results/quality/partitions/{partition}.reconciliation.csv"
        ),
        # Resources with an impossible or unknown capacity flag their series.
        resources=rules.ingest_resources.output.resources,
    output:
        quality=report(
            "results/quality/data_quality.csv",
            caption="../report/data_quality.rst",
            category="Data quality",
        ),
        quarantine="results/quality/quarantine.parquet",
        reconciliation=report(
            "results/quality/reconciliation.csv",
            caption="../report/reconciliation.rst",
            category="Data quality",
        ),
        skipped_files="results/quality/skipped_files.csv",
    log:
        "results/logs/quality.log",
    conda:
        "../envs/etl.yaml"
    threads: job_threads("aggregate")
    resources:
        **job_resources("aggregate"),
    params:
        # Metrics the run can judge (canonical, percentages, thresholds): others are flagged.
        known_metrics=cf_metric_names.known_metrics(config),
        # Entries of data.path that are not read, with the reason (rules/common.smk).
        skipped_files=SKIPPED_FILES,
        code=script_digest("data_quality.py"),
    script:
        "../scripts/data_quality.py"


rule clean:
    input:
        expand_partitions("results/clean/{partition}.parquet"),
        rules.quality.output,


# Features: model-ready panels, per partition so a changed partition rebuilds only its own panel.


rule features_partition:
    input:
        clean="results/clean/{partition}.parquet",
    output:
        features="results/features/{partition}.parquet",
    log:
        "results/logs/features/{partition}.log",
    conda:
        "../envs/etl.yaml"
    threads: job_threads("etl")
    resources:
        **job_resources("etl"),
    params:
        target=config["forecast"]["target"],
        code=script_digest("data_features_partition.py"),
    script:
        "../scripts/data_features_partition.py"


rule features:
    input:
        expand_partitions("results/features/{partition}.parquet"),
