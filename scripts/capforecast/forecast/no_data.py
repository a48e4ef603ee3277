"""Series without one usable row stay visible from the quality table to the risk report.

A series whose rows were all quarantined (every value negative, NaN, a percentage far above
100, ...) has no clean data, so no model ever sees it. Instead of vanishing after the quality
table (flag ``all_quarantined``), it gets

* forecast rows: ``model = "selected"``, NaN mean and quantiles, ``model_used = "none
  (no_data)"`` (the label the models give an all-NaN series), on the fleet's forecast timestamps
  (those of the series whose forecast starts latest, the fleet's present);
* a risk row: ``metric_finding = no_data`` (the resource's finding too when it has no other
  series), never scored, sized, counted at risk or planned (see :mod:`capforecast.risk.assess`).
"""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

from capforecast.contracts import FLAG_NO_DATA, model_used_label, series_id

NO_DATA = FLAG_NO_DATA
NO_DATA_MODEL_USED = model_used_label("none", FLAG_NO_DATA)
NO_DATA_REASON = "no data: every row of the series was quarantined (data_quality.csv)"
_KEYS = ["resource_id", "metric"]


def series_without_data(quality: pd.DataFrame) -> pd.DataFrame:
    """``resource_id, metric`` of the quality table's series that kept no row."""
    kept = pd.to_numeric(quality["rows_kept"], errors="coerce").fillna(0)
    return quality.loc[kept == 0, _KEYS].drop_duplicates().reset_index(drop=True)


def forecast_rows(quality: pd.DataFrame, selected: pd.DataFrame) -> pd.DataFrame:
    """NaN ``selected`` forecast rows (columns of ``selected``) for every series of the quality
    table that kept no row and has no forecast, on the fleet's forecast timestamps."""
    latest = LatestStamps()
    latest.add(selected)
    return missing_series_rows(quality, selected[_KEYS], latest.stamps(), selected.columns)


class LatestStamps:
    """The fleet's forecast timestamps, gathered shard by shard: those of the series whose
    forecast starts latest (the first such series by id, as over the whole fleet at once)."""

    def __init__(self) -> None:
        self._start: pd.Timestamp | None = None
        self._series: str | None = None
        self._stamps = pd.DataFrame(columns=["timestamp"])

    def add(self, selected: pd.DataFrame) -> None:
        if selected.empty:
            return
        starts = selected.groupby("series_id")["timestamp"].min()
        start = starts.max()
        present = str(starts[starts == start].index[0])
        if (
            self._start is None
            or start > self._start
            or (start == self._start and present < str(self._series))
        ):
            self._start, self._series = start, present
            stamps = selected.loc[selected["series_id"] == present, ["timestamp"]]
            self._stamps = stamps.sort_values("timestamp").reset_index(drop=True)

    def stamps(self) -> pd.DataFrame:
        """``timestamp`` rows, sorted (none before any forecast was added)."""
        return self._stamps


def missing_series_rows(
    quality: pd.DataFrame,
    known: pd.DataFrame,
    stamps: pd.DataFrame,
    columns: Sequence[str],
) -> pd.DataFrame:
    """NaN ``selected`` rows with ``columns`` on ``stamps`` for every series of the quality table
    that kept no row and is not among ``known`` (``resource_id, metric`` with a forecast)."""
    empty = series_without_data(quality)
    known_keys = pd.MultiIndex.from_frame(known[_KEYS].astype(str).drop_duplicates())
    empty = empty[~pd.MultiIndex.from_frame(empty.astype(str)).isin(known_keys)]
    if empty.empty or stamps.empty:
        return pd.DataFrame(columns=list(columns))
    rows = empty.merge(stamps, how="cross")
    rows = rows.assign(
        series_id=[
            series_id(str(r), str(m))
            for r, m in zip(rows["resource_id"], rows["metric"], strict=True)
        ],
        model="selected",
        model_used=NO_DATA_MODEL_USED,
        fallback_reason=NO_DATA_REASON,
    )
    return rows.reindex(columns=list(columns))


def all_nan_series(fan: pd.DataFrame, quantile_columns: list[str]) -> pd.DataFrame:
    """``resource_id, metric`` of the forecast series whose every quantile is NaN."""
    has_value = fan[quantile_columns].notna().any(axis=1)
    any_value = has_value.groupby([fan[k] for k in _KEYS]).any()
    return any_value[~any_value].index.to_frame(index=False)
