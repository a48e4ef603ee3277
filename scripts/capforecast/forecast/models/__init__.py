"""Forecasting models: every one is a ``ModelFn`` (see ``base.py``) registered by name.

Importing this package imports no forecasting library: statsforecast, Prophet and AutoGluon are
imported inside the functions that use them, so cheap rules stay fast.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from capforecast.forecast.models.autogluon_model import autogluon
from capforecast.forecast.models.base import ForecastRequest, ModelFn, finalize_forecast
from capforecast.forecast.models.baselines import (
    predict_linear,
    seasonal_naive_daily,
    seasonal_naive_weekly,
)
from capforecast.forecast.models.fallback import FALLBACK_CHAIN
from capforecast.forecast.models.profiles import seasonal_median
from capforecast.forecast.models.prophet_model import prophet
from capforecast.forecast.models.stats import autoets, autotheta, mstl, theta

MODEL_REGISTRY: dict[str, ModelFn] = {
    "seasonal_naive_daily": seasonal_naive_daily,
    "seasonal_naive_weekly": seasonal_naive_weekly,
    "predict_linear": predict_linear,
    "seasonal_median": seasonal_median,
    "autoets": autoets,
    "autotheta": autotheta,
    "theta": theta,
    "mstl": mstl,
    "prophet": prophet,
    "autogluon": autogluon,
}

# Models of one family share a backtest/forecast rule (one fit over all series per family).
MODEL_FAMILY: dict[str, str] = {
    "seasonal_naive_daily": "baseline",
    "seasonal_naive_weekly": "baseline",
    "predict_linear": "baseline",
    "seasonal_median": "baseline",
    "autoets": "statsforecast",
    "autotheta": "statsforecast",
    "theta": "statsforecast",
    "mstl": "statsforecast",
    "prophet": "prophet",
    "autogluon": "autogluon",
}

# Keys of the `models` config section every model reads (backtest and refit trim the history).
SHARED_MODEL_SETTINGS: tuple[str, ...] = ("max_history_hours",)
# Keys of the `models` section one model reads besides the shared ones (its own section).
MODEL_SETTINGS: dict[str, tuple[str, ...]] = {
    "predict_linear": ("predict_linear_window_hours",),
    "seasonal_median": ("seasonal_median",),
    "autoets": ("intervals",),
    "autotheta": ("intervals",),
    "theta": ("intervals",),
    "mstl": ("intervals",),
    "prophet": ("prophet",),
    "autogluon": ("autogluon",),
}


def model_settings(models_cfg: Mapping[str, Any], model: str) -> dict[str, Any]:
    """The part of the `models` config section that ``model`` reads: the shared settings and
    those of every model on its fallback chain (mstl falls back to theta, which reads
    `intervals`). A model rule gets only this, so editing one model's settings reruns only
    that model's jobs."""
    keys = [*SHARED_MODEL_SETTINGS]
    for name in FALLBACK_CHAIN.get(model, (model,)):
        keys.extend(k for k in MODEL_SETTINGS.get(name, ()) if k not in keys)
    return {key: models_cfg[key] for key in keys if key in models_cfg}


__all__ = [
    "MODEL_FAMILY",
    "MODEL_REGISTRY",
    "MODEL_SETTINGS",
    "SHARED_MODEL_SETTINGS",
    "ForecastRequest",
    "ModelFn",
    "finalize_forecast",
    "model_settings",
]
