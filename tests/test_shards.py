"""Stable shards of the forecast stage (capforecast.forecast.shards)."""

from __future__ import annotations

import pandas as pd
import pytest

from capforecast.forecast import shards


def ids(n: int, prefix: str = "i-") -> list[str]:
    return [f"{prefix}{k:05d}/cpu_utilization" for k in range(n)]


def test_a_series_keeps_its_shard_when_others_come_and_go():
    before = {sid: shards.shard_of(sid, 8) for sid in ids(1000)}
    # Others added, others removed, order shuffled: the shard is a function of the id alone.
    after_ids = ids(1000)[::-1][:700] + ids(400, prefix="new-")
    after = {sid: shards.shard_of(sid, 8) for sid in after_ids}
    assert all(after[sid] == before[sid] for sid in after if sid in before)


def test_the_hash_is_stable_across_processes():
    # sha256, not hash(): PYTHONHASHSEED must not move a series.
    assert shards.shard_of("i-00001/cpu_utilization", 1) == 0
    assert [shards.shard_of(sid, 4) for sid in ids(3)] == [
        shards.shard_of(sid, 4) for sid in ids(3)
    ]
    assert (
        shards.shard_of("a", 1_000_003)
        == int.from_bytes(__import__("hashlib").sha256(b"a").digest()[:8], "big") % 1_000_003
    )


def test_shards_are_balanced_and_cover_every_series():
    n_shards = shards.shard_count(1000, 250)
    assert n_shards == 4
    counts = pd.Series([shards.shard_of(sid, n_shards) for sid in ids(1000)]).value_counts()
    assert set(counts.index) == set(range(n_shards))
    assert counts.min() > 200 and counts.max() < 300


@pytest.mark.parametrize(
    ("n_series", "shard_size", "expected"),
    [(None, 10, 1), (0, 10, 1), (10, 10, 1), (11, 10, 2), (25, 3, 9), (5, 500, 1)],
)
def test_shard_count(n_series, shard_size, expected):
    assert shards.shard_count(n_series, shard_size) == expected


def test_select_shard_partitions_the_panel():
    panel = pd.DataFrame(
        {
            "series_id": [sid for sid in ids(20) for _ in range(3)],
            "timestamp": list(pd.date_range("2026-01-01", periods=3, freq="h")) * 20,
            "y": range(60),
        }
    )
    parts = [shards.select_shard(panel, shard, 3) for shard in range(3)]
    assert sum(len(p) for p in parts) == len(panel)
    seen = [set(p["series_id"]) for p in parts]
    assert set().union(*seen) == set(panel["series_id"])
    assert not (seen[0] & seen[1] or seen[0] & seen[2] or seen[1] & seen[2])
    # Every row of a series stays together.
    assert all(p.groupby("series_id").size().eq(3).all() for p in parts if len(p))
    with pytest.raises(ValueError, match="not one of"):
        shards.select_shard(panel, 3, 3)


def test_read_shards_skips_empty_shards(tmp_path):
    pd.DataFrame().to_parquet(tmp_path / "empty.parquet")
    pd.DataFrame({"series_id": ["a"], "y": [1.0]}).to_parquet(tmp_path / "one.parquet")
    both = shards.read_shards([tmp_path / "empty.parquet", tmp_path / "one.parquet"])
    assert list(both["series_id"]) == ["a"]
    assert shards.read_shards([tmp_path / "empty.parquet"]).empty


def test_an_empty_shard_writes_an_empty_file_and_model_dir(tmp_path):
    empty = pd.DataFrame(columns=shards.FEATURE_COLUMNS)
    out, models = tmp_path / "a" / "theta.parquet", tmp_path / "models" / "theta"
    assert shards.write_if_empty(empty, out, str(models))
    assert pd.read_parquet(out).empty and models.is_dir()
    assert not shards.write_if_empty(pd.DataFrame({"series_id": ["a"]}), tmp_path / "b.parquet")
    assert not (tmp_path / "b.parquet").exists()


def test_load_shard_returns_the_rows_of_its_shard(tmp_path):
    panel = pd.DataFrame(
        {
            "series_id": ids(6),
            "resource_id": "i-1",
            "metric": "cpu_utilization",
            "timestamp": pd.Timestamp("2026-01-01", tz="UTC"),
            "y": 1.0,
        }
    )
    panel.to_parquet(tmp_path / "p.parquet")
    shard = shards.load_shard(tmp_path / "p.parquet", "1", 2)
    assert set(shard["series_id"]) == {s for s in ids(6) if shards.shard_of(s, 2) == 1}


def test_a_shard_of_short_series_is_skipped_window_by_window_as_in_the_fleet():
    """A shard whose longest series cannot hold the earliest window is not an error (the fleet
    was checked by rule history_check): each series is scored in the windows it can be, as in
    one backtest of the whole fleet; on its own panel the check still names the key."""
    from capforecast import train_backtest
    from capforecast.config import validated_config
    from capforecast.errors import ConfigError
    from capforecast.forecast import backtest
    from capforecast.forecast.models import model_settings as model_section
    from capforecast.settings import backtest_settings, forecast_settings, model_settings

    cfg = validated_config(
        {"backtest": {"windows": 2, "horizon": 24, "selection_windows": 1, "season": 12}}
    )
    end = pd.Timestamp("2026-01-10", tz="UTC")
    frames = []
    for sid, steps in {"long|cpu_utilization": 200, "short|cpu_utilization": 60}.items():
        stamps = pd.date_range(end=end, periods=steps, freq="1h")
        y = 50 + 10 * (stamps.hour.to_numpy() % 24 < 8)
        frames.append(
            pd.DataFrame(
                {
                    "series_id": sid,
                    "resource_id": sid.split("|")[0],
                    "metric": "cpu_utilization",
                    "timestamp": stamps,
                    "y": y.astype(float),
                }
            )
        )
    fleet = pd.concat(frames, ignore_index=True)
    short = fleet[fleet["series_id"].str.startswith("short")].reset_index(drop=True)

    def predictions(panel):
        out = train_backtest.backtest_predictions(
            "seasonal_naive_daily",
            panel,
            backtest_cfg=backtest_settings(cfg["backtest"]),
            forecast_cfg=forecast_settings(cfg["forecast"]),
            models_cfg=model_settings(model_section(cfg["models"], "seasonal_naive_daily")),
            percent_metrics=cfg["etl"]["percent_metrics"],
        )
        return out.drop(columns="fit_seconds"), backtest.skipped_table(out)

    whole, whole_skipped = predictions(fleet)
    alone, alone_skipped = predictions(short)
    assert set(alone["window"]) == {2}  # 60 steps: too short for windows 0 and 1
    pd.testing.assert_frame_equal(
        alone, whole[whole["series_id"] == short["series_id"][0]].reset_index(drop=True)
    )
    pd.testing.assert_frame_equal(
        alone_skipped,
        whole_skipped[whole_skipped["series_id"].str.startswith("short")].reset_index(drop=True),
    )
    with pytest.raises(ConfigError, match=r"config key 'backtest\.windows'"):
        backtest.plan_backtest(short, windows=2, horizon=24, selection_windows=1, season=12)
