"""The data-quality report (notebooks/data_quality.ipynb): headline, flagged series, quarantine
reasons, coverage and gaps. Conventions as in :mod:`capforecast.reports.common`."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from capforecast.escape import markdown_text, plot_text
from capforecast.reports.common import (
    empty_figure,
    figure_grid,
    parquet_files,
    with_series_id,
)

FLAGGED_SERIES_COLUMNS: tuple[str, ...] = (
    "partition",
    "resource_id",
    "metric",
    "flags",
    "coverage",
    "gap_count",
    "longest_gap_bins",
    "rows_quarantined",
    "pegged_fraction",
    "history_hours",
)


def split_flags(flags: pd.Series) -> pd.Series:
    """Semicolon-joined flag strings as lists (blank or NaN -> [])."""
    return (
        flags.fillna("").astype(str).map(lambda s: [f.strip() for f in s.split(";") if f.strip()])
    )


def flagged_mask(quality: pd.DataFrame) -> pd.Series:
    """Series with at least one quality flag, or marked too short for modelling."""
    flagged = split_flags(quality["flags"]).map(bool) if "flags" in quality else False
    short = quality["too_short"].fillna(False).astype(bool) if "too_short" in quality else False
    return pd.Series(flagged | short, index=quality.index, dtype=bool)


def quality_totals(
    quality: pd.DataFrame, reconciliation: pd.DataFrame | None = None
) -> dict[str, int]:
    """Fleet-wide counts for the headline.

    Row counts come from the per-file reconciliation when given (it also counts rows whose
    series could not be identified), else from the per-series table.
    """
    rows = reconciliation if reconciliation is not None and len(reconciliation) else quality
    counts = {
        name: int(pd.to_numeric(rows[name], errors="coerce").fillna(0).sum()) if name in rows else 0
        for name in ("rows_in", "rows_kept", "rows_repaired", "rows_quarantined")
    }
    unbalanced = 0
    if reconciliation is not None and "balanced" in reconciliation:
        unbalanced = int((~reconciliation["balanced"].astype(bool)).sum())
    return {
        "series": len(quality),
        "resources": int(quality["resource_id"].nunique()) if "resource_id" in quality else 0,
        "partitions": int(quality["partition"].nunique()) if "partition" in quality else 0,
        **counts,
        "flagged_series": int(flagged_mask(quality).sum()) if len(quality) else 0,
        "too_short": int(quality["too_short"].fillna(False).astype(bool).sum())
        if "too_short" in quality
        else 0,
        "unbalanced_files": unbalanced,
    }


def flag_counts(quality: pd.DataFrame) -> pd.DataFrame:
    """How many series carry each flag, most common first."""
    if "flags" not in quality or quality.empty:
        return pd.DataFrame({"flag": pd.Series(dtype=str), "series": pd.Series(dtype=int)})
    exploded = split_flags(quality["flags"]).explode().dropna()
    counts = exploded.value_counts()
    table = pd.DataFrame({"flag": counts.index.astype(str), "series": counts.to_numpy()})
    return table.sort_values(["series", "flag"], ascending=[False, True], ignore_index=True)


def quality_headline(quality: pd.DataFrame, reconciliation: pd.DataFrame | None = None) -> str:
    """Markdown headline: what was read, what was kept, and how many series need a look."""
    t = quality_totals(quality, reconciliation)
    share = t["rows_quarantined"] / t["rows_in"] if t["rows_in"] else 0.0
    lines = [
        f"**{t['series']} series** from {t['resources']} resources in {t['partitions']} "
        f"partitions. Rows read {t['rows_in']:,}: kept {t['rows_kept']:,} "
        f"(repaired {t['rows_repaired']:,}), quarantined {t['rows_quarantined']:,} "
        f"({share:.1%})."
    ]
    if t["flagged_series"]:
        top = flag_counts(quality).head(3)
        common = ", ".join(f"{markdown_text(r.flag)} ({r.series})" for r in top.itertuples())
        lines.append(
            f"**{t['flagged_series']} series flagged** (look at these first); "
            f"most common: {common}."
        )
    else:
        lines.append("No series flagged.")
    if t["too_short"]:
        lines.append(f"{t['too_short']} series are too short to forecast.")
    if t["unbalanced_files"]:
        n = t["unbalanced_files"]
        lines.append(
            f"**{n} source file{'s do' if n != 1 else ' does'} not reconcile** "
            "(rows in != kept + quarantined + merged duplicates)."
        )
    return "\n\n".join(lines)


def flagged_series_table(quality: pd.DataFrame) -> pd.DataFrame:
    """Flagged or too-short series, worst coverage first."""
    columns = [c for c in FLAGGED_SERIES_COLUMNS if c in quality.columns]
    if quality.empty:
        return pd.DataFrame(columns=columns)
    flagged = quality[flagged_mask(quality)]
    order = [c for c in ("coverage", "resource_id", "metric") if c in flagged.columns]
    return flagged.sort_values(order, ignore_index=True)[columns]


def quarantine_reason_counts(quarantine: pd.DataFrame) -> pd.DataFrame:
    """Quarantined rows per reason, most common first."""
    if quarantine.empty or "reason" not in quarantine:
        return pd.DataFrame({"reason": pd.Series(dtype=str), "rows": pd.Series(dtype=int)})
    counts = quarantine["reason"].fillna("unknown").astype(str).value_counts()
    table = pd.DataFrame({"reason": counts.index.astype(str), "rows": counts.to_numpy()})
    return table.sort_values(["rows", "reason"], ascending=[False, True], ignore_index=True)


def coverage_figure(quality: pd.DataFrame) -> Figure:
    """Histogram of per-series coverage (observed / expected bins)."""
    coverage = pd.to_numeric(quality.get("coverage", pd.Series(dtype=float)), errors="coerce")
    coverage = coverage.dropna()
    if coverage.empty:
        return empty_figure(title="Coverage per series")
    fig = Figure(figsize=(7, 3.2), layout="constrained")
    ax = fig.add_subplot()
    ax.hist(coverage, bins=np.linspace(0, 1, 21), color="#4c72b0", edgecolor="white")
    ax.axvline(coverage.median(), color="black", ls="--", lw=1, label="median")
    ax.set(xlabel="coverage (observed / expected hourly bins)", ylabel="series")
    ax.set_title("Coverage per series")
    ax.legend()
    return fig


def gaps_figure(quality: pd.DataFrame, top: int = 15) -> Figure:
    """Gap count per series (histogram) and the series with the longest gaps."""
    needed = {"gap_count", "longest_gap_bins", "resource_id", "metric"}
    if quality.empty or not needed <= set(quality.columns):
        return empty_figure(title="Gaps per series")
    fig = Figure(figsize=(12, 3.8), layout="constrained")
    left, right = fig.subplots(1, 2)
    gaps = pd.to_numeric(quality["gap_count"], errors="coerce").fillna(0)
    # One bar per gap count (integers), up to 30 bars.
    edges = np.linspace(-0.5, gaps.max() + 0.5, min(30, int(gaps.max()) + 1) + 1)
    left.hist(gaps, bins=edges, color="#dd8452", edgecolor="white")
    left.set(xlabel="gaps in series", ylabel="series", title="Gaps per series")
    left.xaxis.set_major_locator(MaxNLocator(integer=True))
    worst = with_series_id(quality).nlargest(top, "longest_gap_bins")
    worst = worst[worst["longest_gap_bins"] > 0]
    if worst.empty:
        right.text(0.5, 0.5, "no gaps", ha="center", va="center")
        right.set_axis_off()
    else:
        labels = [plot_text(sid) for sid in worst["series_id"][::-1]]
        right.barh(labels, worst["longest_gap_bins"][::-1], color="#c44e52")
        right.set(xlabel="longest gap (hourly bins)", title=f"Longest gaps (top {len(worst)})")
        right.tick_params(axis="y", labelsize=8)
    return fig


# Bins of each metric's histogram, over the range of its values (what ``Axes.hist`` draws).
VALUE_BINS = 40
# (counts, bin edges) per metric
Histograms = dict[str, tuple[np.ndarray, np.ndarray]]


def _plotted_values(clean: pd.DataFrame) -> pd.DataFrame:
    """``metric`` (as text) and ``value`` of the rows a value histogram counts: gap bins and
    missing values left out."""
    if clean.empty or not {"metric", "value"} <= set(clean.columns):
        return pd.DataFrame({"metric": pd.Series(dtype=str), "value": pd.Series(dtype=float)})
    values = clean[clean["value"].notna()]
    if "is_gap" in values:
        values = values[~values["is_gap"].astype(bool)]
    return pd.DataFrame({"metric": values["metric"].astype(str), "value": values["value"]})


def value_histograms(clean: pd.DataFrame) -> Histograms:
    """Histogram of hourly values per metric (``VALUE_BINS`` over the metric's range, gap bins
    excluded), by metric name."""
    values = _plotted_values(clean)
    return {
        metric: np.histogram(part["value"], bins=VALUE_BINS)
        for metric, part in values.groupby("metric", sort=True)
    }


def read_value_histograms(paths: str | Path | Sequence[str | Path]) -> Histograms:
    """``value_histograms`` of the cleaned partitions, one file at a time: a first pass finds
    each metric's range, a second counts (three columns read, never the fleet at once)."""
    files = parquet_files(paths)

    def plotted(path: Path) -> pd.DataFrame:
        present = set(pq.read_schema(path).names)
        wanted = [c for c in ("metric", "value", "is_gap") if c in present]
        return _plotted_values(pd.read_parquet(path, columns=wanted))

    ranges: dict[str, tuple[float, float]] = {}
    for path in files:
        for metric, part in plotted(path).groupby("metric", sort=True):
            low, high = part["value"].min(), part["value"].max()
            seen = ranges.get(metric, (low, high))
            ranges[metric] = (min(seen[0], low), max(seen[1], high))
    edges = {
        metric: np.histogram_bin_edges(np.array(bounds, dtype=float), bins=VALUE_BINS)
        for metric, bounds in ranges.items()
    }
    counts = {metric: np.zeros(VALUE_BINS, dtype=np.intp) for metric in edges}
    for path in files:
        for metric, part in plotted(path).groupby("metric", sort=True):
            counts[metric] += np.histogram(part["value"], bins=edges[metric])[0]
    return {metric: (counts[metric], edges[metric]) for metric in sorted(edges)}


def value_distribution_figure(clean: pd.DataFrame | Histograms, ncols: int = 3) -> Figure:
    """Histogram of hourly values per metric (gap bins excluded), from the cleaned data or
    from its ``value_histograms`` (``read_value_histograms`` for the partition files)."""
    histograms = clean if isinstance(clean, dict) else value_histograms(clean)
    if not histograms:
        return empty_figure(title="Values per metric")
    metrics = sorted(histograms)
    fig, axes = figure_grid(len(metrics), ncols, (4.2, 2.8))
    for ax, metric in zip(axes, metrics, strict=True):
        counts, edges = histograms[metric]
        ax.hist(edges[:-1], bins=edges, weights=counts, color="#55a868")
        ax.set_title(plot_text(metric), fontsize=10)
        ax.set_ylabel("hourly bins")
    return fig


def quarantine_reasons_figure(quarantine: pd.DataFrame) -> Figure:
    """Bar chart of quarantined rows per reason."""
    counts = quarantine_reason_counts(quarantine)
    if counts.empty:
        return empty_figure("no rows quarantined", title="Quarantine reasons")
    fig = Figure(figsize=(7, 0.5 * len(counts) + 1.5), layout="constrained")
    ax = fig.add_subplot()
    ax.barh([plot_text(r) for r in counts["reason"][::-1]], counts["rows"][::-1], color="#8172b3")
    ax.set(xlabel="rows", title="Quarantined rows by reason")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    return fig
