"""The forecast and backtest report (notebooks/forecast_backtest.ipynb): leaderboard, headline,
fallbacks, per-series errors. Conventions as in :mod:`capforecast.reports.common`."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
from matplotlib.figure import Figure
from pandas.io.formats.style import Styler

from capforecast.contracts import quantile_column
from capforecast.escape import markdown_text, plot_text
from capforecast.forecast.metrics import quantile_levels
from capforecast.forecast.models.base import fell_back
from capforecast.reports.common import (
    SELECTED_MODEL,
    as_utc,
    empty_figure,
    figure_grid,
    format_timestamp,
    parquet_files,
    read_series,
    styled,
    with_series_id,
)

# Leaderboard columns models are ranked by, best first: the ratios to the daily seasonal naive
# (means are dominated by a few series near zero); means only when no ratio exists.
LEADERBOARD_RANKING: tuple[str, ...] = ("wql_relgm", "mase_relgm", "wql_mean", "mase_mean")


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
    """Markdown headline: how good the selected forecast was and what the final one covers.

    ``forecasts``: the forecasts table or its ``forecast_digest``."""
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
    digest = forecast_digest(forecasts)
    final = digest[digest["model"] == SELECTED_MODEL]
    if final.empty:
        lines.append("**No final forecast rows** (model `selected`).")
    else:
        used = ""
        if "model_used" in final:
            per_series = final.set_index("series_id")["model_used"].value_counts()
            used = "; models used: " + ", ".join(
                f"{markdown_text(m)} ({n})" for m, n in per_series.items()
            )
        lines.append(
            f"Final forecast: {final['series_id'].nunique()} series, "
            f"{format_timestamp(final['start'].min())} to "
            f"{format_timestamp(final['end'].max())}{used}."
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
    ``final`` (the refit forecasts: the forecasts table or its ``forecast_digest``).
    ``model_used`` names what ran and why (e.g. ``seasonal_naive_daily (fallback: too_short)``).
    The leaderboard's ``n_fallback`` counts the backtest rows.
    """
    frames = []
    if len(metrics) and "model_used" in metrics:
        scored = metrics[~metrics["is_selection_window"].astype(bool)]
        fell = scored[scored["model_used"].fillna("").map(fell_back)]
        backtest = fell.groupby(["model", "series_id", "model_used"]).size()
        frames.append(backtest.rename("windows").reset_index().assign(stage="backtest"))
    digest = forecast_digest(forecasts)
    if len(digest) and "first_model_used" in digest:
        # A model x series is labelled by its first row.
        final = digest.drop(columns="model_used").rename(columns={"first_model_used": "model_used"})
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
    fig, axes = figure_grid(len(values), len(values), (max(5.0, 0.9 * len(models) + 2), 3.6))
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


def sample_series_ids(forecasts: pd.DataFrame, n: int, seed: int = 0) -> list[str]:
    """``n`` series of the forecasts table (or its ``forecast_digest``) picked at random,
    reproducibly (sorted for stable output)."""
    digest = forecast_digest(forecasts)
    ids = sorted(digest["series_id"].astype(str).unique()) if len(digest) else []
    if n <= 0 or not ids:
        return []
    rng = np.random.default_rng(seed)
    picked = rng.choice(len(ids), size=min(n, len(ids)), replace=False)
    return [ids[i] for i in sorted(picked)]


def growth_ranked_series(
    forecasts: pd.DataFrame, clean: pd.DataFrame | pd.Series, n: int
) -> list[str]:
    """Series whose forecast upper band rises furthest above their own history.

    Scale-free (ratio of the peak upper-band forecast to the 99th percentile of the history),
    so percentages and byte counts rank together; uses only backtest-report inputs: the
    forecasts table or its ``forecast_digest``, the cleaned history or its ``history_p99``.
    """
    digest = forecast_digest(forecasts)
    final = digest[digest["model"] == SELECTED_MODEL]
    history = clean if isinstance(clean, pd.Series) else history_p99(clean)
    if final.empty or history.empty or n <= 0:
        return []
    peak = final.set_index("series_id")["upper_peak"]
    ratio = (peak / history.reindex(peak.index)).replace([np.inf, -np.inf], np.nan).dropna()
    ranked = ratio.reset_index(name="ratio").sort_values(
        ["ratio", "series_id"], ascending=[False, True]
    )
    return ranked["series_id"].head(n).astype(str).tolist()


# --------------------------------------------------------------------------------------------
# Small tables in place of the fleet's forecasts and history (what the notebook reads)
# --------------------------------------------------------------------------------------------

# One row per model x series: first and last forecast time, the first ``model_used`` given
# (``model_used``) and the first row's (``first_model_used``, both only when the table has the
# column), the peak of the upper band (the highest quantile, else the mean).
DIGEST_COLUMNS: tuple[str, ...] = (
    "model",
    "series_id",
    "start",
    "end",
    "upper_peak",
    "model_used",
    "first_model_used",
)
_DIGEST_KEYS = ["model", "series_id"]
# Rows of forecasts.parquet read at a time by ``read_forecast_digest``.
DIGEST_BATCH_ROWS = 250_000


def _upper_column(columns: Sequence[str]) -> str:
    levels = quantile_levels(pd.DataFrame(columns=list(columns)))
    return quantile_column(max(levels)) if levels else "mean"


def _is_digest(frame: pd.DataFrame) -> bool:
    return "upper_peak" in frame.columns and "timestamp" not in frame.columns


def _merged_digest(rows: pd.DataFrame) -> pd.DataFrame:
    """Digest rows (or forecast rows shaped like them) merged per model x series, in order."""
    grouped = rows.groupby(_DIGEST_KEYS, sort=True, dropna=False)
    named = {
        "start": ("start", "min"),
        "end": ("end", "max"),
        "upper_peak": ("upper_peak", "max"),
    }
    if "model_used" in rows:
        named["model_used"] = ("model_used", "first")
    out = grouped.agg(**named).reset_index()
    if "first_model_used" in rows:
        first = rows.drop_duplicates(_DIGEST_KEYS)[[*_DIGEST_KEYS, "first_model_used"]]
        out = out.merge(first, on=_DIGEST_KEYS, how="left")
    return out[[c for c in DIGEST_COLUMNS if c in out.columns]]


def forecast_digest(forecasts: pd.DataFrame) -> pd.DataFrame:
    """``DIGEST_COLUMNS`` of a forecasts table (returned as is when it is one already): what
    the headline, the fallbacks and the choice of series read of the fleet's forecasts."""
    if _is_digest(forecasts):
        return forecasts
    frame = with_series_id(forecasts)
    upper = _upper_column(list(frame.columns))
    times = as_utc(frame["timestamp"]) if len(frame) else frame["timestamp"]
    rows = pd.DataFrame(
        {
            "model": frame.get("model", SELECTED_MODEL),
            "series_id": frame["series_id"],
            "start": times,
            "end": times,
            "upper_peak": frame.get(upper, np.nan),
        },
        index=frame.index,
    )
    if "model_used" in frame:
        rows["model_used"] = rows["first_model_used"] = frame["model_used"]
    return _merged_digest(rows)


def read_forecast_digest(path: str | Path, batch_rows: int = DIGEST_BATCH_ROWS) -> pd.DataFrame:
    """``forecast_digest`` of forecasts.parquet, read a batch of rows and a few columns at a
    time (the fleet's forecasts are many times what the report shows)."""
    names = pq.read_schema(path).names
    keys = ["series_id"] if "series_id" in names else ["resource_id", "metric"]
    wanted = ["model", *keys, "timestamp", "model_used", _upper_column(names)]
    columns = [c for c in dict.fromkeys(wanted) if c in names]
    parts = [
        forecast_digest(batch.to_pandas())
        for batch in pq.ParquetFile(path).iter_batches(batch_size=batch_rows, columns=columns)
    ]
    if not parts:
        return forecast_digest(pq.read_schema(path).empty_table().to_pandas())
    return _merged_digest(pd.concat(parts, ignore_index=True))


def history_p99(clean: pd.DataFrame) -> pd.Series:
    """99th percentile of each series' hourly values (``growth_ranked_series``), by series id."""
    if clean.empty:
        return pd.Series(dtype=float, name="value", index=pd.Index([], name="series_id"))
    return with_series_id(clean).groupby("series_id")["value"].quantile(0.99)


def read_history_p99(paths: str | Path | Sequence[str | Path]) -> pd.Series:
    """``history_p99`` of the cleaned partitions, one file and three columns at a time (a
    series found in several files is computed over all of them)."""
    files = parquet_files(paths)
    parts = [
        history_p99(pd.read_parquet(path, columns=["resource_id", "metric", "value"]))
        for path in files
    ]
    out = pd.concat(parts)
    split = out.index[out.index.duplicated()].unique()
    if len(split):
        out = pd.concat([out[~out.index.isin(split)], history_p99(read_series(files, list(split)))])
    return out.sort_index()
