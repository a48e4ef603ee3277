# Module 02: every source (synthetic output, local files; later S3 and CloudWatch) goes through
# the same reader into the raw long format, one partition per service or input file.


rule ingest_partition:
    input:
        source=partition_source,
    output:
        raw="results/raw/{partition}.parquet",
    log:
        "results/logs/ingest/{partition}.log",
    conda:
        "../envs/etl.yaml"
    params:
        data=config["data"],
        code=code_hash("ingest"),
    script:
        "../scripts/ingest_partition.py"


rule ingest_resources:
    input:
        unpack(resources_source),
        raw=expand_partitions("results/raw/{partition}.parquet"),
    output:
        resources="results/resources.parquet",
    log:
        "results/logs/ingest/resources.log",
    conda:
        "../envs/etl.yaml"
    params:
        catalogue=config["catalogue"],
        code=code_hash("ingest"),
    script:
        "../scripts/ingest_resources.py"


rule ingest:
    input:
        expand_partitions("results/raw/{partition}.parquet"),
        rules.ingest_resources.output,
