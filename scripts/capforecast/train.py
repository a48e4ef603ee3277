"""Training entry logic shared by the Snakemake rules and the SageMaker container.

``fit_forecast`` is what the forecast rules call; ``main`` is the command-line entry point
(``python -m capforecast.train``). Inside a SageMaker training container the locations default to
its contract (``SM_CHANNEL_TRAIN``, ``SM_MODEL_DIR``, ``SM_OUTPUT_DATA_DIR``, ``/opt/ml/...``), so
the same code runs locally and remotely (``capforecast.train_backtest`` is the backtest's entry
point); submission lives in ``capforecast.aws.sagemaker_backend``.
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from capforecast.errors import ConfigError, ForecastInputError
from capforecast.models.base import ForecastRequest, trim_history
from capforecast.models.fallback import history_cap
from capforecast.panel import series_bounds
from capforecast.settings import (
    BacktestSettings,
    ForecastSettings,
    ModelSettings,
    backtest_settings,
    forecast_settings,
    model_settings,
)

SAGEMAKER_DEFAULTS = {
    "train": ("SM_CHANNEL_TRAIN", "/opt/ml/input/data/train"),
    "config": ("SM_CHANNEL_CONFIG", "/opt/ml/input/data/config"),
    "model_dir": ("SM_MODEL_DIR", "/opt/ml/model"),
    "output_dir": ("SM_OUTPUT_DATA_DIR", "/opt/ml/output/data"),
}


def model_quantiles(forecast_cfg: ForecastSettings) -> tuple[float, ...]:
    """Configured quantiles plus the extra ones the risk stage needs, plus the median."""
    levels = {*forecast_cfg.quantiles, *forecast_cfg.extra_quantiles, 0.5}
    return tuple(sorted(round(float(q), 6) for q in levels))


def load_panel(feature_files: Iterable[str | Path]) -> pd.DataFrame:
    """Concatenate per-partition feature panels (series_id, resource_id, metric, timestamp, y)."""
    frames = [
        pd.read_parquet(p, columns=["series_id", "resource_id", "metric", "timestamp", "y"])
        for p in feature_files
    ]
    frames = [f for f in frames if len(f)]
    if not frames:
        raise ForecastInputError("no feature rows to forecast: every partition is empty")
    panel = pd.concat(frames, ignore_index=True)
    return panel.sort_values(["series_id", "timestamp"], ignore_index=True)


def build_request(
    panel: pd.DataFrame,
    *,
    horizon: int,
    quantiles: Sequence[float],
    season: int,
    percent_metrics: Sequence[str],
    freq: str = "1h",
    n_jobs: int = 1,
) -> ForecastRequest:
    return ForecastRequest(
        history=panel[["series_id", "timestamp", "y"]].reset_index(drop=True),
        horizon=int(horizon),
        quantiles=tuple(quantiles),
        freq=freq,
        season=int(season),
        bounds=series_bounds(panel, percent_metrics),
        n_jobs=int(n_jobs),
    )


def attach_keys(forecast: pd.DataFrame, panel: pd.DataFrame, model: str) -> pd.DataFrame:
    """Add resource_id, metric and model to a model's output (keyed by series_id)."""
    meta = panel.drop_duplicates("series_id")[["series_id", "resource_id", "metric"]]
    out = forecast.merge(meta, on="series_id", how="left", validate="many_to_one")
    out.insert(0, "model", model)
    return out


def fit_forecast(
    model_name: str,
    panel: pd.DataFrame,
    *,
    forecast_cfg: ForecastSettings,
    backtest_cfg: BacktestSettings,
    models_cfg: ModelSettings,
    percent_metrics: Sequence[str],
    freq: str = "1h",
    n_jobs: int = 1,
    model_dir: str | Path | None = None,
) -> pd.DataFrame:
    """Refit ``model_name`` on the full history and forecast ``forecast.horizon`` steps.

    With ``model_dir``, models that can be serialised are written there (Prophet: one JSON per
    series plus ``index.json``), so a forecast can be audited or re-predicted later.
    """
    from capforecast.models import MODEL_REGISTRY

    if model_name not in MODEL_REGISTRY:
        raise ConfigError("models.enabled", f"unknown model '{model_name}'")
    max_points = history_cap(
        model_name,
        models_cfg.max_history_hours,
        horizon=forecast_cfg.horizon,
        season=backtest_cfg.season,
        freq=freq,
    )
    if max_points is not None:
        panel = panel.sort_values(["series_id", "timestamp"], ignore_index=True)
        panel = trim_history(panel, max_points)
    request = build_request(
        panel,
        horizon=forecast_cfg.horizon,
        quantiles=model_quantiles(forecast_cfg),
        season=backtest_cfg.season,
        percent_metrics=percent_metrics,
        freq=freq,
        n_jobs=n_jobs,
    )
    start = time.perf_counter()
    if model_name == "prophet" and model_dir is not None:
        from capforecast.models.prophet_model import (
            prophet_forecast_and_models,
            save_prophet_models,
        )

        forecast, fitted = prophet_forecast_and_models(request, models_cfg)
        save_prophet_models(fitted, model_dir)
    else:
        forecast = MODEL_REGISTRY[model_name](request, models_cfg)
    seconds = time.perf_counter() - start
    out = attach_keys(forecast, panel, model_name)
    out["fit_seconds"] = seconds / max(out["series_id"].nunique(), 1)
    missing = set(panel["series_id"]) - set(out["series_id"])
    if missing:
        raise ForecastInputError(
            f"model {model_name} returned no forecast for {len(missing)} series, "
            f"e.g. {sorted(missing)[0]}"
        )
    return out


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
