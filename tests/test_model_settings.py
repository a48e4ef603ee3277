"""capforecast.forecast.models.model_settings: each model rule gets the `models` keys its model
reads."""

from __future__ import annotations

import pandas as pd
import pytest
from test_models import panel, request_for

from capforecast import settings
from capforecast.config import validated_config
from capforecast.forecast.fit import fit_forecast
from capforecast.forecast.models import MODEL_REGISTRY, MODEL_SETTINGS, model_settings


class ReadFields:
    """Model settings that record which fields (= `models` keys) a model reads."""

    def __init__(self, wrapped: settings.ModelSettings) -> None:
        object.__setattr__(self, "_wrapped", wrapped)
        object.__setattr__(self, "read", set())

    def __getattr__(self, name: str):
        self.read.add(name)
        return getattr(self._wrapped, name)


def models_section() -> dict:
    """The validated `models` section with every key away from its default."""
    models = validated_config(
        {
            "models": {
                "predict_linear_window_hours": 12,
                "intervals": "normal",
                "max_history_hours": 120,
                "seasonal_median": {"seasons": 3, "error_seasons": 4},
                "prophet": {"n_changepoints": 5, "uncertainty_samples": 50},
                "autogluon": {"time_limit": 15},
            }
        }
    )["models"]
    return models


FAST = ["seasonal_naive_daily", "seasonal_naive_weekly", "predict_linear", "seasonal_median"]
STATS = ["autoets", "theta", "mstl"]


def test_each_model_gets_the_shared_settings_and_its_own():
    models = models_section()
    assert model_settings(models, "seasonal_naive_daily") == {"max_history_hours": 120}
    assert model_settings(models, "predict_linear") == {
        "max_history_hours": 120,
        "predict_linear_window_hours": 12,
    }
    assert set(model_settings(models, "prophet")) == {"max_history_hours", "prophet"}
    assert set(model_settings(models, "theta")) == {"max_history_hours", "intervals"}
    # mstl falls back to theta: both read `intervals`.
    assert set(model_settings(models, "mstl")) == {"max_history_hours", "intervals"}
    assert set(model_settings(models, "autogluon")) == {"max_history_hours", "autogluon"}
    for name in MODEL_REGISTRY:
        assert "enabled" not in model_settings(models, name)


@pytest.mark.parametrize("name", FAST + STATS)
def test_a_model_reads_no_key_outside_its_settings(name):
    """The model functions read only their settings (wrapped so every read is seen)."""
    models = models_section()
    section = ReadFields(settings.model_settings(models))
    history = panel(days=10)
    MODEL_REGISTRY[name](request_for(history), section)
    assert section.read <= set(model_settings(models, name)), section.read
    # The reads are seen: each model reads its own settings.
    assert set(MODEL_SETTINGS.get(name, ())) <= section.read


@pytest.mark.parametrize("name", ["prophet", "autogluon"])
def test_slow_models_read_only_their_settings_where_the_routing_does(name):
    """Series too short for them: the checks before routing read the model's own section."""
    models = models_section()
    section = ReadFields(settings.model_settings(models))
    history = panel(days=1)
    MODEL_REGISTRY[name](request_for(history.groupby("series_id").head(12)), section)
    assert section.read <= set(model_settings(models, name)), section.read


@pytest.mark.parametrize("name", [*FAST, "theta"])
def test_the_refit_is_the_same_with_the_narrowed_settings(name):
    cfg = validated_config({"forecast": {"horizon": 24}})
    models = models_section()
    history = panel(days=10)
    history["resource_id"] = history["series_id"].str.split("|").str[0]
    history["metric"] = history["series_id"].str.split("|").str[1]

    def refit(section):
        out = fit_forecast(
            name,
            history,
            forecast_cfg=settings.forecast_settings(cfg["forecast"]),
            backtest_cfg=settings.backtest_settings(cfg["backtest"]),
            models_cfg=settings.model_settings(section),
            percent_metrics=["cpu_utilization"],
        )
        return out.drop(columns=["fit_seconds"])

    pd.testing.assert_frame_equal(refit(models), refit(model_settings(models, name)))
