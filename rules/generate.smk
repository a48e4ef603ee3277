# Module 01: the embedded synthetic fleet (deterministic by seed).


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
        code=script_digest("generate_service.py"),
    script:
        "../scripts/generate_service.py"


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
        code=script_digest("generate_fleet.py"),
    script:
        "../scripts/generate_fleet.py"


rule generate:
    input:
        expand(
            f"{SYNTHETIC_DIR}/{{service}}.parquet",
            service=[s["name"] for s in config["synthetic"]["services"]],
        ),
        rules.generate_fleet.output,
