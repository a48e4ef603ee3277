"""Decision backtest: score the risk report's calls against the held-back actuals.

The workflow ran on the history before ``data.history_end`` (see :mod:`capforecast.data.holdout`);
the actuals are the following ``forecast.horizon`` bins, cleaned like the history. Per
percentage series with a critical threshold (the risk report's ``critical_threshold``, service
overrides included):

* outcome: ``breached`` when an actual bin of the forecast statistic (``forecast.target``: the
  hourly mean by default) reaches the critical threshold inside the window; ``first_crossing``
  is the first such bin.
* the product's calls: ``at_risk`` (``metric_finding == "at_risk"``) and, as a second reading,
  ``at_risk`` or ``under_provisioned``; its probability ``p_breach_critical``; its ETA
  ``eta_p50``.
* two simple rules computed from the same history: a Prometheus-style ``predict_linear`` alert
  (least-squares line over the last ``models.predict_linear_window_hours``, extrapolated over
  the window; alert when it reaches critical, ETA the first bin where it does) and "last week's
  peak": alert when the maximum of the last 7 days before the cut reached critical (no ETA).
  Their probabilities for the Brier score are 0 or 1.

Per method: precision, recall, F1 (= 2 TP / (2 TP + FP + FN)), Brier score, the climatological
Brier score of always forecasting the base rate (``b (1 - b)``) and the Brier skill score
``1 - Brier / climatology``, and the ETA error (``eta - first_crossing`` in hours, positive =
late) over true breaches the method gave an ETA for. Undefined ratios (no alert, no breach) are
NaN, never 0.

Series that cannot be scored are counted, not dropped: ``no_actuals`` (no actual bin in the
window: the series stopped reporting), ``no_call`` (actuals but no row in the risk report:
the series started after the cut) and ``no_data`` (its history had no usable row, so the risk
report has no forecast to call on).

Right-sizing: every resource whose recommended instance type differs from its current one is
checked against the window's actual peak on each observed dimension (CPU, memory), moved in
capacity units like the recommendation itself: ``peak x current capacity / recommended
capacity``. ``harmful`` when that exceeds 100 % on a dimension; ``over_critical`` when it
reaches the dimension's critical threshold.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from capforecast.data.holdout import Cut
from capforecast.forecast.models.baselines import linear_trend_values
from capforecast.forecast.no_data import NO_DATA
from capforecast.risk.rightsizing import catalogue_frame, resource_inventory

SERIES_KEYS = ["resource_id", "metric"]
LAST_WEEK = pd.Timedelta(days=7)
PERCENT_CEILING = 100.0
CPU, MEMORY = "cpu_utilization", "memory_utilization"
# Capacity column of the resources table / catalogue per sized metric.
CAPACITY_OF: dict[str, str] = {CPU: "vcpu", MEMORY: "memory_gib"}

PRODUCT_AT_RISK = "capforecast_at_risk"
PRODUCT_AT_RISK_OR_UNDER = "capforecast_at_risk_or_under"
PREDICT_LINEAR = "predict_linear"
LAST_WEEK_PEAK = "last_week_peak"
METHOD_LABELS: dict[str, str] = {
    PRODUCT_AT_RISK: "capforecast: at_risk",
    PRODUCT_AT_RISK_OR_UNDER: "capforecast: at_risk or under_provisioned",
    PREDICT_LINEAR: "predict_linear alert (Prometheus style)",
    LAST_WEEK_PEAK: "last week's peak >= critical",
}
# Per method: the alert column, the probability column and the ETA column of the series table.
METHOD_COLUMNS: dict[str, tuple[str, str, str | None]] = {
    PRODUCT_AT_RISK: ("call_at_risk", "p_breach_critical", "eta_p50"),
    PRODUCT_AT_RISK_OR_UNDER: ("call_at_risk_or_under", "p_breach_critical", "eta_p50"),
    PREDICT_LINEAR: ("predict_linear_alert", "predict_linear_p", "predict_linear_eta"),
    LAST_WEEK_PEAK: ("last_week_peak_alert", "last_week_peak_p", None),
}
SUMMARY_COLUMNS: tuple[str, ...] = (
    "method",
    "label",
    "series",
    "breached",
    "base_rate",
    "alerts",
    "true_positives",
    "false_positives",
    "false_negatives",
    "precision",
    "recall",
    "f1",
    "brier_series",
    "brier",
    "brier_climatology",
    "brier_skill",
    "eta_n",
    "eta_mae_hours",
    "eta_bias_hours",
)
SERIES_SCORE_COLUMNS: tuple[str, ...] = (
    "resource_id",
    "metric",
    "service",
    "critical_threshold",
    "scored",
    "not_scored_reason",
    "actual_bins",
    "actual_coverage",
    "actual_peak",
    "breached",
    "first_crossing",
    "metric_finding",
    "call_at_risk",
    "call_at_risk_or_under",
    "p_breach_critical",
    "eta_p50",
    "eta_p50_error_hours",
    "peak_p90",
    "predict_linear_alert",
    "predict_linear_p",
    "predict_linear_eta",
    "predict_linear_eta_error_hours",
    "last_week_peak",
    "last_week_peak_alert",
    "last_week_peak_p",
)
RIGHTSIZING_COLUMNS: tuple[str, ...] = (
    "resource_id",
    "service",
    "instance_type",
    "recommended_instance_type",
    "change",
    "monthly_cost_delta_usd",
    "cpu_actual_peak",
    "cpu_peak_on_recommended",
    "cpu_critical",
    "memory_actual_peak",
    "memory_peak_on_recommended",
    "memory_critical",
    "checked",
    "harmful",
    "over_critical",
    "note",
)


@dataclass(frozen=True)
class DecisionResult:
    """Everything the decision rule writes (see ``score_decisions``)."""

    series_scores: pd.DataFrame
    summary: pd.DataFrame
    rightsizing: pd.DataFrame
    summary_json: dict[str, Any]


def _observed(frame: pd.DataFrame, statistic: str) -> pd.DataFrame:
    """Clean-format rows with a finite value of the forecast statistic, as column ``y``."""
    column = "value_max" if statistic == "max" else "value"
    out = frame[[*SERIES_KEYS, "timestamp"]].copy()
    out["timestamp"] = pd.to_datetime(out["timestamp"], utc=True)
    out["y"] = pd.to_numeric(frame[column], errors="coerce").astype(float)
    return out[np.isfinite(out["y"].to_numpy())]


def actual_outcomes(
    actuals: pd.DataFrame, critical: pd.Series, cut: Cut, statistic: str
) -> pd.DataFrame:
    """Per series of ``critical`` (indexed by resource_id, metric): observed bins in the window,
    coverage, peak, breached and the first bin at or above critical."""
    observed = _observed(actuals, statistic)
    window = observed[
        (observed["timestamp"] >= cut.history_end) & (observed["timestamp"] < cut.actuals_end)
    ]
    window = window.join(critical.rename("critical"), on=SERIES_KEYS, how="inner")
    grouped = window.groupby(SERIES_KEYS)
    out = pd.DataFrame(index=critical.index)
    out["actual_bins"] = grouped.size().reindex(out.index).fillna(0).astype("int64")
    out["actual_coverage"] = out["actual_bins"] / cut.horizon
    out["actual_peak"] = grouped["y"].max().reindex(out.index)
    crossing = window[window["y"] >= window["critical"]]
    out["first_crossing"] = crossing.groupby(SERIES_KEYS)["timestamp"].min().reindex(out.index)
    out["breached"] = out["first_crossing"].notna()
    return out


def _hours(delta: pd.Series) -> pd.Series:
    return delta / pd.Timedelta(hours=1)


def predict_linear_rule(
    history: pd.DataFrame, critical: pd.Series, cut: Cut, statistic: str, window_hours: float
) -> pd.DataFrame:
    """Per series: Prometheus-style ``predict_linear`` alert over the scored window.

    The line is ``capforecast.forecast.models.baselines.linear_trend_values`` (the project's
    predict_linear model) over each series' regular grid up to its last history bin,
    extrapolated to the end of the window; ``predict_linear_eta`` is the first window bin where
    it reaches critical. Series with fewer than two observed bins get no line and no alert.
    """
    observed = _observed(history, statistic)
    observed = observed[observed["timestamp"] < cut.history_end]
    window_bins = max(2, int(pd.Timedelta(hours=window_hours) / cut.freq))
    rows = []
    for (resource_id, metric), group in observed.groupby(SERIES_KEYS, sort=True):
        if (resource_id, metric) not in critical.index or len(group) < 2:
            continue
        first, last = group["timestamp"].min(), group["timestamp"].max()
        positions = ((group["timestamp"] - first) / cut.freq).round().astype(int).to_numpy()
        y = np.full(positions[-1] + 1, np.nan)
        y[positions] = group["y"].to_numpy()
        steps_to_end = round((cut.last_bin - last) / cut.freq)
        line, _ = linear_trend_values(y, window_bins, steps_to_end, ())
        in_window = line[-cut.horizon :]
        level = float(critical.loc[(resource_id, metric)])
        reached = np.flatnonzero(in_window >= level)
        rows.append(
            {
                "resource_id": resource_id,
                "metric": metric,
                "predict_linear_alert": bool(reached.size),
                "predict_linear_eta": cut.history_end + int(reached[0]) * cut.freq
                if reached.size
                else pd.NaT,
            }
        )
    out = pd.DataFrame(rows, columns=[*SERIES_KEYS, "predict_linear_alert", "predict_linear_eta"])
    out = out.set_index(SERIES_KEYS).reindex(critical.index)
    out["predict_linear_alert"] = out["predict_linear_alert"].eq(True)
    out["predict_linear_eta"] = pd.to_datetime(out["predict_linear_eta"], utc=True)
    return out


def last_week_peak_rule(
    history: pd.DataFrame, critical: pd.Series, cut: Cut, statistic: str
) -> pd.DataFrame:
    """Per series: the maximum of the 7 days before the cut and whether it reached critical
    (no observed bin in that week: no peak, no alert)."""
    observed = _observed(history, statistic)
    week = observed[
        (observed["timestamp"] >= cut.history_end - LAST_WEEK)
        & (observed["timestamp"] < cut.history_end)
    ]
    out = pd.DataFrame(index=critical.index)
    out["last_week_peak"] = week.groupby(SERIES_KEYS)["y"].max().reindex(out.index)
    out["last_week_peak_alert"] = (out["last_week_peak"] >= critical).fillna(False).astype(bool)
    return out


def _percentage_calls(risk_report: pd.DataFrame, percent_metrics: Sequence[str]) -> pd.DataFrame:
    """Risk report rows of percentage series with a critical threshold, one per series."""
    rows = risk_report[
        risk_report["metric"].isin(list(percent_metrics))
        & risk_report["critical_threshold"].notna()
    ].copy()
    rows["resource_id"] = rows["resource_id"].astype(str)
    for column in ("eta_p50",):
        rows[column] = pd.to_datetime(rows[column], utc=True)
    return rows.drop_duplicates(SERIES_KEYS).set_index(SERIES_KEYS).sort_index()


def series_scores(
    risk_report: pd.DataFrame,
    history: pd.DataFrame,
    actuals: pd.DataFrame,
    cut: Cut,
    *,
    percent_metrics: Sequence[str],
    statistic: str,
    predict_linear_window_hours: float,
) -> pd.DataFrame:
    """One row per percentage series with a critical threshold (``SERIES_SCORE_COLUMNS``).

    Series of the risk report, plus series that only appear in the actuals (``no_call``; their
    threshold is the metric's most common critical threshold in the report).
    """
    calls = _percentage_calls(risk_report, percent_metrics)
    critical = calls["critical_threshold"].astype(float)
    new = _observed(actuals, statistic)
    new = new[new["metric"].isin(list(critical.index.get_level_values("metric")))]
    new_keys = pd.MultiIndex.from_frame(new[SERIES_KEYS].drop_duplicates()).difference(
        critical.index
    )
    if len(new_keys):
        by_metric = critical.groupby(level="metric").agg(lambda s: s.mode().iloc[0])
        extra = pd.Series(
            by_metric.reindex(new_keys.get_level_values("metric")).to_numpy(), index=new_keys
        )
        critical = pd.concat([critical, extra]).sort_index()
    critical.index.names = SERIES_KEYS

    out = actual_outcomes(actuals, critical, cut, statistic)
    out["critical_threshold"] = critical
    out = out.join(calls[["service", "metric_finding", "p_breach_critical", "eta_p50", "peak_p90"]])
    out = out.join(
        predict_linear_rule(history, critical, cut, statistic, predict_linear_window_hours)
    )
    out = out.join(last_week_peak_rule(history, critical, cut, statistic))

    has_call = out.index.isin(calls.index)
    # A series without data (every row quarantined) has no forecast, so no call to score.
    no_data = out["metric_finding"].eq(NO_DATA).to_numpy()
    out["not_scored_reason"] = np.select(
        [~has_call, no_data, out["actual_bins"].to_numpy() == 0],
        ["no_call", NO_DATA, "no_actuals"],
        "",
    )
    out["scored"] = out["not_scored_reason"] == ""
    out["call_at_risk"] = out["metric_finding"].eq("at_risk")
    out["call_at_risk_or_under"] = out["metric_finding"].isin(["at_risk", "under_provisioned"])
    out["predict_linear_p"] = out["predict_linear_alert"].astype(float)
    out["last_week_peak_p"] = out["last_week_peak_alert"].astype(float)
    crossing = out["first_crossing"]
    out["eta_p50_error_hours"] = _hours(out["eta_p50"] - crossing).where(out["breached"])
    out["predict_linear_eta_error_hours"] = _hours(out["predict_linear_eta"] - crossing).where(
        out["breached"]
    )
    return out.reset_index().loc[:, list(SERIES_SCORE_COLUMNS)]


def _ratio(numerator: float, denominator: float) -> float:
    return numerator / denominator if denominator > 0 else float("nan")


def method_summary(scores: pd.DataFrame) -> pd.DataFrame:
    """Precision, recall, F1, Brier (and its skill over climatology), ETA error per method,
    over the scored series of ``scores`` (one or more cuts pooled)."""
    scored = scores[scores["scored"].astype(bool)]
    truth = scored["breached"].astype(bool).to_numpy()
    rows = []
    for method, (alert_col, p_col, eta_col) in METHOD_COLUMNS.items():
        alert = scored[alert_col].astype(bool).to_numpy()
        tp = int((alert & truth).sum())
        fp = int((alert & ~truth).sum())
        fn = int((~alert & truth).sum())
        p = pd.to_numeric(scored[p_col], errors="coerce").to_numpy(dtype=float)
        has_p = np.isfinite(p)
        outcome = truth[has_p].astype(float)
        brier = float(np.mean((p[has_p] - outcome) ** 2)) if has_p.any() else float("nan")
        base = float(outcome.mean()) if has_p.any() else float("nan")
        climatology = base * (1 - base)
        errors = (
            pd.to_numeric(scored[f"{eta_col}_error_hours"], errors="coerce").dropna()
            if eta_col
            else pd.Series(dtype=float)
        )
        rows.append(
            {
                "method": method,
                "label": METHOD_LABELS[method],
                "series": len(scored),
                "breached": int(truth.sum()),
                "base_rate": _ratio(float(truth.sum()), len(scored)),
                "alerts": int(alert.sum()),
                "true_positives": tp,
                "false_positives": fp,
                "false_negatives": fn,
                "precision": _ratio(tp, tp + fp),
                "recall": _ratio(tp, tp + fn),
                "f1": _ratio(2 * tp, 2 * tp + fp + fn),
                "brier_series": int(has_p.sum()),
                "brier": brier,
                "brier_climatology": climatology,
                "brier_skill": 1 - brier / climatology if climatology > 0 else float("nan"),
                "eta_n": len(errors),
                "eta_mae_hours": float(errors.abs().mean()) if len(errors) else float("nan"),
                "eta_bias_hours": float(errors.mean()) if len(errors) else float("nan"),
            }
        )
    return pd.DataFrame(rows, columns=list(SUMMARY_COLUMNS))


def _change(current: Mapping[str, float], new: Mapping[str, float]) -> str:
    """downsize / upsize / mixed (one dimension shrinks, another grows) / unknown capacity."""
    if not all(current[c] > 0 for c in CAPACITY_OF.values()):
        return "unknown"
    smaller = any(new[c] < current[c] for c in CAPACITY_OF.values())
    larger = any(new[c] > current[c] for c in CAPACITY_OF.values())
    return "downsize" if smaller and not larger else "upsize" if larger and not smaller else "mixed"


def rightsizing_check(
    risk_report: pd.DataFrame,
    resources: pd.DataFrame,
    outcomes: pd.DataFrame,
    catalogue: Mapping[str, Mapping[str, Any]],
) -> pd.DataFrame:
    """Every changed instance-type recommendation against the window's actual peaks.

    ``outcomes``: ``series_scores`` rows (resource_id, metric, actual_peak, critical_threshold).
    A dimension's peak on the recommended type is ``actual peak x current capacity /
    recommended capacity``; ``harmful`` when any exceeds 100 %, ``over_critical`` when any
    reaches its critical threshold. ``checked`` is False (with a note) when the current capacity
    is unknown (0 or missing) or no dimension has actuals: such rows never count as harmless.
    """
    per_resource = risk_report.drop_duplicates("resource_id").copy()
    per_resource["resource_id"] = per_resource["resource_id"].astype(str)
    changed = per_resource[
        per_resource["recommended_instance_type"].notna()
        & (per_resource["recommended_instance_type"] != per_resource["instance_type"])
    ]
    if changed.empty:
        return pd.DataFrame(columns=list(RIGHTSIZING_COLUMNS))
    inventory = resource_inventory(resources, set(changed["resource_id"]), catalogue)
    inventory = inventory.set_index("resource_id")
    types = catalogue_frame(catalogue).set_index("instance_type")
    peaks = outcomes.set_index(SERIES_KEYS)
    rows = []
    for resource in changed.to_dict("records"):
        rid = resource["resource_id"]
        current = {c: float(inventory.loc[rid, c]) for c in CAPACITY_OF.values()}
        new = {c: float(types.loc[resource["recommended_instance_type"], c]) for c in current}
        row: dict[str, Any] = {
            key: resource.get(key)
            for key in (
                "resource_id",
                "service",
                "instance_type",
                "recommended_instance_type",
                "monthly_cost_delta_usd",
            )
        }
        row["change"] = _change(current, new)
        notes, moved, over = [], [], []
        for metric, capacity in CAPACITY_OF.items():
            dim = metric.split("_")[0]
            key = (rid, metric)
            peak = float(peaks.loc[key, "actual_peak"]) if key in peaks.index else float("nan")
            level = (
                float(peaks.loc[key, "critical_threshold"]) if key in peaks.index else float("nan")
            )
            after = peak * current[capacity] / new[capacity] if current[capacity] > 0 else np.nan
            if not current[capacity] > 0:
                notes.append(f"{dim}_capacity_unknown")
            elif not np.isfinite(peak):
                notes.append(f"{dim}_no_actuals")
            row[f"{dim}_actual_peak"] = peak
            row[f"{dim}_peak_on_recommended"] = after
            row[f"{dim}_critical"] = level
            if np.isfinite(after):
                moved.append(after > PERCENT_CEILING)
                over.append(np.isfinite(level) and after >= level)
        row["checked"] = bool(moved) and not any("capacity_unknown" in n for n in notes)
        row["harmful"] = any(moved) if row["checked"] else pd.NA
        row["over_critical"] = any(over) if row["checked"] else pd.NA
        row["note"] = ";".join(notes)
        rows.append(row)
    return pd.DataFrame(rows).loc[:, list(RIGHTSIZING_COLUMNS)]


def rightsizing_counts(check: pd.DataFrame) -> dict[str, int]:
    """Changed recommendations, how many were checked, harmful and over critical (by change)."""
    checked = check[check["checked"].astype(bool)] if len(check) else check
    harmful = checked["harmful"].astype(bool) if len(checked) else pd.Series(dtype=bool)
    return {
        "changed": len(check),
        "downsize": int((check["change"] == "downsize").sum()) if len(check) else 0,
        "checked": len(checked),
        "not_checked": len(check) - len(checked),
        "harmful": int(harmful.sum()),
        "harmful_downsize": int((harmful & (checked["change"] == "downsize")).sum())
        if len(checked)
        else 0,
        "over_critical": int(checked["over_critical"].astype(bool).sum()) if len(checked) else 0,
    }


def _records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """JSON-ready rows: NaN/NaT -> None, numpy scalars -> Python."""
    return [
        {k: (None if pd.isna(v) else v.item() if hasattr(v, "item") else v) for k, v in r.items()}
        for r in frame.astype(object).to_dict("records")
    ]


def score_decisions(
    risk_report: pd.DataFrame,
    history: pd.DataFrame,
    actuals: pd.DataFrame,
    resources: pd.DataFrame,
    cut: Cut,
    *,
    percent_metrics: Sequence[str],
    statistic: str,
    predict_linear_window_hours: float,
    catalogue: Mapping[str, Mapping[str, Any]],
    holdout_rows: Mapping[str, int] | None = None,
) -> DecisionResult:
    """Series scores, per-method summary, right-sizing check and a JSON summary of one cut."""
    scores = series_scores(
        risk_report,
        history,
        actuals,
        cut,
        percent_metrics=percent_metrics,
        statistic=statistic,
        predict_linear_window_hours=predict_linear_window_hours,
    )
    summary = method_summary(scores)
    check = rightsizing_check(risk_report, resources, scores, catalogue)
    reasons = scores["not_scored_reason"].replace("", "scored").value_counts()
    summary_json = {
        "history_end": cut.history_end.isoformat(),
        "actuals_end": cut.actuals_end.isoformat(),
        "horizon_bins": cut.horizon,
        "statistic": statistic,
        "series": {k: int(v) for k, v in sorted(reasons.items())},
        "partial_actuals": int((scores["scored"] & (scores["actual_coverage"] < 1)).sum()),
        "methods": _records(summary),
        "rightsizing": rightsizing_counts(check),
        "holdout_rows": dict(holdout_rows or {}),
    }
    return DecisionResult(scores, summary, check, summary_json)
