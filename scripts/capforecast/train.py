"""The training entry point: ``python -m capforecast.train --model NAME``.

The SageMaker training container runs this module path (keep it stable: it is the contract with
the container, so it stays at the package top rather than in ``capforecast.forecast``). It only
parses arguments and locations and calls the forecast stage (``capforecast.forecast.fit``).
Inside a SageMaker training container the locations default to its contract
(``SM_CHANNEL_TRAIN``, ``SM_MODEL_DIR``, ``SM_OUTPUT_DATA_DIR``, ``/opt/ml/...``), so the same
code runs locally and remotely; submission itself lives in the AWS module.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence
from pathlib import Path

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


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Fit one forecasting model and write forecasts")
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


def main(argv: Sequence[str] | None = None) -> Path:
    from capforecast.config import validated_config

    args = parse_args(argv)
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
    panel = load_panel(files)
    forecast = fit_forecast(
        args.model,
        panel,
        forecast_cfg=forecast_settings(cfg["forecast"]),
        backtest_cfg=backtest_settings(cfg["backtest"]),
        models_cfg=model_settings(cfg["models"]),
        percent_metrics=cfg["etl"]["percent_metrics"],
        freq=cfg["etl"]["freq"],
        n_jobs=args.n_jobs,
        model_dir=Path(args.model_dir) / args.model,
    )
    out = Path(args.output_dir) / f"{args.model}.parquet"
    out.parent.mkdir(parents=True, exist_ok=True)
    forecast.to_parquet(out, index=False)
    (Path(args.model_dir) / args.model).mkdir(parents=True, exist_ok=True)
    return out


if __name__ == "__main__":
    main()
