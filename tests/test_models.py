"""Forecasting models: the output contract, known-answer checks, odd series, pretrained refusal."""

from __future__ import annotations

import dataclasses
import re
import socket
import subprocess
import sys
from pathlib import Path
from statistics import NormalDist

import numpy as np
import pandas as pd
import pytest
import yaml

from capforecast.config import validated_config
from capforecast.contracts import FLAG_NO_DATA, model_used_label, quantile_column
from capforecast.errors import ConfigError
from capforecast.forecast.models import MODEL_REGISTRY, MODEL_SPECS, ForecastRequest, stats
from capforecast.forecast.models.autogluon_model import (
    check_pretrained,
    resolve_hyperparameters,
    with_local_n_jobs,
)
from capforecast.forecast.models.base import (
    FLAG_CONSTANT,
    FLAG_MODEL_FAILED,
    FLAG_TOO_SHORT,
    base_model_name,
    fill_missing,
    future_timestamps,
    steps_per,
)
from capforecast.forecast.models.fallback import (
    FALLBACK_CHAIN,
    core_function,
    forecast_with_fallback,
    min_history_steps,
    route_series,
    spec_function,
)
from capforecast.forecast.models.pool import map_in_processes
from capforecast.forecast.models.prophet_model import build_tasks, choose_growth
from capforecast.forecast.models.specs import FAMILIES, NAIVE, ROUTABLE
from capforecast.forecast.models.stats import interval_levels
from capforecast.settings import (
    AutoGluonSettings,
    Holiday,
    ModelSettings,
    ProphetSettings,
    model_settings,
)

QUANTILES = (0.1, 0.5, 0.9)
START = pd.Timestamp("2026-03-01", tz="UTC")
CHEAP_MODELS = [
    "seasonal_naive_daily",
    "seasonal_naive_weekly",
    "predict_linear",
    "seasonal_median",
    "autoets",
    "autoets_log",
    "autotheta",
    "theta",
    "theta_log",
    "mstl",
]
# The schema's models section, with a cheap AutoGluon.
SCHEMA_MODELS = validated_config({})["models"]
MODEL_CFG = model_settings(
    {
        **SCHEMA_MODELS,
        "autogluon": {
            **SCHEMA_MODELS["autogluon"],
            "hyperparameters": {"SeasonalNaive": {}, "ETS": {}},
            "time_limit": 60,  # a cap: two cheap models on a loaded machine
        },
    }
)

ROOT = Path(__file__).resolve().parents[1]


def ag(**overrides) -> AutoGluonSettings:
    return dataclasses.replace(MODEL_CFG.autogluon, **overrides)


def prophet_cfg(**overrides) -> ProphetSettings:
    return dataclasses.replace(MODEL_CFG.prophet, **overrides)


def seasonal_values(n: int, level: float, amplitude: float, slope: float, noise: float, rng):
    t = np.arange(n)
    return level + amplitude * np.sin(2 * np.pi * t / 24) + slope * t + rng.normal(0, noise, n)


def series_frame(series_id: str, values: np.ndarray, start: pd.Timestamp = START) -> pd.DataFrame:
    timestamps = pd.date_range(start, periods=len(values), freq="1h")
    return pd.DataFrame({"series_id": series_id, "timestamp": timestamps, "y": values})


def panel(days: int = 10, seed: int = 0) -> pd.DataFrame:
    """Four hourly series: three with a daily sine + trend + noise, one bounded near 100 %."""
    rng = np.random.default_rng(seed)
    n = days * 24
    frames = [
        series_frame(f"web-{i}|cpu_utilization", seasonal_values(n, 40 + 5 * i, 8, 0.02, 1, rng))
        for i in range(3)
    ]
    near_ceiling = np.minimum(seasonal_values(n, 95, 4, 0.01, 1, rng), 100.0)
    frames.append(series_frame("web-9|cpu_utilization", near_ceiling))
    return pd.concat(frames, ignore_index=True)


def request_for(history: pd.DataFrame, horizon: int = 24, **kwargs) -> ForecastRequest:
    history = history.sort_values(["series_id", "timestamp"]).reset_index(drop=True)
    bounds = {sid: (0.0, 100.0) for sid in history["series_id"].unique()}
    return ForecastRequest(
        history=history,
        horizon=horizon,
        quantiles=kwargs.pop("quantiles", QUANTILES),
        bounds=kwargs.pop("bounds", bounds),
        **kwargs,
    )


def assert_contract(out: pd.DataFrame, request: ForecastRequest) -> None:
    """Columns, horizon rows per series continuing each grid, monotone quantiles, bounds."""
    qcols = [quantile_column(q) for q in request.quantiles]
    assert list(out.columns) == ["series_id", "timestamp", "mean", *qcols, "model_used"]
    last = request.history.groupby("series_id")["timestamp"].max()
    assert set(out["series_id"]) == set(last.index)
    for sid, group in out.groupby("series_id"):
        assert len(group) == request.horizon
        expected = future_timestamps(last[sid], request.horizon, request.freq)
        assert (pd.DatetimeIndex(group["timestamp"]) == expected).all()
        assert group["model_used"].map(type).eq(str).all()
    values = out[qcols].to_numpy()
    finite = np.isfinite(values).all(axis=1)
    assert (np.diff(values[finite], axis=1) >= 0).all()
    for sid, (lower, upper) in request.bounds.items():
        rows = out.loc[out["series_id"] == sid, ["mean", *qcols]].to_numpy()
        rows = rows[np.isfinite(rows)]
        assert (rows >= lower).all()
        if upper is not None:
            assert (rows <= upper).all()


# ---------------------------------------------------------------------------------------------
# Registry and imports


def test_registry_names_and_families():
    assert set(MODEL_REGISTRY) == {
        "seasonal_naive_daily",
        "seasonal_naive_weekly",
        "predict_linear",
        "seasonal_median",
        "autoets",
        "autoets_log",
        "autotheta",
        "theta",
        "theta_log",
        "mstl",
        "prophet",
        "autogluon",
    }
    assert set(MODEL_SPECS) == set(MODEL_REGISTRY)
    assert FAMILIES == ("baseline", "statsforecast", "prophet", "autogluon")


def test_the_specs_are_the_schema_enum():
    """One spec per model: the models `models.enabled` accepts are exactly the specs, in order."""
    schema = yaml.safe_load((ROOT / "config" / "schema.yaml").read_text())
    enabled = schema["properties"]["models"]["properties"]["enabled"]
    assert enabled["items"]["enum"] == list(MODEL_SPECS)
    assert set(enabled["default"]) <= set(MODEL_SPECS)


@pytest.mark.parametrize("name", [*MODEL_SPECS, NAIVE])
def test_every_spec_is_complete(name):
    """Its core and check resolve, its chain ends in the last-value naive, its fallbacks are
    models, its settings are `models` keys of the schema."""
    spec = ROUTABLE[name]
    assert callable(core_function(name))
    if spec.check is not None:
        assert callable(spec_function(spec.check))
    chain = FALLBACK_CHAIN[name]
    assert chain[0] == name and chain[-1] == NAIVE
    assert set(chain) <= set(ROUTABLE)
    schema = yaml.safe_load((ROOT / "config" / "schema.yaml").read_text())
    assert set(spec.settings) <= set(schema["properties"]["models"]["properties"])


@pytest.mark.parametrize("family", FAMILIES)
def test_every_family_has_its_rules(family):
    """rules/forecast.smk runs each family of the specs in a backtest and a forecast rule."""
    rules = (ROOT / "rules" / "forecast.smk").read_text()
    for stage in ("backtest", "forecast"):
        assert re.search(
            rf"^(rule {stage}_{family}:|use rule {stage}_baseline as {stage}_{family} with:)",
            rules,
            re.M,
        ), f"no {stage}_{family} rule"


def test_importing_models_loads_no_forecasting_library():
    """Nor any model module: a model's core is imported when the model first runs."""
    code = (
        "import sys, capforecast.forecast.models; "
        "print(sorted({m.split('.')[0] for m in sys.modules} & "
        "{'prophet', 'statsforecast', 'autogluon', 'torch', 'cmdstanpy'})); "
        "print(sorted(m.rpartition('.')[2] for m in sys.modules "
        "if m.startswith('capforecast.forecast.models.')))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    libraries, modules = result.stdout.strip().splitlines()
    assert libraries == "[]"
    assert modules == "['base', 'fallback', 'specs']"


def test_helpers():
    assert steps_per("1D", "1h") == 24
    assert steps_per("7D", "1h") == 168
    assert steps_per("1D", "5min") == 288
    assert steps_per("1D", "h") == 24
    assert model_used_label("naive", FLAG_CONSTANT) == "naive (constant)"
    assert base_model_name("seasonal_naive_daily (fallback: too_short)") == "seasonal_naive_daily"
    assert np.allclose(fill_missing(np.array([np.nan, 1.0, np.nan, 3.0, np.nan])), [1, 1, 2, 3, 3])


# ---------------------------------------------------------------------------------------------
# Contract of every cheap model


@pytest.mark.parametrize("name", CHEAP_MODELS)
def test_cheap_model_returns_the_contract(name):
    request = request_for(panel(), quantiles=(0.05, 0.1, 0.5, 0.9, 0.95))
    out = MODEL_REGISTRY[name](request, MODEL_CFG)
    assert_contract(out, request)
    assert np.isfinite(out["mean"]).all()
    near_ceiling = out.loc[out["series_id"] == "web-9|cpu_utilization"]
    assert near_ceiling["q0.95"].max() <= 100.0


# ---------------------------------------------------------------------------------------------
# Baselines: known answers


@pytest.mark.parametrize(
    ("name", "days", "season"),
    [("seasonal_naive_daily", 5, 24), ("seasonal_naive_weekly", 15, 168)],
)
def test_seasonal_naive_median_repeats_last_season(name, days, season):
    history = panel(days=days)
    request = request_for(history, horizon=season + 12)
    out = MODEL_REGISTRY[name](request, MODEL_CFG)
    for sid, group in history.groupby("series_id"):
        last_season = group["y"].to_numpy()[-season:]
        expected = np.resize(last_season, request.horizon)
        got = out.loc[out["series_id"] == sid]
        assert (got["model_used"] == name).all()
        assert np.allclose(got["q0.5"], np.minimum(expected, 100.0))
        assert np.allclose(got["mean"], np.minimum(expected, 100.0))


def test_seasonal_naive_interval_grows_with_sqrt_of_seasons_ahead():
    history = panel(days=6)
    request = request_for(history, horizon=48, bounds={})
    out = MODEL_REGISTRY["seasonal_naive_daily"](request, MODEL_CFG)
    group = out.loc[out["series_id"] == "web-0|cpu_utilization"]
    width = (group["q0.9"] - group["q0.1"]).to_numpy()
    y = history.loc[history["series_id"] == "web-0|cpu_utilization", "y"].to_numpy()
    errors = y[24:] - y[:-24]
    # statsforecast's SeasonalNaive: normal, sigma = RMS of the in-sample seasonal errors.
    sigma = np.sqrt(np.mean(errors**2))
    expected_first_day = 2 * NormalDist().inv_cdf(0.9) * sigma
    assert np.allclose(width[:24], expected_first_day)
    assert np.allclose(width[24:], np.sqrt(2) * expected_first_day)


def test_predict_linear_recovers_a_noiseless_slope():
    slope, intercept, n = 0.5, 3.0, 100
    history = series_frame("line", intercept + slope * np.arange(n))
    request = request_for(history, horizon=12, bounds={})
    out = MODEL_REGISTRY["predict_linear"](request, MODEL_CFG)
    expected = intercept + slope * np.arange(n, n + 12)
    assert np.allclose(out["mean"], expected)
    assert np.allclose(out["q0.1"], expected) and np.allclose(out["q0.9"], expected)
    assert (out["model_used"] == "predict_linear").all()


def test_predict_linear_fits_only_the_recent_window_and_widens_with_horizon():
    rng = np.random.default_rng(1)
    flat = np.full(200, 20.0)
    ramp = 20.0 + 2.0 * np.arange(1, 25)  # the last 24 hours climb 2 per step
    history = series_frame("shift", np.concatenate([flat, ramp]) + rng.normal(0, 0.1, 224))
    request = request_for(history, horizon=24, bounds={})
    out = MODEL_REGISTRY["predict_linear"](request, MODEL_CFG)
    assert np.allclose(np.diff(out["mean"]), 2.0, atol=0.01)
    width = (out["q0.9"] - out["q0.1"]).to_numpy()
    assert (np.diff(width) > 0).all()


# ---------------------------------------------------------------------------------------------
# statsforecast models


@pytest.mark.parametrize(
    "name", ["autoets", "autoets_log", "autotheta", "theta", "theta_log", "mstl"]
)
def test_statsforecast_models_beat_seasonal_naive_on_smooth_trend(name):
    rng = np.random.default_rng(7)
    n, horizon = 10 * 24, 24
    signal = (
        50 + 10 * np.sin(2 * np.pi * np.arange(n + horizon) / 24) + 0.15 * np.arange(n + horizon)
    )
    frames = [series_frame(f"s{i}", signal[:n] + i + rng.normal(0, 0.5, n)) for i in range(3)]
    request = request_for(pd.concat(frames), horizon=horizon, bounds={})
    truth = {f"s{i}": signal[n:] + i for i in range(3)}

    def mae(out: pd.DataFrame) -> float:
        return float(
            np.mean(
                [
                    np.abs(g["q0.5"].to_numpy() - truth[s]).mean()
                    for s, g in out.groupby("series_id")
                ]
            )
        )

    model_mae = mae(MODEL_REGISTRY[name](request, MODEL_CFG))
    naive_mae = mae(MODEL_REGISTRY["seasonal_naive_daily"](request, MODEL_CFG))
    assert model_mae < naive_mae


def test_statsforecast_fills_gaps_before_fitting():
    history = panel(days=6)
    gap = history["series_id"].eq("web-0|cpu_utilization") & history.index.isin(range(50, 60))
    history.loc[gap, "y"] = np.nan
    history.loc[2 * 6 * 24 - 1, "y"] = np.nan  # the last value of the second series
    request = request_for(history)
    for name in ("autoets", "autoets_log", "autotheta", "theta", "theta_log", "mstl"):
        out = MODEL_REGISTRY[name](request, MODEL_CFG)
        assert_contract(out, request)
        assert np.isfinite(out[["mean", "q0.1", "q0.9"]].to_numpy()).all()
        assert (out["model_used"] == name).all()


def test_interval_levels_map_quantiles_to_statsforecast_columns():
    levels = interval_levels((0.02, 0.1, 0.25, 0.5, 0.9, 0.95))
    assert levels == {
        0.02: ("lo", 96),
        0.1: ("lo", 80),
        0.25: ("lo", 50),
        0.5: ("mean", 0),
        0.9: ("hi", 80),
        0.95: ("hi", 90),
    }


def test_mstl_matches_quantile_request():
    history = panel(days=15)
    request = request_for(history, quantiles=(0.02, 0.5, 0.98))
    out = MODEL_REGISTRY["mstl"](request, MODEL_CFG)
    assert_contract(out, request)
    assert (out["q0.98"] > out["q0.02"]).any()


def heavy_tailed_series(n: int, seed: int = 5) -> np.ndarray:
    """A daily cycle with small noise and a 40-unit burst in one hour of twenty."""
    rng = np.random.default_rng(seed)
    values = 50 + 5 * np.sin(2 * np.pi * np.arange(n) / 24) + rng.normal(0, 0.5, n)
    bursts = rng.random(n) < 0.05
    values[bursts] += 40.0
    return values


def test_statsforecast_quantiles_take_their_shape_from_the_residuals():
    from statsforecast.models import AutoETS

    y = heavy_tailed_series(14 * 24)
    # Additive ETS: analytic normal intervals, so the growth over the horizon is exact.
    fitted = AutoETS(season_length=24, model="ANA").fit(y=y)
    quantiles = (0.1, 0.5, 0.9, 0.98)
    _, normal = stats.series_quantiles(fitted, y, 24, quantiles, "normal")
    point, empirical = stats.series_quantiles(fitted, y, 24, quantiles, "empirical")
    mean = np.asarray(fitted.predict(h=24)["mean"])
    residuals = y - fitted.predict_in_sample()["fitted"]
    residuals = residuals[np.isfinite(residuals)]
    # Step 1: exactly the residual quantiles around the model's mean; the point forecast is the
    # median (the mean moved by the median residual: below it, the bursts skew the residuals).
    assert np.allclose(point, empirical[0.5])
    assert np.isclose(point[0], mean[0] + np.median(residuals))
    for q in (0.1, 0.9, 0.98):
        assert np.isclose(empirical[q][0], mean[0] + np.quantile(residuals, q))
    # The bursts inflate a normal sigma: the empirical P10-P90 is much narrower, the P98 wider.
    assert (empirical[0.9] - empirical[0.1])[0] < 0.5 * (normal[0.9] - normal[0.1])[0]
    assert empirical[0.98][0] > normal[0.98][0]
    # The growth over the horizon is the model's: widths keep the normal intervals' ratios.
    ratio = (empirical[0.9] - mean) / (normal[0.9] - mean)
    assert np.allclose(ratio, ratio[0])


def test_heavy_tailed_series_get_lower_pinball_loss_with_empirical_quantiles():
    y = heavy_tailed_series(14 * 24 + 24, seed=11)
    history, future = y[:-24], y[-24:]
    request = request_for(series_frame("s|request_count", history), bounds={})

    def pinball(out: pd.DataFrame) -> float:
        loss = 0.0
        for q in (0.1, 0.9):
            diff = future - out[f"q{q:g}"].to_numpy()
            loss += np.maximum(q * diff, (q - 1) * diff).sum()
        return loss

    from statsforecast.models import Theta

    normal = stats.statsforecast_forecast(request, Theta(season_length=24), "normal")
    assert pinball(MODEL_REGISTRY["theta"](request, MODEL_CFG)) < pinball(normal)


def test_autoets_searches_its_form_once_per_series_in_a_backtest():
    # The first call searches and remembers the chosen form; the second refits that form only.
    history = panel(days=8)
    store: dict = {}
    first = request_for(history, fitted_models=store)
    MODEL_REGISTRY["autoets"](first, MODEL_CFG)
    forms = {sid: form for (key, sid), form in store.items() if key == "autoets"}
    assert set(forms) == set(history["series_id"])
    assert all(isinstance(f, str) and f[0] == "A" and len(f) == 4 for f in forms.values())
    from statsforecast.models import AutoETS

    restricted = stats.with_model_form(AutoETS(season_length=24, model="AZZ"), "AAAD")
    assert (restricted.model, restricted.damped, restricted.season_length) == ("AAA", True, 24)
    assert stats.with_model_form(AutoETS(season_length=24), "ANAN").damped is None
    later = history[history["timestamp"] < history["timestamp"].max() - pd.Timedelta(hours=1)]
    out = MODEL_REGISTRY["autoets"](request_for(later, fitted_models=store), MODEL_CFG)
    assert_contract(out, request_for(later))
    assert {sid: form for (key, sid), form in store.items() if key == "autoets"} == forms


def test_mstl_does_not_repeat_a_one_off_spike():
    # A clean daily cycle with one 50x burst on day 5: the forecast at the burst's hour of day
    # should follow the cycle, not a daily repeat of the burst (robust STL keeps it out of the
    # seasonal profile, AutoTheta on the remainder does not extrapolate it).
    n, horizon, spike_at = 10 * 24, 24, 5 * 24 + 16
    values = 100 + 10 * np.sin(2 * np.pi * np.arange(n + horizon) / 24)
    history = values[:n].copy()
    history[spike_at] = 5000.0
    request = request_for(series_frame("burst|network_in_bytes", history), bounds={})
    out = MODEL_REGISTRY["mstl"](request, MODEL_CFG)
    error = np.abs(out["mean"].to_numpy() - values[n:])
    assert error.max() < 0.05 * 5000.0
    # the burst's hour of day is no worse than the others, and both are small
    assert error[16] < 3 * np.median(error) + 1.0


# ---------------------------------------------------------------------------------------------
# Odd series: routing, constant, empty


def odd_panel() -> pd.DataFrame:
    rng = np.random.default_rng(3)
    n = 10 * 24
    full = seasonal_values(n, 50, 8, 0.0, 1, rng)
    late_start = START + pd.Timedelta(hours=n - 30)
    frames = [
        series_frame("a|full", full),
        series_frame("b|short30h", seasonal_values(30, 50, 8, 0, 1, rng), late_start),
        series_frame("c|short60h", seasonal_values(60, 50, 8, 0, 1, rng), START),
        series_frame("d|constant", np.full(n, 42.0)),
        series_frame("e|all_nan", np.full(48, np.nan)),
    ]
    # Leading NaNs: a series on the common grid that only starts reporting on day 8.
    leading = np.full(n, np.nan)
    leading[-60:] = seasonal_values(60, 30, 5, 0, 1, rng)
    frames.append(series_frame("f|leading_nan", leading))
    return pd.concat(frames, ignore_index=True)


def test_routing_follows_the_fallback_chain():
    request = request_for(odd_panel())
    routes = route_series(request, "mstl")
    assert routes["a|full"].model == "mstl" and routes["a|full"].flag is None
    assert (routes["b|short30h"].model, routes["b|short30h"].flag) == ("naive", FLAG_TOO_SHORT)
    # 60 h is two daily seasons: enough for MSTL (daily only), not for Prophet (three days).
    assert routes["c|short60h"].model == "mstl"
    assert (routes["d|constant"].model, routes["d|constant"].flag) == ("naive", FLAG_CONSTANT)
    assert routes["e|all_nan"].flag == FLAG_NO_DATA
    prophet_routes = route_series(request, "prophet")
    assert prophet_routes["c|short60h"].model == "seasonal_naive_daily"
    assert prophet_routes["c|short60h"].flag == FLAG_TOO_SHORT
    assert prophet_routes["f|leading_nan"].model == "seasonal_naive_daily"
    assert min_history_steps("autogluon", request) == max(72, 2 * request.horizon + 1)


@pytest.mark.parametrize("name", CHEAP_MODELS)
def test_odd_series_are_flagged_never_dropped(name):
    request = request_for(odd_panel())
    out = MODEL_REGISTRY[name](request, MODEL_CFG)
    assert_contract(out, request)
    used = out.groupby("series_id")["model_used"].first()
    assert used["b|short30h"] == (
        "predict_linear" if name == "predict_linear" else "naive (fallback: too_short)"
    )
    constant = out.loc[out["series_id"] == "d|constant"]
    assert used["d|constant"] == "naive (constant)"
    for column in ["mean", *[quantile_column(q) for q in QUANTILES]]:
        assert np.allclose(constant[column], 42.0)
    empty = out.loc[out["series_id"] == "e|all_nan"]
    assert used["e|all_nan"] == "none (no_data)"
    assert empty[["mean", "q0.5"]].isna().all().all()
    assert np.isfinite(out.loc[out["series_id"] == "f|leading_nan", "mean"]).all()


def test_series_a_model_cannot_fit_go_to_the_next_model_flagged():
    request = request_for(odd_panel())

    def model_that_fits_nothing(sub: ForecastRequest, cfg: ModelSettings) -> pd.DataFrame:
        return pd.DataFrame(columns=["series_id", "timestamp", "mean"])

    out = forecast_with_fallback(
        request, MODEL_CFG, "autoets", cores={"autoets": model_that_fits_nothing}
    )
    assert_contract(out, request)
    used = out.groupby("series_id")["model_used"].first()
    assert used["a|full"] == model_used_label("seasonal_naive_daily", FLAG_MODEL_FAILED)


def test_empty_history_gives_an_empty_contract_frame():
    request = request_for(panel(days=3).iloc[0:0])
    out = MODEL_REGISTRY["seasonal_naive_daily"](request, MODEL_CFG)
    assert out.empty
    assert list(out.columns) == [
        "series_id",
        "timestamp",
        "mean",
        "q0.1",
        "q0.5",
        "q0.9",
        "model_used",
    ]


# ---------------------------------------------------------------------------------------------
# AutoGluon pretrained refusal (no fit, no network)


@pytest.fixture
def no_network(monkeypatch):
    """Any attempt to open a connection fails the test loudly."""

    def refuse(*args, **kwargs):
        raise AssertionError("network access attempted")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def test_pretrained_preset_refused_without_allow_pretrained(no_network):
    with pytest.raises(ConfigError, match="allow_pretrained") as info:
        check_pretrained(ag(presets="bolt_small", allow_pretrained=False))
    assert "chronos-bolt-small" in str(info.value)
    assert "\n" not in str(info.value)


def test_fast_training_preset_is_refused_because_it_adds_chronos2_and_toto2(no_network):
    with pytest.raises(ConfigError, match="allow_pretrained") as info:
        check_pretrained(ag(presets="fast_training"))
    assert "Chronos2" in str(info.value) and "Toto2" in str(info.value)


def test_every_autogluon_preset_needs_allow_pretrained(no_network):
    from autogluon.timeseries.configs import get_predictor_presets

    for preset in get_predictor_presets():
        with pytest.raises(ConfigError, match="allow_pretrained"):
            check_pretrained(ag(presets=preset))


def test_allowed_pretrained_without_local_weights_names_model_path(no_network, tmp_path):
    with pytest.raises(ConfigError, match=r"models\.autogluon\.model_path"):
        check_pretrained(ag(presets="chronos2", allow_pretrained=True, model_path=None))
    with pytest.raises(ConfigError, match=r"models\.autogluon\.model_path.*not a directory"):
        check_pretrained(
            ag(presets="chronos2", allow_pretrained=True, model_path=str(tmp_path / "x"))
        )
    with pytest.raises(ConfigError, match=r"no weights for autogluon/chronos-bolt-tiny"):
        check_pretrained(
            ag(
                hyperparameters={"Chronos": {"model_path": "bolt_tiny"}},
                allow_pretrained=True,
                model_path=str(tmp_path),
            )
        )


def test_allowed_pretrained_points_models_at_local_weights(no_network, tmp_path):
    (tmp_path / "chronos-2-small").mkdir()
    (tmp_path / "Toto-2.0-4m").mkdir()
    resolved = resolve_hyperparameters(
        ag(presets="medium_quality", allow_pretrained=True, model_path=str(tmp_path))
    )
    assert resolved["Chronos2"]["model_path"] == str(tmp_path / "chronos-2-small")
    assert resolved["Toto2"]["model_path"] == str(tmp_path / "Toto-2.0-4m")
    assert "ETS" in resolved


def test_default_hyperparameters_need_no_pretrained_weights(no_network):
    default = {
        "SeasonalNaive": {},
        "ETS": {},
        "Theta": {},
        "DirectTabular": {},
        "RecursiveTabular": {},
    }
    assert resolve_hyperparameters(ag(hyperparameters=default)) == default
    with pytest.raises(ConfigError, match="allow_pretrained"):
        check_pretrained(ag(hyperparameters=None))  # AutoGluon's own default has Chronos2
    jobs = with_local_n_jobs(default, 2)
    assert jobs["ETS"] == {"n_jobs": 2} and jobs["DirectTabular"] == {}


def test_autogluon_model_refuses_before_any_fit(no_network):
    request = request_for(panel(days=3))
    with pytest.raises(ConfigError, match="allow_pretrained"):
        MODEL_REGISTRY["autogluon"](
            request, dataclasses.replace(MODEL_CFG, autogluon=ag(presets="bolt_small"))
        )


# ---------------------------------------------------------------------------------------------
# Prophet settings decided per series (no fit)


def test_prophet_growth_and_weekly_seasonality_per_series():
    history = pd.concat(
        [
            series_frame("bounded|cpu_utilization", np.linspace(10, 60, 15 * 24)),
            series_frame("bytes|network_in_bytes", np.linspace(1e6, 2e6, 10 * 24)),
        ]
    )
    request = request_for(
        history,
        bounds={"bounded|cpu_utilization": (0.0, 100.0), "bytes|network_in_bytes": (0.0, None)},
    )
    tasks = {
        t.series_id: t for t in build_tasks(request, prophet_cfg(growth="auto"), keep_models=False)
    }
    bounded, unbounded = tasks["bounded|cpu_utilization"], tasks["bytes|network_in_bytes"]
    assert (bounded.growth, bounded.cap, bounded.floor) == ("logistic", 100.0, 0.0)
    assert (unbounded.growth, unbounded.cap) == ("linear", None)
    assert bounded.weekly_seasonality and not unbounded.weekly_seasonality
    forced = build_tasks(request, prophet_cfg(weekly_seasonality="off"), keep_models=False)
    assert not any(t.weekly_seasonality for t in forced)


def test_prophet_logistic_growth_only_near_the_cap_under_auto():
    idle = np.full(100, 0.1)  # a CPU idling at 0.1 %
    busy = np.concatenate([np.full(80, 40.0), np.full(20, 70.0)])  # 90th percentile 70 %
    share = MODEL_CFG.prophet.logistic_min_share  # the schema's 0.5
    assert choose_growth("auto", idle, 0.0, 100.0, share) == "linear"
    assert choose_growth("auto", busy, 0.0, 100.0, share) == "logistic"
    # the share is configurable: a 90th percentile of 70 is below 0.8 * 100
    assert choose_growth("auto", busy, 0.0, 100.0, min_share=0.8) == "linear"
    # logistic when asked for it on a bounded series, never without a cap
    assert choose_growth("logistic", idle, 0.0, 100.0, share) == "logistic"
    assert choose_growth("logistic", busy, 0.0, None, share) == "linear"
    assert choose_growth("auto", np.full(5, np.nan), 0.0, 100.0, share) == "linear"
    assert choose_growth("flat", busy, 0.0, 100.0, share) == "flat"


def test_prophet_trend_and_seasonality_settings_reach_the_tasks():
    rows = 15 * 24
    observed = np.linspace(10, 60, rows)
    gappy = observed.copy()
    gappy[: 2 * 24] = np.nan  # 15 days of rows but only 13 observed
    history = pd.concat(
        [
            series_frame("full|cpu_utilization", observed),
            series_frame("gappy|cpu_utilization", gappy),
        ]
    )
    request = request_for(history)
    defaults = {t.series_id: t for t in build_tasks(request, prophet_cfg(), keep_models=False)}
    full, gap = defaults["full|cpu_utilization"], defaults["gappy|cpu_utilization"]
    schema = SCHEMA_MODELS["prophet"]
    assert (full.n_changepoints, full.changepoint_range, full.changepoint_prior_scale) == (
        schema["n_changepoints"],
        schema["changepoint_range"],
        schema["changepoint_prior_scale"],
    )
    assert full.daily_fourier_order == schema["daily_fourier_order"]
    # weekly seasonality needs two full weeks of observed values, not of rows
    assert full.weekly_seasonality and not gap.weekly_seasonality
    cfg = prophet_cfg(
        n_changepoints=10,
        changepoint_range=0.9,
        changepoint_prior_scale=0.05,
        daily_fourier_order=4,
    )
    task = build_tasks(request, cfg, keep_models=False)[0]
    assert (task.n_changepoints, task.changepoint_range, task.changepoint_prior_scale) == (
        10,
        0.9,
        0.05,
    )
    assert task.daily_fourier_order == 4
    no_daily = build_tasks(request, prophet_cfg(daily_seasonality=False), keep_models=False)[0]
    assert no_daily.daily_fourier_order == 0


# ---------------------------------------------------------------------------------------------
# Slow: real Prophet and AutoGluon fits


@pytest.mark.slow
def test_prophet_contract_in_parallel_with_holidays():
    # Five series reach Prophet, so two worker processes really run.
    history = pd.concat([odd_panel(), panel(days=10)], ignore_index=True)
    request = dataclasses.replace(request_for(history), n_jobs=2)
    cfg = dataclasses.replace(
        MODEL_CFG, prophet=prophet_cfg(holidays=(Holiday("launch", "2026-03-05", 0, 1),))
    )
    out = MODEL_REGISTRY["prophet"](request, cfg)
    assert_contract(out, request)
    used = out.groupby("series_id")["model_used"].first()
    assert used["a|full"] == "prophet"
    assert used["d|constant"] == "naive (constant)" and used["e|all_nan"] == "none (no_data)"
    assert used["c|short60h"] == "seasonal_naive_daily (fallback: too_short)"
    full = out.loc[out["series_id"] == "a|full"]
    assert (full["q0.9"] > full["q0.1"]).all()


@pytest.mark.slow
def test_prophet_follows_a_level_shift_late_in_the_history():
    # Ten days at 20 % with a daily cycle, then a step to 60 % 36 hours before the end: Prophet's
    # default changepoints (first 80 % of the history) could not place the step; ours can.
    n = 10 * 24
    t = np.arange(n + 24)
    values = 20 + 3 * np.sin(2 * np.pi * t / 24) + np.where(t >= n - 36, 40.0, 0.0)
    rng = np.random.default_rng(5)
    history = series_frame("step|cpu_utilization", values[:n] + rng.normal(0, 0.5, n))
    request = request_for(history)
    out = MODEL_REGISTRY["prophet"](request, MODEL_CFG)
    assert (out["model_used"] == "prophet").all()
    assert np.abs(out["mean"].to_numpy() - values[n:]).mean() < 5.0


@pytest.mark.slow
def test_prophet_models_round_trip_through_json(tmp_path):
    from capforecast.forecast.models.prophet_model import (
        load_prophet_models,
        prophet_forecast_and_models,
        save_prophet_models,
    )

    request = request_for(panel(days=5))
    holiday = Holiday(name="launch", date="2026-03-03", lower_window=0, upper_window=0)
    cfg = dataclasses.replace(MODEL_CFG, prophet=prophet_cfg(holidays=(holiday,)))
    _, models = prophet_forecast_and_models(request, cfg)
    assert set(models) == set(request.history["series_id"])
    paths = save_prophet_models(models, tmp_path / "prophet")
    assert len(paths) == len(models) and all(p.exists() for p in paths)
    loaded = load_prophet_models(tmp_path / "prophet")
    assert set(loaded) == set(models)
    assert all(list(m.holidays["holiday"]) == ["launch"] for m in loaded.values())
    for sid, model in models.items():
        future = model.make_future_dataframe(periods=6, freq="1h", include_history=False)
        future = future.assign(cap=100.0, floor=0.0)
        original = model.predict(future)["yhat"].to_numpy()
        restored = loaded[sid].predict(future)["yhat"].to_numpy()
        assert np.allclose(original, restored)


@pytest.mark.slow
def test_autogluon_contract_with_cheap_models(tmp_path):
    request = request_for(odd_panel())
    out = MODEL_REGISTRY["autogluon"](request, MODEL_CFG)
    assert_contract(out, request)
    used = out.groupby("series_id")["model_used"].first()
    assert used["a|full"] == "autogluon"
    assert used["d|constant"] == "naive (constant)" and used["e|all_nan"] == "none (no_data)"
    assert used["c|short60h"] == "seasonal_naive_daily (fallback: too_short)"


def test_history_cap_never_trims_below_what_a_model_needs():
    from capforecast.forecast.models.fallback import history_cap

    # Two weeks of hours, except where the model needs more: AutoGluon holds out one
    # validation window, 2 * 168 + 1 steps for the week-ahead final forecast.
    assert history_cap("theta", 336, horizon=168, season=24, freq="1h") == 336
    assert history_cap("autogluon", 336, horizon=168, season=24, freq="1h") == 337
    assert history_cap("autogluon", 336, horizon=24, season=24, freq="1h") == 336
    assert history_cap("seasonal_naive_weekly", 200, horizon=24, season=24, freq="1h") == 336
    assert history_cap("theta", 336, horizon=24, season=24, freq="5min") == 336 * 12
    assert history_cap("theta", None, horizon=24, season=24, freq="1h") is None


def test_autoets_season_part_follows_the_seasonality_test():
    rng = np.random.default_rng(21)
    n = 14 * 24
    daily = 50 + 10 * np.sin(2 * np.pi * np.arange(n) / 24) + rng.normal(0, 3, n)
    noise = 50 + rng.normal(0, 3, n)
    assert stats.has_seasonality(daily, 24) and not stats.has_seasonality(noise, 24)
    assert not stats.has_seasonality(np.full(n, 7.0), 24)
    history = pd.concat([series_frame("daily|x", daily), series_frame("noise|x", noise)])
    store: dict = {}
    MODEL_REGISTRY["autoets"](request_for(history, fitted_models=store, bounds={}), MODEL_CFG)
    assert store[("autoets", "daily|x")][2] == "A"
    assert store[("autoets", "noise|x")][2] == "N"


# ---------------------------------------------------------------------------------------------
# Gaps, recently constant series, seasonal median


def test_fill_missing_takes_the_value_one_season_earlier():
    values = np.array([1.0, 2.0, 3.0, 4.0, np.nan, np.nan, 7.0, np.nan, np.nan, np.nan])
    # Season 3: position 4 takes position 1 (2.0), 5 takes 2 (3.0), 7 takes 4 (now 2.0) ...
    assert fill_missing(values, 3).tolist() == [1, 2, 3, 4, 2, 3, 7, 2, 3, 7]
    # Without a season the same gaps are straight lines, then the last value is carried.
    assert fill_missing(values).tolist() == [1, 2, 3, 4, 5, 6, 7, 7, 7, 7]
    # A gap in the first season has nothing a season earlier: interpolated.
    assert fill_missing(np.array([1.0, np.nan, 3.0, 4.0, 5.0, 6.0]), 3).tolist() == [
        1,
        2,
        3,
        4,
        5,
        6,
    ]


def test_a_day_long_gap_does_not_send_weekly_models_to_their_fallback():
    rng = np.random.default_rng(3)
    values = seasonal_values(16 * 24, 40, 8, 0.0, 1, rng)
    gapped = values.copy()
    gapped[-5 * 24 : -4 * 24] = np.nan  # one day missing inside the last two weeks
    mostly_missing = values.copy()
    mostly_missing[: 10 * 24] = np.nan
    mostly_missing[10 * 24 :: 2] = np.nan  # spans 16 days but only 3 observed
    history = pd.concat(
        [
            series_frame("a|gap", gapped),
            series_frame("b|sparse", np.r_[np.full(2, 40.0), mostly_missing[2:]]),
        ],
        ignore_index=True,
    )
    request = request_for(history, horizon=168)
    routes = route_series(request, "seasonal_naive_weekly")
    assert (routes["a|gap"].model, routes["a|gap"].flag) == ("seasonal_naive_weekly", None)
    # The span alone is not enough: half of what the model needs must be observed.
    assert routes["b|sparse"].flag == FLAG_TOO_SHORT
    out = MODEL_REGISTRY["seasonal_naive_weekly"](request, MODEL_CFG)
    gap_rows = out[out["series_id"] == "a|gap"]
    # The forecast repeats the last week; its missing day (steps 48-71) was filled from the
    # same day one week earlier, not drawn as a straight line.
    forecast = gap_rows["mean"].to_numpy()
    assert np.allclose(forecast[:48], values[-7 * 24 : -5 * 24])
    assert np.allclose(forecast[48:72], values[-12 * 24 : -11 * 24])


def test_a_recently_constant_series_keeps_its_value_as_median_and_the_model_upper_tail():
    rng = np.random.default_rng(5)
    busy = seasonal_values(10 * 24, 40, 20, 0.0, 3, rng)
    stopped = np.r_[busy, np.zeros(30)]  # drained: exactly 0 for the last 30 hours
    almost = np.r_[busy, np.zeros(20)]  # 20 hours are not a day
    history = pd.concat(
        [series_frame("a|stopped", stopped), series_frame("b|almost", almost)], ignore_index=True
    )
    request = request_for(history, horizon=48, quantiles=(0.1, 0.5, 0.9))
    out = MODEL_REGISTRY["theta"](request, MODEL_CFG)
    pinned = out[out["series_id"] == "a|stopped"]
    assert (pinned["model_used"] == "theta (constant_recently)").all()
    assert (pinned[["mean", "q0.1", "q0.5"]] == 0.0).all().all()
    # The upper tail still allows the workload to come back.
    assert pinned["q0.9"].max() > 10.0
    other = out[out["series_id"] == "b|almost"]
    assert (other["model_used"] == "theta").all() and other["mean"].abs().max() > 1.0


def test_seasonal_median_ignores_one_off_bursts_and_widens_with_the_lead():
    from capforecast.forecast.models.profiles import seasonal_median_values

    rng = np.random.default_rng(11)
    days = 35
    profile = 20 + 10 * np.sin(2 * np.pi * np.arange(24) / 24)
    y = np.tile(profile, days) + rng.normal(0, 1, days * 24)
    y[-30:-26] = 95.0  # a four-hour burst yesterday
    y[-60:-50] = np.nan  # and a gap
    point, quantiles = seasonal_median_values(y, 24, 7, 72, (0.1, 0.5, 0.9), 28)
    # The burst does not repeat: the point forecast stays on the daily profile.
    assert np.abs(point - np.tile(profile, 3)).max() < 2.0
    width = quantiles[0.9] - quantiles[0.1]
    assert (width > 0).all()
    assert (quantiles[0.1] <= point + 1e-9).all() and (point <= quantiles[0.9] + 1e-9).all()


def test_seasonal_median_votes_every_weekday_once():
    from capforecast.forecast.models.profiles import seasonal_median_values

    # Five busy weekdays at 60 %, a weekend at 1 %: the history ends on the Sunday.
    week = np.r_[np.full(5 * 24, 60.0), np.full(2 * 24, 1.0)]
    y = np.tile(week, 4)
    point, quantiles = seasonal_median_values(y, 24, 7, 168, (0.1, 0.5, 0.9), 28)
    assert np.allclose(point, 60.0)
    # Its own errors at each lead day include the weekend drops: the lower tail reaches them.
    assert quantiles[0.1].min() < 30.0


@pytest.mark.parametrize("n_jobs,min_items", [(1, 2), (2, 2), (2, 100), (3, 2)])
def test_the_process_pool_keeps_the_order(n_jobs, min_items):
    """One pool helper for every model family: results in input order, in or out of workers."""
    items = list(range(-23, 0))
    assert map_in_processes(abs, items, n_jobs, min_items=min_items) == [abs(i) for i in items]
    assert map_in_processes(abs, [], n_jobs) == []


@pytest.mark.slow
def test_autogluon_that_fits_no_model_stops_in_one_line(tmp_path):
    """Every configured model fails (an n_jobs AutoGluon rejects): AutoGluon carries on
    without it, and the run stops naming the key instead of a traceback from predict."""
    from capforecast.forecast.models.autogluon_model import train_autogluon

    request = request_for(panel(days=5))
    broken = ag(hyperparameters={"Naive": {"n_jobs": "two"}}, time_limit=30)
    with pytest.raises(ConfigError, match=r"autogluon.time_limit.*fitted no model on 4 series"):
        train_autogluon(request, broken, tmp_path / "predictor")
