# Module 01: the embedded synthetic fleet (deterministic by seed).


rule generate_service:
    output:
        raw=f"{SYNTHETIC_DIR}/{{service}}.parquet",
    params:
        # The whole synthetic section + catalogue: the plan of one service depends on both.
        synthetic=config["synthetic"],
        catalogue=config["catalogue"],
        horizon=config["forecast"]["horizon"],
        code=code_hash("synth"),
    log:
        "results/logs/generate/{service}.log",
    benchmark:
        "results/benchmarks/generate/{service}.tsv"
    wildcard_constraints:
        service="[a-z][a-z0-9-]*",
    conda:
        "../envs/etl.yaml"
    script:
        "../scripts/generate_service.py"


rule generate_fleet:
    output:
        resources=f"{SYNTHETIC_DIR}/fleet/resources.parquet",
        ground_truth=f"{SYNTHETIC_DIR}/fleet/ground_truth.json",
    params:
        synthetic=config["synthetic"],
        catalogue=config["catalogue"],
        horizon=config["forecast"]["horizon"],
        thresholds=config["risk"]["thresholds"],
        code=code_hash("synth"),
    log:
        "results/logs/generate/fleet.log",
    conda:
        "../envs/etl.yaml"
    script:
        "../scripts/generate_fleet.py"


rule generate:
    input:
        expand(
            f"{SYNTHETIC_DIR}/{{service}}.parquet",
            service=[s["name"] for s in config["synthetic"]["services"]],
        ),
        rules.generate_fleet.output,
