"""The forecast and backtest report (notebooks/forecast_backtest.ipynb): leaderboard, headline,
fallbacks, per-series errors. Conventions as in :mod:`capforecast.reports.common`."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
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
