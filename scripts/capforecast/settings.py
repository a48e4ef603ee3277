"""Typed settings of each stage, built from the validated config only.

``config/schema.yaml`` is the one place a default lives: ``capforecast.config.validated_config``
fills it in and checks every key (including the rules JSON Schema cannot express). The objects
here are read-only views of that validated dict, typed for the library functions that use them:
no field has a default of its own and no builder reads a key with a fallback, so a key missing
from the dict is a programming error (``KeyError``), never a silently different default.

Rules pass the config sections a step needs as ``params`` (so that Snakemake reruns a step when
they change); builders take those sections, which are parts of the validated config.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import pandas as pd


@dataclass(frozen=True)
class EtlSettings:
    """``etl``: validation, 0-1 scale decisions, resampling and quality of the data stage."""

    # None for keys a rule is not given (see BacktestSettings): ingest gets only the keys of the
    # 0-1 scale check, the holdout span only the window and freq.
    freq: str | None
    max_fill_gap: int | None
    min_history_hours: float | None
    percent_metrics: tuple[str, ...] | None
    percent_repair_tolerance: float | None
    fraction_scale: str | None
    pegged_level: float | None
    timestamp_min: str | None
    timestamp_max: str | None
    value_limits: Mapping[str, Any] | None


@dataclass(frozen=True)
class MetricPattern:
    """One entry of ``data.metric_patterns``: a file-stem regex and the metric it means."""

    pattern: str
    metric: str


@dataclass(frozen=True)
class DataSettings:
    """``data``: where the input comes from and how a file is read into the raw long format."""

    # None for keys a rule is not given (see BacktestSettings): ingest gets only the keys the
    # reader uses, not source, path, resources, cloudwatch or history_end. Keys whose config
    # value is null (path, metric, resources, history_end) are None as well.
    source: str | None
    path: str | None
    format: str | None
    metric: str | None
    metric_patterns: tuple[MetricPattern, ...] | None
    metric_names: Mapping[str, Any] | None
    columns: Mapping[str, str] | None
    timestamp_unit: str | None
    resources: str | None
    naive_timezone: str | None
    cloudwatch: Mapping[str, Any] | None
    history_end: str | None


@dataclass(frozen=True)
class BacktestSettings:
    """``backtest``, with ``horizon`` resolved (``validated_config`` fills it from
    ``forecast.horizon`` when null); ``step`` None = ``horizon``."""

    # None for keys a rule is not given (rules/common.smk config_keys: a rule gets only the
    # keys it reads); step None is also the config's "= horizon".
    windows: int | None
    horizon: int | None
    step: int | None
    season: int | None
    selection_windows: int | None


@dataclass(frozen=True)
class ForecastSettings:
    """``forecast``."""

    # None for keys a rule is not given (see BacktestSettings).
    horizon: int | None
    quantiles: tuple[float, ...] | None
    extra_quantiles: tuple[float, ...] | None
    target: str | None
    calibrate: bool | None


@dataclass(frozen=True)
class SelectionSettings:
    """``selection``: how each series' forecast is chosen from the backtested models."""

    strategy: str
    metric: str
    top_k: int
    shrinkage: float | str  # a prior weight in windows, or "auto" (empirical Bayes)
    combination: str


@dataclass(frozen=True)
class Holiday:
    """One entry of ``models.prophet.holidays``."""

    name: str
    date: str
    lower_window: int
    upper_window: int


@dataclass(frozen=True)
class ProphetSettings:
    """``models.prophet``."""

    growth: str
    daily_seasonality: bool
    weekly_seasonality: str
    interval_width: float
    logistic_min_share: float
    n_changepoints: int
    changepoint_range: float
    changepoint_prior_scale: float
    daily_fourier_order: int
    uncertainty_samples: int
    holidays: tuple[Holiday, ...]


@dataclass(frozen=True)
class AutoGluonSettings:
    """``models.autogluon``. ``hyperparameters`` is AutoGluon's own free-form mapping (or a
    named set); ``None`` means AutoGluon's ``default`` set."""

    presets: str | None
    hyperparameters: Any
    time_limit: int
    eval_metric: str
    allow_pretrained: bool
    model_path: str | None


@dataclass(frozen=True)
class SeasonalMedianSettings:
    """``models.seasonal_median``."""

    seasons: int
    error_seasons: int


@dataclass(frozen=True)
class ModelSettings:
    """``models``: what every forecaster may read
    (see ``capforecast.forecast.models.base.ModelFn``)."""

    # A model rule is given only the keys its model reads
    # (capforecast.forecast.models.model_settings): the others are None there. The whole section
    # gives them all.
    enabled: tuple[str, ...] | None
    predict_linear_window_hours: int | None
    intervals: str | None
    max_history_hours: int | None
    seasonal_median: SeasonalMedianSettings | None
    prophet: ProphetSettings | None
    autogluon: AutoGluonSettings | None


@dataclass(frozen=True)
class RiskSettings:
    """The config values the risk stage uses (``risk``, ``catalogue`` and parts of ``etl`` and
    ``forecast``). Service overrides are merged over the metric's global levels."""

    thresholds: Mapping[str, Mapping[str, float]]
    service_overrides: Mapping[str, Mapping[str, Mapping[str, float]]]
    lead_time_days: float
    safety_margin_days: float
    target_utilization: float
    buffer_pct: float
    low_water_pct: float
    downsize_floor: float
    stopped_reporting_hours: float
    percent_metrics: frozenset[str]
    pegged_level: float
    min_history_hours: float
    freq: pd.Timedelta
    statistic: str
    catalogue: Mapping[str, Mapping[str, Any]]


def _given(section: Mapping[str, Any], key: str, convert: Callable[[Any], Any]) -> Any:
    """``section[key]`` converted, or None when the rule was not given the key (a rule's params
    hold only the keys its script reads, so editing another key does not rerun it)."""
    return convert(section[key]) if key in section else None


def _floats(values: Any) -> tuple[float, ...]:
    return tuple(float(v) for v in values)


def etl_settings(etl: Mapping[str, Any]) -> EtlSettings:
    """From the validated ``etl`` section, whole or narrowed to the keys a rule reads."""
    return EtlSettings(
        freq=_given(etl, "freq", str),
        max_fill_gap=_given(etl, "max_fill_gap", int),
        min_history_hours=_given(etl, "min_history_hours", float),
        percent_metrics=_given(etl, "percent_metrics", lambda names: tuple(map(str, names))),
        percent_repair_tolerance=_given(etl, "percent_repair_tolerance", float),
        fraction_scale=_given(etl, "fraction_scale", str),
        pegged_level=_given(etl, "pegged_level", float),
        timestamp_min=_given(etl, "timestamp_min", str),
        timestamp_max=_given(etl, "timestamp_max", str),
        value_limits=_given(etl, "value_limits", lambda limits: copy.deepcopy(dict(limits))),
    )


def _text_or_none(value: Any) -> str | None:
    return None if value is None else str(value)


def data_settings(data: Mapping[str, Any]) -> DataSettings:
    """From the validated ``data`` section, whole or narrowed to the keys a rule reads."""
    return DataSettings(
        source=_given(data, "source", str),
        path=_given(data, "path", _text_or_none),
        format=_given(data, "format", str),
        metric=_given(data, "metric", _text_or_none),
        metric_patterns=_given(
            data,
            "metric_patterns",
            lambda entries: tuple(
                MetricPattern(pattern=str(e["pattern"]), metric=str(e["metric"])) for e in entries
            ),
        ),
        metric_names=_given(data, "metric_names", lambda names: copy.deepcopy(dict(names))),
        columns=_given(
            data, "columns", lambda columns: {str(k): str(v) for k, v in columns.items()}
        ),
        timestamp_unit=_given(data, "timestamp_unit", str),
        resources=_given(data, "resources", _text_or_none),
        naive_timezone=_given(data, "naive_timezone", str),
        cloudwatch=_given(data, "cloudwatch", lambda section: copy.deepcopy(dict(section))),
        history_end=_given(data, "history_end", _text_or_none),
    )


def backtest_settings(backtest: Mapping[str, Any]) -> BacktestSettings:
    """From the validated ``backtest`` section, whole or narrowed to the keys a rule reads."""
    return BacktestSettings(
        windows=_given(backtest, "windows", int),
        horizon=_given(backtest, "horizon", int),
        step=_given(backtest, "step", lambda step: None if step is None else int(step)),
        season=_given(backtest, "season", int),
        selection_windows=_given(backtest, "selection_windows", int),
    )


def forecast_settings(forecast: Mapping[str, Any]) -> ForecastSettings:
    """From the validated ``forecast`` section, whole or narrowed to the keys a rule reads."""
    return ForecastSettings(
        horizon=_given(forecast, "horizon", int),
        quantiles=_given(forecast, "quantiles", _floats),
        extra_quantiles=_given(forecast, "extra_quantiles", _floats),
        target=_given(forecast, "target", str),
        calibrate=_given(forecast, "calibrate", bool),
    )


def selection_settings(selection: Mapping[str, Any]) -> SelectionSettings:
    """From the validated ``selection`` section."""
    return SelectionSettings(
        strategy=str(selection["strategy"]),
        metric=str(selection["metric"]),
        top_k=int(selection["top_k"]),
        shrinkage=(
            selection["shrinkage"]
            if selection["shrinkage"] == "auto"
            else float(selection["shrinkage"])
        ),
        combination=str(selection["combination"]),
    )


def prophet_settings(prophet: Mapping[str, Any]) -> ProphetSettings:
    """From the validated ``models.prophet`` section."""
    return ProphetSettings(
        growth=str(prophet["growth"]),
        daily_seasonality=bool(prophet["daily_seasonality"]),
        weekly_seasonality=str(prophet["weekly_seasonality"]),
        interval_width=float(prophet["interval_width"]),
        logistic_min_share=float(prophet["logistic_min_share"]),
        n_changepoints=int(prophet["n_changepoints"]),
        changepoint_range=float(prophet["changepoint_range"]),
        changepoint_prior_scale=float(prophet["changepoint_prior_scale"]),
        daily_fourier_order=int(prophet["daily_fourier_order"]),
        uncertainty_samples=int(prophet["uncertainty_samples"]),
        holidays=tuple(
            Holiday(
                name=str(h["name"]),
                date=str(h["date"]),
                lower_window=int(h["lower_window"]),
                upper_window=int(h["upper_window"]),
            )
            for h in prophet["holidays"]
        ),
    )


def autogluon_settings(autogluon: Mapping[str, Any]) -> AutoGluonSettings:
    """From the validated ``models.autogluon`` section."""
    return AutoGluonSettings(
        presets=autogluon["presets"],
        hyperparameters=copy.deepcopy(autogluon["hyperparameters"]),
        time_limit=int(autogluon["time_limit"]),
        eval_metric=str(autogluon["eval_metric"]),
        allow_pretrained=bool(autogluon["allow_pretrained"]),
        model_path=autogluon["model_path"],
    )


def model_settings(models: Mapping[str, Any]) -> ModelSettings:
    """From the validated ``models`` section, whole or as narrowed for one model's rule by
    ``capforecast.forecast.models.model_settings`` (keys left out there are None here)."""
    max_history = models["max_history_hours"]

    def given(key: str, build: Callable[[Any], Any]) -> Any:
        return build(models[key]) if key in models else None

    return ModelSettings(
        enabled=given("enabled", tuple),
        predict_linear_window_hours=given("predict_linear_window_hours", int),
        intervals=given("intervals", str),
        max_history_hours=None if max_history is None else int(max_history),
        seasonal_median=given(
            "seasonal_median",
            lambda section: SeasonalMedianSettings(
                seasons=int(section["seasons"]), error_seasons=int(section["error_seasons"])
            ),
        ),
        prophet=given("prophet", prophet_settings),
        autogluon=given("autogluon", autogluon_settings),
    )


def _levels(levels: Mapping[str, Any]) -> dict[str, float]:
    return {"warning": float(levels["warning"]), "critical": float(levels["critical"])}


def merged_overrides(
    thresholds: Mapping[str, Mapping[str, Any]],
    service_overrides: Mapping[str, Mapping[str, Mapping[str, Any]]],
) -> dict[str, dict[str, dict[str, float]]]:
    """``{service: {metric: {warning, critical}}}``: each override merged over the metric's
    global levels (a level left out is the global one). Checked by ``validated_config``."""
    merged: dict[str, dict[str, dict[str, float]]] = {}
    for service, metrics in service_overrides.items():
        for metric, levels in metrics.items():
            merged.setdefault(str(service), {})[metric] = _levels(
                {**thresholds.get(metric, {}), **dict(levels)}
            )
    return merged


def risk_settings(cfg: Mapping[str, Any]) -> RiskSettings:
    """From the validated ``risk``, ``catalogue``, ``etl`` and ``forecast`` sections (the whole
    config or a dict of just those, as the risk rule passes)."""
    risk, etl = cfg["risk"], cfg["etl"]
    thresholds = {metric: _levels(levels) for metric, levels in risk["thresholds"].items()}
    return RiskSettings(
        thresholds=thresholds,
        service_overrides=merged_overrides(thresholds, risk["service_overrides"]),
        lead_time_days=float(risk["lead_time_days"]),
        safety_margin_days=float(risk["safety_margin_days"]),
        target_utilization=float(risk["target_utilization"]),
        buffer_pct=float(risk["buffer_pct"]),
        low_water_pct=float(risk["low_water_pct"]),
        downsize_floor=float(risk["downsize_floor"]),
        stopped_reporting_hours=float(risk["stopped_reporting_hours"]),
        percent_metrics=frozenset(etl["percent_metrics"]),
        pegged_level=float(etl["pegged_level"]),
        min_history_hours=float(etl["min_history_hours"]),
        freq=pd.Timedelta(etl["freq"]),
        statistic=str(cfg["forecast"]["target"]),
        catalogue=copy.deepcopy(dict(cfg["catalogue"])),
    )
