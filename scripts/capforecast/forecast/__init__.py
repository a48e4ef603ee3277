"""Forecast stage (rules/forecast.smk, scripts/forecast_*.py): the models, the rolling-origin
backtest, scoring, per-series selection, calibration and the combined forecast."""
