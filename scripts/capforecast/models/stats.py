"""statsforecast models: AutoETS, AutoTheta and MSTL over all series at once.

Quantiles come from statsforecast prediction intervals: quantile ``q < 0.5`` is the lower end of
the central ``100 - 200 q`` % interval (``<model>-lo-<level>``), ``q > 0.5`` the upper end of the
``200 q - 100`` % interval (``<model>-hi-<level>``), and ``q = 0.5`` the point forecast (the
intervals are symmetric around it). statsforecast refuses NaN, so gaps are filled (linear, then
edge values carried) before fitting. statsforecast is imported inside the functions so that
importing this module stays cheap.

MSTL settings (measured on the NAB fixture, see ``mstl_core``): the STL fits are robust
(``stl_kwargs={"robust": True}``) and the deseasonalised series is forecast by a non-seasonal
AutoTheta. Cloud metrics carry one-off spikes and dips (a 26e6-byte burst on a 2e5-byte series,
a 10-hour drop from 90 % to 25 % CPU); a least-squares STL smears them into the seasonal
profile, which then repeats them every day. Robust STL leaves them in the remainder, where the
default trend forecaster (AutoETS) extrapolated them wildly on one series (270x seasonal naive's
WQL); AutoTheta did not. Together they took MSTL's relative geometric mean MASE from 0.99 to
0.75 and WQL from 0.96 to 0.85 of seasonal naive's.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

import numpy as np
import pandas as pd

from capforecast.models.base import (
    ForecastRequest,
    fill_missing,
    future_timestamps,
    model_used_label,
    quantile_frame,
    steps_per,
)
from capforecast.models.fallback import forecast_with_fallback

logger = logging.getLogger(__name__)

# statsforecast's ETS refuses seasons above 24 (measured, see DESIGN.md): longer seasons get a
# non-seasonal ETS, flagged in model_used.
MAX_ETS_SEASON = 24
ALIAS = "model"  # statsforecast column prefix for whichever model runs
# Passed to every STL fit of MSTL: robust fitting down-weights one-off spikes and dips.
MSTL_STL_KWARGS: dict[str, Any] = {"robust": True}


def autoets(request: ForecastRequest, model_cfg: dict[str, Any]) -> pd.DataFrame:
    """statsforecast AutoETS with season ``request.season``, with odd-series routing."""
    return forecast_with_fallback(request, model_cfg, "autoets")


def autotheta(request: ForecastRequest, model_cfg: dict[str, Any]) -> pd.DataFrame:
    """statsforecast AutoTheta with season ``request.season``, with odd-series routing."""
    return forecast_with_fallback(request, model_cfg, "autotheta")


def mstl(request: ForecastRequest, model_cfg: dict[str, Any]) -> pd.DataFrame:
    """statsforecast MSTL (daily, plus weekly with two weeks of history), with routing."""
    return forecast_with_fallback(request, model_cfg, "mstl")


def interval_levels(quantiles: tuple[float, ...]) -> dict[float, tuple[str, float | int]]:
    """Map each quantile to the statsforecast interval side and level that gives it.

    ``0.1 -> ("lo", 80)``, ``0.95 -> ("hi", 90)``, ``0.5 -> ("mean", 0)``. Levels are rounded
    (``100 - 200 * 0.1`` is 79.99999999999999 in floating point) and kept as ``int`` when whole,
    because statsforecast names its columns with ``str(level)``.
    """
    mapping: dict[float, tuple[str, float | int]] = {}
    for q in quantiles:
        if np.isclose(q, 0.5):
            mapping[q] = ("mean", 0)
            continue
        level = round(abs(200.0 * q - 100.0), 6)
        mapping[q] = ("lo" if q < 0.5 else "hi", int(level) if level.is_integer() else level)
    return mapping


def autoets_core(request: ForecastRequest, model_cfg: dict[str, Any]) -> pd.DataFrame:
    from statsforecast.models import AutoETS

    if request.season > MAX_ETS_SEASON:
        frame = _statsforecast_forecast(request, AutoETS(season_length=1, alias=ALIAS))
        return frame.assign(model_used=model_used_label("autoets", "nonseasonal: season > 24"))
    return _statsforecast_forecast(request, AutoETS(season_length=request.season, alias=ALIAS))


def autotheta_core(request: ForecastRequest, model_cfg: dict[str, Any]) -> pd.DataFrame:
    from statsforecast.models import AutoTheta

    return _statsforecast_forecast(request, AutoTheta(season_length=request.season, alias=ALIAS))


def mstl_core(request: ForecastRequest, model_cfg: dict[str, Any]) -> pd.DataFrame:
    """MSTL with seasons ``[season, week]`` for series with two weeks of data, else ``[season]``.

    Robust STL (outliers down-weighted in the seasonal fit) and a non-seasonal AutoTheta as the
    trend forecaster; see the module docstring for why.
    """
    from statsforecast.models import MSTL, AutoTheta

    weekly = steps_per("7D", request.freq)
    lengths = request.history.groupby("series_id", sort=False).size()
    with_weekly = set(lengths.index[lengths >= 2 * weekly]) if weekly > request.season else set()
    frames = []
    for seasons, chosen in (
        ([request.season, weekly], request.history["series_id"].isin(with_weekly)),
        ([request.season], ~request.history["series_id"].isin(with_weekly)),
    ):
        if chosen.any():
            sub = _replace_history(request, request.history.loc[chosen])
            model = MSTL(
                season_length=seasons,
                trend_forecaster=AutoTheta(),
                stl_kwargs=dict(MSTL_STL_KWARGS),
                alias=ALIAS,
            )
            frames.append(_statsforecast_forecast(sub, model))
    return pd.concat(frames, ignore_index=True)


def _replace_history(request: ForecastRequest, history: pd.DataFrame) -> ForecastRequest:
    return dataclasses.replace(request, history=history.reset_index(drop=True))


def _statsforecast_forecast(request: ForecastRequest, model: Any) -> pd.DataFrame:
    """Fit ``model`` on every series of the request and read the requested quantiles."""
    from statsforecast import StatsForecast

    history = request.history
    filled = history.groupby("series_id", sort=False)["y"].transform(
        lambda y: pd.Series(fill_missing(y.to_numpy()), index=y.index)
    )
    frame = pd.DataFrame(
        {"unique_id": history["series_id"].astype(str), "ds": history["timestamp"], "y": filled}
    )
    mapping = interval_levels(request.quantiles)
    levels = sorted({level for side, level in mapping.values() if side != "mean"})
    engine = StatsForecast(models=[model], freq=request.freq, n_jobs=request.n_jobs)
    raw = engine.forecast(df=frame, h=request.horizon, level=levels or None)
    return _to_contract(raw, history, request, mapping)


def _to_contract(
    raw: pd.DataFrame,
    history: pd.DataFrame,
    request: ForecastRequest,
    mapping: dict[float, tuple[str, float | int]],
) -> pd.DataFrame:
    """statsforecast output -> contract columns, timestamps regenerated from each series' grid."""
    column_of: dict[float, str] = {
        q: ALIAS if side == "mean" else f"{ALIAS}-{side}-{level}"
        for q, (side, level) in mapping.items()
    }
    last_timestamps = history.groupby("series_id", sort=False)["timestamp"].last()
    frames = []
    for sid, group in raw.groupby("unique_id", sort=False):
        group = group.sort_values("ds")
        frames.append(
            quantile_frame(
                str(sid),
                # Regenerated rather than trusted, so they continue the input grid exactly.
                future_timestamps(last_timestamps[sid], request.horizon, request.freq),
                group[ALIAS].to_numpy(dtype=float),
                {q: group[column].to_numpy(dtype=float) for q, column in column_of.items()},
            )
        )
    return pd.concat(frames, ignore_index=True)
