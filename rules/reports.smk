# Reports: parameterised notebooks executed with papermill, then self-contained HTML (code hidden).


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
    benchmark:
        "results/benchmarks/report/{report}.tsv"
    wildcard_constraints:
        report="data_quality|forecast_backtest|capacity_risk",
    conda:
        "../envs/report.yaml"
    threads: job_threads("report")
    resources:
        **job_resources("report"),
    params:
        project_root=workflow.basedir,
        top_n=config["report"]["top_n"],
        sample_series=config["report"]["sample_series"],
        hide_code=config["report"]["hide_code"],
        settings=report_settings,
        code=lambda wildcards: script_digest(
            "reports_render.py", notebook=f"notebooks/{wildcards.report}.ipynb"
        ),
    script:
        "../scripts/reports_render.py"


rule report:
    input:
        report_targets(),
