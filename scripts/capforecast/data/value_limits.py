"""Physical ceilings of metric values (``etl.value_limits``): what no real sample can exceed.

A value above its metric's ceiling is no measurement: a corrupt export, a cumulative counter
read as a rate, a float written at its maximum (1.7e308, whose hourly mean overflows to inf).
Validation quarantines such rows (reason ``above_physical_limit``) before anything is averaged,
so no later stage meets a number it cannot add up. Ceilings per metric kind:

* every metric: ``max_value``. It keeps sums of a series' samples finite, whatever the metric.
* byte metrics (``byte_metrics``): ``max_bytes_per_second`` x the series' sample period.
* count metrics (``count_metrics``): ``max_counts_per_second`` x the series' sample period.
* percentages keep their own ceiling, 100 + ``etl.percent_repair_tolerance`` (validate.py).

The sample period of a series is the median step between its distinct raw timestamps (inside
the plausible window), never below one second because some sources report bytes per second
rather than per sample, and ``etl.freq`` for a series with a single timestamp.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

import numpy as np
import pandas as pd

NS_PER_SECOND = 10**9
# (metrics key, rate key) of each metric kind whose ceiling grows with the sample period.
RATE_KINDS: tuple[tuple[str, str], ...] = (
    ("byte_metrics", "max_bytes_per_second"),
    ("count_metrics", "max_counts_per_second"),
)


def rows_of_metrics(
    metric_names: np.ndarray, row_metric: np.ndarray, metrics: Iterable[str]
) -> np.ndarray:
    """True for rows whose metric (code ``row_metric`` into ``metric_names``; -1 = missing) is
    one of ``metrics``."""
    wanted = set(metrics)
    is_wanted = np.array([str(name) in wanted for name in metric_names], dtype=bool)
    codes = np.flatnonzero(is_wanted)
    if len(codes) <= 4:  # a comparison per wanted code beats a gather with a row index
        rows = np.zeros(len(row_metric), dtype=bool)
        for code in codes:
            rows |= row_metric == int(code)  # a Python int keeps the codes' dtype
        return rows
    return np.append(is_wanted, False)[row_metric]  # code -1 -> the appended False


def sample_periods_seconds(
    series: np.ndarray, stamps: np.ndarray, timed: np.ndarray, default_seconds: float
) -> dict[int, float]:
    """Median step (seconds, at least 1) between the distinct timestamps of each series code
    among the rows ``timed``; ``default_seconds`` for a series with a single timestamp."""
    code, ts = series[timed], stamps[timed]
    order = np.lexsort((ts, code))
    code, ts = code[order], ts[order]
    distinct = np.r_[True, (code[1:] != code[:-1]) | (ts[1:] != ts[:-1])]
    code, ts = code[distinct], ts[distinct]
    within = code[1:] == code[:-1]
    steps = pd.Series((ts[1:] - ts[:-1])[within] / NS_PER_SECOND)
    medians = steps.groupby(code[1:][within]).median()
    periods = {int(c): float(default_seconds) for c in np.unique(code)}
    periods.update({int(c): max(1.0, float(m)) for c, m in medians.items()})
    return periods


def above_physical_limit(
    values: np.ndarray,
    *,
    series: np.ndarray,
    stamps: np.ndarray,
    timed: np.ndarray | Callable[[], np.ndarray],
    metric_names: np.ndarray,
    row_metric: np.ndarray,
    limits: Mapping[str, Any],
    freq_seconds: float,
) -> np.ndarray:
    """True for rows whose value exceeds the ceiling of their metric's kind.

    ``series``: series code per row (-1 = no series); ``stamps``: int64 ns; ``timed``: rows
    whose timestamp may count towards a sample period (keyed, present, inside the window), or a
    function giving them (called only when some value needs its series' period).
    NaN values compare False (validation gives them their own reason).
    """
    lowest = min(float(limits["max_value"]), *(float(limits[key]) for _, key in RATE_KINDS))
    with np.errstate(invalid="ignore"):
        if not (values > lowest).any():  # the usual case: no value near any ceiling
            return np.zeros(len(values), dtype=bool)
        over = values > float(limits["max_value"])
        for metrics_key, rate_key in RATE_KINDS:
            rate = float(limits[rate_key])
            # A value within one second's worth passes whatever the period: only the rows above
            # it need their series' period (none at all on real data).
            suspect = values > rate
            if not suspect.any():
                continue
            suspect &= rows_of_metrics(metric_names, row_metric, limits[metrics_key])
            suspect &= series >= 0
            if not suspect.any():
                continue
            in_suspect_series = np.isin(series, np.unique(series[suspect]))
            if callable(timed):
                timed = timed()
            periods = sample_periods_seconds(
                series, stamps, timed & in_suspect_series, freq_seconds
            )
            period = np.array([periods.get(int(c), freq_seconds) for c in series[suspect]])
            over[suspect] |= values[suspect] > rate * period
    return over
