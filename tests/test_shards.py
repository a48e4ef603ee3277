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


def fleet(n_partitions: int, series: int, prefix: str = "svc") -> dict[str, int]:
    return {f"{prefix}{k:03d}": series for k in range(n_partitions)}


def pack_of(groups: dict[str, shards.ShardGroup]) -> dict[str, str]:
    """Partition -> its group's name."""
    return {p: name for name, group in groups.items() for p in group.partitions}


def test_small_partitions_are_packed_and_large_ones_keep_their_shards():
    planned = {"big": 1200, "exact": 500, "unknown": None, **fleet(10, 80), "empty": 0}
    groups = shards.shard_groups(planned, 500)
    # At or above a shard, or not known when planning: a group of its own, hash shards as before.
    assert groups["big"] == shards.ShardGroup(("big",), 3)
    assert groups["exact"] == shards.ShardGroup(("exact",), 1)
    assert groups["unknown"] == shards.ShardGroup(("unknown",), 1)
    # Below a shard (0 series too): 800 series in ceil(800 / 500) = 2 packs of one shard each.
    packs = {name: group for name, group in groups.items() if shards.is_pack(name)}
    assert set(packs) <= {"pack.0", "pack.1"}
    assert all(group.n_shards == 1 for group in packs.values())
    packed = sorted(p for group in packs.values() for p in group.partitions)
    assert packed == sorted([*fleet(10, 80), "empty"])
    for partition in packed:
        assert pack_of(groups)[partition] == f"pack.{shards.shard_of(partition, 2)}"
    # Partitions in a pack are listed by name, groups by name.
    assert all(list(g.partitions) == sorted(g.partitions) for g in groups.values())
    assert list(groups) == sorted(groups)


def test_pack_count_is_the_small_series_over_the_shard_size():
    assert shards.pack_count({}, 10) == 0
    assert shards.pack_count({"a": 10, "b": None}, 10) == 0  # nothing small
    assert shards.pack_count({"a": 0}, 10) == 1  # at least one when a partition is small
    assert shards.pack_count({"a": 0, "b": 0}, 10) == 1
    assert shards.pack_count({"a": 9, "b": 1}, 10) == 1
    assert shards.pack_count({"a": 9, "b": 2, "c": 100}, 10) == 2
    assert shards.pack_count(fleet(100, 5), 10) == 50


def test_only_packs_that_receive_a_partition_exist():
    # One small partition and ceil(9 / 10) = 1 pack; 3 partitions of 9: 3 packs, maybe fewer.
    assert shards.shard_groups({"a": 9}, 10) == {"pack.0": shards.ShardGroup(("a",), 1)}
    groups = shards.shard_groups({"a": 9, "b": 9, "c": 9}, 10)
    assert set(groups) == {f"pack.{shards.shard_of(p, 3)}" for p in "abc"}
    assert sum(len(g.partitions) for g in groups.values()) == 3


def test_packs_are_stable_when_partitions_come_and_go():
    """A partition's pack is a digest of its name modulo the number of packs: adding or removing
    a partition moves no other while that number stays, whatever the order."""
    before = fleet(20, 7)  # 140 series: ceil(140 / 50) = 3 packs
    moved = shards.shard_groups(before, 50)
    assert shards.pack_count(before, 50) == 3
    # Removed: 6 series fewer, still 3 packs; added: 1 series more and a large partition.
    fewer = {p: n for p, n in before.items() if p != "svc004"}
    more = {"new": 1, "large": 900, **dict(reversed(list(before.items())))}
    for after in (fewer, more):
        groups = shards.shard_groups(after, 50)
        assert shards.pack_count(after, 50) == 3
        kept = pack_of(groups)
        assert all(kept[p] == pack for p, pack in pack_of(moved).items() if p in kept)
    # The other packs' partitions are exactly as they were: only one pack's model jobs rerun.
    changed = {
        name for name, group in shards.shard_groups(fewer, 50).items() if moved.get(name) != group
    }
    assert changed == {pack_of(moved)["svc004"]}
    # The order partitions are given in does not matter.
    assert shards.shard_groups(dict(reversed(list(before.items()))), 50) == moved


def test_packs_are_sized_near_the_shard_size():
    groups = shards.shard_groups(fleet(200, 10), 500)  # 2,000 series: 4 packs
    sizes = [10 * len(g.partitions) for g in groups.values()]
    assert len(groups) == 4 and sum(sizes) == 2000
    assert max(sizes) < 1.5 * 500  # a pack can exceed a shard a little, by hashing


def test_an_empty_plan_has_no_groups():
    assert shards.shard_groups({}, 500) == {}
    assert shards.job_series({}, {}, 500, 1000) == 500


def test_a_partition_named_like_a_pack_cannot_collide():
    """Partition names hold no dot (capforecast.data.partitions, and the schema for service
    names); a name like a pack's is refused rather than merged with the pack."""
    from capforecast.config import validated_config
    from capforecast.data.partitions import is_safe_name, partition_name
    from capforecast.errors import ConfigError

    assert not is_safe_name("pack.0")
    # A file named like a pack gets a name without a dot (a readable prefix and a digest).
    for file in ("pack.0.csv", "pack.0.parquet", "pack.0"):
        name = partition_name(file)
        assert "." not in name and not shards.is_pack(name), name
    service = {"instances": 1, "instance_type": "m5.large", "scenario": "flat"}
    instances = {"instance_ids": ["i-0123456789abcdef0"]}

    def synthetic(name: str) -> dict:
        return {"synthetic": {"services": [{"name": name, **service}]}}

    def cloudwatch(name: str) -> dict:
        services = [{"name": name, **instances}]
        return {"data": {"source": "cloudwatch", "cloudwatch": {"services": services}}}

    for source in (synthetic, cloudwatch):
        validated_config(source("pack0"))  # the same without its dot: a valid name
        with pytest.raises(ConfigError, match=r"services\[0\]\.name"):
            validated_config(source("pack.0"))
    with pytest.raises(ValueError, match="collide with a pack"):
        shards.shard_groups({"pack.0": 1, "a": 1}, 10)


def test_model_jobs_are_sized_for_the_largest_group():
    planned = {**fleet(3, 40), "big": 1100}
    groups = shards.shard_groups(planned, 100)  # 120 small series: 2 packs; big: 11 shards
    packs = [sum(planned[p] for p in g.partitions) for n, g in groups.items() if shards.is_pack(n)]
    assert shards.job_series(groups, planned, 100, 1000) == max([*packs, 100])
    # All small: the largest pack, which may exceed shard_size.
    small = fleet(7, 40)  # 280 series, 3 packs
    groups = shards.shard_groups(small, 100)
    largest = max(40 * len(g.partitions) for g in groups.values())
    assert shards.job_series(groups, small, 100, 1000) == largest
    # One partition smaller than a shard: its series; unknown: as before (a shard, at most the
    # default).
    assert shards.job_series(shards.shard_groups({"a": 7}, 500), {"a": 7}, 500, 1000) == 7
    unknown = {"a": None, "b": 7}
    assert shards.job_series(shards.shard_groups(unknown, 500), unknown, 500, 1000) == 500
    assert shards.job_series(shards.shard_groups(unknown, 5000), unknown, 5000, 1000) == 1000


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


def test_load_shard_reads_a_packs_partitions_together(tmp_path):
    """A pack's model job reads several feature files: their rows concatenated, sorted as one
    panel, empty files passed over; the same rows as one file holding them all."""

    def panel(series: list[str]) -> pd.DataFrame:
        return pd.DataFrame(
            {
                "series_id": [s for s in series for _ in range(2)],
                "resource_id": "i-1",
                "metric": "cpu_utilization",
                "timestamp": list(pd.date_range("2026-01-01", periods=2, freq="h", tz="UTC"))
                * len(series),
                "y": range(2 * len(series)),
            }
        )

    panel(ids(3, "b-")).to_parquet(tmp_path / "b.parquet")
    panel(ids(2, "a-")).to_parquet(tmp_path / "a.parquet")
    panel([]).to_parquet(tmp_path / "empty.parquet")
    files = [tmp_path / "b.parquet", tmp_path / "empty.parquet", str(tmp_path / "a.parquet")]
    pack = shards.load_shard(files, 0, 1)
    pd.concat([panel(ids(2, "a-")), panel(ids(3, "b-"))]).to_parquet(tmp_path / "all.parquet")
    pd.testing.assert_frame_equal(pack, shards.load_shard(tmp_path / "all.parquet", 0, 1))
    assert shards.load_shard([tmp_path / "empty.parquet"], 0, 1).empty
    with pytest.raises(ValueError, match="no feature file"):
        shards.load_shard([], 0, 1)


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
