"""Final fits: one model refit on the whole history of the feature panel, forecasting
``forecast.horizon`` steps (the forecast rules, the SageMaker entry point ``capforecast.train`` and
``capforecast.forecast.evaluate`` call ``fit_forecast``), and the panel and quantile levels every
model stage shares."""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from capforecast.errors import ConfigError, ForecastInputError
from capforecast.forecast.models.base import (
    ForecastRequest,
    series_blocks,
    sort_by_series,
    trim_history,
)
from capforecast.forecast.models.fallback import history_cap
from capforecast.forecast.panel import series_bounds
from capforecast.settings import (
    BacktestSettings,
    ForecastSettings,
    ModelSettings,
)


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
    return sort_by_series(pd.concat(frames, ignore_index=True))


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
    """Add resource_id, metric and model to a model's output (keyed by series_id).

    What ``forecast.merge(<first row of each series of panel>, on="series_id", how="left")``
    gives, looked up per series instead of joined row by row.
    """
    series = series_blocks(panel["series_id"])
    first_rows = series.rows(series.starts)
    where = {sid: row for sid, row in zip(series.ids, first_rows, strict=True)}
    blocks = series_blocks(forecast["series_id"])
    rows = np.array([where.get(sid, -1) for sid in blocks.ids], dtype=np.int64)[blocks.codes]
    out = forecast.reset_index(drop=True)
    for column in ("resource_id", "metric"):
        out[column] = panel[column].array.take(rows, allow_fill=True)
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
    from capforecast.forecast.models import MODEL_REGISTRY

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
        panel = trim_history(sort_by_series(panel), max_points)
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
        from capforecast.forecast.models.prophet_model import (
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
