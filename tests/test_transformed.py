"""theta_log and autoets_log (capforecast.forecast.models.transformed): the standard Theta and
AutoETS on log1p(y / s) per series."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest

from capforecast.config import validated_config
from capforecast.forecast.models import MODEL_REGISTRY, ForecastRequest
from capforecast.forecast.models.stats import autoets_core, theta_core
from capforecast.forecast.models.transformed import autoets_log_core, log_scales, theta_log_core
from capforecast.settings import model_settings

QUANTILES = (0.1, 0.5, 0.9)
MODEL_CFG = model_settings(validated_config({})["models"])
VALUES = ["mean", "q0.1", "q0.5", "q0.9"]
# Each log-scale model: its core, the core it runs on the log scale, that core's model name.
LOGGED = {
    "theta_log": (theta_log_core, theta_core, "theta"),
    "autoets_log": (autoets_log_core, autoets_core, "autoets"),
}


def frame(series: dict[str, np.ndarray]) -> pd.DataFrame:
    stamps = pd.date_range(
        "2026-03-01", periods=len(next(iter(series.values()))), freq="1h", tz="UTC"
    )
    return pd.concat(
        [
            pd.DataFrame({"series_id": sid, "timestamp": stamps, "y": y})
            for sid, y in series.items()
        ],
        ignore_index=True,
    )


def request(history: pd.DataFrame, horizon: int = 24) -> ForecastRequest:
    return ForecastRequest(history=history, horizon=horizon, quantiles=QUANTILES, season=24)


def bursty(seed: int, n: int = 14 * 24, base: float = 2.0) -> np.ndarray:
    """A low daily load with bursts of up to 25 times its level in 5 % of the hours."""
    rng = np.random.default_rng(seed)
    t = np.arange(n)
    y = base * (1 + 0.3 * np.sin(2 * np.pi * t / 24)) + rng.normal(0, 0.1, n).clip(-0.5)
    burst = rng.random(n) < 0.05
    y[burst] += 25 * base * rng.random(burst.sum())
    return y


def test_the_scale_is_the_median_positive_value_and_only_for_nonnegative_series():
    history = frame(
        {
            "load": np.array([0.0, 2.0, 4.0, 6.0, 100.0]),
            "delta": np.array([-1.0, 2.0, 4.0, 6.0, 8.0]),
            "idle": np.zeros(5),
            "gappy": np.array([np.nan, 3.0, np.nan, 5.0, 0.0]),
        }
    )
    scales = log_scales(history)
    assert scales["load"] == 5.0  # the zero is left out
    assert scales["gappy"] == 4.0  # and so are the gaps
    assert np.isnan(scales["delta"]) and np.isnan(scales["idle"])


@pytest.mark.parametrize("name", LOGGED)
def test_quantiles_are_the_models_on_the_log_scale_mapped_back(name):
    logged_core, core, _ = LOGGED[name]
    y = bursty(1)
    history = frame({"a": y})
    out = logged_core(request(history), MODEL_CFG)
    s = np.median(y[y > 0])
    logged = history.assign(y=np.log1p(history["y"] / s))
    on_log = core(request(logged), MODEL_CFG)
    np.testing.assert_allclose(out[VALUES], np.expm1(on_log[VALUES].to_numpy()) * s, rtol=1e-9)
    assert (out["q0.1"] <= out["q0.5"]).all() and (out["q0.5"] <= out["q0.9"]).all()


@pytest.mark.parametrize("name", LOGGED)
def test_the_forecast_is_scale_free(name):
    """Bytes or percent: a series in other units gets the same forecast in those units."""
    logged_core = LOGGED[name][0]
    y = bursty(2)
    small = logged_core(request(frame({"a": y})), MODEL_CFG)
    large = logged_core(request(frame({"a": 1e6 * y})), MODEL_CFG)
    np.testing.assert_allclose(large[VALUES], 1e6 * small[VALUES].to_numpy(), rtol=1e-6)


@pytest.mark.parametrize("name", LOGGED)
def test_a_series_with_negative_values_gets_the_model_on_its_own_scale(name):
    logged_core, core, _ = LOGGED[name]
    rng = np.random.default_rng(3)
    t = np.arange(10 * 24)
    y = 5 * np.sin(2 * np.pi * t / 24) + rng.normal(0, 1, len(t))  # crosses zero
    history = frame({"delta": y, "load": bursty(4, len(t))})
    out = logged_core(request(history), MODEL_CFG).set_index(["series_id", "timestamp"])
    plain = core(request(history[history["series_id"] == "delta"]), MODEL_CFG)
    plain = plain.set_index(["series_id", "timestamp"])
    pd.testing.assert_frame_equal(out.loc[plain.index, VALUES], plain[VALUES])
    assert set(out.index.get_level_values("series_id")) == {"delta", "load"}


def pinball(out: pd.DataFrame, actual: np.ndarray) -> float:
    """Mean pinball loss over the three quantiles (what WQL weighs)."""
    loss = 0.0
    for q in QUANTILES:
        error = actual - out[f"q{q:g}"].to_numpy()
        loss += float(np.mean(np.maximum(q * error, (q - 1) * error)))
    return loss


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("name", LOGGED)
def test_noise_that_grows_with_the_load_gets_intervals_that_do_too(name, seed):
    """What it is for: quiet nights and busy days, the noise in proportion to the load. On the
    raw scale Theta and ETS read one set of residual quantiles for every hour (too wide at
    night, too narrow by day); on the log scale the noise is the same size at every hour, and
    the mapped back quantiles follow the load. Measured for Theta: pinball loss 20-35 % lower
    over six seeds."""
    rng = np.random.default_rng(seed)
    n, t = 14 * 24, np.arange(15 * 24)
    load = 2 + 18 * np.clip(np.sin(2 * np.pi * t / 24), 0, None)
    y = load * np.exp(rng.normal(0, 0.35, len(t)))
    history, future = frame({"a": y[:n]}), y[n:]
    logged = MODEL_REGISTRY[name](request(history), MODEL_CFG)
    plain = MODEL_REGISTRY[LOGGED[name][2]](request(history), MODEL_CFG)
    assert pinball(logged, future) < 0.9 * pinball(plain, future)
    night = load[n:] < 3
    width = (logged["q0.9"] - logged["q0.1"]).to_numpy()
    assert width[night].mean() < 0.5 * width[~night].mean()


@pytest.mark.parametrize("name", LOGGED)
def test_the_log_models_run_with_the_statsforecast_family_settings(name):
    """The spec: statsforecast family, its own `intervals` setting, its own-scale model's
    minimum history and fallbacks."""
    from capforecast.forecast.models.specs import MODEL_SPECS

    logged_core, _, plain = LOGGED[name]
    spec = MODEL_SPECS[name]
    assert (spec.family, spec.settings) == ("statsforecast", ("intervals",))
    assert spec.min_history is MODEL_SPECS[plain].min_history
    assert spec.fallback == MODEL_SPECS[plain].fallback
    normal = dataclasses.replace(MODEL_CFG, intervals="normal")
    out = logged_core(request(frame({"a": bursty(8)})), normal)
    assert np.isfinite(out[VALUES].to_numpy()).all()


def test_autoets_log_reuses_each_series_form_in_a_backtest():
    """AutoETS's form reuse (stats.statsforecast_forecast: a backtest's later windows refit the
    form a series chose in its first one) works through the transform: the first call stores
    each series' form, chosen on the log scale; a form put in the store is fitted again as it
    is, not searched."""
    history = frame({"a": bursty(9), "b": bursty(10, base=5.0)})
    store: dict = {}
    MODEL_REGISTRY["autoets_log"](
        dataclasses.replace(request(history), fitted_models=store), MODEL_CFG
    )
    searched = {sid: form for (key, sid), form in store.items() if key == "autoets"}
    assert set(searched) == {"a", "b"}
    planted = "ANNN" if searched["a"] != "ANNN" else "AANN"
    store[("autoets", "a")] = planted
    MODEL_REGISTRY["autoets_log"](
        dataclasses.replace(request(history), fitted_models=store), MODEL_CFG
    )
    assert store[("autoets", "a")] == planted
    assert store[("autoets", "b")] == searched["b"]
