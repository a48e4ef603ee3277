"""Is the history long enough for the configured backtest? Checked before anything is scored.

The backtest (:func:`capforecast.forecast.backtest.plan_backtest`) scores a series in a window
only when it has ``2 x backtest.season`` training steps before the window's cutoff, and its earliest
window starts ``horizon + step x (windows + selection_windows - 1)`` steps before a series' end.
When even the longest series is too short, every series is skipped in every window, there is
nothing to score, and the leaderboard failed minutes later with a pandas traceback. The
requirement depends on the data, so it is checked as soon as the lengths are known:

* at plan time for the synthetic source, from ``synthetic.days`` (rules/common.smk);
* for any source, by the ``history_check`` rule on every partition's feature panel
  (:func:`check_fleet`, scripts/forecast_history_check.py) as soon as the last one is written,
  first among the jobs ready then (rule priority); the leaderboard waits for it. A model job
  sees one shard of one group and does not wait for it (a fleet-wide input would rerun
  every shard when any partition changes). A failed check stops the run in one line naming
  the key; a partition whose own series are all too short is only logged (its series are
  skipped window by window, ``backtest.plan_backtest(fleet_checked=True)`` in its shards).

Gaps are not counted: a long but gappy series passes here and may still be skipped in a window,
with the reason recorded in the backtest's skipped table.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow.parquet as pq

from capforecast.errors import ConfigError

LOGGER = logging.getLogger(__name__)


@dataclass(frozen=True)
class BacktestRoom:
    """Steps the configured backtest needs from the longest series.

    test_steps: from the earliest cutoff to a series' end; train_steps: training before it.
    """

    windows: int
    horizon: int
    step: int
    season: int

    @classmethod
    def from_config(cls, backtest_cfg: Mapping[str, Any]) -> BacktestRoom:
        """From the validated ``backtest`` section (horizon already resolved from forecast)."""
        horizon = int(backtest_cfg["horizon"])
        step = backtest_cfg.get("step")
        return cls(
            windows=int(backtest_cfg["windows"]) + int(backtest_cfg["selection_windows"]),
            horizon=horizon,
            step=horizon if step is None else int(step),
            season=int(backtest_cfg["season"]),
        )

    @property
    def test_steps(self) -> int:
        return self.horizon + self.step * (self.windows - 1)

    @property
    def train_steps(self) -> int:
        return 2 * self.season

    def check(self, longest_steps: int, source: str) -> None:
        """ConfigError naming backtest.windows (no training data left at all) or
        backtest.season (too little for two seasons) when ``longest_steps`` is too short;
        ``source`` says where the length comes from."""
        windows = (
            f"{self.windows} windows (windows + selection_windows) of horizon {self.horizon} "
            f"and step {self.step} take {self.test_steps} steps"
        )
        left = longest_steps - self.test_steps
        if left < 1:
            raise ConfigError(
                "backtest.windows",
                f"{windows}, but {source} spans only {longest_steps} steps; use fewer or "
                "shorter windows",
            )
        if left < self.train_steps:
            raise ConfigError(
                "backtest.season",
                f"{self.season} needs 2 x {self.season} = {self.train_steps} steps of training "
                f"data before the earliest backtest window, but {source} spans {longest_steps} "
                f"steps and the {windows}, leaving {left}; use a season of at most {left // 2} "
                "or fewer windows",
            )


def longest_steps(panel: pd.DataFrame, freq: str) -> tuple[int, str]:
    """Grid steps spanned by the longest series of ``panel`` (series_id, timestamp) and its id."""
    spans = panel.groupby("series_id", sort=True)["timestamp"].agg(["min", "max"])
    return _longest(spans, freq)


def _longest(spans: pd.DataFrame, freq: str) -> tuple[int, str]:
    """(steps, series id) of the longest span of ``spans`` (index series_id, min, max)."""
    steps = ((spans["max"] - spans["min"]) / pd.Timedelta(freq)).astype("int64") + 1
    longest = str(steps.sort_index().idxmax())
    return int(steps[longest]), longest


def file_spans(feature_file: str | Path) -> pd.DataFrame:
    """First and last timestamp of every series of a feature panel (index series_id, columns
    min, max), read from its two columns only (pyarrow's group-by: no frame of every row)."""
    table = pq.read_table(feature_file, columns=["series_id", "timestamp"])
    spans = table.group_by("series_id").aggregate([("timestamp", "min"), ("timestamp", "max")])
    frame = spans.to_pandas().rename(columns={"timestamp_min": "min", "timestamp_max": "max"})
    return frame.set_index("series_id")


def check_fleet(
    feature_files: Mapping[str, str | Path], backtest_cfg: Mapping[str, Any], freq: str
) -> dict[str, Any]:
    """The fleet-wide check on every partition's feature panel (``partition -> file``).

    ConfigError (one line naming ``backtest.windows`` or ``backtest.season``, the longest
    series and the largest season that fits) when even the fleet's longest series is too
    short; a partition whose longest series is too short is logged, not fatal. Returns what
    was measured: the longest series, its steps and the steps each partition spans."""
    room = BacktestRoom.from_config(backtest_cfg)
    partitions: dict[str, tuple[int, str]] = {}
    for name, path in feature_files.items():
        spans = file_spans(path)
        if len(spans):
            partitions[name] = _longest(spans, freq)
    if not partitions:
        return {"series": None, "steps": 0, "partitions": {}}  # no data: reported elsewhere
    # The longest; the first id in order among equals, as longest_steps.
    steps, series = min(partitions.values(), key=lambda item: (-item[0], item[1]))
    room.check(steps, f"the longest series of the fleet ({series!r})")
    for name, (longest, sid) in sorted(partitions.items()):
        try:
            room.check(longest, f"its longest series ({sid!r})")
        except ConfigError as err:
            LOGGER.warning("partition %s is too short, its series are skipped: %s", name, err)
    return {
        "series": series,
        "steps": steps,
        "needed": room.test_steps + room.train_steps,
        "partitions": {name: longest for name, (longest, _) in sorted(partitions.items())},
    }


def check_panel(panel: pd.DataFrame, backtest_cfg: Mapping[str, Any], freq: str) -> None:
    """ConfigError when the longest series of the model panel is too short for the backtest."""
    if panel.empty:
        return  # the caller reports an empty panel its own way
    steps, series = longest_steps(panel, freq)
    BacktestRoom.from_config(backtest_cfg).check(steps, f"the longest series ({series!r})")


def synthetic_steps(cfg: Mapping[str, Any]) -> int:
    """Grid steps of the synthetic history: synthetic.days, up to data.history_end when set."""
    start = pd.Timestamp(cfg["synthetic"]["start"])
    start = start.tz_localize("UTC") if start.tzinfo is None else start.tz_convert("UTC")
    end = start + pd.Timedelta(days=int(cfg["synthetic"]["days"]))
    if cfg["data"]["history_end"] is not None:
        cut = pd.Timestamp(cfg["data"]["history_end"])
        end = min(end, cut.tz_localize("UTC") if cut.tzinfo is None else cut.tz_convert("UTC"))
    return max(0, int((end - start) / pd.Timedelta(cfg["etl"]["freq"])))


def check_synthetic(cfg: Mapping[str, Any]) -> None:
    """Plan-time check of a validated synthetic config: its history is known without data."""
    days = cfg["synthetic"]["days"]
    source = f"the synthetic history (synthetic.days = {days}, etl.freq = {cfg['etl']['freq']})"
    BacktestRoom.from_config(cfg["backtest"]).check(synthetic_steps(cfg), source)
