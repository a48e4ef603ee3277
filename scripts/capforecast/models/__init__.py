"""Forecasting models: every one is a ``ModelFn`` (see ``base.py``) registered by name.

Importing this package imports no forecasting library: statsforecast, Prophet and AutoGluon are
imported inside the functions that use them, so cheap rules stay fast.
"""

from __future__ import annotations

from capforecast.models.autogluon_model import autogluon
from capforecast.models.base import ForecastRequest, ModelFn, finalize_forecast
from capforecast.models.baselines import (
    predict_linear,
    seasonal_naive_daily,
    seasonal_naive_weekly,
)
from capforecast.models.profiles import seasonal_median
from capforecast.models.prophet_model import prophet
from capforecast.models.stats import autoets, autotheta, mstl, theta

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

__all__ = [
    "MODEL_FAMILY",
    "MODEL_REGISTRY",
    "ForecastRequest",
    "ModelFn",
    "finalize_forecast",
]
