"""The backtest's need for history (backtest.season, windows, horizon, step) is checked before
any model runs: at plan time from synthetic.days, else by the history_check rule on every
partition's features (the whole fleet)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from capforecast.config import validated_config
from capforecast.errors import ConfigError
from capforecast.forecast import backtest, history_check

T0 = pd.Timestamp("2024-05-01", tz="UTC")


def panel(lengths: dict[str, int]) -> pd.DataFrame:
    """Hourly series ending together, ``lengths`` steps each, with a daily cycle."""
    frames = []
    for sid, n in lengths.items():
        stamps = pd.date_range(end=T0, periods=n, freq="1h")
        y = 50 + 10 * np.sin(np.arange(n) * 2 * np.pi / 24)
        frames.append(pd.DataFrame({"series_id": sid, "timestamp": stamps, "y": y}))
    return pd.concat(frames, ignore_index=True)


def backtest_cfg(**overrides) -> dict:
    base = {"windows": 2, "horizon": 24, "selection_windows": 1, "season": 24}
    return validated_config({"backtest": {**base, **overrides}, "forecast": {"horizon": 24}})[
        "backtest"
    ]


@pytest.mark.parametrize(
    ("overrides", "needed"),
    [
        ({}, 3 * 24 + 2 * 24),  # 3 windows of 24 + two days of training
        ({"season": 100}, 3 * 24 + 200),
        ({"season": 7, "step": 6}, 24 + 6 * 2 + 14),
        ({"windows": 4, "selection_windows": 2, "season": 168}, 6 * 24 + 336),
    ],
)
def test_the_check_matches_what_the_backtest_scores(overrides, needed):
    """At exactly the steps the check asks for, the real backtest plan scores the longest series
    in every window; one step fewer and the check fails naming backtest.season, as the plan
    would skip it in the earliest window."""
    cfg = backtest_cfg(**overrides)
    plan_args = dict(
        windows=cfg["windows"],
        horizon=cfg["horizon"],
        step=cfg["step"],
        selection_windows=cfg["selection_windows"],
        season=cfg["season"],
    )
    enough = panel({"long": needed, "short": 30})
    history_check.check_panel(enough, cfg, "1h")
    plan = backtest.plan_backtest(enough, **plan_args)
    assert all("long" in members for members in plan.members.values())

    short = panel({"long": needed - 1, "short": 30})
    with pytest.raises(ConfigError) as err:
        history_check.check_panel(short, cfg, "1h")
    assert str(err.value).startswith("config key 'backtest.season'")
    assert f"spans {needed - 1} steps" in str(err.value) and "'long'" in str(err.value)
    plan = backtest.plan_backtest(short, **plan_args)
    assert "long" not in plan.members[0]


@pytest.mark.parametrize(
    ("lengths", "key"),
    [
        ({"a": 72, "b": 10}, "backtest.windows"),  # the three windows take all 72 steps
        ({"a": 50}, "backtest.windows"),
        ({"a": 73, "b": 119}, "backtest.season"),  # training left: 47 < 48
    ],
)
def test_too_short_for_the_windows_or_the_season_names_the_key(lengths, key):
    with pytest.raises(ConfigError) as err:
        history_check.check_panel(panel(lengths), backtest_cfg(), "1h")
    message = str(err.value)
    assert message.startswith(f"config key '{key}'") and "\n" not in message


@pytest.mark.parametrize(
    ("config", "key"),
    [
        ({"synthetic": {"days": 10}}, "backtest.windows"),  # 4 x 168 steps > 240
        ({"backtest": {"season": 400}}, "backtest.season"),  # 1008 - 672 < 800
        (
            {"synthetic": {"days": 12}, "forecast": {"horizon": 24}, "backtest": {"season": 97}},
            "backtest.season",
        ),
        (
            {"data": {"history_end": "2026-08-20T00:00:00Z"}, "backtest": {"season": 100}},
            "backtest.windows",  # the cut leaves 19 days: 456 steps < 672
        ),
    ],
)
def test_synthetic_history_is_checked_at_plan_time(config, key):
    with pytest.raises(ConfigError) as err:
        history_check.check_synthetic(validated_config(config))
    assert str(err.value).startswith(f"config key '{key}'")
    assert "synthetic.days" in str(err.value)


def test_synthetic_configs_that_fit_pass():
    for config in (
        {},
        {"synthetic": {"days": 12}, "forecast": {"horizon": 24}, "backtest": {"season": 96}},
        {"etl": {"freq": "15min"}, "backtest": {"season": 96}},
    ):
        history_check.check_synthetic(validated_config(config))


def write_partitions(tmp_path, partitions: dict[str, dict[str, int]]) -> dict[str, str]:
    files = {}
    for name, lengths in partitions.items():
        path = tmp_path / f"{name}.parquet"
        panel(lengths).to_parquet(path, index=False)
        files[name] = str(path)
    return files


def test_the_fleet_check_reads_every_partition_and_only_logs_a_short_one(tmp_path, caplog):
    """A partition too short next to a long one is skipped window by window, as in one
    fleet-wide job: logged, not fatal (rule history_check)."""
    files = write_partitions(tmp_path, {"long": {"a": 130, "b": 40}, "short": {"c": 60}})
    with caplog.at_level("WARNING"):
        result = history_check.check_fleet(files, backtest_cfg(), "1h")
    assert result == {
        "series": "a",
        "steps": 130,
        "needed": 120,
        "partitions": {"long": 130, "short": 60},
    }
    assert [r.getMessage() for r in caplog.records if r.levelname == "WARNING"] == [
        "partition short is too short, its series are skipped: config key 'backtest.windows': "
        "3 windows (windows + selection_windows) of horizon 24 and step 24 take 72 steps, but "
        "its longest series ('c') spans only 60 steps; use fewer or shorter windows"
    ]
    # The spans it reads equal the panel's.
    spans = history_check.file_spans(files["long"]).sort_index()
    assert history_check.longest_steps(panel({"a": 130, "b": 40}), "1h") == (130, "a")
    assert list(spans.index) == ["a", "b"]


@pytest.mark.parametrize(
    ("partitions", "key", "series"),
    [
        ({"p": {"a": 100}, "q": {"b": 119, "c": 20}}, "backtest.season", "b"),
        ({"p": {"a": 50}, "q": {"b": 72}}, "backtest.windows", "b"),
        # Ties go to the first id, as in one panel.
        ({"q": {"z": 90}, "p": {"y": 90}}, "backtest.season", "y"),
    ],
)
def test_a_fleet_too_short_fails_in_one_line_naming_the_key(tmp_path, partitions, key, series):
    files = write_partitions(tmp_path, partitions)
    with pytest.raises(ConfigError) as err:
        history_check.check_fleet(files, backtest_cfg(), "1h")
    message = str(err.value)
    assert message.startswith(f"config key '{key}'") and "\n" not in message
    assert f"the longest series of the fleet ({series!r})" in message


def test_an_empty_fleet_is_left_to_the_steps_that_report_it(tmp_path):
    path = tmp_path / "empty.parquet"
    panel({"a": 5}).iloc[:0].to_parquet(path, index=False)
    assert history_check.check_fleet({"e": path}, backtest_cfg(), "1h")["steps"] == 0
