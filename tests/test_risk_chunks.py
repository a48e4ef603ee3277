"""The risk stage cut by series gives the whole fleet's numbers, exactly.

``assess_risk`` reads the history one part (partition) at a time and computes the breach
probabilities ``CHUNK_SERIES`` series at a time, so that neither the fleet's history nor its
fan x horizon x levels rows are held at once. On a small fleet with every kind of series
(ramps into critical, weekly pegs, a stopped series, one without data, byte metrics, sample
paths, a quality table), the report, the daily breach table, the capacity plan, the summary and
the per-step probabilities must not change with the chunk size or the cut of the history.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from test_risk import CPU, DISK, MEM, NET, START, config, fan, history, resources

from capforecast.errors import ForecastInputError
from capforecast.risk import assess
from capforecast.risk.assess import assess_risk
from capforecast.risk.probability import (
    breach_probabilities,
    breach_setup,
    breach_tables,
    selected_forecasts,
)

SERVICES = {"web": ["w1", "w2", "w3", "w4"], "db": ["d1", "d2", "d3"], "batch": ["b1", "b2"]}
HOURS = 120


def small_fleet() -> tuple[pd.DataFrame, dict[str, pd.DataFrame], pd.DataFrame, pd.DataFrame]:
    """(forecasts, history by service, resources, quality) of nine resources."""
    rng = np.random.default_rng(8)
    forecasts, parts, rows, quality = [], {}, [], []
    for service, ids in SERVICES.items():
        frames = []
        for k, resource in enumerate(ids):
            rows.append((resource, service, "big.4x" if service == "db" else "mid.2x"))
            lag = 60 if resource == "b2" else 0  # b2 stopped reporting
            start = START - lag * pd.Timedelta(hours=1)
            for j, metric in enumerate((CPU, MEM, DISK, NET)):
                level = 20.0 + 9 * k + 6 * j + (40.0 if resource == "d2" else 0.0)
                ramp = level + rng.uniform(0.0, 0.4) * np.arange(HOURS)
                if metric == NET:
                    ramp = 1e6 * (1 + ramp)
                forecasts.append(fan(resource, metric, ramp, sd=2.0 + k, start=start))
                values = level + 5 * np.sin(np.arange(24 * 30) / 24 * 2 * np.pi)
                if resource == "w2" and metric == CPU:
                    values[np.arange(len(values)) % 168 == 100] = 100.0  # weekly peg
                if metric == NET:
                    values = 1e6 * (1 + values)
                past = history(resource, metric, values, lag_hours=lag)
                frames.append(past)
                quality.append((resource, metric, float(len(past)), 0.0, False))
        parts[service] = pd.concat(frames, ignore_index=True)
    forecasts = pd.concat(forecasts, ignore_index=True)
    # d3 memory has no data: every forecast quantile is NaN.
    empty = (forecasts["resource_id"] == "d3") & (forecasts["metric"] == MEM)
    forecasts.loc[empty, [c for c in forecasts.columns if c.startswith("q")]] = np.nan
    quality = pd.DataFrame(
        quality, columns=["resource_id", "metric", "history_hours", "pegged_fraction", "too_short"]
    )
    return forecasts, parts, resources(*rows), quality


def sample_paths(resource_id: str, metric: str) -> pd.DataFrame:
    rng = np.random.default_rng(3)
    times = pd.date_range(START, periods=HOURS, freq="h")
    return pd.concat(
        pd.DataFrame(
            {
                "resource_id": resource_id,
                "metric": metric,
                "timestamp": times,
                "sample": k,
                "value": 60 + np.cumsum(rng.normal(0.3, 2.0, HOURS)),
            }
        )
        for k in range(20)
    )


def assert_same_result(chunked, whole) -> None:
    for field in ("risk_report", "daily_breach", "service_capacity", "breach_by_step"):
        pd.testing.assert_frame_equal(getattr(chunked, field), getattr(whole, field), obj=field)
    assert chunked.summary == whole.summary


@pytest.mark.parametrize("chunk_series", [1, 5, 1000])
def test_history_parts_and_series_chunks_give_the_whole_fleet_result(monkeypatch, chunk_series):
    forecasts, parts, table, quality = small_fleet()
    samples = sample_paths("w3", CPU)
    settings = config()
    whole = assess_risk(
        forecasts,
        pd.concat(parts.values(), ignore_index=True),
        table,
        settings,
        quality,
        samples=samples,
        keep_breach_by_step=True,
    )
    report = whole.risk_report
    assert {"at_risk", "stopped_reporting", "no_data"} <= set(report["metric_finding"])
    assert (whole.breach_by_step["method"] == "sample_paths").any()
    monkeypatch.setattr(assess, "CHUNK_SERIES", chunk_series)
    # The parts in another order than the history's, read only when their turn comes.
    chunked = assess_risk(
        forecasts,
        [lambda part=part: part for part in reversed(list(parts.values()))],
        table,
        settings,
        quality,
        samples=samples,
        keep_breach_by_step=True,
    )
    assert_same_result(chunked, whole)
    # What the rule asks for: the same outputs, the per-step table not gathered.
    lean = assess_risk(forecasts, list(map(lambda p: lambda: p, parts.values())), table, settings)
    assert lean.breach_by_step is None
    plain = assess_risk(forecasts, pd.concat(parts.values()), table, settings)
    pd.testing.assert_frame_equal(lean.risk_report, plain.risk_report)


def test_without_history_and_with_empty_parts(monkeypatch):
    forecasts, parts, table, quality = small_fleet()
    monkeypatch.setattr(assess, "CHUNK_SERIES", 4)
    whole = assess_risk(forecasts, None, table, config(), quality, keep_breach_by_step=True)
    empty = next(iter(parts.values())).iloc[:0]
    chunked = assess_risk(
        forecasts,
        [lambda: empty, lambda: empty],
        table,
        config(),
        quality,
        keep_breach_by_step=True,
    )
    assert_same_result(chunked, whole)


def test_a_series_in_two_history_parts_is_refused():
    forecasts, parts, table, _ = small_fleet()
    web = parts["web"]
    with pytest.raises(ForecastInputError, match="two history parts"):
        assess_risk(forecasts, [lambda: web.iloc[:100], lambda: web.iloc[100:]], table, config())


def test_breach_tables_by_series_equal_breach_probabilities():
    forecasts, parts, _, _ = small_fleet()
    observed = pd.concat(parts.values(), ignore_index=True)
    samples = sample_paths("d1", DISK)
    levels = {m: {"warning": 60, "critical": 85} for m in (CPU, MEM, DISK)}
    whole = breach_probabilities(forecasts, levels, samples=samples, history=observed)
    fan_rows, quantiles = selected_forecasts(forecasts)
    setup = breach_setup(fan_rows, quantiles, levels, samples)
    keys = fan_rows[["resource_id", "metric"]].drop_duplicates()
    chunks = [keys.iloc[k : k + 7] for k in range(0, len(keys), 7)]
    per_step, daily = [], []
    for chunk in chunks:
        mine = pd.MultiIndex.from_frame(chunk)

        def of(frame, mine=mine):
            return frame[pd.MultiIndex.from_frame(frame[["resource_id", "metric"]]).isin(mine)]

        tables = breach_tables(of(fan_rows), setup, samples=of(samples), history=observed)
        assert tables.levels == whole.levels
        per_step.append(tables.per_step)
        daily.append(tables.daily)
    order = ["resource_id", "metric", "timestamp"]
    pd.testing.assert_frame_equal(
        pd.concat(per_step).sort_values(order, ignore_index=True), whole.per_step
    )
    order[-1] = "day"
    pd.testing.assert_frame_equal(
        pd.concat(daily).sort_values(order, ignore_index=True), whole.daily
    )
