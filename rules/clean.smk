# Module 03: validation and ETL per partition, then fleet-wide quality tables.
from capforecast import metric_names as cf_metric_names  # noqa: E402


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
        code=script_digest("clean_partition.py"),
    script:
        "../scripts/clean_partition.py"


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
        code=script_digest("combine_quality.py"),
    script:
        "../scripts/combine_quality.py"


rule clean:
    input:
        expand_partitions("results/clean/{partition}.parquet"),
        rules.quality.output,
