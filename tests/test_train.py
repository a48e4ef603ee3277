"""The training entry point shared by the forecast rules and the SageMaker container."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import yaml

from capforecast import train
from capforecast.config import validated_config
from capforecast.contracts import quantile_column
from capforecast.errors import ConfigError
from capforecast.forecast import fit
from capforecast.forecast.models.base import trim_history
from capforecast.settings import backtest_settings, forecast_settings, model_settings


def feature_panel(days: int = 10) -> pd.DataFrame:
    ts = pd.date_range("2026-03-01", periods=24 * days, freq="h", tz="UTC")
    hours = np.arange(len(ts))
    frames = []
    for rid, metric, level in [("i-1", "cpu_utilization", 50.0), ("i-2", "network_in_bytes", 1e6)]:
        y = level * (1 + 0.3 * np.sin(2 * np.pi * hours / 24))
        frames.append(
            pd.DataFrame(
                {
                    "series_id": f"{rid}|{metric}",
                    "resource_id": rid,
                    "metric": metric,
                    "timestamp": ts,
                    "y": y,
                }
            )
        )
    return pd.concat(frames, ignore_index=True)


def test_trim_history_keeps_the_most_recent_points_of_each_series():
    panel = feature_panel(days=3)
    trimmed = trim_history(panel, 5)
    assert trimmed.groupby("series_id").size().tolist() == [5, 5]
    last = panel.groupby("series_id")["timestamp"].max()
    assert (trimmed.groupby("series_id")["timestamp"].max() == last).all()
    assert trim_history(panel, None) is panel


def test_model_quantiles_include_extra_levels_and_the_median():
    cfg = validated_config({"forecast": {"quantiles": [0.9, 0.1, 0.5], "extra_quantiles": [0.05]}})
    levels = fit.model_quantiles(forecast_settings(cfg["forecast"]))
    assert levels == (0.05, 0.1, 0.5, 0.9)
    assert fit.model_quantiles(forecast_settings(validated_config({})["forecast"])) == (
        0.02,
        0.05,
        0.1,
        0.25,
        0.5,
        0.75,
        0.9,
        0.95,
        0.98,
    )


def test_fit_forecast_returns_the_contract_and_respects_bounds():
    cfg = validated_config({"forecast": {"horizon": 12}})
    out = fit.fit_forecast(
        "seasonal_naive_daily",
        feature_panel(),
        forecast_cfg=forecast_settings(cfg["forecast"]),
        backtest_cfg=backtest_settings(cfg["backtest"]),
        models_cfg=model_settings(cfg["models"]),
        percent_metrics=cfg["etl"]["percent_metrics"],
    )
    assert out.groupby("series_id").size().tolist() == [12, 12]
    assert set(out["model"]) == {"seasonal_naive_daily"}
    for q in fit.model_quantiles(forecast_settings(cfg["forecast"])):
        assert quantile_column(q) in out.columns
    cpu = out[out["metric"] == "cpu_utilization"]
    assert cpu[quantile_column(0.98)].max() <= 100.0
    assert (out[quantile_column(0.02)] >= 0).all()


def test_unknown_model_is_a_config_error():
    cfg = validated_config({})
    with pytest.raises(ConfigError, match=r"models\.enabled"):
        fit.fit_forecast(
            "arima_deluxe",
            feature_panel(),
            forecast_cfg=forecast_settings(cfg["forecast"]),
            backtest_cfg=backtest_settings(cfg["backtest"]),
            models_cfg=model_settings(cfg["models"]),
            percent_metrics=[],
        )


def test_entry_point_defaults_to_the_sagemaker_container_contract(tmp_path, monkeypatch):
    """Inside SageMaker, SM_CHANNEL_* / SM_MODEL_DIR / SM_OUTPUT_DATA_DIR say where things are."""
    train_dir, config_dir = tmp_path / "train", tmp_path / "config"
    model_dir, output_dir = tmp_path / "model", tmp_path / "output"
    train_dir.mkdir()
    config_dir.mkdir()
    feature_panel().to_parquet(train_dir / "part-a.parquet", index=False)
    (config_dir / "config.yaml").write_text(yaml.safe_dump({"forecast": {"horizon": 6}}))
    monkeypatch.setenv("SM_CHANNEL_TRAIN", str(train_dir))
    monkeypatch.setenv("SM_CHANNEL_CONFIG", str(config_dir))
    monkeypatch.setenv("SM_MODEL_DIR", str(model_dir))
    monkeypatch.setenv("SM_OUTPUT_DATA_DIR", str(output_dir))
    written = train.main(["--model", "predict_linear", "--n-jobs", "1"])
    assert written == output_dir / "predict_linear.parquet"
    forecast = pd.read_parquet(written)
    assert forecast.groupby("series_id").size().tolist() == [6, 6]
    assert (model_dir / "predict_linear").is_dir()


def test_entry_point_arguments_override_the_environment(tmp_path, monkeypatch):
    monkeypatch.delenv("SM_CHANNEL_TRAIN", raising=False)
    monkeypatch.delenv("SM_MODEL_DIR", raising=False)
    args = train.parse_args(["--model", "autotheta", "--train", str(tmp_path)])
    assert args.train == str(tmp_path)
    assert args.model_dir == "/opt/ml/model"  # the container default when nothing is set


@pytest.mark.slow
def test_prophet_final_fit_saves_one_json_model_per_series(tmp_path):
    from capforecast.forecast.models.prophet_model import load_prophet_models

    cfg = validated_config({"forecast": {"horizon": 6}})
    panel = feature_panel(days=5)
    out = fit.fit_forecast(
        "prophet",
        panel,
        forecast_cfg=forecast_settings(cfg["forecast"]),
        backtest_cfg=backtest_settings(cfg["backtest"]),
        models_cfg=model_settings(cfg["models"]),
        percent_metrics=cfg["etl"]["percent_metrics"],
        model_dir=tmp_path / "prophet",
    )
    assert out.groupby("series_id").size().tolist() == [6, 6]
    models = load_prophet_models(tmp_path / "prophet")
    assert set(models) == set(panel["series_id"])
