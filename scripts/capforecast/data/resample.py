"""Resample validated rows onto a regular grid at ``etl.freq``, one grid per series.

Each series gets every bin from its first to its last observed bin. A bin holds the mean and
the max of its raw samples and their count. Runs of empty bins no longer than
``etl.max_fill_gap`` are filled by linear interpolation between the neighbouring observed bins
(``is_filled``); longer runs stay NaN (``is_gap``).

The work is done on flat numpy arrays (run boundaries + ``reduceat``) rather than per-series
pandas resampling: one pass over sorted data, no Python loop over rows or series.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from capforecast.contracts import CLEAN_COLUMNS
from capforecast.data import columnar
from capforecast.settings import EtlSettings


def freq_nanoseconds(freq: str) -> int:
    """Length of one bin of ``freq`` (e.g. "1h", "15min") in nanoseconds."""
    step = pd.Timedelta(freq)
    if step <= pd.Timedelta(0):
        raise ValueError(f"frequency must be positive, got {freq!r}")
    return int(step.value)


def empty_clean_frame() -> pd.DataFrame:
    """A zero-row frame with the clean columns and dtypes."""
    return pd.DataFrame(
        {
            "timestamp": pd.Series(dtype="datetime64[ns, UTC]"),
            "resource_id": pd.Series(dtype=object),
            "metric": pd.Series(dtype=object),
            "value": pd.Series(dtype="float64"),
            "value_max": pd.Series(dtype="float64"),
            "n_obs": pd.Series(dtype="int64"),
            "is_filled": pd.Series(dtype=bool),
            "is_gap": pd.Series(dtype=bool),
        }
    ).loc[:, list(CLEAN_COLUMNS)]


def _text_codes(column: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """Codes into the sorted distinct names of an identifier column (categorical: from its
    codes, without hashing)."""
    factorised = columnar.category_codes(column)
    if factorised is not None:
        return factorised
    codes, names = pd.factorize(column, sort=True)
    return codes.astype("int64"), np.asarray(names, dtype=object)


def _pair_codes(kept: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """Integer code per row, ordered like (resource_id, metric) (``rid * n_met + met`` into the
    sorted names), the names and ``n_met``. Rows must name a resource and a metric."""
    rid_codes, rid_names = _text_codes(kept["resource_id"])
    met_codes, met_names = _text_codes(kept["metric"])
    n_met = max(len(met_names), 1)
    fits = len(rid_names) * n_met < np.iinfo("int32").max  # int32: half the memory traffic
    pair = rid_codes.astype("int32" if fits else "int64")
    pair *= n_met
    pair += met_codes
    return pair, rid_names, met_names, n_met


def _run_lengths(mask: np.ndarray, owner: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Run id per True element of ``mask`` (runs break at False and where ``owner`` changes)
    and the length of each run."""
    starts = mask.copy()
    starts[1:] &= ~mask[:-1] | (owner[1:] != owner[:-1])
    run_id = np.cumsum(starts) - 1
    lengths = np.bincount(run_id[mask], minlength=int(starts.sum()))
    return run_id, lengths


def resample_series(kept: pd.DataFrame, etl: EtlSettings) -> pd.DataFrame:
    """Regular grid per series (contracts.CLEAN_COLUMNS), sorted by resource_id, metric,
    timestamp, with bin-start timestamps in UTC.

    ``kept`` is :attr:`ValidationResult.kept` (finite values; order and duplicates do not
    matter here). Bins are aligned to the epoch (``1h`` bins start on the hour).
    """
    if len(kept) == 0:
        return empty_clean_frame()
    step = freq_nanoseconds(str(etl.freq))
    max_fill = int(etl.max_fill_gap)

    values = kept["value"].to_numpy(dtype="float64")
    if not np.isfinite(values).all():
        raise ValueError("resample_series expects validated rows: found NaN or infinite values")
    stamps = kept["timestamp"]
    if not isinstance(stamps.dtype, pd.DatetimeTZDtype):
        raise ValueError("resample_series expects tz-aware UTC timestamps")
    ns = columnar.utc_nanoseconds(stamps)
    if ns is None:
        ns = stamps.dt.tz_convert("UTC").astype("datetime64[ns, UTC]").array.asi8
    if (ns == columnar.NAT).any():
        raise ValueError("resample_series expects validated rows: found missing timestamps")

    pair, rid_names, met_names, n_met = _pair_codes(kept)
    bins = np.floor_divide(ns, step)
    # Validated data arrive sorted; only sort when they do not (lexsort is the costly part).
    if not columnar.is_sorted(pair) or not columnar.within_group_sorted(pair, bins):
        order = np.lexsort((bins, pair))
        pair, bins, values = pair[order], bins[order], values[order]

    # One aggregate per (series, bin) run of the sorted rows.
    new_run = np.empty(len(bins), dtype=bool)
    new_run[0] = True
    new_run[1:] = (bins[1:] != bins[:-1]) | (pair[1:] != pair[:-1])
    run_starts = np.flatnonzero(new_run)
    run_pair = pair[run_starts]
    # Dense series codes in key order, from the runs (far fewer than rows).
    uniques = columnar.distinct(run_pair)
    run_code = np.searchsorted(uniques, run_pair)
    names_rid = rid_names[uniques // n_met]
    names_met = met_names[uniques % n_met]
    run_bin = bins[run_starts]
    run_count = np.diff(np.append(run_starts, len(bins)))
    run_mean = np.add.reduceat(values, run_starts) / run_count
    run_max = np.maximum.reduceat(values, run_starts)

    # The grid: for each series every bin from its first to its last observed bin.
    # Runs are sorted by series then bin, and every series code occurs.
    n_series = len(names_rid)
    series_start = np.flatnonzero(np.r_[True, run_code[1:] != run_code[:-1]])
    series_end = np.r_[series_start[1:], len(run_code)] - 1
    first_bin = run_bin[series_start]
    last_bin = run_bin[series_end]
    length = last_bin - first_bin + 1
    offset = np.concatenate(([0], np.cumsum(length)[:-1]))
    total = int(length.sum())
    grid_code = np.repeat(np.arange(n_series), length)
    grid_bin = np.repeat(first_bin - offset, length) + np.arange(total)

    mean = np.full(total, np.nan)
    vmax = np.full(total, np.nan)
    n_obs = np.zeros(total, dtype="int64")
    pos = offset[run_code] + (run_bin - first_bin[run_code])
    mean[pos] = run_mean
    vmax[pos] = run_max
    n_obs[pos] = run_count

    # Empty bins: their runs are always interior (a series starts and ends on an observed bin),
    # so the previous/next observed bin always belongs to the same series.
    empty = n_obs == 0
    is_filled = np.zeros(total, dtype=bool)
    is_gap = np.zeros(total, dtype=bool)
    if empty.any():
        run_id, run_len = _run_lengths(empty, grid_code)
        short = np.zeros(total, dtype=bool)
        short[empty] = run_len[run_id[empty]] <= max_fill
        is_filled = short
        is_gap = empty & ~short
        if short.any():
            idx = np.arange(total)
            prev_obs = np.maximum.accumulate(np.where(empty, -1, idx))
            next_obs = np.minimum.accumulate(np.where(empty, total, idx)[::-1])[::-1]
            at = np.flatnonzero(short)
            lo, hi = prev_obs[at], next_obs[at]
            weight = (at - lo) / (hi - lo)
            mean[at] = mean[lo] + (mean[hi] - mean[lo]) * weight
            vmax[at] = vmax[lo] + (vmax[hi] - vmax[lo]) * weight

    return pd.DataFrame(
        {
            "timestamp": columnar.utc_timestamps(grid_bin * step),
            "resource_id": names_rid[grid_code],
            "metric": names_met[grid_code],
            "value": mean,
            "value_max": vmax,
            "n_obs": n_obs,
            "is_filled": is_filled,
            "is_gap": is_gap,
        },
        columns=list(CLEAN_COLUMNS),
        copy=False,  # every array is new
    )
