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
    empty = series_without_data(quality)
    known = pd.MultiIndex.from_frame(selected[_KEYS].astype(str).drop_duplicates())
    empty = empty[~pd.MultiIndex.from_frame(empty.astype(str)).isin(known)]
    if empty.empty or selected.empty:
        return selected.iloc[:0]
    starts = selected.groupby("series_id")["timestamp"].min()
    present = starts[starts == starts.max()].index[0]
    stamps = selected.loc[selected["series_id"] == present, ["timestamp"]].sort_values("timestamp")
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
    return rows.reindex(columns=selected.columns)


def all_nan_series(fan: pd.DataFrame, quantile_columns: list[str]) -> pd.DataFrame:
    """``resource_id, metric`` of the forecast series whose every quantile is NaN."""
    has_value = fan[quantile_columns].notna().any(axis=1)
    any_value = has_value.groupby([fan[k] for k in _KEYS]).any()
    return any_value[~any_value].index.to_frame(index=False)
