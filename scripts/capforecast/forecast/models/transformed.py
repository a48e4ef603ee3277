"""Theta fitted on a log scale: ``theta_log``.

Fleet metrics are nonnegative and their noise grows with the load: request counts, bytes and
CPU vary more in busy hours than in quiet ones, and burst on a low base. On their own scale
Theta reads one set of residual quantiles for every hour, too wide when the load is low and too
narrow when it is high. On ``z = log1p(y / s)``, with ``s`` a series' median positive value in
the history it is given (the training window in a backtest), the noise is closer to one size at
every hour; the model (``stats.theta_core``) reads its quantiles there as usual (the configured
``models.intervals``). ``expm1(z) * s`` is increasing, so it maps each quantile
back to the same quantile on the original scale, and the point forecast is the median. ``s``
makes the transform scale-free: bytes and percent are treated alike.

A series with a negative value, or none above zero, is fitted on its own scale (the standard
Theta of ``stats.theta_core``): the transform is undefined there, or says nothing.

Chosen on the tuning halves of the accuracy benchmark (tests/benchmarks), ``theta_log`` in
place of ``theta`` in ``models.enabled``, selected's relgm before -> after:

| tuning half | MASE | WQL |
|---|---|---|
| NAB, H = 24 | 0.725 -> 0.676 | 0.421 -> 0.383 |
| Bitbrains, H = 24 | 0.734 -> 0.728 | 0.257 -> 0.244 |
| Bitbrains, H = 168 | 0.882 -> 0.882 | 0.306 -> 0.312 |

Square root in place of the log gave less on NAB (0.684 / 0.387) and also cost WQL at H = 168
(0.313). Keeping Theta's own quantiles, moved to the log-scale median, kept H = 168's WQL
(0.307) but gave less elsewhere (NAB WQL 0.396). Added next to ``theta`` instead of replacing
it, ``selected`` was worse on NAB's MASE (0.750 against 0.725 without either).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd

from capforecast.forecast.models.base import ForecastRequest, quantile_column
from capforecast.forecast.models.stats import theta_core
from capforecast.settings import ModelSettings


def log_scales(history: pd.DataFrame) -> pd.Series:
    """Per series id: the median of its positive values, NaN where the log transform is not
    used (a negative value, or no positive one)."""
    y = history["y"]
    by_series = y.groupby(history["series_id"], sort=False)
    scale = y.where(y > 0).groupby(history["series_id"], sort=False).median()
    usable = by_series.min().reindex(scale.index) >= 0
    return scale.where(usable & (scale > 0))


def _theta(
    request: ForecastRequest, history: pd.DataFrame, model_cfg: ModelSettings
) -> pd.DataFrame:
    """``stats.theta_core`` on these series of the request."""
    return theta_core(
        dataclasses.replace(request, history=history.reset_index(drop=True)), model_cfg
    )


def theta_log_core(request: ForecastRequest, model_cfg: ModelSettings) -> pd.DataFrame:
    """Standard Theta on ``log1p(y / s)`` per series, quantiles mapped back (module docstring)."""
    history = request.history
    scales = log_scales(history)
    scale = history["series_id"].map(scales)
    logged = scale.notna().to_numpy()
    frames = []
    if logged.any():
        part = history.loc[logged]
        part = part.assign(y=np.log1p(part["y"] / scale[logged]))
        out = _theta(request, part, model_cfg)
        back = out["series_id"].map(scales).to_numpy()
        values = ["mean", *(quantile_column(q) for q in request.quantiles)]
        out[values] = np.expm1(out[values].to_numpy(dtype=float)) * back[:, None]
        frames.append(out)
    if not logged.all():
        frames.append(_theta(request, history.loc[~logged], model_cfg))
    return pd.concat(frames, ignore_index=True)
