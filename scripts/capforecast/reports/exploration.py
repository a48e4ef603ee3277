"""The exploration notebooks, one per stage (notebooks/01_ingest.ipynb ... 05_risk.ipynb):
overviews and figures of each stage's outputs. Conventions as in
:mod:`capforecast.reports.common`."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from capforecast.escape import plot_text
from capforecast.reports.common import (
    as_utc,
    data_legend,
    empty_figure,
    figure_grid,
    naive_utc,
    with_series_id,
)


def raw_overview(raw: pd.DataFrame) -> pd.DataFrame:
    """Per partition x metric: series, rows, time span and value range of the raw samples."""
    if raw.empty:
        return pd.DataFrame()
    keys = [c for c in ("partition", "metric") if c in raw.columns]
    frame = raw.assign(timestamp=as_utc(raw["timestamp"]))
    return frame.groupby(keys, as_index=False).agg(
        series=("resource_id", "nunique"),
        rows=("value", "size"),
        missing_values=("value", lambda v: int(v.isna().sum())),
        first=("timestamp", "min"),
        last=("timestamp", "max"),
        value_min=("value", "min"),
        value_median=("value", "median"),
        value_max=("value", "max"),
    )


def samples_per_hour_figure(raw: pd.DataFrame) -> Figure:
    """Raw samples per hour over time, one line per metric (dips show missing data)."""
    if raw.empty:
        return empty_figure(title="Raw samples per hour")
    hours = as_utc(raw["timestamp"]).dt.floor("h")
    counts = raw.assign(hour=hours).groupby(["hour", "metric"]).size().unstack("metric")
    fig = Figure(figsize=(10, 3.2), layout="constrained")
    ax = fig.add_subplot()
    x = naive_utc(pd.Series(counts.index))
    lines = [ax.plot(x, counts[metric].fillna(0), lw=1)[0] for metric in counts.columns]
    ax.set(ylabel="samples per hour", xlabel="UTC", title="Raw samples per hour")
    ax.tick_params(axis="x", rotation=30, labelsize=8)
    data_legend(ax, lines, counts.columns)
    return fig


def clean_overview(clean: pd.DataFrame) -> pd.DataFrame:
    """Per metric: series, hourly bins, share interpolated and share inside long gaps."""
    if clean.empty:
        return pd.DataFrame()
    return clean.groupby("metric", as_index=False).agg(
        series=("resource_id", "nunique"),
        bins=("value", "size"),
        filled_share=("is_filled", "mean"),
        gap_share=("is_gap", "mean"),
        value_mean=("value", "mean"),
    )


def clean_series_figure(clean: pd.DataFrame, series_ids: Sequence[str]) -> Figure:
    """Cleaned hourly series with interpolated points (orange) and gap bins (grey) marked."""
    if clean.empty or not series_ids:
        return empty_figure(title="Cleaned series")
    clean = with_series_id(clean)
    fig, axes = figure_grid(len(series_ids), 2, (6.0, 2.8))
    for ax, sid in zip(axes, series_ids, strict=True):
        part = clean[clean["series_id"] == sid].sort_values("timestamp")
        x = naive_utc(part["timestamp"])
        ax.plot(x, part["value"], lw=0.8, color="0.25")
        filled = part["is_filled"].astype(bool).to_numpy()
        ax.scatter(x[filled], part["value"].to_numpy()[filled], s=8, color="#dd8452", zorder=3)
        for t in x[part["is_gap"].astype(bool).to_numpy()]:
            ax.axvspan(t, t + np.timedelta64(1, "h"), color="0.85", lw=0)
        ax.set_title(plot_text(sid), fontsize=9)
        ax.tick_params(axis="x", rotation=30, labelsize=7)
    fig.suptitle("Cleaned series: filled points orange, gaps grey")
    return fig


def features_overview(features: pd.DataFrame) -> pd.DataFrame:
    """Per metric: series, rows, share of missing targets and target range."""
    if features.empty:
        return pd.DataFrame()
    return features.groupby("metric", as_index=False).agg(
        series=("series_id", "nunique"),
        rows=("y", "size"),
        missing_y=("y", lambda v: float(v.isna().mean())),
        y_min=("y", "min"),
        y_mean=("y", "mean"),
        y_max=("y", "max"),
    )


def hourly_profile_figure(features: pd.DataFrame) -> Figure:
    """Mean target by hour of day per metric, scaled by each metric's overall mean."""
    if features.empty or not {"hour", "metric", "y"} <= set(features.columns):
        return empty_figure(title="Daily profile")
    profile = features.groupby(["metric", "hour"])["y"].mean().unstack("metric")
    scaled = profile / profile.mean()
    fig = Figure(figsize=(8, 3.2), layout="constrained")
    ax = fig.add_subplot()
    lines = [ax.plot(scaled.index, scaled[m], marker="o", ms=3)[0] for m in scaled.columns]
    ax.set(xlabel="hour of day (UTC)", ylabel="mean / overall mean", title="Daily profile")
    data_legend(ax, lines, scaled.columns)
    return fig
