"""Config validation: defaults from config/schema.yaml and one-line errors naming the key."""

from __future__ import annotations

import pytest

from capforecast.config import deep_merge, load_config, validated_config
from capforecast.errors import ConfigError


def test_defaults_are_filled_from_the_schema(schema):
    cfg = validated_config({})
    assert cfg["data"]["source"] == "synthetic"
    assert cfg["etl"]["freq"] == schema["properties"]["etl"]["properties"]["freq"]["default"]
    assert cfg["backtest"]["windows"] == 3
    assert cfg["forecast"]["quantiles"] == [0.1, 0.5, 0.9]
    # nested defaults inside list items too
    assert cfg["synthetic"]["services"][0]["saturating_metric"] == "cpu_utilization"


def test_project_configs_are_valid(project_root):
    default = load_config(project_root / "config" / "config.yaml")
    nab = load_config(project_root / "config" / "config.yaml", project_root / "config" / "nab.yaml")
    assert default["data"]["source"] == "synthetic"
    assert nab["data"]["source"] == "local"
    assert nab["synthetic"]["services"] == default["synthetic"]["services"]


@pytest.mark.parametrize(
    ("config", "key", "detail"),
    [
        ({"data": {"source": "ftp"}}, "data.source", "allowed: synthetic, local"),
        ({"backtest": {"windows": 0}}, "backtest.windows", "minimum 1"),
        ({"etl": {"freq": 60}}, "etl.freq", "expected type string"),
        ({"etl": {"freqq": "1h"}}, "etl.freqq", "unknown key"),
        ({"bogus": 1}, "bogus", "unknown key"),
        ({"data": {"source": "local"}}, "data.path", "required when data.source is 'local'"),
        (
            {"risk": {"thresholds": {"cpu_utilization": {"warning": 95, "critical": 90}}}},
            "risk.thresholds.cpu_utilization",
            "must not exceed critical",
        ),
        (
            {"risk": {"thresholds": {"cpu_utilization": {"warning": 90, "critical": 120}}}},
            "risk.thresholds.cpu_utilization.critical",
            "above 100",
        ),
        (
            {
                "synthetic": {
                    "services": [
                        {
                            "name": "a",
                            "instances": 1,
                            "instance_type": "z9.huge",
                            "scenario": "flat",
                        }
                    ]
                }
            },
            "synthetic.services[0].instance_type",
            "not in the catalogue",
        ),
        (
            {"synthetic": {"services": [{"name": "a", "instances": 1, "scenario": "flat"}]}},
            "synthetic.services[0].instance_type",
            "missing required key",
        ),
    ],
)
def test_bad_config_names_key_and_what_is_allowed(config, key, detail):
    with pytest.raises(ConfigError) as err:
        validated_config(config)
    message = str(err.value)
    assert f"config key '{key}'" in message
    assert detail in message
    assert "\n" not in message


def test_deep_merge_merges_dicts_and_replaces_lists():
    merged = deep_merge({"a": {"b": 1, "c": [1, 2]}}, {"a": {"c": [3]}, "d": 4})
    assert merged == {"a": {"b": 1, "c": [3]}, "d": 4}


def test_key_order_of_the_config_does_not_matter():
    # Snakemake compares params by their text: the same settings in another order must give
    # the same validated config, down to the order of its keys.
    cfg = {
        "synthetic": {
            "seed": 3,
            "days": 9,
            "services": [
                {"name": "b", "instances": 2, "instance_type": "m5.large", "scenario": "flat"}
            ],
        },
        "forecast": {"quantiles": [0.1, 0.5, 0.9], "horizon": 24},
    }
    reordered = {
        "forecast": {"horizon": 24, "quantiles": [0.1, 0.5, 0.9]},
        "synthetic": {
            "services": [
                {"scenario": "flat", "instance_type": "m5.large", "instances": 2, "name": "b"}
            ],
            "days": 9,
            "seed": 3,
        },
    }
    first, second = validated_config(cfg), validated_config(reordered)
    assert repr(first) == repr(second)
    assert first["forecast"]["quantiles"] == [0.1, 0.5, 0.9]  # lists keep their order
