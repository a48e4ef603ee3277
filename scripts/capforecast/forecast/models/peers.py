"""The peers users compare against, untouched, for the accuracy benchmarks and their reduced test.

These are not selectable models: they reproduce what a user gets from the library defaults, so
the leaderboard can show the project's models and ``selected`` side by side with them on one
protocol. Every peer sees the whole history it is given (no ``models.max_history_hours``) with
gaps filled by linear interpolation where the library refuses NaN (statsforecast), or left as
they are where it accepts them (Prophet, AutoGluon).

- ``seasonal_naive_daily_peer`` / ``seasonal_naive_weekly_peer``: statsforecast
  ``SeasonalNaive(24)`` / ``SeasonalNaive(168)`` with its normal intervals.
- ``autoets_default``, ``autotheta_default``: statsforecast ``AutoETS(season_length=24)`` and
  ``AutoTheta(season_length=24)``, full model search, normal intervals.
- ``mstl_default``: statsforecast ``MSTL(season_length=[24, 168])`` (daily and weekly seasons, its
  default AutoETS trend forecaster).
- ``prophet_default``: ``Prophet()`` with its 80 % interval as P10/P90.
- ``autogluon_default``: ``TimeSeriesPredictor`` with AutoGluon's default metric (WQL) over the
  models that need no pretrained weights (SeasonalNaive, ETS, Theta, DirectTabular,
  RecursiveTabular + its WeightedEnsemble). AutoGluon's own default presets add Chronos and Toto,
  whose weights cannot be downloaded here.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd

from capforecast.forecast.models.base import ForecastRequest, finalize_forecast, steps_per
from capforecast.forecast.models.stats import ALIAS, statsforecast_forecast
from capforecast.settings import AutoGluonSettings, ModelSettings

AUTOGLUON_PEER_TIME_LIMIT = 120
# The peer's models: AutoGluon's own choice would add ones that download pretrained weights.
AUTOGLUON_PEER_HYPERPARAMETERS: dict[str, dict[str, Any]] = {
    "SeasonalNaive": {},
    "ETS": {},
    "Theta": {},
    "DirectTabular": {},
    "RecursiveTabular": {},
}


def _statsforecast_peer(
    name: str, make: Callable[[ForecastRequest], Any]
) -> Callable[[ForecastRequest, dict[str, Any]], pd.DataFrame]:
    def peer(request: ForecastRequest, model_cfg: ModelSettings) -> pd.DataFrame:
        out = statsforecast_forecast(request, make(request), "normal")
        return finalize_forecast(out.assign(model_used=name), request)

    peer.__name__ = name
    peer.__doc__ = f"Peer {name}: statsforecast defaults, normal intervals."
    return peer


def _seasonal_naive(period: str) -> Callable[[ForecastRequest], Any]:
    def make(request: ForecastRequest) -> Any:
        from statsforecast.models import SeasonalNaive

        return SeasonalNaive(season_length=steps_per(period, request.freq), alias=ALIAS)

    return make


def _autoets(request: ForecastRequest) -> Any:
    from statsforecast.models import AutoETS

    return AutoETS(season_length=request.season, alias=ALIAS)


def _autotheta(request: ForecastRequest) -> Any:
    from statsforecast.models import AutoTheta

    return AutoTheta(season_length=request.season, alias=ALIAS)


def _mstl(request: ForecastRequest) -> Any:
    from statsforecast.models import MSTL

    return MSTL(season_length=[request.season, steps_per("7D", request.freq)], alias=ALIAS)


seasonal_naive_daily_peer = _statsforecast_peer("seasonal_naive_daily_peer", _seasonal_naive("1D"))
seasonal_naive_weekly_peer = _statsforecast_peer(
    "seasonal_naive_weekly_peer", _seasonal_naive("7D")
)
autoets_default = _statsforecast_peer("autoets_default", _autoets)
autotheta_default = _statsforecast_peer("autotheta_default", _autotheta)
mstl_default = _statsforecast_peer("mstl_default", _mstl)


def prophet_default(request: ForecastRequest, model_cfg: ModelSettings) -> pd.DataFrame:
    """``Prophet()`` untouched, one fit per series, its 80 % interval as P10/P90."""
    import logging

    from prophet import Prophet

    logging.getLogger("cmdstanpy").setLevel(logging.WARNING)
    frames = []
    for sid, group in request.history.groupby("series_id", sort=False):
        train = group.dropna(subset=["y"])
        model = Prophet(interval_width=0.8)
        model.fit(pd.DataFrame({"ds": train["timestamp"].dt.tz_localize(None), "y": train["y"]}))
        last = group["timestamp"].iloc[-1].tz_localize(None)
        future = pd.DataFrame(
            {"ds": pd.date_range(last, periods=request.horizon + 1, freq=request.freq)[1:]}
        )
        np.random.seed(0)
        forecast = model.predict(future)
        frame = pd.DataFrame(
            {
                "series_id": sid,
                "timestamp": forecast["ds"].dt.tz_localize("UTC").to_numpy(),
                "mean": forecast["yhat"].to_numpy(),
                "model_used": "prophet_default",
            }
        )
        for q in request.quantiles:
            source = "yhat_lower" if q < 0.5 else "yhat_upper" if q > 0.5 else "yhat"
            frame[f"q{q:g}"] = forecast[source].to_numpy()
        frames.append(frame)
    return finalize_forecast(pd.concat(frames, ignore_index=True), request)


def autogluon_default(request: ForecastRequest, model_cfg: ModelSettings) -> pd.DataFrame:
    """AutoGluon with its default metric (WQL) over the models that need no weights."""
    import shutil
    import tempfile
    from pathlib import Path

    from capforecast.forecast.models.autogluon_model import (
        predictions_to_contract,
        to_autogluon_frame,
        train_autogluon,
    )

    settings = AutoGluonSettings(
        presets=None,
        hyperparameters=AUTOGLUON_PEER_HYPERPARAMETERS,
        time_limit=AUTOGLUON_PEER_TIME_LIMIT,
        eval_metric="WQL",
        allow_pretrained=False,
        model_path=None,
    )
    scratch = Path(tempfile.mkdtemp(prefix="cf-ag-peer-"))
    try:
        predictor = train_autogluon(request, settings, scratch / "predictor")
        predictions = predictor.predict(to_autogluon_frame(request.history))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    out = predictions_to_contract(predictions, request)
    return finalize_forecast(out.assign(model_used="autogluon_default"), request)


PEER_REGISTRY = {
    "seasonal_naive_daily_peer": seasonal_naive_daily_peer,
    "seasonal_naive_weekly_peer": seasonal_naive_weekly_peer,
    "autoets_default": autoets_default,
    "autotheta_default": autotheta_default,
    "mstl_default": mstl_default,
    "prophet_default": prophet_default,
    "autogluon_default": autogluon_default,
}
