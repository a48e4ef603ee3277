"""The history cut of the decision backtest (``data.history_end``) and its held-back actuals.

Raw samples at or after the cut never reach the workflow's history (cleaning, features, models,
risk): the workflow runs as if the cut were "now". The first ``forecast.horizon`` bins after the
cut, validated and resampled by the same code as the history, are the actuals the ``decision``
target scores the risk report against (:mod:`capforecast.decision.scores`).

Accounting: every raw row of a file is kept, quarantined or held back
(``rows_in = rows_kept + rows_quarantined + rows_held_back``); rows with a missing timestamp stay
on the history side, where validation quarantines them. Held-back rows beyond the horizon are
counted (``rows_beyond_horizon``), never scored.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from capforecast.data.quality import RECONCILIATION_COLUMNS, file_reconciliation
from capforecast.data.resample import resample_series
from capforecast.data.validate import ValidationResult, timestamps_ns, validate_rows
from capforecast.errors import ConfigError
from capforecast.settings import EtlSettings
from capforecast.timestamps import HISTORY_END_KEY, parse_history_end

# Columns of the per-file accounting of the actuals window (results/holdout/*.reconciliation.csv).
HOLDOUT_RECONCILIATION_COLUMNS: tuple[str, ...] = (
    *RECONCILIATION_COLUMNS,
    "rows_beyond_horizon",
)


@dataclass(frozen=True)
class Cut:
    """Where the history ends and which bins after it are scored.

    history_end: first held-back instant (exclusive end of the history), on an etl.freq bin
      boundary. actuals_end: history_end + horizon bins (exclusive end of the scored actuals).
    """

    history_end: pd.Timestamp
    freq: pd.Timedelta
    horizon: int

    @property
    def actuals_end(self) -> pd.Timestamp:
        return self.history_end + self.horizon * self.freq

    @property
    def last_bin(self) -> pd.Timestamp:
        """Start of the last scored bin."""
        return self.actuals_end - self.freq


def cut_from_config(cfg: Mapping[str, Any]) -> Cut | None:
    """The cut of a validated config (``data``, ``etl``, ``forecast`` sections), or None."""
    history_end = parse_history_end(cfg["data"].get("history_end"), cfg["etl"]["freq"])
    if history_end is None:
        return None
    return Cut(
        history_end=history_end,
        freq=pd.Timedelta(cfg["etl"]["freq"]),
        horizon=int(cfg["forecast"]["horizon"]),
    )


def held_back_mask(raw: pd.DataFrame, history_end: pd.Timestamp | None) -> np.ndarray:
    """True for raw rows at or after the cut (rows without a timestamp are never held back)."""
    if history_end is None:
        return np.zeros(len(raw), dtype=bool)
    stamps, missing = timestamps_ns(raw)
    return ~missing & (stamps >= history_end.value)


def _validate_subset(
    raw: pd.DataFrame, rows: np.ndarray, etl: EtlSettings, source_file: str
) -> ValidationResult:
    """validate_rows on ``raw`` rows at positions ``rows``; quarantine rows keep raw positions."""
    result = validate_rows(raw.iloc[rows], etl, source_file)
    quarantine = result.quarantine.copy()
    quarantine["row"] = rows[quarantine["row"].to_numpy(dtype="int64")].astype("int64")
    return dataclasses.replace(result, quarantine=quarantine)


def validate_history(
    raw: pd.DataFrame,
    etl: EtlSettings,
    source_file: str,
    history_end: pd.Timestamp | None,
) -> tuple[ValidationResult, pd.DataFrame, int]:
    """Validate the raw rows before the cut.

    Returns the validation, the raw history rows and the held-back row count. Quarantine
    ``row`` numbers stay positions in the whole raw partition.
    """
    raw = raw.reset_index(drop=True)
    held = held_back_mask(raw, history_end)
    history = np.flatnonzero(~held)
    result = _validate_subset(raw, history, etl, source_file)
    return result, raw.iloc[history], int(held.sum())


def reconciliation_with_held_back(reconciliation: pd.DataFrame, held_back: int) -> pd.DataFrame:
    """The per-file reconciliation of the history plus the rows held back after the cut.

    ``rows_in`` becomes every row of the file; ``balanced`` checks
    rows_in = rows_kept + rows_quarantined + rows_held_back.
    """
    out = reconciliation.copy()
    out["rows_in"] = out["rows_in"] + held_back
    out.insert(list(out.columns).index("rows_quarantined") + 1, "rows_held_back", held_back)
    out["balanced"] = out["rows_in"] == (
        out["rows_kept"] + out["rows_quarantined"] + out["rows_held_back"]
    )
    return out


def holdout_actuals(
    raw: pd.DataFrame,
    etl: EtlSettings,
    source_file: str,
    partition: str,
    cut: Cut,
) -> tuple[pd.DataFrame, ValidationResult, pd.DataFrame]:
    """Validated, resampled actuals of the scored window [history_end, actuals_end).

    Returns the clean-format frame (contracts.CLEAN_COLUMNS, bins inside the window only), the
    validation of the window's rows, and their accounting row (HOLDOUT_RECONCILIATION_COLUMNS:
    rows_in counts the window's rows, rows_beyond_horizon the held-back rows after it).
    """
    raw = raw.reset_index(drop=True)
    held = held_back_mask(raw, cut.history_end)
    stamps, _ = timestamps_ns(raw)
    in_window = held & (stamps < cut.actuals_end.value)
    result = _validate_subset(raw, np.flatnonzero(in_window), etl, source_file)
    actuals = resample_series(result.kept, etl)
    accounting = file_reconciliation(result, source_file, partition)
    accounting["rows_beyond_horizon"] = int((held & ~in_window).sum())
    return actuals, result, accounting.loc[:, list(HOLDOUT_RECONCILIATION_COLUMNS)]


@dataclass(frozen=True)
class DataSpan:
    """First and last raw timestamp of the fleet (over every partition)."""

    start: pd.Timestamp
    end: pd.Timestamp


def data_span(
    raws: Mapping[str, pd.DataFrame], window: tuple[pd.Timestamp, pd.Timestamp] | None = None
) -> DataSpan | None:
    """Span of the raw timestamps of all partitions (None when no row has a timestamp).

    With ``window`` (etl.timestamp_min/max), only timestamps inside it count: a 9999-12-31
    placeholder, which validation quarantines, must not look like data after the cut.
    """
    starts, ends = [], []
    for raw in raws.values():
        stamps, missing = timestamps_ns(raw)
        stamps = stamps[~missing]
        if window is not None:
            stamps = stamps[(stamps >= window[0].value) & (stamps <= window[1].value)]
        if stamps.size:
            starts.append(int(stamps.min()))
            ends.append(int(stamps.max()))
    if not starts:
        return None
    return DataSpan(pd.Timestamp(min(starts), tz="UTC"), pd.Timestamp(max(ends), tz="UTC"))


def merge_spans(spans: Iterable[DataSpan | None]) -> DataSpan | None:
    """The span covering every given span (None when none has timestamps): the fleet's span
    from its partitions' spans, read one partition at a time."""
    known = [span for span in spans if span is not None]
    if not known:
        return None
    return DataSpan(min(s.start for s in known), max(s.end for s in known))


def check_cut(cut: Cut, span: DataSpan | None) -> None:
    """The cut must leave history before it and forecast.horizon bins of data after it.

    Raises ConfigError naming ``data.history_end``, the data's span and the usable range.
    """
    if span is None:
        raise ConfigError(HISTORY_END_KEY, "the raw data has no timestamps to cut")
    first_bin = span.start.floor(cut.freq)
    last_bin = span.end.floor(cut.freq)
    latest = last_bin - (cut.horizon - 1) * cut.freq
    usable = (
        f"data spans {span.start.isoformat()} .. {span.end.isoformat()}; usable cuts: "
        f"{(first_bin + cut.freq).isoformat()} .. {latest.isoformat()}"
    )
    if cut.history_end <= span.start:
        raise ConfigError(
            HISTORY_END_KEY,
            f"{cut.history_end.isoformat()} is at or before the first sample: no history "
            f"would be left ({usable})",
        )
    if cut.history_end > latest:
        hours = max((last_bin + cut.freq - cut.history_end) / pd.Timedelta(hours=1), 0.0)
        raise ConfigError(
            HISTORY_END_KEY,
            f"{cut.history_end.isoformat()} leaves {hours:g} h of data after it, fewer than "
            f"forecast.horizon ({cut.horizon} bins of {cut.freq}) ({usable})",
        )


def span_record(cut: Cut, span: DataSpan, held_back: Mapping[str, int]) -> dict[str, Any]:
    """JSON-ready description of the cut (results/holdout/span.json)."""
    return {
        "history_end": cut.history_end.isoformat(),
        "actuals_end": cut.actuals_end.isoformat(),
        "horizon_bins": cut.horizon,
        "freq": str(cut.freq),
        "data_start": span.start.isoformat(),
        "data_end": span.end.isoformat(),
        "rows_held_back": dict(sorted(held_back.items())),
    }
