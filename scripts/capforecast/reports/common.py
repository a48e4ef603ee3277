"""What every report notebook shares: reading the workflow's outputs (the files a report's rule
declares, or the default layout for a notebook opened by hand), number and time formats, styled
tables, figure plumbing and fan charts.

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
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from pandas.io.formats.style import Styler

from capforecast.contracts import quantile_column, series_id, split_series_id
from capforecast.csv_tables import read_csv_table
from capforecast.errors import InputDataError
from capforecast.escape import html_text, plot_text
from capforecast.forecast.metrics import quantile_levels

SELECTED_MODEL = "selected"
# Findings that need more capacity; the others are right-sizing or nothing to do.
NEEDS_CAPACITY: tuple[str, ...] = ("at_risk", "under_provisioned")

# Band drawn darker (inner) and lighter (outer) on fan charts, as quantile levels.
INNER_BAND: tuple[float, float] = (0.1, 0.9)
OUTER_BAND: tuple[float, float] = (0.02, 0.98)
NO_DATA = "no data"
# Rows a filtered read (``read_series``) decodes at a time.
SCAN_BATCH_ROWS = 65_536

# Figures draw data strings as text (escape.plot_text keeps mathtext off them); a matplotlibrc
# with text.usetex would hand every label, ids included, to LaTeX instead. Global because tick
# labels are made at draw time, after the figure functions return.
matplotlib.rcParams["text.usetex"] = False


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


def read_table(path: str | Path, columns: Sequence[str] | None = None) -> pd.DataFrame:
    """Read one CSV or parquet output (only ``columns`` of a parquet file, when given); a
    missing file is a one-line ``InputDataError``."""
    path = Path(path)
    if not path.exists():
        raise InputDataError(str(path), "file not found; run the workflow stage that writes it")
    if path.suffix == ".csv":
        return read_csv_table(path)
    return pd.read_parquet(path, columns=None if columns is None else list(columns))


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


def parquet_files(paths: str | Path | Sequence[str | Path]) -> list[Path]:
    """One path or a list as paths that exist (a missing one is a one-line ``InputDataError``)."""
    files = [Path(paths)] if isinstance(paths, str | Path) else [Path(p) for p in paths]
    if not files:
        raise InputDataError("clean", "no parquet partitions given")
    missing = [f for f in files if not f.exists()]
    if missing:
        raise InputDataError(
            str(missing[0]), "file not found; run the workflow stage that writes it"
        )
    return files


def read_files(paths: str | Path | Sequence[str | Path]) -> pd.DataFrame:
    """Concatenate parquet partitions (one path or a list), adding a ``partition`` column."""
    return pd.concat(
        [pd.read_parquet(f).assign(partition=f.stem) for f in parquet_files(paths)],
        ignore_index=True,
    )


def read_series(
    paths: str | Path | Sequence[str | Path],
    series_ids: Sequence[str],
    *,
    model: str | None = None,
) -> pd.DataFrame:
    """``read_files`` restricted to the rows of ``series_ids`` (and of ``model`` when given).

    Row filters on ``resource_id`` and ``metric`` (the parts of a ``contracts.series_id``) are
    applied while reading: a report reads the handful of series it draws, not the fleet.
    """
    pairs = [split_series_id(str(sid)) for sid in series_ids]
    resources, metrics = sorted({r for r, _ in pairs}), sorted({m for _, m in pairs})
    wanted = pc.field("resource_id").isin(resources) & pc.field("metric").isin(metrics)
    if model is not None:
        wanted &= pc.field("model") == model
    frames = []
    for path in parquet_files(paths):
        source = pq.ParquetFile(path)
        # A batch of rows at a time: only the matching rows are kept.
        batches = source.iter_batches(batch_size=SCAN_BATCH_ROWS) if pairs else []
        kept = [pa.Table.from_batches([batch]).filter(wanted) for batch in batches]
        frame = pa.Table.from_batches(
            [b for table in kept for b in table.to_batches()], schema=source.schema_arrow
        ).to_pandas()
        if pairs:
            frame = frame[with_series_id(frame)["series_id"].isin(set(map(str, series_ids)))]
        frames.append(frame.assign(partition=path.stem))
    return pd.concat(frames, ignore_index=True)


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


def figure_grid(
    n_panels: int, ncols: int, panel_size: tuple[float, float]
) -> tuple[Figure, list[Axes]]:
    ncols = max(1, min(ncols, n_panels))
    nrows = int(np.ceil(n_panels / ncols))
    fig = Figure(figsize=(panel_size[0] * ncols, panel_size[1] * nrows), layout="constrained")
    axes = [fig.add_subplot(nrows, ncols, i + 1) for i in range(n_panels)]
    return fig, axes


def data_legend(ax: Axes, handles: Sequence[Any], names: Sequence[Any]) -> None:
    """Legend whose entries are data values (metric names): shown literally, and given
    explicitly because matplotlib leaves out labels that start with "_"."""
    ax.legend(list(handles), [plot_text(name) for name in names], fontsize=8)


def naive_utc(values: pd.Series | pd.Index) -> np.ndarray:
    """UTC datetimes as naive numpy datetime64 (what matplotlib's date axis expects)."""
    return pd.DatetimeIndex(as_utc(pd.Series(values))).tz_convert(None).to_numpy()


def band_levels(levels: Sequence[float], lower: float, upper: float) -> tuple[float, float] | None:
    """The available quantile levels nearest to ``lower``/``upper`` (None if they coincide)."""
    if len(levels) < 2:
        return None
    lo = min(levels, key=lambda q: (abs(q - lower), q))
    hi = min(levels, key=lambda q: (abs(q - upper), -q))
    return (lo, hi) if lo < hi else None


def _band_label(band: tuple[float, float]) -> str:
    return f"P{band[0] * 100:g}-P{band[1] * 100:g}"


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
        ax.plot(naive_utc(hist["timestamp"]), hist["value"], color="0.2", lw=1, label="history")
    if not forecast.empty:
        fc = forecast.sort_values("timestamp")
        x = naive_utc(fc["timestamp"])
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
            *naive_utc(pd.Series([p10, p90])), color="#c0392b", alpha=0.12, label="ETA P10-P90"
        )
    if pd.notna(p50):
        ax.axvline(naive_utc(pd.Series([p50]))[0], color="#c0392b", lw=1.5, label="ETA P50")
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
    fig, axes = figure_grid(len(series_ids), ncols, (6.0, 3.0))
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
