"""Models fitted on a log scale: ``theta_log`` and ``autoets_log``.

Fleet metrics are nonnegative and their noise grows with the load: request counts, bytes and
CPU vary more in busy hours than in quiet ones, and burst on a low base. On their own scale
Theta and ETS read one set of residual quantiles for every hour, too wide when the load is low
and too narrow when it is high. On ``z = log1p(y / s)``, with ``s`` a series' median positive
value in the history it is given (the training window in a backtest), the noise is closer to one
size at every hour; the model (``stats.theta_core``, ``stats.autoets_core``) reads its quantiles
there as usual (the configured ``models.intervals``). ``expm1(z) * s`` is increasing, so it maps
each quantile back to the same quantile on the original scale, and the point forecast is the
median. ``s`` makes the transform scale-free: bytes and percent are treated alike.

A series with a negative value, or none above zero, is fitted on its own scale (the standard
model): the transform is undefined there, or says nothing.

Both were chosen on the tuning halves of the accuracy benchmark (tests/benchmarks), each in place
of its own-scale model in ``models.enabled``; ``selected``'s relgm before -> after:

| tuning half | MASE, theta_log | WQL, theta_log | MASE, autoets_log | WQL, autoets_log |
|---|---|---|---|---|
| NAB, H = 24 | 0.725 -> 0.676 | 0.421 -> 0.383 | 0.676 -> 0.646 | 0.383 -> 0.357 |
| Bitbrains, H = 24 | 0.734 -> 0.728 | 0.257 -> 0.244 | 0.728 -> 0.729 | 0.244 -> 0.240 |
| Bitbrains, H = 168 | 0.882 -> 0.882 | 0.306 -> 0.312 | 0.882 -> 0.879 | 0.312 -> 0.312 |

(the autoets_log columns start from the theta_log default). Alone, ``autoets_log`` beat
``autoets`` on both metrics in all three tuning settings (MASE relgm NAB 0.781 against 1.036,
Bitbrains H = 24 0.825 against 0.879, H = 168 0.950 against 1.041).

Not kept, on the same halves:
- Square root in place of the log for Theta gave less on NAB (0.684 / 0.387) and also cost WQL at
  H = 168 (0.313). Keeping Theta's own quantiles, moved to the log-scale median, kept H = 168's
  WQL (0.307) but gave less elsewhere (NAB WQL 0.396). Added next to ``theta`` instead of
  replacing it, ``selected`` was worse on NAB's MASE (0.750 against 0.725 without either).
- ``autoets_log`` next to ``autoets`` rather than in its place: NAB MASE 0.660 and H = 168 MASE
  0.897, against 0.646 and 0.879.
- MSTL on the log scale in place of ``mstl``: NAB WQL 0.485 against 0.383 (its trend, extrapolated
  on the log scale, is exponential on the original one); with ``autoets_log`` as well, NAB
  0.664 / 0.388 against 0.646 / 0.357.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np
import pandas as pd

from capforecast.forecast.models.base import ForecastRequest, quantile_column
from capforecast.forecast.models.stats import autoets_core, theta_core
from capforecast.settings import ModelSettings


def log_scales(history: pd.DataFrame) -> pd.Series:
    """Per series id: the median of its positive values, NaN where the log transform is not
    used (a negative value, or no positive one)."""
    y = history["y"]
    by_series = y.groupby(history["series_id"], sort=False)
    scale = y.where(y > 0).groupby(history["series_id"], sort=False).median()
    usable = by_series.min().reindex(scale.index) >= 0
    return scale.where(usable & (scale > 0))


CoreFn = Callable[[ForecastRequest, ModelSettings], pd.DataFrame]


def _fit(
    core: CoreFn, request: ForecastRequest, history: pd.DataFrame, model_cfg: ModelSettings
) -> pd.DataFrame:
    """``core`` on these series of the request."""
    return core(dataclasses.replace(request, history=history.reset_index(drop=True)), model_cfg)


def on_log_scale(core: CoreFn, request: ForecastRequest, model_cfg: ModelSettings) -> pd.DataFrame:
    """``core`` on ``log1p(y / s)`` per series, quantiles mapped back (module docstring); on
    the original scale for series the transform does not suit."""
    history = request.history
    scales = log_scales(history)
    scale = history["series_id"].map(scales)
    logged = scale.notna().to_numpy()
    frames = []
    if logged.any():
        part = history.loc[logged]
        part = part.assign(y=np.log1p(part["y"] / scale[logged]))
        out = _fit(core, request, part, model_cfg)
        back = out["series_id"].map(scales).to_numpy()
        values = ["mean", *(quantile_column(q) for q in request.quantiles)]
        out[values] = np.expm1(out[values].to_numpy(dtype=float)) * back[:, None]
        frames.append(out)
    if not logged.all():
        frames.append(_fit(core, request, history.loc[~logged], model_cfg))
    return pd.concat(frames, ignore_index=True)


def theta_log_core(request: ForecastRequest, model_cfg: ModelSettings) -> pd.DataFrame:
    """The standard Theta method on the log scale."""
    return on_log_scale(theta_core, request, model_cfg)


def autoets_log_core(request: ForecastRequest, model_cfg: ModelSettings) -> pd.DataFrame:
    """AutoETS (its search and form reuse as ``stats.autoets_core``) on the log scale."""
    return on_log_scale(autoets_core, request, model_cfg)
