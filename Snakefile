# Capacity forecaster for cloud fleets.
#   make run                      -> whole pipeline on config/config.yaml (synthetic fleet)
#   snakemake --cores all <step>  -> one step: generate, ingest, clean, features,
#                                    forecast, risk, report, decision (see README)


configfile: "config/config.yaml"


include: "rules/common.smk"
include: "rules/generate.smk"
include: "rules/ingest.smk"
include: "rules/cloudwatch.smk"
include: "rules/clean.smk"
include: "rules/features.smk"
include: "rules/forecast.smk"
include: "rules/risk.smk"
include: "rules/report.smk"
include: "rules/decision.smk"


rule all:
    default_target: True
    input:
        rules.quality.output,
        rules.leaderboard.output,
        rules.combine_forecasts.output,
        rules.risk_report.output,
        report_targets(),
        # With data.history_end set: the decision backtest of the run's risk report.
        decision_targets(),
