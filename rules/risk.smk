# Module 05: what runs out, when, how sure, and what to do about it.


rule risk_report:
    input:
        forecasts=rules.combine_forecasts.output.forecasts,
        clean=expand_partitions("results/clean/{partition}.parquet"),
        resources=rules.ingest_resources.output.resources,
        quality=rules.quality.output.quality,
    output:
        report_parquet="results/risk/risk_report.parquet",
        report_csv=report(
            "results/risk/risk_report.csv",
            caption="../report/risk_report.rst",
            category="Capacity risk",
        ),
        daily_breach="results/risk/daily_breach.parquet",
        service_capacity=report(
            "results/risk/service_capacity.csv",
            caption="../report/service_capacity.rst",
            category="Capacity risk",
        ),
        summary="results/risk/summary.json",
    log:
        "results/logs/risk.log",
    benchmark:
        "results/benchmarks/risk.tsv"
    conda:
        "../envs/etl.yaml"
    threads: job_threads("aggregate")
    resources:
        **job_resources("aggregate"),
    params:
        # What capforecast.risk.assess.risk_settings reads (missing keys take the schema defaults).
        config={
            "risk": config["risk"],
            "catalogue": config["catalogue"],
            "etl": config_keys(
                "etl", "percent_metrics", "pegged_level", "min_history_hours", "freq"
            ),
            "forecast": config_keys("forecast", "target"),
        },
        code=script_digest("risk_report.py"),
    script:
        "../scripts/risk_report.py"


rule risk:
    input:
        rules.risk_report.output,
