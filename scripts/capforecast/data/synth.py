"""Deterministic synthetic fleet: a plan of instances, their raw metrics, and the ground truth.

The fleet stands in for a real AWS account: it has the structure real CloudWatch data has
(daily and weekly cycles, growth, deploy level shifts, incidents, gaps, pegged values, new and
decommissioned instances) and, unlike real data, a known answer. ``ground_truth`` tells when the
noise-free signal crosses each capacity level, so the risk stage can be checked against it.

Everything is a pure function of the validated config:

* ``plan_fleet`` draws every *structural* parameter (levels, growth rates, lifetimes, seasonal
  shape) per service, and calibrates the growth of saturating services so that the noise-free
  hourly mean reaches 100 % at the configured day.
* ``generate_service`` adds the *random* parts (noise, incidents, missing samples) for one
  service. Its generator is seeded from (seed, service name) only, so editing one service in the
  config leaves every other service's output byte-identical (and Snakemake reruns only it).
* ``ground_truth`` evaluates the same noise-free curves the data was drawn around.

The noise-free model of a percentage metric is ``(level * deploy_steps + rate * days) * season``,
which is linear in ``rate``: calibrating a growth rate to reach a level is then a closed-form
minimum, not a search.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from scipy.signal import lfilter

from capforecast.contracts import RAW_COLUMNS, RESOURCE_COLUMNS
from capforecast.errors import ConfigError

CPU = "cpu_utilization"
MEMORY = "memory_utilization"
NETWORK_IN = "network_in_bytes"
NETWORK_OUT = "network_out_bytes"
DISK = "disk_used_percent"
METRICS: tuple[str, ...] = (CPU, MEMORY, NETWORK_IN, NETWORK_OUT, DISK)
PERCENT_METRICS: tuple[str, ...] = (CPU, MEMORY, DISK)
CROSSING_LEVELS: tuple[float, ...] = (70.0, 80.0, 90.0, 95.0, 100.0)
SCENARIOS: tuple[str, ...] = ("saturating", "growing", "flat", "over_provisioned")

# Plan column prefix of each percentage metric's parameters (level, rate_per_day, ...).
_PREFIX = {CPU: "cpu", MEMORY: "memory", DISK: "disk"}

_NS_PER_HOUR = 3_600 * 10**9
_NS_PER_DAY = 24 * _NS_PER_HOUR
# Bin means are compared with levels with this slack: the calibrated rate puts the saturating
# bin exactly on 100 %, and float rounding must not move the crossing by a bin.
_TOLERANCE = 1e-6

# Independent random streams under one service seed: adding a draw to one component must not
# shift the numbers every other component sees.
_STREAM_PLAN = 0
_STREAM_DEPLOYS = 1
_STREAM_CLEANUPS = 2
_STREAM_INCIDENTS = 3
_STREAM_NOISE = 4


@dataclass(frozen=True)
class Timeline:
    """The fleet's calendar: history, raw sampling, modelling bins and the forecast horizon."""

    start: pd.Timestamp  # first raw sample (UTC)
    end: pd.Timestamp  # history end = start + days (exclusive); forecasts start here
    freq: pd.Timedelta  # raw sampling interval (synthetic.freq)
    bin: pd.Timedelta  # modelling interval (etl.freq): "hourly" means are taken per bin
    horizon: pd.Timedelta  # synthetic.horizon bins (keep equal to forecast.horizon)

    @property
    def search_end(self) -> pd.Timestamp:
        """Ground truth looks for crossings up to twice the forecast horizon after history."""
        return self.end + 2 * self.horizon

    @property
    def history_days(self) -> float:
        return (self.end - self.start) / pd.Timedelta(days=1)

    def align(self, ts: pd.Timestamp) -> pd.Timestamp:
        """First raw grid point at or after ``ts`` (the grid is anchored at ``start``)."""
        steps = math.ceil((ts - self.start) / self.freq)
        return self.start + steps * self.freq

    def bin_ceil(self, ts: pd.Timestamp) -> pd.Timestamp:
        """First modelling-bin start at or after ``ts``."""
        steps = math.ceil((ts - self.start) / self.bin)
        return self.start + steps * self.bin


def timeline(cfg: dict[str, Any]) -> Timeline:
    """Calendar of the synthetic fleet from the validated config."""
    syn = cfg["synthetic"]
    try:
        start = pd.Timestamp(syn["start"])
    except ValueError as err:
        raise ConfigError("synthetic.start", f"'{syn['start']}' is not a date: {err}") from None
    start = start.tz_localize("UTC") if start.tzinfo is None else start.tz_convert("UTC")
    freq = _positive_timedelta(syn["freq"], "synthetic.freq")
    bin_width = _positive_timedelta(cfg["etl"]["freq"], "etl.freq")
    return Timeline(
        start=start,
        end=start + pd.Timedelta(days=syn["days"]),
        freq=freq,
        bin=bin_width,
        horizon=syn["horizon"] * bin_width,
    )


def _positive_timedelta(text: str, key: str) -> pd.Timedelta:
    delta = pd.Timedelta(text)
    if delta <= pd.Timedelta(0):
        raise ConfigError(key, f"'{text}' must be a positive interval")
    return delta


# --------------------------------------------------------------------------------------------
# Seeds
# --------------------------------------------------------------------------------------------


def service_seed(seed: int, service: str) -> int:
    """Seed of one service, from the fleet seed and the service *name* only.

    sha256 rather than ``hash()``: Python salts string hashes per process, and the seed must
    be the same in every Snakemake job and on every machine.
    """
    digest = hashlib.sha256(f"{seed}:{service}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1  # 63 bits: fits an int64 plan column


def _rng(seed: int, *stream: int) -> np.random.Generator:
    return np.random.default_rng([seed, *stream])


# --------------------------------------------------------------------------------------------
# Plan
# --------------------------------------------------------------------------------------------


def plan_fleet(cfg: dict[str, Any]) -> pd.DataFrame:
    """One row per instance: resources-table columns plus everything that shapes its metrics.

    ``cfg`` is the full validated config. Columns beyond ``RESOURCE_COLUMNS``: scenario,
    lifecycle (steady/new/decommissioned), launch_time, end_time (UTC, exclusive),
    saturating_metric (None unless saturating), saturation_time (first bin whose noise-free mean
    of the saturating metric is 100 %, NaT otherwise), service_seed, instance_index, and the
    per-metric level / rate_per_day / seasonal parameters the generator and the ground truth use.

    Each service's rows depend only on (seed, that service's config, the shared calendar,
    catalogue and thresholds).
    """
    tl = timeline(cfg)
    rows: list[dict[str, Any]] = []
    for svc in cfg["synthetic"]["services"]:
        rows.extend(_plan_service(svc, cfg, tl))
    plan = pd.DataFrame(rows)
    for col in ("launch_time", "end_time", "saturation_time"):
        plan[col] = pd.to_datetime(plan[col], utc=True).astype("datetime64[ns, UTC]")
    plan["saturating_metric"] = plan["saturating_metric"].astype(object)
    return plan


def _plan_service(svc: dict[str, Any], cfg: dict[str, Any], tl: Timeline) -> list[dict[str, Any]]:
    """Rows of one service: shared service shape, per-instance jitter, then growth calibration."""
    syn = cfg["synthetic"]
    name, scenario, n = svc["name"], svc["scenario"], svc["instances"]
    entry = cfg["catalogue"][svc["instance_type"]]
    seed = service_seed(syn["seed"], name)
    rng = _rng(seed, _STREAM_PLAN)
    shape = _service_shape(rng, scenario, svc["base_level"])
    lifecycles = _lifecycles(rng, n, syn["new_instance_fraction"], syn["decommissioned_fraction"])
    width = max(3, len(str(n)))
    rows = []
    for index in range(n):
        inst_rng = _rng(seed, _STREAM_PLAN, index + 1)
        launch, end = _lifetime(inst_rng, lifecycles[index], tl)
        row = {
            "resource_id": f"i-{name}-{index + 1:0{width}d}",
            "service": name,
            "instance_type": svc["instance_type"],
            "vcpu": float(entry["vcpu"]),
            "memory_gib": float(entry["memory_gib"]),
            "region": syn["region"],
            "hourly_price_usd": float(entry["hourly_price_usd"]),
            "scenario": scenario,
            "lifecycle": lifecycles[index],
            "launch_time": launch,
            "end_time": end,
            "saturating_metric": svc["saturating_metric"] if scenario == "saturating" else None,
            "saturation_time": pd.NaT,
            "service_seed": seed,
            "instance_index": index,
            **shape,
            **_instance_levels(inst_rng, scenario, shape, entry["vcpu"]),
        }
        rows.append(row)
    _calibrate_growth(rows, svc, cfg, tl)
    return rows


def _service_shape(rng: np.random.Generator, scenario: str, base_level: float) -> dict[str, float]:
    """Shape every instance of a service shares: they sit behind one load balancer."""
    batch_like = scenario == "over_provisioned"
    return {
        # Interactive services peak in the (US) afternoon; batch/reporting jobs run at night.
        "peak_hour": float(rng.uniform(1, 5) if batch_like else rng.uniform(13, 20)),
        # Weekend traffic drops for interactive services; batch schedules barely notice.
        "weekend_factor": float(rng.uniform(0.85, 1.0) if batch_like else rng.uniform(0.7, 0.85)),
        "cpu_daily_amplitude": float(rng.uniform(0.3, 0.45 if batch_like else 0.35)),
        # Memory is mostly resident set: it follows load only a little.
        "memory_daily_amplitude": float(rng.uniform(0.02, 0.06)),
        # The schema's base_level is the CPU level; over_provisioned means low use whatever
        # the default says, so its CPU is capped at 10 %.
        "service_cpu_level": float(min(base_level, 10.0) if batch_like else base_level),
    }


def _lifecycles(
    rng: np.random.Generator, n: int, new_fraction: float, gone_fraction: float
) -> list[str]:
    """steady / new / decommissioned per instance index.

    Counts use randomised rounding per service (expected count = fraction x n) so that small
    services still get some short histories, and no other service's size changes this one.
    New instances take the highest indexes: a scale-out names them last.
    """
    n_new = min(n, math.floor(new_fraction * n + rng.random()))
    n_gone = min(n - n_new, math.floor(gone_fraction * n + rng.random()))
    states = ["steady"] * n
    for index in range(n - n_new, n):
        states[index] = "new"
    for index in rng.permutation(n - n_new)[:n_gone]:
        states[int(index)] = "decommissioned"
    return states


def _lifetime(
    rng: np.random.Generator, lifecycle: str, tl: Timeline
) -> tuple[pd.Timestamp, pd.Timestamp]:
    """Launch and end (exclusive) on the raw grid. Both draws happen for every instance so the
    stream stays aligned whatever the lifecycle."""
    days = tl.history_days
    # New instances get a short history: 1.5 days (below the 72 h "too short" flag) up to
    # 10 days, never more than 60 % of the history.
    new_days = rng.uniform(1.5, max(1.5, min(10.0, 0.6 * days)))
    # Decommissioned ones stop somewhere in the middle of the history.
    gone_fraction = rng.uniform(0.4, 0.85)
    launch, end = tl.start, tl.end
    if lifecycle == "new":
        launch = tl.align(tl.end - pd.Timedelta(days=new_days))
    elif lifecycle == "decommissioned":
        end = tl.align(tl.start + pd.Timedelta(days=gone_fraction * days))
    return launch, end


def _instance_levels(
    rng: np.random.Generator, scenario: str, shape: dict[str, float], vcpu: float
) -> dict[str, float]:
    """Per-instance levels and (uncalibrated) growth rates in percentage points per day."""
    low = scenario == "over_provisioned"
    # Mild load growth for saturating services' other metrics and for growing ones; the
    # calibrated metrics are overwritten afterwards. Drawn for every scenario so the stream
    # stays aligned.
    cpu_growth, memory_growth = rng.uniform(0.05, 0.2), rng.uniform(0.02, 0.1)
    if scenario == "growing":
        memory_growth = 3 * memory_growth + 0.05
    elif scenario in {"flat", "over_provisioned"}:
        cpu_growth = memory_growth = 0.0
    return {
        # Load balancing is even but not perfect: +-10 % around the service level.
        "cpu_level": float(max(2.0, shape["service_cpu_level"] * rng.uniform(0.9, 1.1))),
        "cpu_rate_per_day": float(cpu_growth),
        "memory_level": float(rng.uniform(8, 18) if low else rng.uniform(35, 55)),
        "memory_rate_per_day": float(memory_growth),
        "disk_level": float(rng.uniform(15, 40)),
        # Logs and data fill disks slowly everywhere; flat services barely write.
        "disk_rate_per_day": float(
            rng.uniform(0.02, 0.08) if scenario == "flat" else rng.uniform(0.1, 0.35)
        ),
        # Network follows CPU (requests cost both); bytes per second per CPU point.
        "network_bytes_per_s_per_cpu": float(rng.uniform(1e4, 4e4) * vcpu),
        "network_background_bytes_per_s": float(rng.uniform(2e3, 2e4)),
        "network_out_ratio": float(rng.uniform(0.5, 1.5)),
    }


def _thresholds(cfg: dict[str, Any], metric: str) -> dict[str, float] | None:
    """Warning/critical levels of a metric the fleet is calibrated on (synthetic.thresholds)."""
    levels = cfg["synthetic"]["thresholds"].get(metric)
    if not levels:
        return None
    return {"warning": float(levels["warning"]), "critical": float(levels["critical"])}


def _calibrate_growth(
    rows: list[dict[str, Any]], svc: dict[str, Any], cfg: dict[str, Any], tl: Timeline
) -> None:
    """Set growth rates that give each scenario its promised outcome, and saturation times.

    saturating: the saturating metric's noise-free bin mean first reaches 100 % at the last
    daily peak before history end + saturation_day (see ``_rate_to_saturate``); growing: the
    CPU peaks halfway between the warning and critical thresholds at the end of the forecast
    horizon, so it never reaches critical within the horizon.
    """
    scenario = svc["scenario"]
    if scenario == "saturating":
        metric = svc["saturating_metric"]
        day = svc.get("saturation_day")
        offset = pd.Timedelta(days=day) if day is not None else tl.horizon / 2
        target = tl.end + offset
        for row in rows:
            row[f"{_PREFIX[metric]}_rate_per_day"] = _rate_to_saturate(row, metric, tl, target)
            curve_end = max(tl.search_end, target + tl.bin)
            bins, means = _noise_free_bin_means(row, metric, tl, curve_end)
            row["saturation_time"] = _first_crossing(bins, means, 100.0, row["launch_time"])
    elif scenario == "growing":
        levels = _thresholds(cfg, CPU)
        if levels is None:
            raise ConfigError(
                f"synthetic.thresholds.{CPU}",
                f"service {svc['name']!r} is growing: it grows towards these levels",
            )
        peak = (levels["warning"] + levels["critical"]) / 2
        for row in rows:
            row["cpu_rate_per_day"] = _rate_to_peak(row, CPU, tl, peak, tl.end + tl.horizon)


def _rate_to_saturate(
    row: dict[str, Any], metric: str, tl: Timeline, target: pd.Timestamp
) -> float:
    """Growth rate that makes the noise-free bin mean first reach 100 % after history end.

    A clipped bin mean is 100 only when every sample in the bin is >= 100; with values
    A + rate * B, bin h needs rate >= need_h = max over its samples of (100 - A) / B. The rate
    is the smallest that saturates a bin in [history end, target], capped just below what
    would already saturate a bin of the history: a weekend or a deploy shift can make the
    history peak higher than the target's, and the forecaster must see the ceiling coming, not
    already reached. In that case the crossing falls on the first higher peak after target.
    A target at or before history end (saturation_day <= 0) saturates inside the history.
    """
    t_ns = _instance_grid(row, tl, max(tl.search_end, target + tl.bin))
    a, b = _percent_basis(row, metric, t_ns, tl)
    with np.errstate(divide="ignore", invalid="ignore"):
        need = np.where(b > 0, (100.0 - a) / b, np.where(a >= 100.0, -np.inf, np.inf))
    bin_index = (t_ns - tl.start.value) // tl.bin.value
    first = np.flatnonzero(np.r_[True, np.diff(bin_index) != 0])
    need_per_bin = np.maximum.reduceat(need, first)
    bin_start = tl.start.value + bin_index[first] * tl.bin.value
    in_history = bin_start < tl.end.value
    if target <= tl.end:
        eligible = need_per_bin[bin_start <= target.value]
        rate = float(eligible.min()) if eligible.size else float(need_per_bin[0])
    else:
        window = ~in_history & (bin_start <= target.value)
        rate = float(need_per_bin[window].min())
        if in_history.any():
            # 0.1 % below the history's own saturating rate keeps its bins visibly under 100.
            rate = min(rate, float(need_per_bin[in_history].min()) * (1 - 1e-3))
    return max(rate, 0.0) if np.isfinite(rate) else 0.0


def _rate_to_peak(
    row: dict[str, Any], metric: str, tl: Timeline, peak: float, until: pd.Timestamp
) -> float:
    """Largest growth rate whose noise-free samples stay <= peak before ``until`` (>= 0)."""
    t_ns = _instance_grid(row, tl, until)
    a, b = _percent_basis(row, metric, t_ns, tl)
    with np.errstate(divide="ignore", invalid="ignore"):
        room = np.where(b > 0, (peak - a) / b, np.inf)
    return max(float(room.min()), 0.0)


# --------------------------------------------------------------------------------------------
# Noise-free components
# --------------------------------------------------------------------------------------------


def _instance_grid(row: dict[str, Any], tl: Timeline, until: pd.Timestamp) -> np.ndarray:
    """Raw sample times (int64 ns) from the instance's launch up to ``until`` (exclusive)."""
    start = pd.Timestamp(row["launch_time"]).value
    return np.arange(start, pd.Timestamp(until).value, tl.freq.value, dtype=np.int64)


def _seasonal_multiplier(
    t_ns: np.ndarray, daily_amplitude: float, peak_hour: float, weekend_factor: float
) -> np.ndarray:
    """Daily cycle (peak at ``peak_hour`` UTC, with a second harmonic for a flatter night)
    times a weekday/weekend level: the two cycles every forecaster must learn."""
    hour = (t_ns % _NS_PER_DAY) / _NS_PER_HOUR
    phase = 2 * np.pi * (hour - peak_hour) / 24
    daily = 0.8 * np.cos(phase) + 0.2 * np.cos(2 * phase)
    weekday = (t_ns // _NS_PER_DAY + 3) % 7  # 1970-01-01 was a Thursday; Monday = 0
    weekly = np.where(weekday >= 5, weekend_factor, 1.0)
    return (1 + daily_amplitude * daily) * weekly


def _deploy_shifts(
    seed: int, scenario: str, history_days: float
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Deploy days and the relative level shift each one causes (cpu, memory).

    A release changes the cost per request for every instance at once, so the times are per
    service. Flat services alternate up and down so that they stay flat over the history.
    Deploys happen between 10 % and 85 % of the history, so the last days show the new level.
    """
    rng = _rng(seed, _STREAM_DEPLOYS)
    n = int(rng.integers(2, 5))
    days = np.sort(rng.uniform(0.1, 0.85, n)) * history_days
    if scenario == "flat":
        signs = rng.choice([-1.0, 1.0]) * (-1.0) ** np.arange(n)
        cpu = signs * rng.uniform(0.02, 0.05, n)
        memory = signs * rng.uniform(0.01, 0.03, n)
    else:
        cpu = rng.choice([-1.0, 1.0], n) * rng.uniform(0.04, 0.12, n)
        memory = rng.uniform(-0.06, 0.06, n)
    return days, {CPU: cpu, MEMORY: memory}


def _step_factor(days: np.ndarray, step_days: np.ndarray, shifts: np.ndarray) -> np.ndarray:
    """1 + the sum of the level shifts of all deploys that already happened."""
    factor = np.ones_like(days)
    for when, shift in zip(step_days, shifts, strict=True):
        factor += shift * (days >= when)
    return factor


def _disk_fill_days(
    seed: int, instance_index: int, days: np.ndarray, history_days: float, filling_up: bool
) -> np.ndarray:
    """Days' worth of net disk fill: time since start minus what cleanups freed.

    Each cleanup (log rotation, cache purge) frees 30-60 % of what had accumulated, which
    gives the sawtooth real disks show. Being a multiplier of the fill rate keeps the model
    linear in the rate (and never lets a cleanup free more than was written).
    A disk that is ``filling_up`` (saturating scenario) had its cleanup job break halfway
    through the history: its cleanups all happen in the first half, so the fill at history end
    exceeds every earlier peak and the disk reaches 100 % after the history, not before.
    """
    rng = _rng(seed, _STREAM_CLEANUPS, instance_index)
    n = int(rng.integers(1, 2 + int(history_days // 21)))
    when = np.sort(rng.uniform(0.15, 0.45 if filling_up else 0.8, n)) * history_days
    fractions = rng.uniform(0.3, 0.6, n)
    fill = days.copy()
    freed = 0.0
    for cleanup_day, fraction in zip(when, fractions, strict=True):
        drop = fraction * (cleanup_day - freed)
        fill -= drop * (days >= cleanup_day)
        freed += drop
    return fill


def _percent_basis(
    row: dict[str, Any], metric: str, t_ns: np.ndarray, tl: Timeline
) -> tuple[np.ndarray, np.ndarray]:
    """(A, B) with the unclipped noise-free value = A + rate_per_day * B."""
    days = (t_ns - tl.start.value) / _NS_PER_DAY
    if metric == DISK:
        fill = _disk_fill_days(
            row["service_seed"],
            row["instance_index"],
            days,
            tl.history_days,
            filling_up=row["saturating_metric"] == DISK,
        )
        return np.full_like(days, row["disk_level"]), fill
    step_days, shifts = _deploy_shifts(row["service_seed"], row["scenario"], tl.history_days)
    if metric == CPU:
        amplitude, weekend = row["cpu_daily_amplitude"], row["weekend_factor"]
    else:
        # Memory barely drops at weekends: caches stay warm.
        amplitude, weekend = row["memory_daily_amplitude"], 1 - 0.2 * (1 - row["weekend_factor"])
    season = _seasonal_multiplier(t_ns, amplitude, row["peak_hour"], weekend)
    level = row[f"{_PREFIX[metric]}_level"] * _step_factor(days, step_days, shifts[metric])
    return level * season, days * season


def _noise_free(row: dict[str, Any], metric: str, t_ns: np.ndarray, tl: Timeline) -> np.ndarray:
    """Noise-free value of one metric: percentages clipped to [0, 100], bytes per interval."""
    if metric in PERCENT_METRICS:
        a, b = _percent_basis(row, metric, t_ns, tl)
        return np.clip(a + row[f"{_PREFIX[metric]}_rate_per_day"] * b, 0.0, 100.0)
    cpu = _noise_free(row, CPU, t_ns, tl)
    return _network_bytes(row, metric, cpu, tl)


def _network_bytes(row: dict[str, Any], metric: str, cpu: np.ndarray, tl: Timeline) -> np.ndarray:
    """Bytes per raw interval: a background plus a part proportional to CPU."""
    per_second = row["network_background_bytes_per_s"] + row["network_bytes_per_s_per_cpu"] * cpu
    if metric == NETWORK_OUT:
        per_second = per_second * row["network_out_ratio"]
    return per_second * tl.freq.total_seconds()


def _noise_free_bin_means(
    row: dict[str, Any], metric: str, tl: Timeline, until: pd.Timestamp
) -> tuple[np.ndarray, np.ndarray]:
    """Bin starts (int64 ns) and noise-free means per modelling bin, from launch to ``until``."""
    t_ns = _instance_grid(row, tl, until)
    values = _noise_free(row, metric, t_ns, tl)
    bin_index = (t_ns - tl.start.value) // tl.bin.value
    first = np.flatnonzero(np.r_[True, np.diff(bin_index) != 0])
    sums = np.add.reduceat(values, first)
    counts = np.diff(np.r_[first, len(values)])
    return tl.start.value + bin_index[first] * tl.bin.value, sums / counts


def _first_crossing(
    bin_starts: np.ndarray, means: np.ndarray, level: float, origin: pd.Timestamp
) -> pd.Timestamp:
    """Start of the first bin at or after ``origin`` whose mean is >= level (NaT if none)."""
    hits = np.flatnonzero(
        (bin_starts >= pd.Timestamp(origin).value) & (means >= level - _TOLERANCE)
    )
    return pd.Timestamp(int(bin_starts[hits[0]]), tz="UTC") if hits.size else pd.NaT


# --------------------------------------------------------------------------------------------
# Resources table
# --------------------------------------------------------------------------------------------


def resources_table(plan: pd.DataFrame) -> pd.DataFrame:
    """The resources-table columns of the plan (floats for sizes and prices, str otherwise)."""
    table = plan.loc[:, list(RESOURCE_COLUMNS)].reset_index(drop=True)
    for col in RESOURCE_COLUMNS:
        numeric = col in {"vcpu", "memory_gib", "hourly_price_usd"}
        table[col] = table[col].astype("float64" if numeric else str)
    return table


# --------------------------------------------------------------------------------------------
# Raw metrics
# --------------------------------------------------------------------------------------------


def generate_service(plan: pd.DataFrame, service: str, cfg: dict[str, Any]) -> pd.DataFrame:
    """Raw long-format metrics (``RAW_COLUMNS``) of one service's instances.

    One row per (instance, metric, raw timestamp) between launch and end, minus the missing
    samples; grouped by resource_id, then metric (in ``METRICS`` order), timestamps ascending.
    Randomness comes only from the service seed (seed, service name), so other services never
    change this output.
    """
    tl = timeline(cfg)
    rows = plan.loc[plan["service"] == service].to_dict("records")
    if not rows:
        known = ", ".join(pd.unique(plan["service"]))
        raise ConfigError("synthetic.services", f"no service named '{service}'; known: {known}")
    seed = int(rows[0]["service_seed"])
    missing_rate = float(cfg["synthetic"]["missing_rate"])
    incidents = _incidents(_rng(seed, _STREAM_INCIDENTS), tl)
    outages = _outages(_rng(seed, _STREAM_INCIDENTS, 1), rows, tl) if missing_rate > 0 else {}
    ids = [str(r["resource_id"]) for r in rows]
    parts: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = []
    for position, row in enumerate(rows):
        rng = _rng(seed, _STREAM_NOISE, int(row["instance_index"]))
        t_ns = np.arange(row["launch_time"].value, row["end_time"].value, tl.freq.value)
        values = _instance_metrics(row, t_ns, tl, rng, incidents)
        outage = _interval_mask(t_ns, outages.get(position, []))
        for code, metric in enumerate(METRICS):
            # Random single drops hit each metric separately (one agent datapoint lost);
            # outages take every metric of the instance at once.
            keep = ~outage & (rng.random(t_ns.size) >= missing_rate)
            count = int(keep.sum())
            parts.append(
                (
                    t_ns[keep],
                    np.full(count, position, dtype=np.int32),
                    np.full(count, code, dtype=np.int8),
                    values[metric][keep],
                )
            )
    timestamps, positions, codes, values_out = (
        np.concatenate(col) for col in zip(*parts, strict=True)
    )
    frame = pd.DataFrame(
        {
            "timestamp": pd.DatetimeIndex(timestamps.astype("datetime64[ns]")).tz_localize("UTC"),
            "resource_id": np.asarray(ids, dtype=object)[positions],
            "metric": np.asarray(METRICS, dtype=object)[codes],
            "value": values_out.astype("float64"),
        }
    )
    return frame.loc[:, list(RAW_COLUMNS)]


def _instance_metrics(
    row: dict[str, Any],
    t_ns: np.ndarray,
    tl: Timeline,
    rng: np.random.Generator,
    incidents: dict[str, np.ndarray],
) -> dict[str, np.ndarray]:
    """All five metrics of one instance: noise-free curve + noise + incident spikes, bounded."""
    if t_ns.size == 0:
        return {metric: np.empty(0) for metric in METRICS}
    cpu_clean = _noise_free(row, CPU, t_ns, tl)
    memory_clean = _noise_free(row, MEMORY, t_ns, tl)
    disk_clean = _noise_free(row, DISK, t_ns, tl)
    cpu_spike, memory_spike = _spikes(t_ns, incidents, rng)
    # CPU noise grows with load (more requests, more variance); memory and disk are smooth.
    cpu = cpu_clean + (0.05 * cpu_clean + 0.4) * _ar1(rng, t_ns.size, 0.6, tl) + cpu_spike
    # Near its limit memory churns (page reclaim, GC, caches evicted and refilled), so the
    # noise widens above 85 % and a saturating service touches the ceiling before it stays.
    memory_sd = 0.5 + 0.15 * np.maximum(memory_clean - 85.0, 0.0)
    memory = memory_clean + memory_sd * _ar1(rng, t_ns.size, 0.9, tl) + memory_spike
    disk = disk_clean + 0.05 * _ar1(rng, t_ns.size, 0.95, tl)
    # Percentages are pegged at the ceiling (and floor) like CloudWatch reports them.
    cpu, memory, disk = (np.clip(x, 0.0, 100.0) for x in (cpu, memory, disk))
    # Network follows the *observed* CPU, spikes included, with its own small jitter.
    network_in = _network_bytes(row, NETWORK_IN, cpu, tl) * rng.lognormal(0.0, 0.1, t_ns.size)
    network_out = _network_bytes(row, NETWORK_OUT, cpu, tl) * rng.lognormal(0.0, 0.1, t_ns.size)
    return {
        CPU: cpu,
        MEMORY: memory,
        NETWORK_IN: np.maximum(network_in, 0.0),
        NETWORK_OUT: np.maximum(network_out, 0.0),
        DISK: disk,
    }


def _ar1(rng: np.random.Generator, n: int, phi_5min: float, tl: Timeline) -> np.ndarray:
    """Unit-variance AR(1) noise: real metrics wander, they are not independent per sample.

    ``phi_5min`` is the lag-one correlation at 5-minute sampling; other intervals keep the
    same correlation time.
    """
    phi = phi_5min ** (tl.freq / pd.Timedelta(minutes=5))
    shocks = rng.standard_normal(n) * math.sqrt(1 - phi**2)
    shocks[0] = rng.standard_normal()  # start in the stationary distribution
    return lfilter([1.0], [1.0, -phi], shocks)


def _incidents(rng: np.random.Generator, tl: Timeline) -> dict[str, np.ndarray]:
    """Service-wide incidents (traffic surges, runaway jobs): short bursts over the history.

    About one every ten days plus one, 10-60 minutes long, adding 15-40 CPU points.
    """
    n = 1 + int(rng.poisson(tl.history_days / 10))
    start = tl.start.value + rng.uniform(0, 1, n) * (tl.end - tl.start).value
    minutes = rng.uniform(10, 60, n)
    return {
        "start": start.astype(np.int64),
        "end": (start + minutes * 60e9).astype(np.int64),
        "cpu": rng.uniform(15, 40, n),
        "memory": rng.uniform(2, 8, n),
    }


def _spikes(
    t_ns: np.ndarray, incidents: dict[str, np.ndarray], rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """CPU and memory additions of the incidents this instance takes part in (75 % each)."""
    n = incidents["start"].size
    step = t_ns[1] - t_ns[0] if t_ns.size > 1 else _NS_PER_HOUR
    involved = rng.random(n) < 0.75
    scale = rng.uniform(0.7, 1.3, n)
    cpu, memory = np.zeros(t_ns.size), np.zeros(t_ns.size)
    for k in np.flatnonzero(involved):
        start = incidents["start"][k]
        lo, hi = np.searchsorted(t_ns, [start, incidents["end"][k]])
        # An incident shorter than the sampling interval still shows in the next sample
        # (when that sample belongs to this instance's life).
        if hi == lo and lo < t_ns.size and t_ns[lo] - start < step:
            hi = lo + 1
        cpu[lo:hi] += incidents["cpu"][k] * scale[k]
        memory[lo:hi] += incidents["memory"][k] * scale[k]
    return cpu, memory


def _outages(
    rng: np.random.Generator, rows: list[dict[str, Any]], tl: Timeline
) -> dict[int, list[tuple[int, int]]]:
    """Multi-hour agent outages (2-8 h): one plus about one per three weeks, per service."""
    n = 1 + int(rng.poisson(tl.history_days / 21))
    outages: dict[int, list[tuple[int, int]]] = {}
    for _ in range(n):
        position = int(rng.integers(len(rows)))
        launch, end = rows[position]["launch_time"].value, rows[position]["end_time"].value
        start = launch + int(rng.random() * (end - launch))
        length = int(rng.uniform(2, 8) * _NS_PER_HOUR)
        outages.setdefault(position, []).append((start, start + length))
    return outages


def _interval_mask(t_ns: np.ndarray, intervals: list[tuple[int, int]]) -> np.ndarray:
    mask = np.zeros(t_ns.size, dtype=bool)
    for start, end in intervals:
        mask |= (t_ns >= start) & (t_ns < end)
    return mask


# --------------------------------------------------------------------------------------------
# Ground truth
# --------------------------------------------------------------------------------------------


def ground_truth(plan: pd.DataFrame, cfg: dict[str, Any]) -> dict[str, Any]:
    """Known answers for the risk stage, JSON-serialisable.

    For every resource of a saturating or growing service and every metric with levels (the
    percentages, plus any metric with configured thresholds): the start of the first modelling
    bin at or after the resource's forecast origin whose noise-free mean reaches 70, 80, 90, 95
    and 100 % and the warning/critical thresholds (ISO UTC, null when not before
    history end + 2 x horizon). The origin is history end, or the first bin after the last
    sample of a decommissioned instance. Also lists the resources of each scenario.
    """
    tl = timeline(cfg)
    services: dict[str, Any] = {}
    resources: dict[str, Any] = {}
    for svc in cfg["synthetic"]["services"]:
        part = plan.loc[plan["service"] == svc["name"]]
        services[svc["name"]] = {
            "scenario": svc["scenario"],
            "saturating_metric": svc["saturating_metric"]
            if svc["scenario"] == "saturating"
            else None,
            "instance_type": svc["instance_type"],
            "instances": part["resource_id"].tolist(),
            "new": part.loc[part["lifecycle"] == "new", "resource_id"].tolist(),
            "decommissioned": part.loc[
                part["lifecycle"] == "decommissioned", "resource_id"
            ].tolist(),
        }
        if svc["scenario"] in {"saturating", "growing"}:
            for row in part.to_dict("records"):
                resources[row["resource_id"]] = _resource_truth(row, cfg, tl)
    by_scenario = {
        scenario: plan.loc[plan["scenario"] == scenario, "resource_id"].tolist()
        for scenario in SCENARIOS
    }
    return {
        "seed": int(cfg["synthetic"]["seed"]),
        "history_start": _iso(tl.start),
        "history_end": _iso(tl.end),
        "horizon_end": _iso(tl.end + tl.horizon),
        "search_end": _iso(tl.search_end),
        "raw_freq": cfg["synthetic"]["freq"],
        "bin_freq": cfg["etl"]["freq"],
        "levels": list(CROSSING_LEVELS),
        "definition": (
            "first etl.freq bin starting at or after the origin whose noise-free mean "
            "(noise, incidents and gaps excluded) is >= the level; null if none before search_end"
        ),
        "services": services,
        "resources": resources,
        **by_scenario,
    }


def _resource_truth(row: dict[str, Any], cfg: dict[str, Any], tl: Timeline) -> dict[str, Any]:
    origin = tl.bin_ceil(min(row["end_time"], tl.end))
    metrics: dict[str, Any] = {}
    for metric in METRICS:
        levels = _thresholds(cfg, metric)
        if metric not in PERCENT_METRICS and levels is None:
            continue
        bins, means = _noise_free_bin_means(row, metric, tl, tl.search_end)
        in_horizon = (bins >= origin.value) & (bins < (origin + tl.horizon).value)
        entry: dict[str, Any] = {
            "peak_in_horizon": float(means[in_horizon].max()) if in_horizon.any() else None,
        }
        if metric in PERCENT_METRICS:
            entry["levels"] = {
                f"{level:g}": _iso(_first_crossing(bins, means, level, origin))
                for level in CROSSING_LEVELS
            }
        for name, level in (levels or {}).items():
            entry[name] = {
                "level": level,
                "time": _iso(_first_crossing(bins, means, level, origin)),
            }
        metrics[metric] = entry
    return {
        "service": row["service"],
        "scenario": row["scenario"],
        "lifecycle": row["lifecycle"],
        "origin": _iso(origin),
        "saturating_metric": row["saturating_metric"],
        "saturation_time": _iso(row["saturation_time"]),
        "metrics": metrics,
    }


def _iso(ts: pd.Timestamp | None) -> str | None:
    """ISO 8601 UTC string, or None for NaT."""
    if ts is None or pd.isna(ts):
        return None
    return pd.Timestamp(ts).tz_convert("UTC").isoformat()
