"""Stable shards of the forecast stage: which series a (group, shard) model job handles.

A model job handles one shard of one *shard group*, fixed when the workflow is planned
(``shard_groups``, from each partition's planned series and ``forecast.shard_size``):

* a partition of at least ``shard_size`` planned series, or whose series are not known when
  planning (None), is a group of its own, named after it, split into ``shard_count`` shards:
  ``bucket = sha256(series_id) mod n_shards``. Positions never enter, so a series keeps its
  shard when other series are added or removed, in its partition or any other; only a change
  of its own partition's shard count moves it (and reruns that partition only).
* partitions known to be smaller than a shard (0 series included) are *packed*: with ``S`` the
  sum of their planned series, there are ``K = max(1, ceil(S / shard_size))`` packs and a small
  partition goes to pack ``sha256(partition name) mod K``, named ``pack.<k>``. A pack is one
  shard (all the series of all its partitions); only packs that receive a partition exist.
  Neither positions nor sort order enter: adding or removing a partition moves no other
  partition unless ``K`` changes, so a changed small partition reruns its own pack only. A
  pack can exceed ``shard_size`` a little (the hash does not balance sizes exactly).

Group names never collide: partition names match ``[A-Za-z0-9_][A-Za-z0-9_-]*``
(``capforecast.data.partitions``; the schema restricts synthetic and CloudWatch service names
the same way), a pack's name holds a dot. ``shard_groups`` checks it all the same.
"""

from __future__ import annotations

import hashlib
import logging
import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import NamedTuple

import pandas as pd

LOGGER = logging.getLogger(__name__)
FEATURE_COLUMNS = ["series_id", "resource_id", "metric", "timestamp", "y"]
# A pack's group name: the prefix and the pack's number. The dot keeps it apart from every
# partition name.
PACK_PREFIX = "pack."


def shard_of(series_id: str, n_shards: int) -> int:
    """The bucket of one series: a digest of its id (stable across processes and runs,
    unlike ``hash()``), modulo the partition's shard count."""
    if n_shards < 1:
        raise ValueError(f"n_shards must be at least 1, got {n_shards}")
    digest = hashlib.sha256(str(series_id).encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") % n_shards


def shard_count(n_series: int | None, shard_size: int) -> int:
    """Shards of a partition of ``n_series`` planned series (None: not known when planning,
    one shard)."""
    if n_series is None or n_series <= 0:
        return 1
    return max(1, math.ceil(n_series / shard_size))


class ShardGroup(NamedTuple):
    """One shard group: the partitions whose features its model jobs read, and its shard
    count (1 for a pack)."""

    partitions: tuple[str, ...]
    n_shards: int


def pack_count(partition_series: Mapping[str, int | None], shard_size: int) -> int:
    """Packs of the partitions known to be smaller than a shard: ``ceil(their series /
    shard_size)``, at least 1 when there is one such partition, 0 when there is none."""
    small = [n for n in partition_series.values() if is_small(n, shard_size)]
    if not small:
        return 0
    return max(1, math.ceil(sum(max(0, n) for n in small) / shard_size))


def is_small(n_series: int | None, shard_size: int) -> bool:
    """True for a partition that is packed: its planned series known and below a shard."""
    return n_series is not None and n_series < shard_size


def is_pack(group: str) -> bool:
    """True for a pack's group name (``pack.<k>``), False for a partition's."""
    return group.startswith(PACK_PREFIX)


def pack_name(partition: str, n_packs: int) -> str:
    """The pack of a small partition: a digest of its name modulo the number of packs."""
    return f"{PACK_PREFIX}{shard_of(partition, n_packs)}"


def shard_groups(
    partition_series: Mapping[str, int | None], shard_size: int
) -> dict[str, ShardGroup]:
    """Group name -> its partitions and shard count, from each partition's planned series
    (None: not known when planning) and ``forecast.shard_size`` (see the module docstring).
    Sorted by group name, a pack's partitions by name: the plan does not depend on the order
    partitions are given in."""
    if shard_size < 1:
        raise ValueError(f"shard_size must be at least 1, got {shard_size}")
    n_packs = pack_count(partition_series, shard_size)
    groups: dict[str, list[str]] = {}
    counts: dict[str, int] = {}
    for partition, n_series in partition_series.items():
        if is_pack(partition):
            # Not a name capforecast.data.partitions gives (no dot): it could be taken for a
            # pack.
            raise ValueError(f"partition name {partition!r} could collide with a pack's name")
        if is_small(n_series, shard_size):
            name = pack_name(partition, n_packs)
            groups.setdefault(name, []).append(partition)
            counts[name] = 1
        else:
            groups[partition] = [partition]
            counts[partition] = shard_count(n_series, shard_size)
    return {name: ShardGroup(tuple(sorted(groups[name])), counts[name]) for name in sorted(groups)}


def job_series(
    groups: Mapping[str, ShardGroup],
    partition_series: Mapping[str, int | None],
    shard_size: int,
    default: int,
) -> int:
    """Series the largest model job is planned for (what model jobs are sized for): a pack's
    series (all of its partitions'), a partition's shard at most ``shard_size`` (its series
    when fewer). A group whose series are not known counts as ``min(shard_size, default)``, as
    does a plan without groups."""
    sizes = []
    for name, group in groups.items():
        series = [partition_series[p] for p in group.partitions]
        if None in series:
            sizes.append(min(shard_size, default))
        elif is_pack(name):
            sizes.append(sum(series))
        else:
            sizes.append(min(series[0], shard_size))
    return max(sizes, default=min(shard_size, default))


def shard_mask(series_ids: pd.Series, shard: int, n_shards: int) -> pd.Series:
    """True for the rows whose series falls in ``shard``."""
    if n_shards == 1:
        return pd.Series(True, index=series_ids.index)
    buckets = {sid: shard_of(sid, n_shards) for sid in series_ids.unique()}
    return series_ids.map(buckets) == shard


def load_partition(feature_files: str | Path | Sequence[str | Path]) -> pd.DataFrame:
    """The feature panel of one partition, or of several (a pack's) concatenated, sorted like
    ``fit.load_panel`` (may be empty)."""
    files = [feature_files] if isinstance(feature_files, (str, Path)) else list(feature_files)
    if not files:
        raise ValueError("no feature file to load")
    frames = [pd.read_parquet(f, columns=FEATURE_COLUMNS) for f in files]
    # Empty panels add no rows but could change the columns' types.
    frames = [f for f in frames if len(f)] or frames[:1]
    panel = frames[0] if len(frames) == 1 else pd.concat(frames, ignore_index=True)
    return panel.sort_values(["series_id", "timestamp"], ignore_index=True)


def select_shard(panel: pd.DataFrame, shard: int, n_shards: int) -> pd.DataFrame:
    """The rows of ``panel`` whose series falls in ``shard`` of ``n_shards``."""
    if not 0 <= shard < n_shards:
        raise ValueError(f"shard {shard} is not one of 0..{n_shards - 1}")
    return panel.loc[shard_mask(panel["series_id"], shard, n_shards)].reset_index(drop=True)


def load_shard(
    feature_files: str | Path | Sequence[str | Path], shard: int | str, n_shards: int
) -> pd.DataFrame:
    """A model job's panel: the rows of its shard of its group's feature panels (one
    partition's, or every partition of a pack, concatenated)."""
    return select_shard(load_partition(feature_files), int(shard), n_shards)


def write_if_empty(panel: pd.DataFrame, output: str | Path, models_dir: str | None = None) -> bool:
    """An empty shard (every series of its partition hashed elsewhere, or no rows at all): an
    empty output file (and model directory), True. False, writing nothing, otherwise."""
    if len(panel):
        return False
    LOGGER.info("shard without series: empty %s", output)
    Path(output).parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame().to_parquet(output, index=False)
    if models_dir:
        Path(models_dir).mkdir(parents=True, exist_ok=True)
    return True


def read_shards(paths: Iterable[str | Path]) -> pd.DataFrame:
    """Concatenate shard outputs (an empty shard's file has no rows, maybe no columns)."""
    frames = [pd.read_parquet(p) for p in paths]
    frames = [f for f in frames if len(f)]
    if not frames:
        return pd.DataFrame()
    return pd.concat(frames, ignore_index=True)
