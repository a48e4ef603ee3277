# Forecast stage (capforecast.forecast, scripts/forecast_*.py): one rule per model family (each
# with its env; a model's family is in its spec, capforecast.forecast.models.specs), the same
# rolling-origin backtest for every model, selection without peeking, and final forecasts refit
# on the full history.

FEATURES = expand_partitions("results/features/{partition}.parquet")
# A model job handles one shard of one shard group (rules/common.smk SHARD_GROUPS): the
# features of its group's partitions only (its own partition's, or its pack's), so a changed
# partition reruns its own group's shards and the aggregates.
# Each rule gets the settings its script reads, no more: editing one model's settings reruns
# that model's jobs only (and what depends on them), not every model's backtest.
MODEL_PARAMS = dict(
    # The backtest reads every backtest key, the refit the season.
    backtest=config["backtest"],
    # The shared model settings and this model's own (capforecast.forecast.models.model_settings).
    models=lambda wildcards: model_settings(config["models"], wildcards.model),
    percent_metrics=config["etl"]["percent_metrics"],
    freq=config["etl"]["freq"],
    # The group's shard count: a series' shard is its hash modulo it (1 for a pack).
    n_shards=lambda wildcards: SHARD_GROUPS[wildcards.group].n_shards,
)


# The whole fleet's history against the backtest: one line naming the config key
# (backtest.windows or backtest.season) when even the longest series is too short
# (capforecast.forecast.history_check.check_fleet). A model job sees one shard of one group
# and cannot tell. It runs as soon as the last feature panel exists, before the model jobs
# ready then (priority); the leaderboard waits for it.
rule history_check:
    input:
        features=FEATURES,
    output:
        check=HISTORY_CHECK,
    log:
        "results/logs/backtest/history_check.log",
    priority: 10
    conda:
        "../envs/etl.yaml"
    threads: job_threads("aggregate")
    resources:
        **job_resources("aggregate"),
    params:
        partitions=PARTITIONS,
        backtest=config["backtest"],
        freq=config["etl"]["freq"],
        code=script_digest("forecast_history_check.py"),
    script:
        "../scripts/forecast_history_check.py"


rule backtest_baseline:
    input:
        features=group_features,
    output:
        predictions="results/backtest/shards/{group}/{shard}/{model}.parquet",
    log:
        "results/logs/backtest/{group}/{shard}/{model}.log",
    benchmark:
        "results/benchmarks/backtest/{group}/{shard}/{model}.tsv"
    wildcard_constraints:
        model=family_models("baseline"),
    conda:
        "../envs/statsforecast.yaml"
    threads: job_threads("baseline")
    resources:
        **job_resources("baseline", SHARD_SERIES),
    params:
        **MODEL_PARAMS,
        # The models' quantile levels (capforecast.forecast.fit.model_quantiles).
        forecast=config_keys("forecast", "quantiles", "extra_quantiles"),
        code=script_digest("forecast_backtest_model.py"),
    script:
        "../scripts/forecast_backtest_model.py"


use rule backtest_baseline as backtest_statsforecast with:
    wildcard_constraints:
        model=family_models("statsforecast"),
    threads: job_threads("statsforecast")
    resources:
        **job_resources("statsforecast", SHARD_SERIES),


use rule backtest_baseline as backtest_prophet with:
    wildcard_constraints:
        model=family_models("prophet"),
    conda:
        "../envs/prophet.yaml"
    threads: job_threads("prophet")
    resources:
        **job_resources("prophet", SHARD_SERIES),


use rule backtest_baseline as backtest_autogluon with:
    wildcard_constraints:
        model=family_models("autogluon"),
    conda:
        "../envs/autogluon.yaml"
    threads: job_threads("autogluon")
    resources:
        **job_resources("autogluon", SHARD_SERIES),


rule leaderboard:
    input:
        predictions=expand_shards(
            "results/backtest/shards/{group}/{shard}/{model}.parquet"
        ),
        features=FEATURES,
        # Not read: the fleet-wide checks that stop the run in one line (a series split over
        # two input files, a history too short for the backtest). Only the aggregates wait for
        # them: a model job that did would be rerun by (or, as ancient(), masked from) every
        # change to any partition. They run first (priority) once their inputs exist.
        series_index=SERIES_INDEX,
        history_check=HISTORY_CHECK,
    output:
        metrics="results/backtest/metrics.parquet",
        leaderboard=report(
            "results/backtest/leaderboard.csv",
            caption="../report/leaderboard.rst",
            category="Forecast accuracy",
        ),
        selection="results/backtest/selection.parquet",
        calibration="results/backtest/calibration.parquet",
    log:
        "results/logs/backtest/leaderboard.log",
    benchmark:
        "results/benchmarks/leaderboard.tsv"
    conda:
        "../envs/statsforecast.yaml"
    threads: job_threads("aggregate")
    resources:
        **job_resources("aggregate"),
    params:
        # The MASE season, the scored quantiles, calibration on or off, the selection.
        backtest=config_keys("backtest", "season"),
        forecast=config_keys("forecast", "quantiles", "extra_quantiles", "calibrate"),
        selection=config["selection"],
        percent_metrics=config["etl"]["percent_metrics"],
        # Which partitions' features each group's prediction files are scored against, and the
        # group's shard count (rules/common.smk SHARD_GROUPS).
        shard_groups={
            group: [list(plan.partitions), plan.n_shards]
            for group, plan in SHARD_GROUPS.items()
        },
        code=script_digest("forecast_leaderboard.py"),
    script:
        "../scripts/forecast_leaderboard.py"


rule forecast_baseline:
    input:
        features=group_features,
    output:
        forecast="results/forecast/shards/{group}/{shard}/{model}.parquet",
    log:
        "results/logs/forecast/{group}/{shard}/{model}.log",
    benchmark:
        "results/benchmarks/forecast/{group}/{shard}/{model}.tsv"
    wildcard_constraints:
        model=family_models("baseline"),
    conda:
        "../envs/statsforecast.yaml"
    threads: job_threads("baseline")
    resources:
        **job_resources("baseline", SHARD_SERIES),
    params:
        **MODEL_PARAMS,
        # The quantile levels and the horizon of the refit.
        forecast=config_keys("forecast", "horizon", "quantiles", "extra_quantiles"),
        code=script_digest("forecast_model.py"),
    script:
        "../scripts/forecast_model.py"


use rule forecast_baseline as forecast_statsforecast with:
    wildcard_constraints:
        model=family_models("statsforecast"),
    threads: job_threads("statsforecast")
    resources:
        **job_resources("statsforecast", SHARD_SERIES),


use rule forecast_baseline as forecast_prophet with:
    output:
        forecast="results/forecast/shards/{group}/{shard}/{model}.parquet",
        # The fitted Prophet models, one JSON per series (prophet.serialize).
        models=directory("results/forecast/prophet_models/{group}/{shard}/{model}"),
    wildcard_constraints:
        model=family_models("prophet"),
    conda:
        "../envs/prophet.yaml"
    threads: job_threads("prophet")
    resources:
        **job_resources("prophet", SHARD_SERIES),


use rule forecast_baseline as forecast_autogluon with:
    wildcard_constraints:
        model=family_models("autogluon"),
    conda:
        "../envs/autogluon.yaml"
    threads: job_threads("autogluon")
    resources:
        **job_resources("autogluon", SHARD_SERIES),


# training.backend.<family>: sagemaker moves a family's backtest and refit to these rules: each
# job is a SageMaker training job (capforecast.aws.sagemaker_backend) that writes the same files
# as the local rules, plus a receipt. Where a fit runs is not a param (it does not change what
# it computes), so an instance type or bucket change reruns nothing.
rule backtest_sagemaker:
    input:
        features=group_features,
    output:
        predictions="results/backtest/shards/{group}/{shard}/{model}.parquet",
        receipt="results/backtest/shards/{group}/{shard}/{model}.sagemaker.json",
    log:
        "results/logs/backtest/{group}/{shard}/{model}.log",
    benchmark:
        "results/benchmarks/backtest/{group}/{shard}/{model}.tsv"
    wildcard_constraints:
        model=sagemaker_models(),
    conda:
        "../envs/aws.yaml"
    threads: job_threads("light")
    resources:
        **job_resources("light", SHARD_SERIES),
    params:
        **MODEL_PARAMS,
        forecast=config_keys("forecast", "quantiles", "extra_quantiles"),
        task="backtest",
        code=script_digest("forecast_sagemaker_model.py"),
    script:
        "../scripts/forecast_sagemaker_model.py"


rule forecast_sagemaker:
    input:
        features=group_features,
    output:
        forecast="results/forecast/shards/{group}/{shard}/{model}.parquet",
        receipt="results/forecast/shards/{group}/{shard}/{model}.sagemaker.json",
    log:
        "results/logs/forecast/{group}/{shard}/{model}.log",
    benchmark:
        "results/benchmarks/forecast/{group}/{shard}/{model}.tsv"
    wildcard_constraints:
        model=sagemaker_models("baseline", "statsforecast", "autogluon"),
    conda:
        "../envs/aws.yaml"
    threads: job_threads("light")
    resources:
        **job_resources("light", SHARD_SERIES),
    params:
        **MODEL_PARAMS,
        forecast=config_keys("forecast", "horizon", "quantiles", "extra_quantiles"),
        task="forecast",
        code=script_digest("forecast_sagemaker_model.py"),
    script:
        "../scripts/forecast_sagemaker_model.py"


use rule forecast_sagemaker as forecast_sagemaker_prophet with:
    output:
        forecast="results/forecast/shards/{group}/{shard}/{model}.parquet",
        models=directory("results/forecast/prophet_models/{group}/{shard}/{model}"),
        receipt="results/forecast/shards/{group}/{shard}/{model}.sagemaker.json",
    wildcard_constraints:
        model=sagemaker_models("prophet"),
    threads: job_threads("light")
    resources:
        **job_resources("light", SHARD_SERIES),


rule combine_forecasts:
    input:
        forecasts=expand_shards(
            "results/forecast/shards/{group}/{shard}/{model}.parquet"
        ),
        selection=rules.leaderboard.output.selection,
        calibration=rules.leaderboard.output.calibration,
        # Series whose rows were all quarantined get NaN rows flagged no_data from it.
        quality=rules.quality.output.quality,
    output:
        forecasts="results/forecast/forecasts.parquet",
    log:
        "results/logs/forecast/combine.log",
    benchmark:
        "results/benchmarks/combine_forecasts.tsv"
    conda:
        "../envs/statsforecast.yaml"
    threads: job_threads("aggregate")
    resources:
        **job_resources("aggregate"),
    params:
        forecast=config_keys("forecast", "quantiles", "extra_quantiles", "calibrate"),
        percent_metrics=config["etl"]["percent_metrics"],
        code=script_digest("forecast_combine.py"),
    script:
        "../scripts/forecast_combine.py"


rule forecast:
    input:
        rules.leaderboard.output,
        rules.combine_forecasts.output,
