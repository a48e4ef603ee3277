"""The peers users compare against, untouched, for the accuracy benchmark and its reduced test.

These are not selectable models: they reproduce what a user gets from the library defaults, so
the leaderboard can show the project's models and ``selected`` side by side with them on one
protocol. Seasonal naive and ``predict_linear`` need no peer version (the project's are the
standard ones); AutoGluon's peer is its own model with the issue's hyperparameters.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from capforecast.models.base import ForecastRequest, finalize_forecast
from capforecast.models.stats import ALIAS, statsforecast_forecast


def autoets_default(request: ForecastRequest, model_cfg: dict[str, Any]) -> pd.DataFrame:
    """statsforecast ``AutoETS(season_length)``: full ZZZ search, normal intervals."""
    from statsforecast.models import AutoETS

    model = AutoETS(season_length=request.season, alias=ALIAS)
    out = statsforecast_forecast(request, model, intervals="normal")
    return finalize_forecast(out.assign(model_used="autoets_default"), request)


def autotheta_default(request: ForecastRequest, model_cfg: dict[str, Any]) -> pd.DataFrame:
    """statsforecast ``AutoTheta(season_length)`` with its own intervals."""
    from statsforecast.models import AutoTheta

    model = AutoTheta(season_length=request.season, alias=ALIAS)
    out = statsforecast_forecast(request, model, intervals="normal")
    return finalize_forecast(out.assign(model_used="autotheta_default"), request)


def prophet_default(request: ForecastRequest, model_cfg: dict[str, Any]) -> pd.DataFrame:
    """``Prophet()`` untouched, one fit per series, its 80 % interval as P10/P90."""
    import logging

    from prophet import Prophet

    logging.getLogger("cmdstanpy").setLevel(logging.WARNING)
    frames = []
    for sid, group in request.history.groupby("series_id", sort=False):
        train = group.dropna(subset=["y"])
        model = Prophet(interval_width=0.8)
        model.fit(pd.DataFrame({"ds": train["timestamp"].dt.tz_localize(None), "y": train["y"]}))
        future = model.make_future_dataframe(periods=request.horizon, freq=request.freq)
        np.random.seed(0)
        forecast = model.predict(future.tail(request.horizon))
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


PEER_REGISTRY = {
    "autoets_default": autoets_default,
    "autotheta_default": autotheta_default,
    "prophet_default": prophet_default,
}
