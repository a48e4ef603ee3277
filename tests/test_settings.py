"""One place for defaults: config/schema.yaml. The typed settings have none of their own, and no
library module reads a config key with a fallback value."""

from __future__ import annotations

import ast
import dataclasses
import re
from pathlib import Path

import pytest

from capforecast import settings
from capforecast.config import validated_config

PACKAGE = Path(__file__).resolve().parents[1] / "scripts" / "capforecast"
# Receivers that hold config sections or settings (`cfg`, `etl_cfg`, `risk`, `section`, ...).
CONFIG_LIKE = re.compile(
    r"(cfg|config|settings|section|params)$|^(data|etl|synthetic|backtest|models|selection|"
    r"forecast|risk|report|training|aws|syn|prophet|autogluon|catalogue)$",
    re.IGNORECASE,
)


def settings_classes() -> list[type]:
    return [
        obj
        for obj in vars(settings).values()
        if isinstance(obj, type)
        and dataclasses.is_dataclass(obj)
        and obj.__module__ == settings.__name__
    ]


def test_settings_are_frozen_dataclasses_without_defaults():
    classes = settings_classes()
    assert len(classes) >= 8
    for cls in classes:
        assert cls.__dataclass_params__.frozen, cls.__name__
        for field in dataclasses.fields(cls):
            assert field.default is dataclasses.MISSING, (
                f"{cls.__name__}.{field.name} has a default"
            )
            assert field.default_factory is dataclasses.MISSING, f"{cls.__name__}.{field.name}"


def receiver_name(node: ast.expr) -> str:
    """`cfg` of `cfg.get`, `etl` of `cfg["etl"].get`, `risk` of `self.risk.get`."""
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return node.attr
    if isinstance(node, ast.Subscript) and isinstance(node.slice, ast.Constant):
        return str(node.slice.value)
    if isinstance(node, ast.BoolOp):  # (cfg or {}).get(...)
        return receiver_name(node.values[0])
    return ""


def config_reads_with_fallback(source: str) -> list[str]:
    """`<config-like>.get("key", <anything but None>)` calls in ``source``."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if not (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "get"
            and len(node.args) == 2
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            continue
        fallback = node.args[1]
        if isinstance(fallback, ast.Constant) and fallback.value is None:
            continue
        name = receiver_name(node.func.value)
        if CONFIG_LIKE.search(name):
            found.append(f"line {node.lineno}: {ast.unparse(node)}")
    return found


def test_the_scan_finds_the_patterns_it_is_meant_to():
    assert config_reads_with_fallback('x = cfg.get("metric", "wql")')
    assert config_reads_with_fallback('x = etl_cfg.get("freq", DEFAULT_FREQ)')
    assert config_reads_with_fallback('x = (risk_cfg or {}).get("thresholds", {})')
    assert config_reads_with_fallback('x = cfg["risk"].get("service_overrides", {})')
    assert not config_reads_with_fallback('x = cfg.get("path")')  # None: "not given"
    assert not config_reads_with_fallback('x = frame.attrs.get("skipped", [])')


@pytest.mark.parametrize(
    "path", sorted(PACKAGE.rglob("*.py")), ids=lambda p: str(p.relative_to(PACKAGE))
)
def test_no_library_module_reads_config_with_a_fallback_default(path: Path):
    found = config_reads_with_fallback(path.read_text())
    assert not found, (
        f"{path.name} reads config keys with a fallback (the schema holds the defaults; take "
        f"the validated value or a settings object): {found}"
    )


def test_builders_read_only_the_validated_config():
    cfg = validated_config({})
    assert settings.selection_settings(cfg["selection"]).metric == "mase"
    assert settings.model_settings(cfg["models"]).autogluon.time_limit == 60
    assert settings.backtest_settings(cfg["backtest"]).horizon == cfg["forecast"]["horizon"]
    risk = settings.risk_settings(cfg)
    assert risk.thresholds["cpu_utilization"] == {"warning": 70.0, "critical": 90.0}
    # A section missing a key is a programming error, not a silent default.
    partial = {k: v for k, v in cfg["selection"].items() if k != "metric"}
    with pytest.raises(KeyError):
        settings.selection_settings(partial)


def as_config(value):
    """A settings value as the config holds it (tuples are lists there)."""
    return list(value) if isinstance(value, tuple) else value


@pytest.mark.parametrize(
    ("cls", "section"), [(settings.EtlSettings, "etl"), (settings.DataSettings, "data")]
)
def test_section_settings_hold_every_key_of_the_schema_and_nothing_else(schema, cls, section):
    """Every field comes from the config: one field per key of the schema's section."""
    fields = {field.name for field in dataclasses.fields(cls)}
    assert fields == set(schema["properties"][section]["properties"])


def test_etl_settings_from_the_schema_defaults():
    etl = validated_config({})["etl"]
    built = settings.etl_settings(etl)
    for field in dataclasses.fields(built):
        assert getattr(built, field.name) is not None, field.name
        assert as_config(getattr(built, field.name)) == etl[field.name], field.name
    assert built.percent_metrics == ("cpu_utilization", "memory_utilization", "disk_used_percent")
    # A copy: the settings cannot change the validated config under the rule.
    assert built.value_limits == etl["value_limits"]
    assert built.value_limits is not etl["value_limits"]


@pytest.mark.parametrize(
    "given",
    [
        # rules/data.smk ingest_partition: what the 0-1 scale check reads.
        ("percent_metrics", "fraction_scale", "timestamp_min", "timestamp_max"),
        # rules/common.smk cut_settings: the holdout span's window.
        ("freq", "timestamp_min", "timestamp_max"),
    ],
)
def test_etl_settings_from_a_narrowed_params_dict(given):
    """A rule given only some etl keys gets those, the others None (never a default)."""
    etl = validated_config({"etl": {"fraction_scale": "never", "freq": "15min"}})["etl"]
    built = settings.etl_settings({key: etl[key] for key in given})
    for field in dataclasses.fields(built):
        value = getattr(built, field.name)
        assert as_config(value) == (etl[field.name] if field.name in given else None), field.name


def test_data_settings_from_the_schema_defaults():
    data = validated_config({})["data"]
    built = settings.data_settings(data)
    assert built.source == "synthetic" and built.format == data["format"]
    assert built.timestamp_unit == data["timestamp_unit"]
    assert built.naive_timezone == data["naive_timezone"]
    # Null in the config is None here, as it is there.
    for key in ("path", "metric", "resources", "history_end"):
        assert data[key] is None and getattr(built, key) is None, key
    assert [(p.pattern, p.metric) for p in built.metric_patterns] == [
        (e["pattern"], e["metric"]) for e in data["metric_patterns"]
    ]
    assert built.metric_names == data["metric_names"] and built.columns == data["columns"]
    assert built.cloudwatch == data["cloudwatch"] and built.cloudwatch is not data["cloudwatch"]


def test_data_settings_from_ingest_params():
    """What rules/data.smk gives ingest_partition: the reader's keys; the others are None."""
    given = ("format", "columns", "metric", "metric_patterns", "metric_names")
    given += ("naive_timezone", "timestamp_unit")
    data = validated_config(
        {
            "data": {
                "source": "local",
                "path": "in/",
                "metric": "cpu",
                "columns": {"timestamp": "time"},
                "naive_timezone": "Europe/Berlin",
            }
        }
    )["data"]
    built = settings.data_settings({key: data[key] for key in given})
    assert (built.metric, built.columns, built.naive_timezone) == (
        "cpu",
        {"timestamp": "time"},
        "Europe/Berlin",
    )
    for key in ("source", "path", "resources", "cloudwatch", "history_end"):
        assert getattr(built, key) is None, key
