"""One spec per model: everything the workflow needs to know about it, in one place.

Adding a model is one ``ModelSpec`` here (plus its core function and its name in the
``models.enabled`` enum of ``config/schema.yaml``, which ``tests/test_models.py`` ties to
``MODEL_SPECS``). The registry of model functions, the fallback chains, the core lookup, the
minimum history, the `models` keys a model rule gets and the rule family a model runs in
(rules/forecast.smk, one rule and conda env per family) are all derived from these specs.

Importing this module imports no forecasting library: a core is named by ``module:function``
and imported on first use, so cheap rules stay fast.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

# The last-value forecast every fallback chain ends in: one observation is enough. Internal
# (never configured or selected).
NAIVE = "naive"


@dataclass(frozen=True)
class HistorySteps:
    """Grid steps of the periods a model's minimum history is written in."""

    daily: int
    weekly: int
    season: int
    horizon: int


@dataclass(frozen=True)
class ModelSpec:
    """A forecaster.

    name: its name in ``models.enabled`` and in every output.
    family: the rule family that runs it (``backtest_<family>`` / ``forecast_<family>`` in
      rules/forecast.smk, each with its conda env).
    core: ``module:function`` forecasting series already known to be usable
      (``capforecast.forecast.models.fallback`` routes odd series around it).
    fallback: models tried in order when a series is too short for it (or its fit fails),
      ending in ``NAIVE``.
    min_history: grid steps of history a series needs before the model is used for it.
    settings: keys of the ``models`` config section it reads besides the shared ones.
    check: ``module:function`` run on its settings before any series is routed (a refused
      configuration fails even when every series is short), or None.
    """

    name: str
    family: str
    core: str
    fallback: tuple[str, ...]
    min_history: Callable[[HistorySteps], int]
    settings: tuple[str, ...] = ()
    check: str | None = None


_BASELINES = "capforecast.forecast.models.baselines"
_PROFILES = "capforecast.forecast.models.profiles"
_STATS = "capforecast.forecast.models.stats"
_TRANSFORMED = "capforecast.forecast.models.transformed"
_PROPHET = "capforecast.forecast.models.prophet_model"
_AUTOGLUON = "capforecast.forecast.models.autogluon_model"


def _two_days(steps: HistorySteps) -> int:
    return 2 * steps.daily


def _two_seasons(steps: HistorySteps) -> int:
    # One season of seasonal differences gives the intervals; ETS/Theta/MSTL need two to
    # estimate a seasonal pattern at all.
    return 2 * steps.season


_DAILY_THEN_NAIVE = ("seasonal_naive_daily", NAIVE)

# Every configurable model, in the order of the schema's enum.
MODEL_SPECS: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in (
        ModelSpec(
            "seasonal_naive_daily",
            "baseline",
            f"{_BASELINES}:seasonal_naive_daily_core",
            (NAIVE,),
            _two_days,
        ),
        ModelSpec(
            "seasonal_naive_weekly",
            "baseline",
            f"{_BASELINES}:seasonal_naive_weekly_core",
            _DAILY_THEN_NAIVE,
            lambda steps: 2 * steps.weekly,
        ),
        ModelSpec(
            "predict_linear",
            "baseline",
            f"{_BASELINES}:predict_linear_core",
            (NAIVE,),
            lambda steps: 3,
            settings=("predict_linear_window_hours",),
        ),
        ModelSpec(
            "seasonal_median",
            "baseline",
            f"{_PROFILES}:seasonal_median_core",
            (NAIVE,),
            _two_days,
            settings=("seasonal_median",),
        ),
        ModelSpec(
            "autoets",
            "statsforecast",
            f"{_STATS}:autoets_core",
            _DAILY_THEN_NAIVE,
            _two_seasons,
            settings=("intervals",),
        ),
        ModelSpec(
            "autoets_log",
            "statsforecast",
            f"{_TRANSFORMED}:autoets_log_core",
            _DAILY_THEN_NAIVE,
            _two_seasons,
            settings=("intervals",),
        ),
        ModelSpec(
            "autotheta",
            "statsforecast",
            f"{_STATS}:autotheta_core",
            _DAILY_THEN_NAIVE,
            _two_seasons,
            settings=("intervals",),
        ),
        ModelSpec(
            "theta",
            "statsforecast",
            f"{_STATS}:theta_core",
            _DAILY_THEN_NAIVE,
            _two_seasons,
            settings=("intervals",),
        ),
        ModelSpec(
            "theta_log",
            "statsforecast",
            f"{_TRANSFORMED}:theta_log_core",
            _DAILY_THEN_NAIVE,
            _two_seasons,
            settings=("intervals",),
        ),
        ModelSpec(
            "mstl",
            "statsforecast",
            f"{_STATS}:mstl_core",
            ("theta", *_DAILY_THEN_NAIVE),
            _two_seasons,
            settings=("intervals",),
        ),
        ModelSpec(
            "prophet",
            "prophet",
            f"{_PROPHET}:prophet_core",
            _DAILY_THEN_NAIVE,
            lambda steps: 3 * steps.daily,
            settings=("prophet",),
        ),
        ModelSpec(
            "autogluon",
            "autogluon",
            f"{_AUTOGLUON}:autogluon_core",
            _DAILY_THEN_NAIVE,
            # Three days, and the 2 x horizon + 1 it needs to hold out one validation window.
            lambda steps: max(3 * steps.daily, 2 * steps.horizon + 1),
            settings=("autogluon",),
            check=f"{_AUTOGLUON}:check_settings",
        ),
    )
}

NAIVE_SPEC = ModelSpec(NAIVE, "baseline", f"{_BASELINES}:naive_core", (), lambda steps: 1)

# Every model a series can be routed to: the configurable ones and the last-value naive.
ROUTABLE: dict[str, ModelSpec] = {**MODEL_SPECS, NAIVE: NAIVE_SPEC}

# Keys of the `models` config section every model reads (backtest and refit trim the history).
SHARED_MODEL_SETTINGS: tuple[str, ...] = ("max_history_hours",)


def fallback_chain(model: str) -> tuple[str, ...]:
    """The models tried for a series, in order: ``model`` first, ``NAIVE`` last."""
    spec = ROUTABLE[model]
    return (spec.name, *spec.fallback)


def family_models(family: str) -> list[str]:
    """Configurable models of one rule family (never empty for a family in ``FAMILIES``)."""
    return [name for name, spec in MODEL_SPECS.items() if spec.family == family]


FAMILIES: tuple[str, ...] = tuple(dict.fromkeys(spec.family for spec in MODEL_SPECS.values()))
