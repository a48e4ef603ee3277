# Module 04: one rule per model family (each with its env), the same rolling-origin backtest for
# every model, selection without peeking, and final forecasts refit on the full history.

FEATURES = expand_partitions("results/features/{partition}.parquet")
FORECAST_PARAMS = dict(
    backtest=config["backtest"],
    forecast=config["forecast"],
    models=config["models"],
    percent_metrics=config["etl"]["percent_metrics"],
)


rule backtest_baseline:
    input:
        features=FEATURES,
    output:
        predictions="results/backtest/models/{model}.parquet",
    params:
        **FORECAST_PARAMS,
        code=code_hash("panel", "backtest", "models/"),
    threads: 1
    log:
        "results/logs/backtest/{model}.log",
    benchmark:
        "results/benchmarks/backtest/{model}.tsv"
    wildcard_constraints:
        model=family_models("baseline"),
    conda:
        "../envs/statsforecast.yaml"
    script:
        "../scripts/backtest_model.py"


use rule backtest_baseline as backtest_statsforecast with:
    wildcard_constraints:
        model=family_models("statsforecast"),
    threads: 2


use rule backtest_baseline as backtest_prophet with:
    wildcard_constraints:
        model=family_models("prophet"),
    threads: 2
    conda:
        "../envs/prophet.yaml"


use rule backtest_baseline as backtest_autogluon with:
    wildcard_constraints:
        model=family_models("autogluon"),
    threads: 2
    conda:
        "../envs/autogluon.yaml"


rule leaderboard:
    input:
        predictions=expand("results/backtest/models/{model}.parquet", model=MODELS),
        features=FEATURES,
    output:
        metrics="results/backtest/metrics.parquet",
        leaderboard=report(
            "results/backtest/leaderboard.csv",
            caption="../report/leaderboard.rst",
            category="Forecast accuracy",
        ),
        selection="results/backtest/selection.parquet",
        selected_predictions="results/backtest/selected_predictions.parquet",
        calibration="results/backtest/calibration.parquet",
    params:
        **FORECAST_PARAMS,
        selection=config["selection"],
        code=code_hash("panel", "metrics", "selection", "calibration"),
    log:
        "results/logs/backtest/leaderboard.log",
    conda:
        "../envs/statsforecast.yaml"
    script:
        "../scripts/leaderboard.py"


rule forecast_baseline:
    input:
        features=FEATURES,
    output:
        forecast="results/forecast/models/{model}.parquet",
    params:
        **FORECAST_PARAMS,
        code=code_hash("panel", "train", "models/"),
    threads: 1
    log:
        "results/logs/forecast/{model}.log",
    benchmark:
        "results/benchmarks/forecast/{model}.tsv"
    wildcard_constraints:
        model=family_models("baseline"),
    conda:
        "../envs/statsforecast.yaml"
    script:
        "../scripts/forecast_model.py"


use rule forecast_baseline as forecast_statsforecast with:
    wildcard_constraints:
        model=family_models("statsforecast"),
    threads: 2


use rule forecast_baseline as forecast_prophet with:
    wildcard_constraints:
        model=family_models("prophet"),
    threads: 2
    conda:
        "../envs/prophet.yaml"


use rule forecast_baseline as forecast_autogluon with:
    wildcard_constraints:
        model=family_models("autogluon"),
    threads: 2
    conda:
        "../envs/autogluon.yaml"


rule combine_forecasts:
    input:
        forecasts=expand("results/forecast/models/{model}.parquet", model=MODELS),
        selection=rules.leaderboard.output.selection,
        calibration=rules.leaderboard.output.calibration,
    output:
        forecasts="results/forecast/forecasts.parquet",
    params:
        forecast=config["forecast"],
        percent_metrics=config["etl"]["percent_metrics"],
        code=code_hash("selection", "calibration"),
    log:
        "results/logs/forecast/combine.log",
    conda:
        "../envs/statsforecast.yaml"
    script:
        "../scripts/combine_forecasts.py"


rule forecast:
    input:
        rules.leaderboard.output,
        rules.combine_forecasts.output,
