"""The accuracy benchmark's ratio to the best peer and its bootstrap interval over series
(tests/benchmarks/bench_generalisation.py, the README's "90% CI" columns)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from capforecast.forecast.metrics import relative_geometric_mean

SCRIPT = Path(__file__).resolve().parent / "benchmarks" / "bench_generalisation.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_generalisation", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def scores(errors: dict[str, dict[str, list[float]]], baseline: str) -> pd.DataFrame:
    """Per-window score rows: ``errors[model][series]`` lists one MASE per window."""
    rows = [
        {"model": model, "series_id": series, "window": w, "mase": value}
        for model, by_series in errors.items()
        for series, values in by_series.items()
        for w, value in enumerate(values)
    ]
    base = {s: [1.0, 1.0] for s in {s for by in errors.values() for s in by}}
    rows += [
        {"model": baseline, "series_id": s, "window": w, "mase": v}
        for s, values in base.items()
        for w, v in enumerate(values)
    ]
    return pd.DataFrame(rows).assign(is_selection_window=False)


def test_a_uniform_lead_has_a_point_interval(bench):
    peer = {f"s{i}": [0.4 + 0.1 * i, 0.6] for i in range(6)}
    selected = {s: [v / 2 for v in values] for s, values in peer.items()}
    scored = scores({"selected": selected, "peer": peer}, bench.BASELINE)
    ratio, low, high = bench.ratio_interval(scored, "mase", "selected", "peer")
    assert (ratio, low, high) == pytest.approx((0.5, 0.5, 0.5))


def test_the_ratio_is_the_leaderboards_and_the_interval_widens_with_disagreement(bench):
    rng = np.random.default_rng(3)
    peer = {f"s{i}": list(rng.uniform(0.5, 1.5, 2)) for i in range(12)}
    # a lead on most series, a loss on some: a ratio below 1 that the series do not all agree on
    selected = {
        s: [v * (0.7 if i % 4 else 1.6) for v in vals] for i, (s, vals) in enumerate(peer.items())
    }
    # a series only the selected model was scored on counts for its relgm alone, as on the board
    selected["extra"] = [0.2, 0.2]
    scored = scores({"selected": selected, "peer": peer}, bench.BASELINE)
    ratio, low, high = bench.ratio_interval(scored, "mase", "selected", "peer")
    board = {
        m: relative_geometric_mean(scored, "mase", m, bench.BASELINE)[0]
        for m in ("selected", "peer")
    }
    assert ratio == pytest.approx(board["selected"] / board["peer"])
    assert low < ratio < high
    assert high - low > 0.1
    # the seed is fixed: the README block is regenerated identically
    assert bench.ratio_interval(scored, "mase", "selected", "peer") == (ratio, low, high)
    fewer = scored[~scored["series_id"].isin([f"s{i}" for i in range(6, 12)])]
    _, low_few, high_few = bench.ratio_interval(fewer, "mase", "selected", "peer")
    assert high_few - low_few > high - low  # fewer series, a wider interval
