"""The training entry point: ``python -m capforecast.train --model NAME``.

The SageMaker training container runs this module path (keep it stable: it is the contract with
the container, so it stays at the package top rather than in ``capforecast.forecast``). It only
parses arguments and locations and calls the forecast stage (``capforecast.forecast.fit``).
Inside a SageMaker training container the locations default to its contract
(``SM_CHANNEL_TRAIN``, ``SM_MODEL_DIR``, ``SM_OUTPUT_DATA_DIR``, ``/opt/ml/...``), so the same
code runs locally and remotely (``capforecast.train_backtest`` is the backtest's entry point,
at the top for the same reason); submission lives in ``capforecast.aws.sagemaker_backend``.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from capforecast.errors import ConfigError, ForecastInputError
from capforecast.forecast.fit import fit_forecast, load_panel
from capforecast.settings import backtest_settings, forecast_settings, model_settings

SAGEMAKER_DEFAULTS = {
    "train": ("SM_CHANNEL_TRAIN", "/opt/ml/input/data/train"),
    "config": ("SM_CHANNEL_CONFIG", "/opt/ml/input/data/config"),
    "model_dir": ("SM_MODEL_DIR", "/opt/ml/model"),
    "output_dir": ("SM_OUTPUT_DATA_DIR", "/opt/ml/output/data"),
}


def _default(name: str) -> str:
    env, fallback = SAGEMAKER_DEFAULTS[name]
    return os.environ.get(env, fallback)


def parse_args(
    argv: Sequence[str] | None = None,
    description: str = "Fit one forecasting model and write forecasts",
) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--model", required=True, help="model name from models.enabled")
    parser.add_argument("--train", default=None, help="directory of feature parquet files")
    parser.add_argument("--config", default=None, help="config YAML (file or directory)")
    parser.add_argument("--model-dir", default=None, help="where model artefacts go")
    parser.add_argument("--output-dir", default=None, help="where forecasts go")
    parser.add_argument("--n-jobs", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args(argv)
    # SageMaker passes hyperparameters as CLI args and data locations as SM_* variables.
    args.train = args.train or _default("train")
    args.config = args.config or _default("config")
    args.model_dir = args.model_dir or _default("model_dir")
    args.output_dir = args.output_dir or _default("output_dir")
    return args


def job_inputs(args: argparse.Namespace) -> tuple[pd.DataFrame, dict[str, Any]]:
    """The feature panel in ``args.train`` and the settings of ``args.config`` (validated) as
    the keyword arguments ``fit_forecast`` and the backtest take."""
    from capforecast.config import validated_config

    config_path = Path(args.config)
    if config_path.is_dir():
        candidates = sorted(config_path.glob("*.yaml")) + sorted(config_path.glob("*.yml"))
        if not candidates:
            raise ConfigError("--config", f"no YAML file in {config_path}")
        config_path = candidates[0]
    cfg = validated_config(yaml.safe_load(config_path.read_text()) or {})
    files = sorted(Path(args.train).glob("*.parquet"))
    if not files:
        raise ForecastInputError(f"no feature parquet files in {args.train}")
    return load_panel(files), fit_settings(cfg, args.n_jobs)


def fit_settings(cfg: dict[str, Any], n_jobs: int) -> dict[str, Any]:
    """A validated config as the keyword arguments ``fit_forecast`` and the backtest take."""
    return {
        "forecast_cfg": forecast_settings(cfg["forecast"]),
        "backtest_cfg": backtest_settings(cfg["backtest"]),
        "models_cfg": model_settings(cfg["models"]),
        "percent_metrics": cfg["etl"]["percent_metrics"],
        "freq": cfg["etl"]["freq"],
        "n_jobs": n_jobs,
    }


def write_table(table: pd.DataFrame, args: argparse.Namespace) -> Path:
    out = Path(args.output_dir) / f"{args.model}.parquet"
    out.parent.mkdir(parents=True, exist_ok=True)
    table.to_parquet(out, index=False)
    return out


def main(argv: Sequence[str] | None = None) -> Path:
    args = parse_args(argv)
    panel, settings = job_inputs(args)
    forecast = fit_forecast(
        args.model, panel, model_dir=Path(args.model_dir) / args.model, **settings
    )
    out = write_table(forecast, args)
    (Path(args.model_dir) / args.model).mkdir(parents=True, exist_ok=True)
    return out


def cli(main: Callable[[Sequence[str] | None], Path], argv: Sequence[str] | None = None) -> None:
    """``main`` for a shell: a ``CapForecastError`` is one line on stderr and exit status 1;
    inside a SageMaker container also ``/opt/ml/output/failure``, the job's FailureReason."""
    import sys

    from capforecast.errors import CapForecastError

    try:
        main(argv)
    except CapForecastError as err:
        print(f"capforecast error: {err}", file=sys.stderr)
        failure = Path(os.environ.get("SM_OUTPUT_DIR", "/opt/ml/output")) / "failure"
        if "SM_MODEL_DIR" in os.environ and failure.parent.is_dir():
            failure.write_text(f"capforecast error: {err}\n")
        sys.exit(1)


if __name__ == "__main__":
    cli(main)
