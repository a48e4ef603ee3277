"""AutoGluon-TimeSeries: one TimeSeriesPredictor over all series at once.

Configured by ``models.autogluon``: ``hyperparameters`` (default SeasonalNaive, ETS, Theta,
DirectTabular, RecursiveTabular; AutoGluon adds its WeightedEnsemble), ``presets`` (when set, the
preset decides the models and ``hyperparameters`` is ignored), ``time_limit``, ``eval_metric``
(default SQL: scale-free, so byte-scale series do not dominate a pooled metric such as WQL;
accuracy compared in the README's "Forecast accuracy on real fleets" tables).

Pretrained models (Chronos, Chronos-Bolt, Chronos-2, Toto, Toto-2) need weights from the Hugging
Face hub. Every preset of AutoGluon 1.6 includes some (``medium_quality``, which ``fast_training``
maps to, adds Chronos2 and Toto2). They are refused unless ``allow_pretrained`` is true, and then
only read from ``model_path`` on local disk: ``HF_HUB_OFFLINE=1`` is set before AutoGluon is
imported, so nothing is downloaded and no connection retries eat the time budget.
``check_pretrained`` makes that decision before any fit, with one ``ConfigError`` line.
"""

from __future__ import annotations

import copy
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from capforecast.errors import ConfigError
from capforecast.forecast.models.base import ForecastRequest, future_timestamps, quantile_frame
from capforecast.process_exit import run_before_exit
from capforecast.settings import AutoGluonSettings, ModelSettings

if TYPE_CHECKING:
    from autogluon.timeseries import TimeSeriesDataFrame, TimeSeriesPredictor

logger = logging.getLogger(__name__)

KEY = "models.autogluon"

# Model types that load pretrained weights, with the weights AutoGluon 1.6 uses by default.
PRETRAINED_DEFAULT_WEIGHTS: dict[str, str] = {
    "Chronos": "autogluon/chronos-bolt-small",
    "Chronos2": "autogluon/chronos-2",
    "Chronos-2": "autogluon/chronos-2",
    "Toto": "Datadog/Toto-Open-Base-1.0",
    "Toto2": "Datadog/Toto-2.0-22m",
}
# Short names AutoGluon accepts for model_path (chronos/model.py, toto2/model.py).
WEIGHT_ALIASES: dict[str, str] = {
    **{
        name: f"autogluon/chronos-{name.replace('_', '-')}"
        for name in ("bolt_tiny", "bolt_mini", "bolt_small", "bolt_base")
    },
    **{name: f"autogluon/chronos-t5-{name}" for name in ("tiny", "mini", "small", "base", "large")},
    **{f"Toto-2.0-{s}": f"Datadog/Toto-2.0-{s}" for s in ("4m", "22m", "313m", "1B", "2.5B")},
}
# statsforecast-based models of AutoGluon: they take an ``n_jobs`` hyperparameter.
LOCAL_MODEL_TYPES = frozenset(
    {
        "Naive",
        "SeasonalNaive",
        "Average",
        "SeasonalAverage",
        "ETS",
        "AutoETS",
        "AutoARIMA",
        "ARIMA",
        "Theta",
        "DynamicOptimizedTheta",
        "AutoCES",
        "NPTS",
        "ADIDA",
        "Croston",
        "IMAPA",
    }
)


def check_settings(model_cfg: ModelSettings) -> None:
    """The spec's check, run before any series is routed: see ``check_pretrained``."""
    check_pretrained(model_cfg.autogluon)


def check_pretrained(ag_cfg: AutoGluonSettings) -> None:
    """Raise ``ConfigError`` when the configuration needs pretrained weights it may not use.

    Refused unless ``allow_pretrained`` is true; when allowed, every pretrained model must find
    its weights under ``model_path`` on local disk (see ``local_weights_path``).
    """
    resolve_hyperparameters(ag_cfg)


def resolve_hyperparameters(ag_cfg: AutoGluonSettings) -> dict[str, Any]:
    """The ``hyperparameters`` dict to fit with: the preset's or the configured models, with
    pretrained models pointed at local weights. Raises ``ConfigError`` as ``check_pretrained``.
    """
    hyperparameters = _configured_hyperparameters(ag_cfg)
    needed = pretrained_entries(hyperparameters)
    if not needed:
        return hyperparameters
    what = ", ".join(sorted({f"{model_type} ({weights})" for model_type, _, weights in needed}))
    source = f"preset '{ag_cfg.presets}'" if ag_cfg.presets else "the hyperparameters"
    if not ag_cfg.allow_pretrained:
        raise ConfigError(
            f"{KEY}.allow_pretrained",
            f"pretrained models ({what}) requested by {source} are refused by default; set "
            f"{KEY}.allow_pretrained: true and {KEY}.model_path to a local directory of the "
            "weights, or choose models without pretrained weights",
        )
    model_path = ag_cfg.model_path
    if not model_path:
        raise ConfigError(
            f"{KEY}.model_path",
            f"pretrained models ({what}) requested by {source} have no local weights "
            f"(weights are never downloaded); set {KEY}.model_path to a local directory holding "
            "them (the model directory itself, or a parent with one subdirectory per model name)",
        )
    resolved = copy.deepcopy(hyperparameters)
    for model_type, position, weights in needed:
        local = str(local_weights_path(model_path, weights, single=len(needed) == 1))
        entries = resolved[model_type]
        if isinstance(entries, list):
            entries[position] = {**entries[position], "model_path": local}
        else:
            resolved[model_type] = {**entries, "model_path": local}
    return resolved


def local_weights_path(model_path: str | Path, weights: str, single: bool) -> Path:
    """Local directory of ``weights`` (a hub id such as ``autogluon/chronos-2-small``).

    Looked up as ``model_path/<hub id>``, ``model_path/<name>`` (``chronos-2-small``) or, when
    only one pretrained model is needed, ``model_path`` itself if it holds a ``config.json``.
    """
    root = Path(model_path).expanduser()
    if not root.is_dir():
        raise ConfigError(
            f"{KEY}.model_path",
            f"'{model_path}' is not a directory; set {KEY}.model_path to a local directory of "
            f"pretrained weights (needed: {weights}; weights are never downloaded)",
        )
    name = weights.rstrip("/").rsplit("/", 1)[-1]
    for candidate in (root / weights, root / name):
        if candidate.is_dir():
            return candidate
    if single and (root / "config.json").is_file():
        return root
    raise ConfigError(
        f"{KEY}.model_path",
        f"no weights for {weights} under '{model_path}' (looked for '{root / name}'); put them "
        f"there or point {KEY}.model_path at their directory (weights are never downloaded)",
    )


def pretrained_entries(hyperparameters: dict[str, Any]) -> list[tuple[str, int, str]]:
    """``(model type, position in its list, weights hub id)`` of every pretrained entry."""
    found = []
    for key, value in hyperparameters.items():
        model_type = (key if isinstance(key, str) else key.__name__).removesuffix("Model")
        if model_type not in PRETRAINED_DEFAULT_WEIGHTS:
            continue
        entries = value if isinstance(value, list) else [value]
        for position, entry in enumerate(entries):
            weights = (entry or {}).get("model_path", PRETRAINED_DEFAULT_WEIGHTS[model_type])
            found.append((key, position, WEIGHT_ALIASES.get(str(weights), str(weights))))
    return found


def _configured_hyperparameters(ag_cfg: AutoGluonSettings) -> dict[str, Any]:
    """The models a fit would train: the preset's, else ``hyperparameters`` (names resolved)."""
    presets = ag_cfg.presets
    if presets:
        configs = _autogluon_configs()
        known = configs.get_predictor_presets()
        if presets not in known:
            raise ConfigError(
                f"{KEY}.presets",
                f"unknown preset '{presets}'; known: {', '.join(sorted(known))}",
            )
        hyperparameters: Any = known[presets].get("hyperparameters", "default")
    else:
        hyperparameters = ag_cfg.hyperparameters
        # AutoGluon's own default (null) is its "default" set, which includes Chronos2/Toto2.
        hyperparameters = "default" if hyperparameters is None else hyperparameters
    if isinstance(hyperparameters, str):
        named = _autogluon_configs().get_hyperparameter_presets()
        if hyperparameters not in named:
            raise ConfigError(
                f"{KEY}.hyperparameters",
                f"unknown hyperparameter set '{hyperparameters}'; known: {', '.join(named)}",
            )
        hyperparameters = named[hyperparameters]
    return copy.deepcopy(dict(hyperparameters))


def _autogluon_configs() -> Any:
    _set_offline()
    from autogluon.timeseries import configs

    return configs


def _set_offline() -> None:
    # Read by huggingface_hub at import time: must be set before AutoGluon is imported.
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"


def _shut_down_joblib_workers() -> None:
    """Stop the joblib (loky) worker processes AutoGluon's local models ran in.

    loky's workers are built to outlive the job and idle for 300 s: after a rule's script had
    exited they were measured holding about 420 MiB each, re-parented to init, and keeping the
    job's stdout open (a caller waiting for its output waited the 5 minutes). They are reused
    between the windows of one job and stopped with it.
    """
    from joblib.externals.loky import reusable_executor

    executor = reusable_executor._executor
    if executor is not None:
        executor.shutdown(wait=True, kill_workers=True)


def with_local_n_jobs(hyperparameters: dict[str, Any], n_jobs: int) -> dict[str, Any]:
    """Give AutoGluon's statsforecast-based models ``n_jobs`` unless configured otherwise."""
    out = copy.deepcopy(hyperparameters)
    for key, value in out.items():
        model_type = (key if isinstance(key, str) else key.__name__).removesuffix("Model")
        if model_type not in LOCAL_MODEL_TYPES:
            continue
        entries = value if isinstance(value, list) else [value]
        for entry in entries:
            if isinstance(entry, dict):
                entry.setdefault("n_jobs", int(n_jobs))
    return out


def to_autogluon_frame(history: pd.DataFrame) -> TimeSeriesDataFrame:
    """``series_id, timestamp, y`` -> TimeSeriesDataFrame (naive UTC timestamps, NaN kept)."""
    _set_offline()
    from autogluon.timeseries import TimeSeriesDataFrame

    timestamps = pd.DatetimeIndex(history["timestamp"])
    if timestamps.tz is not None:
        timestamps = timestamps.tz_convert("UTC").tz_localize(None)
    frame = pd.DataFrame(
        {
            "item_id": history["series_id"].astype(str).to_numpy(),
            "timestamp": timestamps,
            "target": history["y"].to_numpy(dtype=float),
        }
    )
    return TimeSeriesDataFrame.from_data_frame(
        frame, id_column="item_id", timestamp_column="timestamp"
    )


def train_autogluon(
    request: ForecastRequest, ag_cfg: AutoGluonSettings, path: str | Path
) -> TimeSeriesPredictor:
    """Fit a TimeSeriesPredictor on every series of ``request`` (no routing), saved at ``path``.

    Reusable by the SageMaker entry point; checks pretrained use before anything is fitted.
    """
    hyperparameters = with_local_n_jobs(resolve_hyperparameters(ag_cfg), request.n_jobs)
    _set_offline()
    run_before_exit(_shut_down_joblib_workers)
    from autogluon.timeseries import TimeSeriesPredictor

    predictor = TimeSeriesPredictor(
        prediction_length=request.horizon,
        freq=request.freq,
        eval_metric=ag_cfg.eval_metric,
        eval_metric_seasonal_period=request.season,
        quantile_levels=list(request.quantiles),
        path=str(path),
        verbosity=0,
        log_to_file=False,
    )
    fit_kwargs: dict[str, Any] = {
        "time_limit": ag_cfg.time_limit,
        "hyperparameters": hyperparameters,
    }
    if ag_cfg.presets:
        fit_kwargs["presets"] = ag_cfg.presets
    predictor.fit(to_autogluon_frame(request.history), **fit_kwargs)
    if not predictor.model_names():
        # AutoGluon logs each model's failure or timeout and carries on; with none left its
        # own error ("Trainer has no fit models") would come later, from predict, as a traceback.
        raise ConfigError(
            "models.autogluon.time_limit",
            f"AutoGluon fitted no model on {request.history['series_id'].nunique()} series "
            f"within {ag_cfg.time_limit} s: every model in models.autogluon.hyperparameters "
            "failed or ran out of time (raise the limit, give the job more threads, or check "
            "the hyperparameters)",
        )
    return predictor


def autogluon_core(request: ForecastRequest, model_cfg: ModelSettings) -> pd.DataFrame:
    """Train on the routed series, predict them, return contract columns."""
    scratch = Path(tempfile.mkdtemp(prefix="cf-ag-"))
    try:
        # A fresh subdirectory: AutoGluon warns when its path already exists.
        predictor = train_autogluon(request, model_cfg.autogluon, scratch / "predictor")
        predictions = predictor.predict(to_autogluon_frame(request.history))
        logger.info(
            "autogluon: best model %s over %d series",
            predictor.model_best,
            request.history["series_id"].nunique(),
        )
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return predictions_to_contract(predictions, request)


def predictions_to_contract(predictions: pd.DataFrame, request: ForecastRequest) -> pd.DataFrame:
    """TimeSeriesDataFrame predictions (mean, "0.1", ...) -> contract columns."""
    flat = pd.DataFrame(predictions).reset_index()
    last_timestamps = request.history.groupby("series_id", sort=False)["timestamp"].last()
    frames = []
    for sid, group in flat.groupby("item_id", sort=False):
        group = group.sort_values("timestamp")
        frames.append(
            quantile_frame(
                str(sid),
                # Regenerated from the input grid so that time zones and steps match exactly.
                future_timestamps(last_timestamps[sid], request.horizon, request.freq),
                group["mean"].to_numpy(dtype=float),
                {
                    q: group[_prediction_column(group, q)].to_numpy(dtype=float)
                    for q in request.quantiles
                },
            )
        )
    return pd.concat(frames, ignore_index=True)


def _prediction_column(frame: pd.DataFrame, q: float) -> str:
    # AutoGluon names quantile columns str(q); match numerically to be safe.
    for column in frame.columns:
        try:
            if np.isclose(float(column), q):
                return str(column)
        except (TypeError, ValueError):
            continue
    raise KeyError(f"AutoGluon predictions have no column for quantile {q}")
