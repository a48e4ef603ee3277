"""Stable shards of the forecast stage: which series a (partition, shard) model job handles.

A shard is a partition and a hash bucket: ``bucket = sha256(series_id) mod n_shards`` where
``n_shards`` is the partition's shard count, fixed when the workflow is planned
(``shard_count``: its planned series over ``forecast.shard_size``). Positions never enter, so a
series keeps its shard when other series are added or removed, in its partition or any other;
only a change of its own partition's shard count moves it (and reruns that partition only).
"""

from __future__ import annotations

import hashlib
import logging
import math
from collections.abc import Iterable
from pathlib import Path

import pandas as pd

LOGGER = logging.getLogger(__name__)
FEATURE_COLUMNS = ["series_id", "resource_id", "metric", "timestamp", "y"]


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


def shard_mask(series_ids: pd.Series, shard: int, n_shards: int) -> pd.Series:
    """True for the rows whose series falls in ``shard``."""
    if n_shards == 1:
        return pd.Series(True, index=series_ids.index)
    buckets = {sid: shard_of(sid, n_shards) for sid in series_ids.unique()}
    return series_ids.map(buckets) == shard


def load_partition(feature_file: str | Path) -> pd.DataFrame:
    """One partition's feature panel, sorted like ``fit.load_panel`` (may be empty)."""
    panel = pd.read_parquet(feature_file, columns=FEATURE_COLUMNS)
    return panel.sort_values(["series_id", "timestamp"], ignore_index=True)


def select_shard(panel: pd.DataFrame, shard: int, n_shards: int) -> pd.DataFrame:
    """The rows of ``panel`` whose series falls in ``shard`` of ``n_shards``."""
    if not 0 <= shard < n_shards:
        raise ValueError(f"shard {shard} is not one of 0..{n_shards - 1}")
    return panel.loc[shard_mask(panel["series_id"], shard, n_shards)].reset_index(drop=True)


def load_shard(feature_file: str | Path, shard: int | str, n_shards: int) -> pd.DataFrame:
    """A model job's panel: the rows of its shard of its partition's feature panel."""
    return select_shard(load_partition(feature_file), int(shard), n_shards)


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
