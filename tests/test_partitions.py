"""Partition names from hostile file names: safe characters, bounded length, never "periodic" to
Snakemake, distinct for distinct stems, readable and unchanged for names that are already safe."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from snakemake.io import PeriodicityDetector

from capforecast.data import partitions
from capforecast.errors import InputDataError

SAFE_STEMS = (
    "iio_us-east-1_i-a2eb1cd9_NetworkIn",
    "ec2_cpu_utilization_24ae8d",
    "a-1",
    "ababababababababababababababab",  # 15 repeats: Snakemake needs 20 to call it periodic
    "x" * partitions.NAME_MAX + "Y",  # too long by one: not safe after all
)
# Stems that sanitise to the same characters, or are too long, periodic or not UTF-8.
HOSTILE_STEMS = (
    "日本_cpu",
    "中国_cpu",
    "한국_cpu",
    "cpu_" + "a" * 30,
    "cpu_" + "ab" * 30,
    "cpu_" + "a" * 29,
    "cpu_" + "x" * 240,
    "cpu_" + "x" * 239 + "y",
    "日" * 120,  # 360 bytes of UTF-8
    "é" * 200,
    "e" * 200,
    "a b",
    "a_b ",
    "a.b",
    "$\\foo$_cpu",
    "a$b$c_cpu",
    "<img src=x onerror=alert(1)>_cpu",
    "..",
    "x\udcff",  # a file name that is not valid UTF-8 (os.fsdecode's surrogate escape)
    "-",
    "",
)


def is_periodic(name: str) -> bool:
    """Snakemake's own check, with its defaults (what the workflow would refuse)."""
    return PeriodicityDetector().is_periodic(name) is not None


def test_safe_stems_keep_their_name() -> None:
    for stem in SAFE_STEMS[:-1]:
        assert partitions.partition_name(f"dir/{stem}.csv") == stem
    assert partitions.partition_name(f"{SAFE_STEMS[-1]}.csv") != SAFE_STEMS[-1]


@pytest.mark.parametrize("stem", HOSTILE_STEMS)
def test_hostile_stems_get_a_bounded_safe_hashed_name(stem: str) -> None:
    name = partitions.partition_name(Path("in") / f"{stem}.csv")
    assert partitions.is_safe_name(name) and not is_periodic(name)
    assert len(name) <= partitions.NAME_MAX
    assert len(f"{name}.reconciliation.csv".encode()) < 255  # the longest file per partition
    digest = hashlib.sha256(stem.encode("utf-8", "surrogateescape")).hexdigest()
    assert name.endswith("-" + digest[: partitions.HASH_CHARS])
    assert name == partitions.partition_name(f"other/dir/{stem}.parquet")  # the stem decides


def test_readable_prefix_keeps_what_people_recognise() -> None:
    assert partitions.partition_name("日本_cpu.csv").startswith("cpu-")
    assert partitions.partition_name("café_mem.csv").startswith("cafe_mem-")
    assert partitions.partition_name("my file.v2 (copy).parquet").startswith("my_file_v2_copy-")
    assert partitions.partition_name("ñ.csv").startswith("n-")
    assert partitions.partition_name("日本.csv").startswith("file-")


def test_every_hostile_and_safe_stem_gets_its_own_name(tmp_path: Path) -> None:
    files = [tmp_path / f"{stem}.csv" for stem in HOSTILE_STEMS + SAFE_STEMS]
    names = partitions.partition_names(files)
    assert len(names) == len(files)
    assert sorted(map(str, names.values())) == sorted(map(str, files))
    assert all(partitions.is_safe_name(n) and not is_periodic(n) for n in names)


@pytest.mark.parametrize(
    ("first", "second"),
    [("x.csv", "x.parquet"), ("host.csv", "host.csv.gz"), ("Web.csv", "web.csv"), ("A.pq", "a.pq")],
)
def test_one_name_for_two_files_stops_with_one_line_naming_both(
    tmp_path: Path, first: str, second: str
) -> None:
    with pytest.raises(InputDataError) as caught:
        partitions.partition_names([tmp_path / first, tmp_path / second])
    message = str(caught.value)
    assert "\n" not in message and first in message and second in message
    assert "rename one of the two files" in message
