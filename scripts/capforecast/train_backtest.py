"""The rolling-origin backtest of one model: what the backtest rules run, and the backtest's
entry point in a SageMaker training container (``python -m capforecast.train_backtest --model
NAME``; locations as ``capforecast.train``: the SageMaker contract inside a container).

A module of its own so that the refit's code (``capforecast.train``) does not import the
evaluation modules: editing a scoring module reruns backtests, not refits.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from capforecast import train
from capforecast.errors import ConfigError
from capforecast.forecast.evaluate import backtest_models
from capforecast.forecast.panel import series_bounds
from capforecast.settings import BacktestSettings, ForecastSettings, ModelSettings


def backtest_predictions(
    model_name: str,
    panel: pd.DataFrame,
    *,
    forecast_cfg: ForecastSettings,
    backtest_cfg: BacktestSettings,
    models_cfg: ModelSettings,
    percent_metrics: Sequence[str],
    freq: str = "1h",
    n_jobs: int = 1,
) -> pd.DataFrame:
    """Predictions of ``model_name`` per series x window (``capforecast.backtest`` windows) on
    ``panel``, one shard of the fleet (rules/forecast.smk): the fleet's history was checked
    against the windows (rule history_check), so a shard of short series is skipped window by
    window, as in one fleet-wide backtest, not an error."""
    from capforecast.forecast.models import MODEL_REGISTRY

    if model_name not in MODEL_REGISTRY:
        raise ConfigError("models.enabled", f"unknown model '{model_name}'")
    return backtest_models(
        panel[["series_id", "timestamp", "y"]],
        {model_name: MODEL_REGISTRY[model_name]},
        backtest_cfg=backtest_cfg,
        forecast_cfg=forecast_cfg,
        models_cfg=models_cfg,
        freq=freq,
        bounds=series_bounds(panel, percent_metrics),
        n_jobs=n_jobs,
        fleet_checked=True,
    )


def main(argv: Sequence[str] | None = None) -> Path:
    args = train.parse_args(argv, description="Backtest one forecasting model")
    panel, settings = train.job_inputs(args)
    return train.write_table(backtest_predictions(args.model, panel, **settings), args)


if __name__ == "__main__":
    train.cli(main)
