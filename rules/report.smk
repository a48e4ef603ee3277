# Reports: parameterised notebooks executed with papermill, then self-contained HTML (code hidden).

REPORT_INPUTS = {
    "data_quality": {
        "quality": rules.quality.output.quality,
        "quarantine": rules.quality.output.quarantine,
        "reconciliation": rules.quality.output.reconciliation,
        "clean": expand_partitions("results/clean/{partition}.parquet"),
    },
    "forecast_backtest": {
        "leaderboard": rules.leaderboard.output.leaderboard,
        "metrics": rules.leaderboard.output.metrics,
        "forecasts": rules.combine_forecasts.output.forecasts,
        "clean": expand_partitions("results/clean/{partition}.parquet"),
    },
    "capacity_risk": {
        "risk_report": rules.risk_report.output.report_parquet,
        "daily_breach": rules.risk_report.output.daily_breach,
        "service_capacity": rules.risk_report.output.service_capacity,
        "summary": rules.risk_report.output.summary,
        "forecasts": rules.combine_forecasts.output.forecasts,
        "clean": expand_partitions("results/clean/{partition}.parquet"),
    },
}


def report_inputs(wildcards):
    return {
        **REPORT_INPUTS[wildcards.report],
        # Absolute: the working directory (--directory) need not be the project.
        "notebook": str(
            Path(workflow.basedir) / "notebooks" / f"{wildcards.report}.ipynb"
        ),
    }


rule render_report:
    input:
        unpack(report_inputs),
    output:
        notebook="results/reports/{report}.ipynb",
        html=report(
            "results/reports/{report}.html",
            caption="../report/html_report.rst",
            category="Reports",
        ),
    log:
        "results/logs/report/{report}.log",
    wildcard_constraints:
        report="data_quality|forecast_backtest|capacity_risk",
    conda:
        "../envs/report.yaml"
    params:
        project_root=workflow.basedir,
        top_n=config["report"]["top_n"],
        sample_series=config["report"]["sample_series"],
        no_input="--no-input" if config["report"]["hide_code"] else "",
        code=code_hash("report"),
    shell:
        "(CAPFORECAST_ROOT={params.project_root:q} papermill {input.notebook} "
        "{output.notebook} --cwd . -p results_dir $(pwd)/results -p top_n {params.top_n} "
        "-p sample_series {params.sample_series} "
        "&& jupyter nbconvert --to html {params.no_input} "
        "--output-dir $(dirname {output.html}) {output.notebook}) > {log} 2>&1"


rule report:
    input:
        report_targets(),
