# Model-ready panels, per partition so a changed partition rebuilds only its own panel.


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
        code=script_digest("features_partition.py"),
    script:
        "../scripts/features_partition.py"


rule features:
    input:
        expand_partitions("results/features/{partition}.parquet"),
