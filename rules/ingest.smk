# Module 02: every source (synthetic output, local files, S3 objects; CloudWatch in
# rules/cloudwatch.smk) goes through the same reader into the raw long format, one partition
# per service or input file.


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
    params:
        # What capforecast.ingest.ingest_file reads: data.history_end, data.resources or the
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
    params:
        catalogue=config["catalogue"],
        code=script_digest("ingest_resources.py"),
    script:
        "../scripts/ingest_resources.py"


# One series, one file: a series in two input files stops the run here, before any model.
rule series_index:
    input:
        series=expand_partitions("results/raw/{partition}.series.parquet"),
    output:
        index=SERIES_INDEX,
    log:
        "results/logs/series_index.log",
    conda:
        "../envs/etl.yaml"
    params:
        partitions=PARTITIONS,
        sources=[PARTITION_SOURCES[p] for p in PARTITIONS],
        code=script_digest("series_index.py"),
    script:
        "../scripts/series_index.py"


rule ingest:
    input:
        expand_partitions("results/raw/{partition}.parquet"),
        rules.ingest_resources.output,
        rules.series_index.output,
