"""Tables, headlines and figures for the report notebooks (data quality, backtest, capacity risk).

Every function is pure: it takes the frames the workflow wrote and returns a DataFrame, a
markdown string or a matplotlib ``Figure`` (built without pyplot, so nothing leaks between cells
and any backend works). Figure functions never raise on empty input: they return a figure that
says "no data", because an empty table is a normal outcome (e.g. no resource at risk).

Values from the data (ids, metric, service and file names) are shown literally: headlines
interpolate them through ``escape.markdown_text``, ``styled`` tables through
``escape.html_text``, figures through ``escape.plot_text`` (see :mod:`capforecast.escape`).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from pandas.io.formats.style import Styler

from capforecast.config import validated_config
from capforecast.contracts import quantile_column, series_id
from capforecast.csv_tables import read_csv_table
from capforecast.errors import InputDataError
from capforecast.escape import html_text, markdown_text, plot_text
from capforecast.forecast.metrics import quantile_levels
from capforecast.forecast.models.base import fell_back

SELECTED_MODEL = "selected"
# Findings that need more capacity; the others are right-sizing or nothing to do.
NEEDS_CAPACITY: tuple[str, ...] = ("at_risk", "under_provisioned")
# A resource (or series) with this finding is not scored: it is listed, never ranked.
STOPPED = "stopped_reporting"
# What an act_by date was computed from (the risk report's ``act_by_basis``).
ACT_BY_BASIS: dict[str, str] = {
    "critical": "median ETA of the critical level minus lead time and safety margin",
    "warning": "median ETA of the warning level (critical not reached within the horizon) "
    "minus lead time and safety margin",
}
# Leaderboard columns models are ranked by, best first: the ratios to the daily seasonal naive
# (means are dominated by a few series near zero); means only when no ratio exists.
LEADERBOARD_RANKING: tuple[str, ...] = ("wql_relgm", "mase_relgm", "wql_mean", "mase_mean")
RISK_TIME_COLUMNS: tuple[str, ...] = ("eta_p10", "eta_p50", "eta_p90", "act_by")
RANKED_RISK_COLUMNS: tuple[str, ...] = (
    "resource_id",
    "service",
    "metric",
    "finding",
    "metric_finding",
    "risk_score",
    "metric_risk_score",
    "confidence",
    "p_breach_warning",
    "p_breach_critical",
    "act_by",
    "act_by_basis",
    "act_now",
    "eta_p50",
    "days_until_full",
    "headroom_pct",
    "metric_reason_codes",
    "reason_codes",
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
# Band drawn darker (inner) and lighter (outer) on fan charts, as quantile levels.
INNER_BAND: tuple[float, float] = (0.1, 0.9)
OUTER_BAND: tuple[float, float] = (0.02, 0.98)
NO_DATA = "no data"

# Figures draw data strings as text (escape.plot_text keeps mathtext off them); a matplotlibrc
# with text.usetex would hand every label, ids included, to LaTeX instead. Global because tick
# labels are made at draw time, after the figure functions return.
matplotlib.rcParams["text.usetex"] = False


# --------------------------------------------------------------------------------------------
# Reading the workflow's outputs
# --------------------------------------------------------------------------------------------


def project_root() -> Path:
    """The project whose ``results/`` a notebook reads: ``CAPFORECAST_ROOT`` when set (the
    workflow sets it: its working directory may be elsewhere), else the working directory or the
    nearest parent holding a ``Snakefile`` (papermill runs at the project root, Jupyter in
    ``notebooks/``)."""
    if os.environ.get("CAPFORECAST_ROOT"):
        return Path(os.environ["CAPFORECAST_ROOT"])
    here = Path.cwd().resolve()
    for folder in (here, *here.parents):
        if (folder / "Snakefile").is_file():
            return folder
    raise InputDataError(str(here), "no Snakefile here or in a parent folder: run from the project")


def resolve_results_dir(results_dir: str | Path, project_root: str | Path) -> Path:
    """``results_dir`` as given when it exists (relative to the working directory), else
    relative to the project root, so a notebook opened from ``notebooks/`` finds ``results``."""
    path = Path(results_dir)
    if path.is_absolute() or path.exists():
        return path
    return Path(project_root) / path


def read_table(path: str | Path) -> pd.DataFrame:
    """Read one CSV or parquet output; a missing file is a one-line ``InputDataError``."""
    path = Path(path)
    if not path.exists():
        raise InputDataError(str(path), "file not found; run the workflow stage that writes it")
    if path.suffix == ".csv":
        return read_csv_table(path)
    return pd.read_parquet(path)


def read_partitions(directory: str | Path, exclude: Sequence[str] = ()) -> pd.DataFrame:
    """Concatenate the ``*.parquet`` partitions of a stage, adding a ``partition`` column.

    ``exclude`` names files that live in the same directory but are not partitions
    (e.g. ``resources.parquet`` next to the raw partitions).
    """
    directory = Path(directory)
    files = sorted(p for p in directory.glob("*.parquet") if p.name not in set(exclude))
    if not files:
        raise InputDataError(str(directory), "no parquet partitions found")
    frames = [pd.read_parquet(f).assign(partition=f.stem) for f in files]
    return pd.concat(frames, ignore_index=True)


# Where each report's inputs are in a workflow's results directory (rules/common.smk,
# report_sources). Only for a notebook opened by hand: the workflow passes the files its
# render_report rule declares (papermill parameter ``inputs``), so nothing is looked up.
REPORT_INPUTS: dict[str, dict[str, str]] = {
    "data_quality": {
        "quality": "quality/data_quality.csv",
        "quarantine": "quality/quarantine.parquet",
        "reconciliation": "quality/reconciliation.csv",
        "skipped_files": "quality/skipped_files.csv",
        "clean": "clean/*.parquet",
    },
    "forecast_backtest": {
        "leaderboard": "backtest/leaderboard.csv",
        "metrics": "backtest/metrics.parquet",
        "forecasts": "forecast/forecasts.parquet",
        "clean": "clean/*.parquet",
    },
    "capacity_risk": {
        "risk_report": "risk/risk_report.parquet",
        "daily_breach": "risk/daily_breach.parquet",
        "service_capacity": "risk/service_capacity.csv",
        "summary": "risk/summary.json",
        "forecasts": "forecast/forecasts.parquet",
        "clean": "clean/*.parquet",
    },
}


def report_inputs(
    name: str, inputs: Mapping[str, Any] | None, results_dir: str | Path
) -> dict[str, Any]:
    """The files report ``name`` reads: ``inputs`` (what its rule declares) as given; an input
    it does not name (a notebook opened by hand) from the layout of ``results_dir``."""
    given = dict(inputs or {})
    paths: dict[str, Any] = {}
    for key, relative in REPORT_INPUTS[name].items():
        if key in given:
            paths[key] = given[key]
        elif "*" in relative:
            paths[key] = sorted(str(p) for p in Path(results_dir).glob(relative))
        else:
            paths[key] = str(Path(results_dir) / relative)
    return {**given, **paths}


def read_files(paths: str | Path | Sequence[str | Path]) -> pd.DataFrame:
    """Concatenate parquet partitions (one path or a list), adding a ``partition`` column."""
    files = [Path(paths)] if isinstance(paths, str | Path) else [Path(p) for p in paths]
    if not files:
        raise InputDataError("clean", "no parquet partitions given")
    missing = [f for f in files if not f.exists()]
    if missing:
        raise InputDataError(
            str(missing[0]), "file not found; run the workflow stage that writes it"
        )
    return pd.concat(
        [pd.read_parquet(f).assign(partition=f.stem) for f in files], ignore_index=True
    )


def risk_levels(
    thresholds: Mapping[str, Any] | None, service_overrides: Mapping[str, Any] | None
) -> dict[str, Any]:
    """``{thresholds, service_overrides}`` the risk report shows: the run's (papermill
    parameters from the validated config), the schema's for a notebook opened by hand."""
    schema = validated_config({})["risk"]
    return {
        "thresholds": dict(schema["thresholds"] if thresholds is None else thresholds),
        "service_overrides": dict(
            schema["service_overrides"] if service_overrides is None else service_overrides
        ),
    }


def thresholds_table(levels: Mapping[str, Any]) -> pd.DataFrame:
    """``applies_to, metric, warning, critical``: the fleet's levels, then each service's."""
    rows = [
        {"applies_to": "every service", "metric": metric, **dict(values)}
        for metric, values in sorted(levels["thresholds"].items())
    ]
    for service, metrics in sorted(levels["service_overrides"].items()):
        for metric, values in sorted(metrics.items()):
            merged = {**levels["thresholds"].get(metric, {}), **dict(values)}
            rows.append({"applies_to": f"service {service}", "metric": metric, **merged})
    columns = ["applies_to", "metric", "warning", "critical"]
    table = pd.DataFrame(rows, columns=columns)
    return table.astype({"warning": float, "critical": float})


def read_summary(path: str | Path) -> dict[str, Any]:
    """Read ``summary.json`` (a missing file is a one-line ``InputDataError``)."""
    path = Path(path)
    if not path.exists():
        raise InputDataError(str(path), "file not found; run the risk stage first")
    return json.loads(path.read_text())


def as_utc(values: pd.Series) -> pd.Series:
    """Timestamps (strings, naive or aware) as UTC-aware datetimes; blanks become NaT.

    Unparseable text raises (a report must not hide a broken timestamp as "no deadline").
    """
    return pd.to_datetime(values, utc=True)


def with_utc_columns(frame: pd.DataFrame, columns: Sequence[str]) -> pd.DataFrame:
    """Copy of ``frame`` whose listed (present) columns are UTC datetimes."""
    out = frame.copy()
    for column in columns:
        if column in out.columns:
            out[column] = as_utc(out[column])
    return out


def with_series_id(frame: pd.DataFrame) -> pd.DataFrame:
    """Add ``series_id`` (resource|metric) when the frame has the keys but not the id."""
    if "series_id" in frame.columns or not {"resource_id", "metric"} <= set(frame.columns):
        return frame
    keys = pd.MultiIndex.from_frame(frame[["resource_id", "metric"]].astype(str))
    # Build each id once per series, not once per row (clean data has many rows per series).
    unique = keys.unique()
    ids = np.array([series_id(r, m) for r, m in unique], dtype=object)
    return frame.assign(series_id=ids[unique.get_indexer(keys)] if len(ids) else [])


def format_number(value: float) -> str:
    """Readable number: thousands separators for large values, 3 decimals for small ones."""
    if pd.isna(value):
        return "-"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:.2f}" if abs(value) >= 1 else f"{value:.3f}"


def format_timestamp(value: Any) -> str:
    """'2026-09-14 06:00 UTC', or '-' for a missing time."""
    if value is None or pd.isna(value):
        return "-"
    return pd.Timestamp(value).tz_convert("UTC").strftime("%Y-%m-%d %H:%M UTC")


def styled(table: pd.DataFrame, highlight: Mapping[str, Any] | None = None) -> Styler:
    """HTML-ready view: readable numbers and UTC times, no index; text cells and column names
    escaped (a Styler writes them into the page as they are).

    ``highlight`` = {column: value} shades the rows where ``column == value``
    (e.g. the selected model in the leaderboard).
    """
    formats: dict[str, Any] = {}
    for column in table.columns:
        values = table[column]
        if pd.api.types.is_datetime64_any_dtype(values):
            formats[column] = format_timestamp
        elif pd.api.types.is_float_dtype(values):
            formats[column] = format_number
        elif not (pd.api.types.is_numeric_dtype(values) or pd.api.types.is_bool_dtype(values)):
            formats[column] = html_text
    styler = table.style.format(formats, na_rep="-").hide(axis="index")
    styler = styler.format_index(html_text, axis="columns")
    if highlight:
        (column, value), *_ = highlight.items()

        def shade(row: pd.Series) -> list[str]:
            on = column in row.index and row[column] == value
            return ["background-color: #fff3b0; font-weight: bold" if on else ""] * len(row)

        styler = styler.apply(shade, axis=1)
    return styler


# --------------------------------------------------------------------------------------------
# Figure plumbing
# --------------------------------------------------------------------------------------------


def empty_figure(message: str = NO_DATA, title: str | None = None) -> Figure:
    """A small figure that states why there is nothing to plot."""
    fig = Figure(figsize=(6, 2), layout="constrained")
    ax = fig.add_subplot()
    ax.text(0.5, 0.5, message, ha="center", va="center", fontsize=12, color="0.35")
    ax.set_axis_off()
    if title:
        ax.set_title(title)
    return fig


def is_empty_figure(fig: Figure) -> bool:
    """True for a figure made by ``empty_figure`` (used by tests and notebooks)."""
    return len(fig.axes) == 1 and not fig.axes[0].axison and len(fig.axes[0].texts) == 1


def _grid(n_panels: int, ncols: int, panel_size: tuple[float, float]) -> tuple[Figure, list[Axes]]:
    ncols = max(1, min(ncols, n_panels))
    nrows = int(np.ceil(n_panels / ncols))
    fig = Figure(figsize=(panel_size[0] * ncols, panel_size[1] * nrows), layout="constrained")
    axes = [fig.add_subplot(nrows, ncols, i + 1) for i in range(n_panels)]
    return fig, axes


def data_legend(ax: Axes, handles: Sequence[Any], names: Sequence[Any]) -> None:
    """Legend whose entries are data values (metric names): shown literally, and given
    explicitly because matplotlib leaves out labels that start with "_"."""
    ax.legend(list(handles), [plot_text(name) for name in names], fontsize=8)


def _naive_utc(values: pd.Series | pd.Index) -> np.ndarray:
    """UTC datetimes as naive numpy datetime64 (what matplotlib's date axis expects)."""
    return pd.DatetimeIndex(as_utc(pd.Series(values))).tz_convert(None).to_numpy()


# --------------------------------------------------------------------------------------------
# Data quality
# --------------------------------------------------------------------------------------------


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


def value_distribution_figure(clean: pd.DataFrame, ncols: int = 3) -> Figure:
    """Histogram of hourly values per metric (gap bins excluded)."""
    if clean.empty or not {"metric", "value"} <= set(clean.columns):
        return empty_figure(title="Values per metric")
    values = clean[clean["value"].notna()]
    if "is_gap" in values:
        values = values[~values["is_gap"].astype(bool)]
    metrics = sorted(values["metric"].astype(str).unique())
    if not metrics:
        return empty_figure(title="Values per metric")
    fig, axes = _grid(len(metrics), ncols, (4.2, 2.8))
    for ax, metric in zip(axes, metrics, strict=True):
        ax.hist(values.loc[values["metric"] == metric, "value"], bins=40, color="#55a868")
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


# --------------------------------------------------------------------------------------------
# Backtest and forecasts
# --------------------------------------------------------------------------------------------


def leaderboard_table(leaderboard: pd.DataFrame) -> pd.DataFrame:
    """Leaderboard best first, by the ``LEADERBOARD_RANKING`` columns present (ties: model)."""
    keys = [c for c in LEADERBOARD_RANKING if c in leaderboard.columns]
    if not keys:
        return leaderboard.reset_index(drop=True)
    return leaderboard.sort_values([*keys, "model"], na_position="last", ignore_index=True)


def _ranking_columns(leaderboard: pd.DataFrame) -> list[str]:
    """The score columns a headline ranks by and shows: the relgm ratios present, else the
    first mean present."""
    present = [c for c in LEADERBOARD_RANKING if c in leaderboard.columns]
    ratios = [c for c in present if c.endswith("_relgm")]
    return ratios or present[:1]


def _score_name(column: str) -> str:
    metric, _, kind = column.partition("_")
    return f"{metric.upper()} {kind}"


def _scores_text(row: pd.Series, columns: Sequence[str]) -> str:
    return ", ".join(
        f"{_score_name(c)} {row[c]:.3f}" for c in columns if c in row and pd.notna(row[c])
    )


def style_leaderboard(leaderboard: pd.DataFrame) -> Styler:
    """``leaderboard_table`` with the selected (final) forecast highlighted."""
    return styled(leaderboard_table(leaderboard), highlight={"model": SELECTED_MODEL})


def backtest_headline(leaderboard: pd.DataFrame, forecasts: pd.DataFrame) -> str:
    """Markdown headline: how good the selected forecast was and what the final one covers."""
    lines = []
    ranking = _ranking_columns(leaderboard)
    selected = leaderboard[leaderboard["model"] == SELECTED_MODEL]
    candidates = leaderboard_table(leaderboard[leaderboard["model"] != SELECTED_MODEL])
    if selected.empty:
        lines.append("**No `selected` row in the leaderboard**: model selection did not run.")
    else:
        row = selected.iloc[0]
        parts = [_scores_text(row, ranking)] if ranking else []
        if pd.notna(row.get("coverage_p10_p90", np.nan)):
            parts.append(f"P10-P90 coverage {row['coverage_p10_p90']:.0%} (nominal 80%)")
        scope = ""
        if "n_series" in row and "n_windows" in row:
            scope = f" over {int(row['n_series'])} series x {int(row['n_windows'])} windows"
        lines.append(f"**Selected forecast**{scope}: " + ", ".join(parts) + ".")
    if not candidates.empty and ranking:
        best = candidates.iloc[0]
        line = (
            f"Best single model by {_score_name(ranking[0])}: **{markdown_text(best['model'])}** "
            f"({_scores_text(best, ranking)})"
        )
        if len(ranking) > 1:
            # The other ratio may crown another model: say so rather than hide it.
            other = candidates.sort_values([ranking[1], "model"], na_position="last").iloc[0]
            if other["model"] != best["model"]:
                line += (
                    f"; by {_score_name(ranking[1])}: **{markdown_text(other['model'])}** "
                    f"({_scores_text(other, ranking[1:])})"
                )
        if ranking[0].endswith("_relgm"):
            line += (
                ". Ratios are geometric means over series of the error relative to the daily"
                " seasonal naive (below 1 is better)"
            )
        lines.append(line + ".")
    elif not candidates.empty:
        lines.append(f"Best single model: **{markdown_text(candidates.iloc[0]['model'])}**.")
    final = forecasts[forecasts["model"] == SELECTED_MODEL] if "model" in forecasts else forecasts
    if final.empty:
        lines.append("**No final forecast rows** (model `selected`).")
    else:
        final = with_series_id(final)
        times = as_utc(final["timestamp"])
        used = ""
        if "model_used" in final:
            per_series = final.groupby("series_id")["model_used"].first().value_counts()
            used = "; models used: " + ", ".join(
                f"{markdown_text(m)} ({n})" for m, n in per_series.items()
            )
        lines.append(
            f"Final forecast: {final['series_id'].nunique()} series, "
            f"{format_timestamp(times.min())} to {format_timestamp(times.max())}{used}."
        )
    if "n_fallback" in leaderboard and leaderboard["n_fallback"].fillna(0).sum() > 0:
        counts = leaderboard[leaderboard["n_fallback"].fillna(0) > 0]
        pairs = zip(counts["model"], counts["n_fallback"], strict=True)
        named = ", ".join(f"{markdown_text(model)} ({int(n)})" for model, n in pairs)
        lines.append(
            f"Fallbacks (series x windows a model handed to a simpler one): {named}; "
            "listed under Fallbacks."
        )
    return "\n\n".join(lines)


FALLBACK_COLUMNS: tuple[str, ...] = ("stage", "model", "series_id", "model_used", "windows")


def fallback_table(metrics: pd.DataFrame, forecasts: pd.DataFrame) -> pd.DataFrame:
    """Every model x series a model handed to a simpler one (``FALLBACK_COLUMNS``).

    ``stage`` is ``backtest`` (scored windows of ``metrics``; ``windows`` counts them) or
    ``final`` (the refit forecasts). ``model_used`` names what ran and why (e.g.
    ``seasonal_naive_daily (fallback: too_short)``). The leaderboard's ``n_fallback`` counts the
    backtest rows.
    """
    frames = []
    if len(metrics) and "model_used" in metrics:
        scored = metrics[~metrics["is_selection_window"].astype(bool)]
        fell = scored[scored["model_used"].fillna("").map(fell_back)]
        backtest = fell.groupby(["model", "series_id", "model_used"]).size()
        frames.append(backtest.rename("windows").reset_index().assign(stage="backtest"))
    if len(forecasts) and "model_used" in forecasts:
        final = forecasts.drop_duplicates(["model", "series_id"])
        final = final[final["model_used"].fillna("").map(fell_back)]
        columns = ["model", "series_id", "model_used"]
        frames.append(final[columns].assign(stage="final", windows=np.nan))
    if not frames:
        return pd.DataFrame(columns=list(FALLBACK_COLUMNS))
    table = pd.concat(frames, ignore_index=True)[list(FALLBACK_COLUMNS)]
    # A count (missing for the final stage), shown as such rather than as a float.
    table["windows"] = table["windows"].astype("Int64")
    return table.sort_values(["stage", "model", "series_id"], ignore_index=True)


def per_series_errors(metrics: pd.DataFrame) -> pd.DataFrame:
    """Mean MASE / WQL per model x series over the scored windows (selection windows left out)."""
    scored = metrics
    if "is_selection_window" in scored:
        scored = scored[~scored["is_selection_window"].fillna(False).astype(bool)]
    values = [c for c in ("mase", "wql") if c in scored.columns]
    if scored.empty or not values or not {"model", "series_id"} <= set(scored.columns):
        return pd.DataFrame(columns=["model", "series_id", *values])
    return scored.groupby(["model", "series_id"], as_index=False)[values].mean()


def error_boxplots(metrics: pd.DataFrame) -> Figure:
    """Box plot per model of per-series MASE and WQL (log scale: errors span decades)."""
    errors = per_series_errors(metrics)
    values = [c for c in ("mase", "wql") if c in errors.columns]
    if errors.empty or not values:
        return empty_figure(title="Per-series errors")
    # Best (lowest median of the last error column) on the left.
    medians = errors.groupby("model")[values[-1]].median().reset_index()
    models = medians.sort_values([values[-1], "model"], na_position="last")["model"].tolist()
    fig, axes = _grid(len(values), len(values), (max(5.0, 0.9 * len(models) + 2), 3.6))
    for ax, column in zip(axes, values, strict=True):
        data = [errors.loc[errors["model"] == m, column].dropna().to_numpy() for m in models]
        positive = [d[d > 0] for d in data]
        ax.boxplot(positive, tick_labels=[plot_text(m) for m in models], showfliers=True)
        if any(len(d) for d in positive):
            ax.set_yscale("log")
        ax.set_title(f"{column.upper()} per series (lower is better)")
        ax.tick_params(axis="x", rotation=30, labelsize=8)
        ax.set_ylabel(column)
    return fig


def band_levels(levels: Sequence[float], lower: float, upper: float) -> tuple[float, float] | None:
    """The available quantile levels nearest to ``lower``/``upper`` (None if they coincide)."""
    if len(levels) < 2:
        return None
    lo = min(levels, key=lambda q: (abs(q - lower), q))
    hi = min(levels, key=lambda q: (abs(q - upper), -q))
    return (lo, hi) if lo < hi else None


def _band_label(band: tuple[float, float]) -> str:
    return f"P{band[0] * 100:g}-P{band[1] * 100:g}"


def sample_series_ids(forecasts: pd.DataFrame, n: int, seed: int = 0) -> list[str]:
    """``n`` final-forecast series picked at random, reproducibly (sorted for stable output)."""
    ids = (
        sorted(with_series_id(forecasts)["series_id"].astype(str).unique())
        if len(forecasts)
        else []
    )
    if n <= 0 or not ids:
        return []
    rng = np.random.default_rng(seed)
    picked = rng.choice(len(ids), size=min(n, len(ids)), replace=False)
    return [ids[i] for i in sorted(picked)]


def growth_ranked_series(forecasts: pd.DataFrame, clean: pd.DataFrame, n: int) -> list[str]:
    """Series whose forecast upper band rises furthest above their own history.

    Scale-free (ratio of the peak upper-band forecast to the 99th percentile of the history),
    so percentages and byte counts rank together; uses only backtest-report inputs.
    """
    final = with_series_id(forecasts)
    if "model" in final:
        final = final[final["model"] == SELECTED_MODEL]
    levels = quantile_levels(final)
    if final.empty or clean.empty or n <= 0:
        return []
    upper = quantile_column(max(levels)) if levels else "mean"
    peak = final.groupby("series_id")[upper].max()
    history = with_series_id(clean).groupby("series_id")["value"].quantile(0.99)
    ratio = (peak / history.reindex(peak.index)).replace([np.inf, -np.inf], np.nan).dropna()
    ranked = ratio.reset_index(name="ratio").sort_values(
        ["ratio", "series_id"], ascending=[False, True]
    )
    return ranked["series_id"].head(n).astype(str).tolist()


def plot_fan(
    ax: Axes,
    history: pd.DataFrame,
    forecast: pd.DataFrame,
    *,
    title: str = "",
    thresholds: Mapping[str, float] | None = None,
    eta: Mapping[str, Any] | None = None,
) -> None:
    """Draw history (``timestamp``, ``value``) and a forecast fan on ``ax``.

    The forecast frame has ``timestamp`` and ``q<level>`` columns (plus ``mean``): the
    P10-P90 band is drawn dark, P2-P98 lighter, the median as a line. ``thresholds`` =
    {"warning": x, "critical": y} adds horizontal lines; ``eta`` = {"eta_p10", "eta_p50",
    "eta_p90"} marks when the critical threshold is expected to be crossed.
    """
    if not history.empty:
        hist = history.sort_values("timestamp")
        ax.plot(_naive_utc(hist["timestamp"]), hist["value"], color="0.2", lw=1, label="history")
    if not forecast.empty:
        fc = forecast.sort_values("timestamp")
        x = _naive_utc(fc["timestamp"])
        levels = quantile_levels(fc)
        outer = band_levels(levels, *OUTER_BAND)
        inner = band_levels(levels, *INNER_BAND)
        if outer and outer != inner:
            ax.fill_between(
                x,
                fc[quantile_column(outer[0])],
                fc[quantile_column(outer[1])],
                color="#4c72b0",
                alpha=0.15,
                lw=0,
                label=_band_label(outer),
            )
        if inner:
            ax.fill_between(
                x,
                fc[quantile_column(inner[0])],
                fc[quantile_column(inner[1])],
                color="#4c72b0",
                alpha=0.4,
                lw=0,
                label=_band_label(inner),
            )
        centre = quantile_column(0.5) if 0.5 in levels else "mean"
        if centre in fc:
            ax.plot(
                x,
                fc[centre],
                color="#1f3b73",
                lw=1.2,
                label="median" if centre != "mean" else "mean",
            )
    for level, colour in (("warning", "#f0a500"), ("critical", "#c0392b")):
        value = (thresholds or {}).get(level)
        if value is not None and pd.notna(value):
            ax.axhline(float(value), color=colour, ls="--", lw=1, label=f"{level} {value:g}")
    eta = eta or {}
    p10, p50, p90 = (
        as_utc(pd.Series([eta.get(k)])).iloc[0] for k in ("eta_p10", "eta_p50", "eta_p90")
    )
    if pd.notna(p10) and pd.notna(p90):
        ax.axvspan(
            *_naive_utc(pd.Series([p10, p90])), color="#c0392b", alpha=0.12, label="ETA P10-P90"
        )
    if pd.notna(p50):
        ax.axvline(_naive_utc(pd.Series([p50]))[0], color="#c0392b", lw=1.5, label="ETA P50")
    if history.empty and forecast.empty:
        ax.text(0.5, 0.5, NO_DATA, ha="center", va="center", transform=ax.transAxes)
    ax.set_title(plot_text(title), fontsize=9)
    ax.tick_params(axis="x", rotation=30, labelsize=7)
    ax.set_xlabel("UTC", fontsize=7)


def fan_chart_figure(
    clean: pd.DataFrame,
    forecasts: pd.DataFrame,
    series_ids: Sequence[str],
    *,
    model: str = SELECTED_MODEL,
    history_hours: int = 7 * 24,
    thresholds: Mapping[str, Mapping[str, float]] | None = None,
    etas: Mapping[str, Mapping[str, Any]] | None = None,
    titles: Mapping[str, str] | None = None,
    ncols: int = 2,
    title: str = "Forecasts",
) -> Figure:
    """One fan chart per series: the last ``history_hours`` of history, then the forecast.

    ``thresholds`` and ``etas`` are keyed by series id (see ``plot_fan``); ``titles`` replaces
    the default panel title (the series id).
    """
    if not series_ids:
        return empty_figure(title=title)
    clean = with_series_id(clean)
    forecasts = with_series_id(forecasts)
    if "model" in forecasts:
        forecasts = forecasts[forecasts["model"] == model]
    history_by_id = dict(tuple(clean.groupby("series_id"))) if len(clean) else {}
    forecast_by_id = dict(tuple(forecasts.groupby("series_id"))) if len(forecasts) else {}
    fig, axes = _grid(len(series_ids), ncols, (6.0, 3.0))
    for ax, sid in zip(axes, series_ids, strict=True):
        history = history_by_id.get(sid, pd.DataFrame(columns=["timestamp", "value"]))
        if len(history):
            times = as_utc(history["timestamp"])
            history = history[times > times.max() - pd.Timedelta(hours=history_hours)]
        plot_fan(
            ax,
            history,
            forecast_by_id.get(sid, pd.DataFrame(columns=["timestamp"])),
            title=(titles or {}).get(sid, sid),
            thresholds=(thresholds or {}).get(sid),
            eta=(etas or {}).get(sid),
        )
    handles, labels = axes[0].get_legend_handles_labels()
    if handles:
        axes[0].legend(handles, labels, fontsize=7, loc="upper left")
    fig.suptitle(plot_text(title))
    return fig


# --------------------------------------------------------------------------------------------
# Capacity risk
# --------------------------------------------------------------------------------------------


def row_score_column(risk: pd.DataFrame) -> str:
    """The score of one resource x metric row: ``metric_risk_score`` when the report has it
    (``risk_score`` is then the resource's maximum, repeated on all its rows)."""
    return "metric_risk_score" if "metric_risk_score" in risk.columns else "risk_score"


def scored_rows(risk: pd.DataFrame) -> pd.DataFrame:
    """The rows of resources and series that are scored: not ``stopped_reporting``."""
    keep = pd.Series(True, index=risk.index)
    for column in ("finding", "metric_finding"):
        if column in risk.columns:
            keep &= risk[column].astype(str) != STOPPED
    return risk[keep]


def ranked_risks(risk: pd.DataFrame, top_n: int | None = None) -> pd.DataFrame:
    """Scored resources x metrics with a risk (row score > 0), most urgent first.

    Order: row score (``row_score_column``) descending, then act_by ascending (no deadline
    last), then P(breach critical) descending, then resource and metric for a stable tie-break.
    """
    columns = [c for c in RANKED_RISK_COLUMNS if c in risk.columns]
    if risk.empty:
        return pd.DataFrame(columns=["rank", *columns])
    score = row_score_column(risk)
    table = with_utc_columns(scored_rows(risk), RISK_TIME_COLUMNS)
    table = table[pd.to_numeric(table[score], errors="coerce").fillna(0) > 0]
    keys = [c for c in (score, "act_by", "p_breach_critical", "resource_id", "metric")]
    keys = [c for c in keys if c in table.columns]
    ascending = [c not in (score, "p_breach_critical") for c in keys]
    table = table.sort_values(keys, ascending=ascending, na_position="last", kind="stable")
    table = table.head(top_n) if top_n is not None else table
    table = table[columns].reset_index(drop=True)
    table.insert(0, "rank", np.arange(1, len(table) + 1))
    return table


def first_action(risk: pd.DataFrame) -> pd.Series | None:
    """The scored row with the earliest act_by (ties: higher row score first), or None.

    A resource that stopped reporting is never the first action, whatever dates it carries.
    """
    if risk.empty or "act_by" not in risk:
        return None
    timed = with_utc_columns(scored_rows(risk), RISK_TIME_COLUMNS)
    timed = timed[timed["act_by"].notna()]
    if timed.empty:
        return None
    score = row_score_column(timed)
    keys = [c for c in ("act_by", score, "resource_id", "metric") if c in timed.columns]
    ascending = [c != score for c in keys]
    return timed.sort_values(keys, ascending=ascending, kind="stable").iloc[0]


def monthly_savings(risk: pd.DataFrame) -> dict[str, float]:
    """Fleet totals of the right-sizing advice, in USD per month.

    The advice is per resource (one instance), so each resource counts once even when the
    report repeats its delta on every metric row. ``savings`` sums the reductions of
    over-provisioned resources (reported positive; when the report has no ``finding``, every
    reduction), ``extra_cost`` the increases, ``net`` the signed total change.
    """
    if risk.empty or "monthly_cost_delta_usd" not in risk:
        return {"savings": 0.0, "extra_cost": 0.0, "net": 0.0}
    delta = risk.assign(delta=pd.to_numeric(risk["monthly_cost_delta_usd"], errors="coerce"))
    per_resource = delta.dropna(subset=["delta"]).groupby("resource_id")["delta"].first()
    reductions = per_resource < 0
    if "finding" in risk:
        finding = risk.groupby("resource_id")["finding"].first().reindex(per_resource.index)
        reductions &= finding == "over_provisioned"
    return {
        "savings": float(-per_resource[reductions].sum()),
        "extra_cost": float(per_resource[per_resource > 0].sum()),
        "net": float(per_resource.sum()),
    }


def _resource_count(n: int, what: str) -> str:
    return f"{n} resource{'s' if n != 1 else ''} {what}"


def risk_headline(risk: pd.DataFrame) -> str:
    """Markdown headline: how many resources are at risk, what to do first and by when (and
    what that date rests on), what stopped reporting, what right-sizing saves.

    "At risk" counts resources whose finding is at_risk; under-provisioned ones are counted
    apart; resources that stopped reporting are neither, and never the first action.
    """
    lines = []
    findings = risk["finding"].astype(str) if "finding" in risk else pd.Series(dtype=str)

    def resources_with(finding: str) -> int:
        return int(risk.loc[findings == finding, "resource_id"].nunique())

    at_risk, under = resources_with("at_risk"), resources_with("under_provisioned")
    if at_risk:
        lines.append(f"**{_resource_count(at_risk, 'at risk')}** within the forecast horizon.")
    else:
        lines.append("**No resource at risk** within the forecast horizon.")
    if under:
        lines[-1] += f" {_resource_count(under, 'under-provisioned')} (need capacity, not urgent)."
    first = first_action(risk)
    if first is None:
        lines.append("No action deadline within the forecast horizon.")
    else:
        extra = []
        if "service" in first and pd.notna(first["service"]):
            extra.append(f"service {markdown_text(first['service'])}")
        score = row_score_column(risk)
        if score in first and pd.notna(first[score]):
            extra.append(f"risk {int(first[score])}/4")
        if "p_breach_critical" in first and pd.notna(first["p_breach_critical"]):
            extra.append(f"P(critical) {first['p_breach_critical']:.0%}")
        if "eta_p50" in first and pd.notna(first["eta_p50"]):
            extra.append(f"ETA P50 {format_timestamp(first['eta_p50'])}")
        act_now = first.get("act_now")
        overdue = bool(act_now) if act_now is not None and pd.notna(act_now) else False
        when = (
            f"**now** (act-by {format_timestamp(first['act_by'])} has passed)"
            if overdue
            else f"by **{format_timestamp(first['act_by'])}**"
        )
        basis = ACT_BY_BASIS.get(str(first.get("act_by_basis")))
        lines.append(
            f"First action {when}: "
            f"**{markdown_text(first['resource_id'])} {markdown_text(first['metric'])}** "
            f"({', '.join(extra)})." + (f" Act-by = {basis}." if basis else "")
        )
    stopped = resources_with(STOPPED)
    if stopped:
        lines.append(
            f"{_resource_count(stopped, 'stopped reporting')}: not scored, not sized (listed in"
            " summary.json)."
        )
    n_over = resources_with("over_provisioned")
    money = monthly_savings(risk)
    if n_over or money["savings"]:
        lines.append(
            f"{_resource_count(n_over, 'over-provisioned')}; right-sizing them saves "
            f"**USD {money['savings']:,.0f}/month** (net change of all advice USD "
            f"{money['net']:,.0f}/month)."
        )
    return "\n\n".join(lines)


def stopped_table(risk: pd.DataFrame) -> pd.DataFrame:
    """Resources that stopped reporting (one row each, longest silent first): listed, not
    scored."""
    columns = [
        c
        for c in ("resource_id", "service", "instance_type", "last_observed", "reporting_lag_hours")
        if c in risk.columns
    ]
    if risk.empty or "finding" not in risk:
        return pd.DataFrame(columns=columns)
    stopped = risk[risk["finding"].astype(str) == STOPPED].drop_duplicates("resource_id")
    keys = [c for c in ("reporting_lag_hours", "resource_id") if c in stopped.columns]
    ascending = [c != "reporting_lag_hours" for c in keys]
    stopped = stopped.sort_values(keys, ascending=ascending)
    return with_utc_columns(stopped, ["last_observed"])[columns].reset_index(drop=True)


def findings_unit(risk: pd.DataFrame) -> str:
    """What ``findings_table`` counts: resources when the report's ``finding`` is per resource
    (it then also has ``metric_finding``), else resource x metric rows."""
    return "resources" if "metric_finding" in risk.columns else "resource x metric rows"


def findings_table(risk: pd.DataFrame) -> pd.DataFrame:
    """Counts per finding (rows) and risk score (columns), in ``findings_unit`` units."""
    if risk.empty or not {"finding", "risk_score"} <= set(risk.columns):
        return pd.DataFrame()
    base = risk.drop_duplicates("resource_id") if findings_unit(risk) == "resources" else risk
    table = pd.crosstab(base["finding"], base["risk_score"], margins=True, margins_name="total")
    table.columns = [f"score {c}" if c != "total" else c for c in table.columns]
    return table.reset_index()


def breach_matrix(
    daily_breach: pd.DataFrame,
    column: str = "p_breach_critical",
    *,
    max_resources: int | None = None,
) -> pd.DataFrame:
    """Probability of breach per resource (rows) x day (columns), the max over its metrics.

    Rows are ordered by their peak probability (then resource id); ``max_resources`` keeps the
    first rows. A day without a forecast for a resource stays NaN (not 0: it is unknown).
    """
    if daily_breach.empty or column not in daily_breach:
        return pd.DataFrame()
    frame = daily_breach.assign(day=as_utc(daily_breach["day"]).dt.normalize())
    matrix = frame.pivot_table(index="resource_id", columns="day", values=column, aggfunc="max")
    peak = matrix.max(axis=1).rename("peak").reset_index()
    order = peak.sort_values(["peak", "resource_id"], ascending=[False, True])["resource_id"]
    matrix = matrix.loc[order.tolist()]
    if max_resources is not None:
        matrix = matrix.head(max_resources)
    matrix.columns = pd.DatetimeIndex(matrix.columns)
    matrix.columns.name = "day"
    return matrix


def breach_heatmap(matrix: pd.DataFrame, title: str = "P(breach critical) per day") -> Figure:
    """Heatmap of a ``breach_matrix`` (0 white to 1 dark red; blank = no forecast)."""
    if matrix.empty:
        return empty_figure("no breach probabilities", title=title)
    n_rows, n_days = matrix.shape
    fig = Figure(figsize=(max(6.0, 0.7 * n_days + 3), 0.32 * n_rows + 1.8), layout="constrained")
    ax = fig.add_subplot()
    image = ax.imshow(
        matrix.to_numpy(dtype=float),
        aspect="auto",
        cmap="Reds",
        vmin=0,
        vmax=1,
        interpolation="nearest",
    )
    ax.set_yticks(range(n_rows), [plot_text(r) for r in matrix.index], fontsize=8)
    ax.set_xticks(range(n_days), [d.strftime("%m-%d") for d in matrix.columns], fontsize=8)
    ax.tick_params(axis="x", rotation=45)
    ax.set_xlabel("day (UTC)")
    ax.set_title(title)
    fig.colorbar(image, ax=ax, label="probability", shrink=0.8)
    return fig


def threshold_lookup(
    risk: pd.DataFrame, risk_cfg: Mapping[str, Any] | None = None
) -> dict[str, dict[str, float]]:
    """Warning/critical levels per series id.

    From the risk report's own ``warning_threshold``/``critical_threshold`` columns when it has
    them (exact), else from the ``risk`` config section (thresholds + service_overrides).
    Series whose metric has no threshold get none (e.g. byte counters).
    """
    out: dict[str, dict[str, float]] = {}
    if risk.empty:
        return out
    columns = {"warning": "warning_threshold", "critical": "critical_threshold"}
    has_columns = set(columns.values()) <= set(risk.columns)
    defaults = risk_cfg["thresholds"] if risk_cfg else {}
    overrides = risk_cfg["service_overrides"] if risk_cfg else {}
    for row in with_series_id(risk).itertuples(index=False):
        if has_columns:
            levels = {k: getattr(row, c) for k, c in columns.items()}
        else:
            service = getattr(row, "service", None)
            levels = dict(
                overrides.get(service, {}).get(row.metric) or defaults.get(row.metric) or {}
            )
        levels = {k: float(v) for k, v in levels.items() if k in columns and pd.notna(v)}
        if levels:
            out[row.series_id] = levels
    return out


def summary_scalars(summary: Mapping[str, Any], prefix: str = "") -> pd.DataFrame:
    """Flatten the scalar entries of ``summary.json`` into (key, value) rows (lists skipped)."""
    rows: list[dict[str, Any]] = []
    for key, value in summary.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            rows.extend(summary_scalars(value, f"{name}.").to_dict("records"))
        elif not isinstance(value, list | tuple):
            rows.append({"key": name, "value": str(value)})
    return pd.DataFrame(rows, columns=["key", "value"])


def eta_lookup(risk: pd.DataFrame) -> dict[str, dict[str, Any]]:
    """ETA quantiles (UTC) per series id."""
    if risk.empty:
        return {}
    timed = with_series_id(with_utc_columns(risk, RISK_TIME_COLUMNS))
    keys = [c for c in ("eta_p10", "eta_p50", "eta_p90") if c in timed.columns]
    return {row["series_id"]: {k: row[k] for k in keys} for _, row in timed.iterrows()}


def risk_fan_charts(
    risk: pd.DataFrame,
    clean: pd.DataFrame,
    forecasts: pd.DataFrame,
    top_n: int,
    *,
    risk_cfg: Mapping[str, Any] | None = None,
    history_hours: int = 7 * 24,
) -> Figure:
    """Fan charts of the ``top_n`` ranked risks with threshold lines and ETA markers."""
    ranked = with_series_id(ranked_risks(risk, top_n))
    if ranked.empty:
        return empty_figure("no resource at risk", title="Top risks")
    ids = ranked["series_id"].tolist()
    score = row_score_column(risk)
    finding = "metric_finding" if "metric_finding" in ranked.columns else "finding"
    titles = {
        row["series_id"]: f"#{row['rank']} {row['series_id']} - {row[finding]}, risk {row[score]}"
        for _, row in ranked.iterrows()
    }
    return fan_chart_figure(
        clean,
        forecasts,
        ids,
        history_hours=history_hours,
        thresholds=threshold_lookup(risk, risk_cfg),
        etas=eta_lookup(risk),
        titles=titles,
        title=f"Top {len(ids)} risks: forecast vs thresholds",
    )


def service_plan_table(service_capacity: pd.DataFrame) -> pd.DataFrame:
    """Service capacity plan, biggest change in instance count first.

    Uses the file's ``instance_delta`` when present, else adds ``change`` = recommended -
    current instances.
    """
    table = service_capacity.copy()
    delta = "instance_delta" if "instance_delta" in table.columns else "change"
    if delta == "change" and {"current_instances", "recommended_instances"} <= set(table.columns):
        position = list(table.columns).index("recommended_instances") + 1
        table.insert(
            position, "change", table["recommended_instances"] - table["current_instances"]
        )
    if delta in table.columns:
        size = pd.to_numeric(table[delta], errors="coerce").abs()
        table = table.assign(_size=size).sort_values(
            ["_size", "service"], ascending=[False, True], na_position="last"
        )
        table = table.drop(columns="_size")
    elif "service" in table:
        table = table.sort_values("service")
    return table.reset_index(drop=True)


def rightsizing_table(risk: pd.DataFrame) -> pd.DataFrame:
    """Resources with a different recommended instance type, biggest monthly saving first."""
    columns = [
        c
        for c in (
            "resource_id",
            "service",
            "finding",
            "instance_type",
            "recommended_instance_type",
            "monthly_cost_delta_usd",
            "sizing",
            "reason_codes",
        )
        if c in risk.columns
    ]
    if risk.empty or "monthly_cost_delta_usd" not in risk:
        return pd.DataFrame(columns=columns)
    delta = pd.to_numeric(risk["monthly_cost_delta_usd"], errors="coerce")
    advised = risk[delta.notna() & (delta != 0)]
    if "recommended_instance_type" in advised:
        advised = advised[advised["recommended_instance_type"].notna()]
    # One row per resource: its metrics share the instance, so the advice is per resource.
    advised = advised.sort_values(["monthly_cost_delta_usd", "resource_id"])
    advised = advised.drop_duplicates("resource_id")
    return advised[columns].reset_index(drop=True)


def findings_figure(risk: pd.DataFrame) -> Figure:
    """Stacked bars: count per finding, split by risk score (see ``findings_unit``)."""
    table = findings_table(risk)
    if table.empty:
        return empty_figure(title="Findings")
    table = table[table["finding"] != "total"].set_index("finding").drop(columns="total")
    fig = Figure(figsize=(7, 3.2), layout="constrained")
    ax = fig.add_subplot()
    bottom = np.zeros(len(table))
    # Colour by the score itself (0 green .. 4 dark red), whichever scores occur.
    colours = {"0": "#9bc53d", "1": "#f0c808", "2": "#f08a4b", "3": "#d7263d", "4": "#7a0c1b"}
    for column in table.columns:
        colour = colours.get(column.removeprefix("score "), "0.5")
        ax.bar(
            [plot_text(f) for f in table.index],
            table[column],
            bottom=bottom,
            label=plot_text(column),
            color=colour,
        )
        bottom += table[column].to_numpy()
    ax.set(ylabel=findings_unit(risk), title="Findings by risk score")
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.legend(fontsize=8)
    return fig


# --------------------------------------------------------------------------------------------
# Exploration notebooks (one per stage)
# --------------------------------------------------------------------------------------------


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
    x = _naive_utc(pd.Series(counts.index))
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
    fig, axes = _grid(len(series_ids), 2, (6.0, 2.8))
    for ax, sid in zip(axes, series_ids, strict=True):
        part = clean[clean["series_id"] == sid].sort_values("timestamp")
        x = _naive_utc(part["timestamp"])
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
