"""Metric names as users have them -> the canonical names the rest of the product uses.

The built-in map (``metric_names.yaml`` next to this module: CloudWatch AWS/EC2, AWS/RDS,
AWS/ELB and agent names, Prometheus node-exporter recording rules, Azure Monitor) is merged with
``data.metric_names`` from the config, whose entries win. Names are matched ignoring case,
spaces, ``_``, ``-`` and ``.``; a namespace prefix ending in ``:`` or ``/`` is tried without it.

A name that is neither canonical nor mapped keeps a sanitised form of itself (lower-case
``[a-z0-9_]``, so it is safe in paths, ids and reports) and is reported as unknown; whether the
run can still judge it (thresholds in the config) is :func:`known_metrics`.
"""

from __future__ import annotations

import functools
import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from capforecast.contracts import CANONICAL_METRICS
from capforecast.errors import ConfigError

BUILTIN_MAP_PATH = Path(__file__).with_name("metric_names.yaml")

# How a name was resolved (contracts.INGEST_SERIES_COLUMNS "name_match").
MATCH_CANONICAL = "canonical"
MATCH_BUILTIN = "builtin"
MATCH_CONFIG = "config"
MATCH_PATTERN = "pattern"
MATCH_UNKNOWN = "unknown"

SCALE_PERCENT = "percent"
SCALE_FRACTION = "fraction"

_IGNORED = re.compile(r"[\s_.\-]+")
_NAMESPACE_SEPARATOR = re.compile(r"[:/]")
_TOKEN_SPLIT = re.compile(r"[^0-9A-Za-z]+")
_CAMEL_BOUNDARY = re.compile(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])")
_COUNTER_SUFFIX = re.compile(r"_(total|count|sum|bucket)$")
MAX_NAME_LENGTH = 64
MAX_STEM_TOKENS = 8  # longest run of file-name tokens compared with map entries


@dataclass(frozen=True)
class MetricName:
    """A resolved metric name: ``metric`` is what the raw partition stores."""

    metric: str
    match: str  # MATCH_* constant
    scale: str | None = None  # declared scale of a percentage source (SCALE_*), None if not said


@dataclass(frozen=True)
class _Entry:
    metric: str
    scale: str | None
    origin: str  # MATCH_CANONICAL, MATCH_BUILTIN or MATCH_CONFIG
    source: str  # the name as written in the map


def match_key(name: str) -> str:
    """Comparison form of a name: lower-case, without spaces, ``_``, ``-``, ``.`` and without
    separators at either end (``":node_memory_utilisation:"`` = ``node_memory_utilisation``)."""
    return _IGNORED.sub("", name.strip().lower()).strip(":/")


def _namespace_suffixes(name: str) -> list[str]:
    """Match keys of ``name`` and of what follows each ``:`` or ``/`` in it, longest first."""
    text = name.strip().lower().strip(":/")
    cuts = [m.end() for m in _NAMESPACE_SEPARATOR.finditer(text)]
    return [key for key in (match_key(text[cut:]) for cut in [0, *cuts]) if key]


def sanitise(name: str) -> str:
    """A safe metric name for a name nobody mapped: CamelCase split, lower-case, runs of other
    characters as one ``_`` ("AWS/EC2:StatusCheckFailed" -> "aws_ec2_status_check_failed").

    Names that sanitise to nothing or start with a digit get a ``metric_`` prefix; overlong
    ones are cut and end in a digest of the original, so distinct names stay distinct.
    """
    text = _CAMEL_BOUNDARY.sub("_", name.strip())
    text = re.sub(r"[^A-Za-z0-9]+", "_", text).strip("_").lower()
    digest = hashlib.sha1(name.encode("utf-8", "surrogatepass")).hexdigest()[:8]
    if not text:
        return f"metric_{digest}"
    if not text[0].isalpha():
        text = f"metric_{text}"
    if len(text) > MAX_NAME_LENGTH:
        text = f"{text[: MAX_NAME_LENGTH - 9].rstrip('_')}_{digest}"
    return text


def counter_hint(metric: str) -> str:
    """Advice for a name that looks like a cumulative Prometheus counter, else ''."""
    if _COUNTER_SUFFIX.search(metric):
        return (
            "; it looks like a cumulative counter (a running total only grows): "
            "export a rate such as rate(x[5m]) instead"
        )
    return ""


def _entry(source: str, value: Any, origin: str) -> _Entry:
    if isinstance(value, str):
        return _Entry(value, None, origin, source)
    return _Entry(str(value["metric"]), value.get("scale"), origin, source)


@functools.cache
def builtin_entries() -> tuple[tuple[str, str, str | None], ...]:
    """(source name, canonical metric, scale) of every built-in entry, in file order."""
    groups = yaml.safe_load(BUILTIN_MAP_PATH.read_text())
    out = []
    for group in groups.values():
        for source, value in group.items():
            entry = _entry(str(source), value, MATCH_BUILTIN)
            out.append((entry.source, entry.metric, entry.scale))
    return tuple(out)


class MetricNameMap:
    """Canonical names, the built-in map and ``data.metric_names``, merged (config wins)."""

    def __init__(self, config_entries: Mapping[str, Any] | None = None) -> None:
        self._entries: dict[str, _Entry] = {}
        for name in CANONICAL_METRICS:
            self._add(_Entry(name, None, MATCH_CANONICAL, name))
        for source, metric, scale in builtin_entries():
            self._add(_Entry(metric, scale, MATCH_BUILTIN, source))
        for source, value in (config_entries or {}).items():
            entry = _entry(str(source), value, MATCH_CONFIG)
            self._entries[match_key(entry.source)] = entry
        # File names cannot hold ":" or "/": compare series-file stems without them.
        self._by_compact = {
            key.replace(":", "").replace("/", ""): entry for key, entry in self._entries.items()
        }

    def _add(self, entry: _Entry) -> None:
        """Built-in entries must agree with each other (a disagreement is a bug in the map)."""
        key = match_key(entry.source)
        known = self._entries.get(key)
        if known is not None and (known.metric, known.scale) != (entry.metric, entry.scale):
            raise ValueError(
                f"metric-name map: '{entry.source}' -> {entry.metric} contradicts "
                f"'{known.source}' -> {known.metric}"
            )
        if known is None or known.origin == MATCH_CANONICAL:
            self._entries[key] = entry

    def lookup(self, source: str) -> MetricName:
        """Resolve one name as written in the data (or in ``data.metric``)."""
        for key in _namespace_suffixes(source):
            entry = self._entries.get(key)
            if entry is not None:
                as_is = source.strip() == entry.metric and entry.metric in CANONICAL_METRICS
                match = MATCH_CANONICAL if as_is else entry.origin
                return MetricName(entry.metric, match, entry.scale)
        return MetricName(sanitise(source), MATCH_UNKNOWN)

    def from_stem(self, stem: str) -> MetricName | None:
        """The metric a series file's name spells out, e.g. ``ec2_cpu_utilization_24ae8d`` or
        ``iio_us-east-1_i-a2eb1cd9_NetworkIn``: a map entry equal to a run of whole name tokens.

        None when no entry matches, or when entries for different metrics do (the caller then
        tries ``data.metric_patterns``).
        """
        tokens = [t.lower() for t in _TOKEN_SPLIT.split(stem) if t]
        found: dict[tuple[str, str | None], _Entry] = {}
        for start in range(len(tokens)):
            for stop in range(start + 1, min(start + MAX_STEM_TOKENS, len(tokens)) + 1):
                entry = self._by_compact.get("".join(tokens[start:stop]))
                if entry is not None:
                    found[(entry.metric, entry.scale)] = entry
        if len(found) != 1:
            return None
        entry = next(iter(found.values()))
        return MetricName(entry.metric, entry.origin, entry.scale)


def known_metrics(cfg: Mapping[str, Any]) -> list[str]:
    """Metrics a run can judge: the canonical ones, plus those the config gives a meaning
    (etl.percent_metrics, risk.thresholds, risk.service_overrides). Anything else is
    ``unclassified_metric``: forecast, but with no thresholds and no known capacity."""
    names = set(CANONICAL_METRICS) | set(cfg["etl"]["percent_metrics"])
    names |= set(cfg["risk"]["thresholds"])
    for overrides in (cfg["risk"].get("service_overrides") or {}).values():
        names |= set(overrides or {})
    return sorted(names)


def check_config(cfg: Mapping[str, Any]) -> None:
    """Rules on ``data.metric_names`` that JSON Schema cannot express: distinct names, and a
    ``scale`` only where it changes something (a percentage metric, etl.fraction_scale auto)."""
    entries = cfg["data"].get("metric_names") or {}
    percent = set(cfg["etl"]["percent_metrics"])
    seen: dict[str, str] = {}
    for source, value in entries.items():
        key = f"data.metric_names.{source}"
        compared = match_key(str(source))
        if not compared:
            raise ConfigError(key, "the source name is empty")
        if compared in seen:
            raise ConfigError(key, f"same name as '{seen[compared]}' (case, spaces, _ - . ignored)")
        seen[compared] = str(source)
        entry = _entry(str(source), value, MATCH_CONFIG)
        if entry.scale is None:
            continue
        if entry.metric not in percent:
            raise ConfigError(
                f"{key}.scale",
                f"'{entry.metric}' is not in etl.percent_metrics, so a scale does nothing",
            )
        if cfg["etl"]["fraction_scale"] != "auto":
            raise ConfigError(
                f"{key}.scale",
                f"does nothing while etl.fraction_scale is '{cfg['etl']['fraction_scale']}'",
            )
