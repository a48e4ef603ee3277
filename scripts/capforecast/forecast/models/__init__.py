"""Forecasting models: every one is a ``ModelFn`` (see ``base.py``) registered by name.

Everything about a model is its spec (``specs.py``); the registry below is derived from them.
Importing this package imports no model module and no forecasting library: a model's core
(statsforecast, Prophet, AutoGluon) is imported when the model first runs, so cheap rules stay
fast.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pandas as pd

from capforecast.forecast.models.base import ForecastRequest, ModelFn, finalize_forecast
from capforecast.forecast.models.fallback import forecast_with_fallback, spec_function
from capforecast.forecast.models.specs import (
    MODEL_SPECS,
    SHARED_MODEL_SETTINGS,
    fallback_chain,
)
from capforecast.settings import ModelSettings


def _model_function(name: str) -> ModelFn:
    spec = MODEL_SPECS[name]

    def forecast(request: ForecastRequest, model_cfg: ModelSettings) -> pd.DataFrame:
        if spec.check is not None:
            # Before routing, so that a refused configuration fails even when every series is
            # short.
            spec_function(spec.check)(model_cfg)
        return forecast_with_fallback(request, model_cfg, name)

    forecast.__name__ = forecast.__qualname__ = name
    forecast.__doc__ = f"{name} forecasts for every series, with odd-series routing."
    return forecast


MODEL_REGISTRY: dict[str, ModelFn] = {name: _model_function(name) for name in MODEL_SPECS}

# Keys of the `models` section one model reads besides the shared ones (its own section).
MODEL_SETTINGS: dict[str, tuple[str, ...]] = {
    name: spec.settings for name, spec in MODEL_SPECS.items() if spec.settings
}


def model_settings(models_cfg: Mapping[str, Any], model: str) -> dict[str, Any]:
    """The part of the `models` config section that ``model`` reads: the shared settings and
    those of every model on its fallback chain (mstl falls back to theta, which reads
    `intervals`). A model rule gets only this, so editing one model's settings reruns only
    that model's jobs."""
    keys = [*SHARED_MODEL_SETTINGS]
    chain = fallback_chain(model) if model in MODEL_SPECS else (model,)
    for name in chain:
        keys.extend(k for k in MODEL_SETTINGS.get(name, ()) if k not in keys)
    return {key: models_cfg[key] for key in keys if key in models_cfg}


__all__ = [
    "MODEL_REGISTRY",
    "MODEL_SETTINGS",
    "MODEL_SPECS",
    "SHARED_MODEL_SETTINGS",
    "ForecastRequest",
    "ModelFn",
    "finalize_forecast",
    "model_settings",
]
