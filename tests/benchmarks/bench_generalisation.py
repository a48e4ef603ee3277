"""Accuracy across real datasets, settings frozen before scoring, peers side by side.

Protocol (the "forecasts that generalise" issue):

- Datasets: the NAB CloudWatch fixture and the Bitbrains development set at H = 24 (K = 7: one
  window per day of the last week, so weekdays and the weekend are all scored), and Bitbrains
  at H = 168 (K = 3 weeks, the horizon the risk stage uses; NAB's two weeks are too short for
  it). NAB was scored on K = 3 windows until 2026-12-02: on its tuning half K = 3 and K = 7 led
  to opposite conclusions about the selection settings (``selected`` MASE relgm 0.577 vs 0.807
  with the same settings), so three windows were too few to choose or judge anything on.
  Hourly means, windows end-aligned on each series' end, quantiles 0.1 / 0.5 / 0.9, plus the
  configured selection window(s) before the scored ones.
- Halves: ``tests/benchmarks/splits.yaml`` lists the tuning half of each dataset (by file for
  NAB, by VM for Bitbrains). Settings may be chosen on the tuning half only; the held-out half
  is the result. Each half is run as a fleet of its own (selection and AutoGluon see only it).
- Candidates: this project's default configuration (``config/schema.yaml``) untouched, i.e.
  ``models.enabled`` and the ``selected`` combination. Peers: the library defaults of
  ``capforecast.forecast.models.peers`` on the whole history, never selectable.
- Ratios: ``*_relgm`` is the geometric mean over series of the error relative to statsforecast's
  daily seasonal naive (``seasonal_naive_daily_peer``); ``vs best peer`` divides ``selected``'s
  relgm by the best peer's on that metric (<= 0.95 is the bar). Its ``90% CI`` is a percentile
  bootstrap over series (``BOOTSTRAP_DRAWS`` draws, fixed seed): how far the ratio could move
  on another draw of series like these, which on NAB's nine or ten series is several percent.

Run: ``make bench-accuracy`` (= this script with ``--write-readme``), or
``.venv/bin/python tests/benchmarks/bench_generalisation.py [--datasets nab bitbrains]
[--horizons 24 168] [--halves tuning heldout] [--models ...] [--peers ...]``.
Predictions are cached under ``tests/benchmarks/out/cache`` (candidates by a digest of the
library source and the config), so reruns only redo what changed. The peers' per-window scores
are kept in the repository (``tests/benchmarks/kept/peer_scores``, a few kB each): the peers
never change with this project's settings, and on Bitbrains they take hours (the untouched
AutoETS and AutoTheta search on 13 weeks of history), so a fresh clone reruns only the
project's own models. A kept score is used only while its digest (the peer code and the code
that backtests and scores it, the library versions, the half's data and the protocol) is
unchanged; otherwise the peer is rerun and its scores are rewritten. The peers run code of
``PEER_SOURCES`` (``forecast/models/stats.py`` among them, not the model specs, which never route
a peer), so an edit there reruns every peer:
about five hours on 2 cores for the four Bitbrains settings. ``--kept-peers-only`` leaves out
peers without kept scores instead of running them: their halves are marked ``INCOMPLETE`` (the
best peer is then over the others only) and the README block names what is missing.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import re
import sys
import time
import warnings
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# Before any model library is imported.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
import numpy as np
import pandas as pd
import yaml

from capforecast.config import load_config
from capforecast.data.features import panel_from_local_files
from capforecast.forecast.evaluate import (
    backtest_models,
    evaluate_backtests,
    leaderboard_with_peer_scores,
)
from capforecast.forecast.metrics import relative_geometric_mean, score_predictions
from capforecast.forecast.models import MODEL_REGISTRY
from capforecast.forecast.models.peers import PEER_REGISTRY
from capforecast.forecast.panel import series_bounds
from capforecast.forecast.selection import SELECTED
from capforecast.settings import (
    backtest_settings,
    forecast_settings,
    model_settings,
    selection_settings,
)

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "tests" / "benchmarks" / "out"
CACHE = OUT / "cache"
KEPT_PEERS = ROOT / "tests" / "benchmarks" / "kept" / "peer_scores"
SPLITS = ROOT / "tests" / "benchmarks" / "splits.yaml"
README = ROOT / "README.md"
BASELINE = "seasonal_naive_daily_peer"
QUANTILES = [0.1, 0.5, 0.9]
BAR_RATIO = 0.95
# The ratios' uncertainty: series drawn with replacement, the ratio recomputed (percentile
# interval), a fixed seed so that the README block is regenerated identically.
BOOTSTRAP_DRAWS = 10_000
BOOTSTRAP_SEED = 20261203
CI_LEVEL = 0.90
CI_PERCENT = round(100 * CI_LEVEL)
BAR_COVERAGE = (0.75, 0.88)
HALF_NAMES = {"tuning": "tuning", "heldout": "held-out"}
README_START = "<!-- bench-generalisation:start -->"
README_END = "<!-- bench-generalisation:end -->"
INTERVALS_START = "<!-- bench-intervals:start -->"
INTERVALS_END = "<!-- bench-intervals:end -->"
# How quantiles are made, compared on the same windows: each statsforecast model with its
# empirical quantiles (the default), statsforecast's ConformalIntervals and its normal intervals,
# all on four weeks of history (ConformalIntervals needs two windows of the horizon after two
# seasons of training: more than the default two weeks at H = 168); and `selected` with and
# without its split-conformal scaling (forecast.calibrate).
INTERVAL_MODELS = ("theta", "autoets", "mstl")
INTERVAL_METHODS = ("empirical", "conformal", "normal")
INTERVAL_HISTORY = "models.max_history_hours=672"


@dataclass(frozen=True)
class Setting:
    dataset: str
    config: str
    horizon: int
    windows: int
    # How a series id maps to the unit listed in splits.yaml.
    unit: str  # "resource" (Bitbrains VM) or "file" (NAB: resource = file stem)


SETTINGS = [
    Setting("nab", "config/nab.yaml", 24, 7, "resource"),
    Setting("bitbrains", "config/bitbrains.yaml", 24, 7, "resource"),
    Setting("bitbrains", "config/bitbrains.yaml", 168, 3, "resource"),
]


# What a model's backtest predictions depend on: these modules plus the model's own module.
BACKTEST_SOURCES = ("forecast/backtest.py", "forecast/panel.py", "contracts.py")
BACKTEST_SOURCES += ("forecast/models/base.py", "forecast/models/specs.py")
BACKTEST_SOURCES += ("forecast/models/fallback.py", "forecast/models/stats.py")  # fill, quantiles


def sources_hash(names: Iterable[str]) -> Any:
    """A sha256 over the package modules ``names`` (paths under scripts/capforecast), sorted."""
    package = ROOT / "scripts" / "capforecast"
    digest = hashlib.sha256()
    for name in sorted(set(names)):
        digest.update((package / name).read_bytes())
    return digest


def source_digest(model: str) -> str:
    """Digest of the code a model's backtest runs: cached predictions are reused only if equal."""
    from capforecast.forecast.models.specs import ROUTABLE

    core_module = ROUTABLE[model].core.partition(":")[0]
    module = core_module.removeprefix("capforecast.").replace(".", "/") + ".py"
    return sources_hash([*BACKTEST_SOURCES, module]).hexdigest()[:12]


# What a peer's scores depend on besides the data: its own module and what backtests and scores it.
# Not specs.py: the specs route this project's models (fallback chains, minimum history, the
# history cap), and a peer is never routed: the backtest calls it directly, on the whole
# history. Adding or changing a model's spec leaves every peer's scores as they were, as long as
# no peer has a spec's name (peer_digest checks).
MODEL_SPECS_SOURCE = "forecast/models/specs.py"
PEER_SOURCES = (
    *(name for name in BACKTEST_SOURCES if name != MODEL_SPECS_SOURCE),
    "forecast/models/peers.py",
    "forecast/models/autogluon_model.py",
    "forecast/metrics.py",
)
PEER_LIBRARIES = ("statsforecast", "prophet", "autogluon.timeseries", "numpy", "pandas")


def peer_digest(history: pd.DataFrame, cfg: dict, bounds: dict) -> str:
    """Digest of everything a peer's kept scores depend on (see the module docstring); the same
    for every peer of one dataset x half x horizon."""
    from importlib.metadata import version

    from capforecast.forecast.models.specs import ROUTABLE

    if routed := sorted(set(PEER_REGISTRY) & set(ROUTABLE)):
        raise RuntimeError(
            f"peers {routed} have a model spec: {MODEL_SPECS_SOURCE} would route them"
        )
    digest = sources_hash(PEER_SOURCES)
    digest.update(" ".join(f"{lib}={version(lib)}" for lib in PEER_LIBRARIES).encode())
    digest.update(pd.util.hash_pandas_object(history, index=False).to_numpy().tobytes())
    protocol = {
        "backtest": cfg["backtest"],
        "forecast": cfg["forecast"],
        "freq": cfg["etl"]["freq"],
        "bounds": sorted((str(k), str(v)) for k, v in bounds.items()),
    }
    digest.update(json.dumps(protocol, sort_keys=True, default=str).encode())
    return digest.hexdigest()[:16]


def kept_peer_scores(
    tag: str,
    history: pd.DataFrame,
    name: str,
    cfg: dict,
    bounds: dict,
    digest: str,
    *,
    run_missing: bool = True,
) -> tuple[pd.DataFrame | None, float]:
    """A peer's per-window scores: kept ones if their ``digest`` (``peer_digest``) matches, else
    backtested now (``run_missing``) or None."""
    path = KEPT_PEERS / f"{tag}_{name}.parquet"
    meta = path.with_suffix(".json")
    if path.exists() and meta.exists():
        kept = json.loads(meta.read_text())
        if kept["digest"] == digest:
            return pd.read_parquet(path), kept["seconds"]
        print(f"# {tag} {name}: kept scores are stale", file=sys.stderr)
    if not run_missing:
        return None, float("nan")
    predictions, seconds = cached_backtest(
        f"{tag}_peer_{name}", history, name, PEER_REGISTRY[name], cfg, bounds
    )
    scores = score_predictions(predictions, history, cfg["backtest"]["season"], QUANTILES)
    path.parent.mkdir(parents=True, exist_ok=True)
    scores.to_parquet(path, index=False, compression="zstd")
    meta.write_text(json.dumps({"digest": digest, "seconds": round(seconds, 3)}) + "\n")
    return scores, seconds


def config_digest(cfg: dict, model: str) -> str:
    """Digest of the settings a model's backtest reads (other models' sections left out)."""
    models = {
        key: value
        for key, value in cfg["models"].items()
        if key != "enabled" and (key == model or not isinstance(value, dict))
    }
    etl = {key: cfg["etl"][key] for key in ("freq", "percent_metrics")}
    # Calibration acts on the selected forecast after the backtests, so toggling it (the
    # intervals comparison does) reuses every model's cached predictions.
    forecast = {key: value for key, value in cfg["forecast"].items() if key != "calibrate"}
    relevant = {"models": models, "etl": etl, "backtest": cfg["backtest"], "forecast": forecast}
    return hashlib.sha256(json.dumps(relevant, sort_keys=True).encode()).hexdigest()[:8]


def load_panel(setting: Setting) -> tuple[pd.DataFrame, dict]:
    cfg = load_config(ROOT / "config" / "config.yaml", ROOT / setting.config)
    cache = CACHE / f"panel_{setting.dataset}.parquet"
    if cache.exists():
        return pd.read_parquet(cache), cfg
    panel = panel_from_local_files(cfg)
    cache.parent.mkdir(parents=True, exist_ok=True)
    panel.to_parquet(cache, index=False)
    return panel, cfg


def half_panel(panel: pd.DataFrame, dataset: str, half: str) -> pd.DataFrame:
    tuning = set(yaml.safe_load(SPLITS.read_text())[dataset])
    unknown = tuning - set(panel["resource_id"])
    if unknown:
        raise SystemExit(f"splits.yaml lists ids not in {dataset}: {sorted(unknown)[:3]}")
    in_tuning = panel["resource_id"].isin(tuning)
    return panel[in_tuning if half == "tuning" else ~in_tuning].reset_index(drop=True)


def cached_backtest(
    key: str, history: pd.DataFrame, name: str, fn, cfg: dict, bounds: dict
) -> tuple[pd.DataFrame, float]:
    path = CACHE / f"{key}.parquet"
    meta = CACHE / f"{key}.json"
    if path.exists() and meta.exists():
        return pd.read_parquet(path), json.loads(meta.read_text())["seconds"]
    start = time.perf_counter()
    predictions = backtest_models(
        history,
        {name: fn},
        backtest_cfg=backtest_settings(cfg["backtest"]),
        forecast_cfg=forecast_settings(cfg["forecast"]),
        models_cfg=model_settings(cfg["models"]),
        freq=cfg["etl"]["freq"],
        bounds=bounds,
        n_jobs=os.cpu_count(),
    )
    seconds = time.perf_counter() - start
    path.parent.mkdir(parents=True, exist_ok=True)
    predictions.to_parquet(path, index=False)
    meta.write_text(json.dumps({"seconds": seconds}))
    return predictions, seconds


def apply_overrides(cfg: dict, overrides: list[str]) -> None:
    """``section.key=value`` (value parsed as YAML) over the validated config, for experiments."""
    for item in overrides:
        path, _, text = item.partition("=")
        *parents, leaf = path.split(".")
        node = cfg
        for key in parents:
            node = node[key]
        node[leaf] = yaml.safe_load(text)


def run_setting(
    setting: Setting,
    half: str,
    models: list[str] | None,
    peers: list[str],
    overrides: list[str] = (),
    *,
    run_missing_peers: bool = True,
):
    panel, cfg = load_panel(setting)
    apply_overrides(cfg, list(overrides))
    panel = half_panel(panel, setting.dataset, half)
    cfg["backtest"].update(windows=setting.windows, horizon=setting.horizon, step=None)
    cfg["forecast"]["quantiles"] = list(QUANTILES)
    history = panel[["series_id", "timestamp", "y"]]
    bounds = series_bounds(panel, cfg["etl"]["percent_metrics"])
    candidates = models or list(cfg["models"]["enabled"])
    tag = f"{setting.dataset}_h{setting.horizon}_k{setting.windows}_{half}"
    peer_cfg = {**cfg, "models": {**cfg["models"], "max_history_hours": None}}
    # Peers are never calibrated: pinning the switch to its default keeps their kept scores
    # valid when the intervals comparison turns calibration off.
    peer_cfg["forecast"] = {**cfg["forecast"], "calibrate": True}
    predictions, seconds = {}, {}
    for name in candidates:
        predictions[name], seconds[name] = cached_backtest(
            f"{tag}_{name}_{source_digest(name)}{config_digest(cfg, name)}",
            history,
            name,
            MODEL_REGISTRY[name],
            cfg,
            bounds,
        )
        print(f"# {tag} {name}: {seconds[name]:.1f} s", file=sys.stderr)
    peer_scores, missing = {}, []
    digest = peer_digest(history, peer_cfg, bounds)
    for name in peers:
        scores, seconds[name] = kept_peer_scores(
            tag, history, name, peer_cfg, bounds, digest, run_missing=run_missing_peers
        )
        if scores is None:
            missing.append(name)
            print(f"# {tag} {name}: no kept scores, left out", file=sys.stderr)
            continue
        peer_scores[name] = scores
        print(f"# {tag} {name}: {seconds[name]:.1f} s", file=sys.stderr)
    result = evaluate_backtests(
        pd.concat([predictions[n] for n in candidates], ignore_index=True),
        history,
        backtest_cfg=backtest_settings(cfg["backtest"]),
        forecast_cfg=forecast_settings(cfg["forecast"]),
        selection_cfg=selection_settings(cfg["selection"]),
        bounds=bounds,
    )
    OUT.mkdir(parents=True, exist_ok=True)
    result.selected_predictions.to_parquet(OUT / f"{tag}_selected.parquet", index=False)
    result.window_choices.to_parquet(OUT / f"{tag}_choices.parquet", index=False)
    if BASELINE not in peer_scores:
        sys.exit(f"{tag}: the ratios need the {BASELINE} peer, which has no kept scores")
    board = leaderboard_with_peer_scores(
        result, pd.concat(peer_scores.values(), ignore_index=True), baseline=BASELINE
    )
    board["backtest_s"] = board["model"].map(seconds)
    scored = pd.concat([result.metrics, *peer_scores.values()], ignore_index=True)
    for column, (_, low, high) in ratio_intervals(board, scored).items():
        board[f"{column}_ratio_ci"] = np.where(
            board["model"] == SELECTED, f"{low:.3f}-{high:.3f}", ""
        )
    board.insert(0, "half", half)
    board.insert(0, "horizon", setting.horizon)
    board.insert(0, "dataset", setting.dataset)
    board["missing_peers"] = " ".join(missing)
    return board


def per_series_log_ratios(scored: pd.DataFrame, column: str, model: str) -> pd.Series:
    """Per series: log of ``model``'s ratio to the baseline that its ``*_relgm`` averages.

    Each series goes through ``metrics.relative_geometric_mean`` alone (the geometric mean of
    one ratio is the ratio), so the pairing, tie and clip rules are the leaderboard's own.
    """
    mine = scored[scored["model"].isin([model, BASELINE])]
    logs = {}
    for series, part in mine.groupby("series_id", sort=True):
        value, used = relative_geometric_mean(part, column, model, BASELINE)
        if used:
            logs[series] = np.log(value)
    return pd.Series(logs, dtype=float)


def ratio_interval(scored: pd.DataFrame, column: str, model: str, peer: str) -> tuple[float, ...]:
    """``(ratio, low, high)``: ``model``'s relgm over ``peer``'s on ``column`` and its
    ``CI_LEVEL`` bootstrap interval over series (a series a model was not scored on counts for
    the other one only, as in each relgm)."""
    logs = pd.concat(
        [per_series_log_ratios(scored, column, m) for m in (model, peer)], axis=1, keys=[0, 1]
    ).to_numpy()
    rng = np.random.default_rng(BOOTSTRAP_SEED)
    draws = rng.integers(0, len(logs), size=(BOOTSTRAP_DRAWS, len(logs)))
    with warnings.catch_warnings():
        # A draw holding no series of one model gives NaN, left out by nanpercentile.
        warnings.simplefilter("ignore", RuntimeWarning)
        means = np.nanmean(logs[draws], axis=1)
        boot = np.exp(means[:, 0] - means[:, 1])
        tail = 100 * (1 - CI_LEVEL) / 2
        low, high = np.nanpercentile(boot, [tail, 100 - tail])
    ratio = float(np.exp(np.nanmean(logs[:, 0]) - np.nanmean(logs[:, 1])))
    return ratio, float(low), float(high)


def ratio_intervals(board: pd.DataFrame, scored: pd.DataFrame) -> dict[str, tuple[float, ...]]:
    """Per metric (``mase``, ``wql``): ``ratio_interval`` of ``selected`` against the peer with
    the best relgm on ``board``; checked to reproduce the board's own ratio."""
    scored = scored[~scored["is_selection_window"].astype(bool)]
    peers = board[board["is_peer"]].set_index("model")
    selected = board.set_index("model").loc[SELECTED]
    out = {}
    for column in ("mase", "wql"):
        best = peers[f"{column}_relgm"].idxmin()
        out[column] = ratio_interval(scored, column, SELECTED, best)
        expected = selected[f"{column}_relgm"] / peers.loc[best, f"{column}_relgm"]
        if not np.isclose(out[column][0], expected):
            raise RuntimeError(
                f"{column}: the bootstrap's ratio {out[column][0]:.6f} is not the board's "
                f"{expected:.6f} (per-series ratios out of step with metrics.leaderboard)"
            )
    return out


def summary_rows(board: pd.DataFrame) -> pd.DataFrame:
    """Per dataset x horizon x half: selected vs the best peer on each ratio."""
    rows = []
    for (dataset, horizon, half), part in board.groupby(["dataset", "horizon", "half"], sort=False):
        part = part.set_index("model")
        peers = part[part["is_peer"]]
        sel = part.loc["selected"]
        best_mase, best_wql = peers["mase_relgm"].idxmin(), peers["wql_relgm"].idxmin()
        ratio_mase = sel["mase_relgm"] / peers.loc[best_mase, "mase_relgm"]
        ratio_wql = sel["wql_relgm"] / peers.loc[best_wql, "wql_relgm"]
        coverage = sel["coverage_p10_p90"]
        rows.append(
            {
                "dataset": dataset,
                "H": horizon,
                "half": half,
                "series": int(sel["n_series"]),
                "selected MASE relgm": sel["mase_relgm"],
                "best peer (MASE)": f"{best_mase} {peers.loc[best_mase, 'mase_relgm']:.3f}",
                "MASE vs best peer": ratio_mase,
                f"{CI_PERCENT}% CI (MASE)": sel["mase_ratio_ci"],
                "selected WQL relgm": sel["wql_relgm"],
                "best peer (WQL)": f"{best_wql} {peers.loc[best_wql, 'wql_relgm']:.3f}",
                "WQL vs best peer": ratio_wql,
                f"{CI_PERCENT}% CI (WQL)": sel["wql_ratio_ci"],
                "coverage P10-P90": coverage,
                "bar": "INCOMPLETE"
                if part["missing_peers"].iloc[0]
                else "PASS"
                if ratio_mase <= BAR_RATIO
                and ratio_wql <= BAR_RATIO
                and BAR_COVERAGE[0] <= coverage <= BAR_COVERAGE[1]
                else "FAIL",
            }
        )
    return pd.DataFrame(rows)


def replace_block(start: str, end: str, body: str) -> None:
    """Replace the README text between the markers ``start`` and ``end`` (kept) by ``body``."""
    text = README.read_text()
    if start not in text or end not in text:
        raise SystemExit(f"README.md lacks the markers {start} ... {end}")
    pattern = re.compile(re.escape(start) + ".*?" + re.escape(end), re.S)
    README.write_text(pattern.sub(lambda _: f"{start}\n{body}\n{end}", text))


def bar_verdict(summary: pd.DataFrame) -> str:
    """One generated sentence: which held-out settings meet the bar, and why the others miss."""
    heldout = summary[summary["half"] == "heldout"]
    passed = heldout[heldout["bar"] == "PASS"]
    judged = heldout[heldout["bar"] != "INCOMPLETE"]
    misses = []
    for _, row in judged[judged["bar"] != "PASS"].iterrows():
        reasons = [
            f"{metric} {row[f'{metric} vs best peer']:.3f}x, "
            f"{CI_PERCENT} % CI {row[f'{CI_PERCENT}% CI ({metric})']}"
            for metric in ("MASE", "WQL")
            if row[f"{metric} vs best peer"] > BAR_RATIO
        ]
        coverage = row["coverage P10-P90"]
        if not BAR_COVERAGE[0] <= coverage <= BAR_COVERAGE[1]:
            reasons.append(f"coverage {coverage:.3f}")
        misses.append(f"{row['dataset']} H = {row['H']} ({', '.join(reasons)})")
    text = (
        f"Held-out settings meeting the bar (both ratios <= {BAR_RATIO}, coverage "
        f"{BAR_COVERAGE[0]}-{BAR_COVERAGE[1]}): {len(passed)} of {len(heldout)}"
    )
    text += f"; missing it: {'; '.join(misses)}" if misses else ""
    unjudged = len(heldout) - len(judged)
    return text + (f"; {unjudged} not judged (peers missing, see below)." if unjudged else ".")


def missing_peers_note(board: pd.DataFrame) -> str:
    """A generated line naming the peers a ``--kept-peers-only`` run left out, per half."""
    halves = board.drop_duplicates(["dataset", "horizon", "half"])
    halves = halves[halves["missing_peers"] != ""]
    if halves.empty:
        return ""
    parts = [
        f"{row.dataset} H = {row.horizon} {row.half}: {row.missing_peers}"
        for row in halves.itertuples()
    ]
    return (
        "**Incomplete:** these peers have no kept scores yet and are left out, so those rows' "
        f"best peer is over the others only (bar `INCOMPLETE`): {'; '.join(parts)}. "
        "`make bench-accuracy` runs them and completes the table."
    )


def write_readme(summary: pd.DataFrame, board: pd.DataFrame, command: str) -> None:
    heldout = board[board["half"] == "heldout"]
    detail_cols = ["dataset", "horizon", "model", "is_peer", "mase_relgm", "wql_relgm"]
    detail_cols += ["coverage_p10_p90", "n_fallback", "backtest_s"]
    body = "\n".join(
        [
            f"<!-- generated by `{command}`; do not edit by hand -->",
            "Selected vs the best untouched peer, per dataset, horizon and half "
            "(`heldout` = the result; `tuning` = the half settings may be chosen on):",
            "",
            summary.to_markdown(index=False, floatfmt=".3f"),
            "",
            bar_verdict(summary),
            *(["", note] if (note := missing_peers_note(board)) else []),
            "",
            "Every model and peer on the held-out halves:",
            "",
            heldout[detail_cols].to_markdown(index=False, floatfmt=".3f"),
        ]
    )
    replace_block(README_START, README_END, body)


def run_interval_variants(args: argparse.Namespace) -> pd.DataFrame:
    """WQL relgm and coverage of each way of making quantiles, on the same windows."""
    rows = []

    def add(setting: Setting, half: str, what: str, method: str, row: pd.Series) -> None:
        rows.append(
            {
                "dataset": setting.dataset,
                "H": setting.horizon,
                "half": half,
                "forecast": what,
                "quantiles": method,
                "WQL relgm": row["wql_relgm"],
                "coverage P10-P90": row["coverage_p10_p90"],
                "MASE relgm": row["mase_relgm"],
            }
        )

    for setting in SETTINGS:
        if setting.dataset not in args.datasets or setting.horizon not in args.horizons:
            continue
        for half in args.halves:
            for model in args.interval_models:
                for method in INTERVAL_METHODS:
                    overrides = [f"models.intervals={method}", INTERVAL_HISTORY]
                    board = run_setting(setting, half, [model], [BASELINE], overrides)
                    add(setting, half, model, method, board.set_index("model").loc[model])
            for calibrate in (True, False):
                overrides = [f"forecast.calibrate={str(calibrate).lower()}"]
                board = run_setting(setting, half, args.models, [BASELINE], overrides)
                method = "default + scaling" if calibrate else "default, no scaling"
                add(setting, half, "selected", method, board.set_index("model").loc["selected"])
    return pd.DataFrame(rows)


def interval_verdict(table: pd.DataFrame) -> str:
    """Generated sentences: empirical vs ConformalIntervals per half, and what scaling changed."""
    sentences = []
    for half in ("tuning", "heldout"):
        part = table[(table["half"] == half) & (table["forecast"] != "selected")]
        wide = part.pivot_table(
            index=["dataset", "H", "forecast"], columns="quantiles", values="WQL relgm"
        )
        cover = part.pivot_table(
            index=["dataset", "H", "forecast"], columns="quantiles", values="coverage P10-P90"
        )
        if wide.empty:
            continue
        wins = int((wide["empirical"] < wide["conformal"]).sum())
        sentences.append(
            f"On the {HALF_NAMES[half]} halves the empirical quantiles have the lower WQL in "
            f"{wins} of {len(wide)} rows against ConformalIntervals; P10-P90 coverage "
            f"{cover['empirical'].min():.3f}-{cover['empirical'].max():.3f} (empirical) against "
            f"{cover['conformal'].min():.3f}-{cover['conformal'].max():.3f} (conformal)."
        )
    selected = table[table["forecast"] == "selected"].pivot_table(
        index=["dataset", "H", "half"], columns="quantiles", values="WQL relgm"
    )
    if not selected.empty:
        changed = selected[
            (selected["default + scaling"] - selected["default, no scaling"]).abs() >= 5e-4
        ]
        rows = ", ".join(f"{d} H = {h} {half}" for d, h, half in changed.index) or "none"
        sentences.append(
            f"Rows where the scaling changed `selected`'s WQL: {len(changed)} of "
            f"{len(selected)} ({rows})."
        )
    return " ".join(sentences)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--datasets", nargs="+", default=["nab", "bitbrains"])
    parser.add_argument("--horizons", nargs="+", type=int, default=[24, 168])
    parser.add_argument("--halves", nargs="+", default=["tuning", "heldout"])
    parser.add_argument("--models", nargs="+", default=None, help="candidates (default: config)")
    parser.add_argument("--peers", nargs="+", default=list(PEER_REGISTRY))
    parser.add_argument("--write-readme", action="store_true")
    parser.add_argument(
        "--kept-peers-only",
        action="store_true",
        help="leave out peers without kept scores instead of running them (named in the output)",
    )
    parser.add_argument(
        "--intervals",
        action="store_true",
        help="compare the ways of making quantiles instead (README block too)",
    )
    parser.add_argument(
        "--interval-models",
        nargs="+",
        default=list(INTERVAL_MODELS),
        choices=INTERVAL_MODELS,
        help="statsforecast models whose quantile methods --intervals compares",
    )
    parser.add_argument(
        "--set",
        nargs="*",
        default=[],
        help="config overrides for experiments (section.key=yaml); never with --write-readme",
    )
    args = parser.parse_args()
    if args.write_readme and args.set:
        parser.error("--write-readme reports the default configuration: drop --set")
    logging.basicConfig(level=logging.WARNING)
    os.chdir(ROOT)
    if args.intervals:
        table = run_interval_variants(args)
        OUT.mkdir(parents=True, exist_ok=True)
        table.to_csv(OUT / "interval_variants.csv", index=False)
        text = table.to_markdown(index=False, floatfmt=".3f")
        print(text)
        if args.write_readme:
            models = " ".join(args.interval_models)
            note = (
                "<!-- generated by `make bench-intervals`; do not edit by hand -->\n"
                f"Models compared: {models} (`--interval-models`)."
            )
            body = f"{note}\n\n{text}\n\n{interval_verdict(table)}"
            replace_block(INTERVALS_START, INTERVALS_END, body)
        return
    boards = []
    for setting in SETTINGS:
        if setting.dataset not in args.datasets or setting.horizon not in args.horizons:
            continue
        for half in args.halves:
            boards.append(
                run_setting(
                    setting,
                    half,
                    args.models,
                    args.peers,
                    args.set,
                    run_missing_peers=not args.kept_peers_only,
                )
            )
    board = pd.concat(boards, ignore_index=True)
    OUT.mkdir(parents=True, exist_ok=True)
    board.to_csv(OUT / "generalisation_leaderboard.csv", index=False)
    summary = summary_rows(board)
    summary.to_csv(OUT / "generalisation_summary.csv", index=False)
    cols = ["dataset", "horizon", "half", "model", "is_peer", "mase_relgm", "wql_relgm"]
    cols += ["coverage_p10_p90", "n_fallback", "backtest_s"]
    print(board[cols].to_markdown(index=False, floatfmt=".3f"))
    print()
    print(summary.to_markdown(index=False, floatfmt=".3f"))
    if args.write_readme:
        command = "make bench-accuracy"
        if args.kept_peers_only:
            command = "bench_generalisation.py --kept-peers-only --write-readme"
        write_readme(summary, board, command)


if __name__ == "__main__":
    main()
