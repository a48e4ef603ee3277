"""Partition names of input files: safe in paths and Snakemake wildcards, bounded, distinct.

A partition (one input file) names the files of its jobs (``results/raw/{partition}.parquet``,
``results/quality/partitions/{partition}.reconciliation.csv``, ...) and is a Snakemake wildcard
value, and its name comes from a file name nobody checked. A stem that is already a safe name
is kept as it is (``ec2_cpu_utilization_24ae8d``), so names stay readable and stable. Any other
stem gets a readable ASCII prefix plus a hash of the whole stem (``日本_cpu`` -> ``cpu-<10 hex>``),
so that:

* a name holds only ``[A-Za-z0-9_-]`` and does not start with ``-`` (no path separator, no
  wildcard-pattern character, never read as an option);
* a name is at most ``NAME_MAX`` characters, whatever the stem's length or encoding (the
  longest file of a partition stays far below the usual 255-byte file-name limit);
* Snakemake never finds it "periodic" (it refuses a wildcard value that ends in a substring
  repeated 20 or more times, e.g. ``cpu_aaaaaaaaaaaaaaaaaaaa``);
* stems that differ give different names (``日本_cpu`` and ``中国_cpu``, ``a b`` and ``a_b``):
  the hash covers the exact stem. Only files with the same stem (``x.csv`` and ``x.parquet``),
  or names that differ only in case (one file on a case-insensitive file system), stop the run
  with one line naming both files.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections.abc import Iterable
from pathlib import Path

from capforecast.data.ingest import data_stem
from capforecast.errors import InputDataError

NAME_MAX = 64
HASH_CHARS = 10
# No leading "-": a name must never read as a command-line option.
_SAFE_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_-]*")
_UNSAFE_RUN = re.compile(r"[^A-Za-z0-9-]+")
# Snakemake's PeriodicityDetector: a value ending in a substring repeated min_repeat (20) times.
_PERIODIC_TAIL = re.compile(r"(.+)\1{19,}$")


def is_safe_name(stem: str) -> bool:
    """True when ``stem`` can be a partition name as it is."""
    return (
        len(stem) <= NAME_MAX
        and _SAFE_NAME.fullmatch(stem) is not None
        and _PERIODIC_TAIL.search(stem) is None
    )


def stem_digest(stem: str) -> str:
    """Short hex digest of the exact stem (file names that are not valid UTF-8 included)."""
    return hashlib.sha256(stem.encode("utf-8", "surrogateescape")).hexdigest()[:HASH_CHARS]


def readable_prefix(stem: str, limit: int) -> str:
    """The stem in ASCII for people: accents dropped (é -> e), other characters as "_"
    (runs of them and of "_" collapsed, none at the ends), at most ``limit`` characters."""
    ascii_text = unicodedata.normalize("NFKD", stem).encode("ascii", "ignore").decode()
    return _UNSAFE_RUN.sub("_", ascii_text).strip("_-")[:limit].rstrip("_-")


def partition_name(file: str | Path) -> str:
    """Partition name of one input file: its stem (the name without its data suffix) when that
    is safe, else a readable prefix of it, "-" and a digest of the exact stem."""
    stem = data_stem(file)
    if is_safe_name(stem):
        return stem
    prefix = readable_prefix(stem, NAME_MAX - HASH_CHARS - 1) or "file"
    return f"{prefix}-{stem_digest(stem)}"


def partition_names(files: Iterable[str | Path]) -> dict[str, Path]:
    """Partition name -> file; one-line error when two files would share a name or their names
    differ only in case (``x.csv`` and ``x.parquet``; ``Web.csv`` and ``web.csv``)."""
    names: dict[str, Path] = {}
    folded: dict[str, str] = {}
    for file in map(Path, files):
        name = partition_name(file)
        other = names.get(name) or names.get(folded.get(name.casefold(), ""))
        if other is not None:
            raise InputDataError(
                str(file),
                f"partition name '{name}' is also the name of {other} (names differing only "
                "in case are one file on some file systems); rename one of the two files",
            )
        names[name] = file
        folded[name.casefold()] = name
    return names
