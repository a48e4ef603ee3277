# Decision backtest: with data.history_end set, the workflow runs on the history before it and
# the risk report's calls are scored against the held-back actuals (README, "Decision backtest").


rule holdout_span:
    input:
        raw=expand_partitions("results/raw/{partition}.parquet"),
    output:
        span=HOLDOUT_SPAN,
    log:
        # Not in results/logs/holdout/: a metrics file named span.csv logs there.
        "results/logs/holdout_span.log",
    conda:
        "../envs/etl.yaml"
    threads: job_threads("light")
    resources:
        **job_resources("light"),
    params:
        cut=cut_settings(),
        code=script_digest("decision_holdout_span.py"),
    script:
        "../scripts/decision_holdout_span.py"


rule holdout_partition:
    input:
        raw="results/raw/{partition}.parquet",
        span=HOLDOUT_SPAN,
    output:
        actuals="results/holdout/{partition}.parquet",
        reconciliation="results/holdout/{partition}.reconciliation.csv",
    log:
        "results/logs/holdout/{partition}.log",
    conda:
        "../envs/etl.yaml"
    threads: job_threads("etl")
    resources:
        **job_resources("etl"),
    params:
        etl=config["etl"],
        cut=cut_settings(),
        source_file=lambda wildcards: PARTITION_SOURCES[wildcards.partition],
        code=script_digest("decision_holdout_partition.py"),
    script:
        "../scripts/decision_holdout_partition.py"


rule decision_scores:
    input:
        unpack(decision_inputs),
    output:
        series_scores=report(
            DECISION_OUTPUTS["series_scores"],
            caption="../report/decision_series_scores.rst",
            category="Decision backtest",
        ),
        summary=report(
            DECISION_OUTPUTS["summary"],
            caption="../report/decision_summary.rst",
            category="Decision backtest",
        ),
        rightsizing=report(
            DECISION_OUTPUTS["rightsizing"],
            caption="../report/decision_rightsizing.rst",
            category="Decision backtest",
        ),
        summary_json=DECISION_OUTPUTS["summary_json"],
    log:
        "results/logs/decision.log",
    benchmark:
        "results/benchmarks/decision.tsv"
    conda:
        "../envs/etl.yaml"
    threads: job_threads("aggregate")
    resources:
        **job_resources("aggregate"),
    params:
        settings=decision_settings(),
        code=script_digest("decision_scores.py"),
    script:
        "../scripts/decision_scores.py"


rule decision:
    input:
        rules.decision_scores.output,
