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


# ------------------------------------------------------------ config that used to fail late
# Each payload passed validation and failed minutes later (a traceback or a misleading
# message). It is written as YAML and read by Snakemake's own config loader, as a user's
# --configfile is, and must fail validation in one line naming the key.


def snakemake_yaml(tmp_path, text: str) -> dict:
    from snakemake.common.configfile import load_configfile

    path = tmp_path / "config.yaml"
    path.write_text(text)
    return load_configfile(str(path))


LOCAL = "data:\n  source: local\n  path: x\n"


@pytest.mark.parametrize(
    ("text", "key", "detail"),
    [
        # integers written as floats
        ("forecast: {horizon: 24.0}", "forecast.horizon", "24.0 is a float: write 24"),
        ("backtest: {windows: 3.0}", "backtest.windows", "write 3"),
        ("synthetic: {days: 10.0}", "synthetic.days", "write 10"),
        ("backtest: {season: 24.5}", "backtest.season", "expected type integer"),
        # zero, overflowing or day-misaligned steps
        ("etl: {freq: 0h}", "etl.freq", "must match"),
        ("etl: {freq: 0min}", "etl.freq", "must match"),
        ("etl: {freq: 7min}", "etl.freq", "does not divide a day"),
        ("etl: {freq: 25h}", "etl.freq", "does not divide a day"),
        ("synthetic: {freq: 0s}", "synthetic.freq", "must match"),
        ("synthetic: {freq: 99999999999999999999h}", "synthetic.freq", "too long"),
        # quantiles the stages cannot work with
        ("forecast: {quantiles: [0.5, 0.8]}", "forecast.quantiles", "missing 0.1, 0.9"),
        ("forecast: {quantiles: [0.1, 0.9]}", "forecast.quantiles", "missing 0.5"),
        ("forecast: {quantiles: [0.1, 0.5, 0.9, 0.5]}", "forecast.quantiles", "non-unique"),
        (
            "forecast: {quantiles: [0.1, 0.5, 0.9, 0.1234561], extra_quantiles: [0.1234564]}",
            "forecast.extra_quantiles",
            "share the column q0.123456",
        ),
        # regular expressions that do not compile
        (LOCAL + "  metric_patterns: [{pattern: '(cpu', metric: cpu_utilization}]", "", ""),
        # negative or impossible percent levels
        ("etl: {pegged_level: -5}", "etl.pegged_level", "exclusiveMinimum 0"),
        ("etl: {pegged_level: 0}", "etl.pegged_level", "exclusiveMinimum 0"),
        ("etl: {pegged_level: 150}", "etl.pegged_level", "maximum 100"),
        # unknown keys nested in entries
        (
            "risk: {thresholds: {cpu_utilization: {warning: 70, critical: 90, critcal: 95}}}",
            "risk.thresholds.cpu_utilization.critcal",
            "unknown key; allowed: critical, warning",
        ),
        (
            "risk: {service_overrides: {web: {cpu_utilization: {warn: 60}}}}",
            "risk.service_overrides.web.cpu_utilization.warn",
            "unknown key",
        ),
        (
            "models: {prophet: {holidays: [{name: xmas, date: '2024-12-25', days: 2}]}}",
            "models.prophet.holidays[0].days",
            "unknown key",
        ),
        ("etl: {value_limits: {max_bytes: 1}}", "etl.value_limits.max_bytes", "unknown key"),
        # ceilings that would let sums overflow, metrics with two kinds of ceiling
        ("etl: {value_limits: {max_value: 1.7e+308}}", "etl.value_limits.max_value", "maximum"),
        (
            "etl: {value_limits: {count_metrics: [request_count, network_in_bytes]}}",
            "etl.value_limits.count_metrics",
            "'network_in_bytes' is already in etl.value_limits.byte_metrics",
        ),
        (
            "etl: {value_limits: {byte_metrics: [cpu_utilization]}}",
            "etl.value_limits.byte_metrics",
            "already in etl.percent_metrics",
        ),
        # YAML 1.1 floats read as text
        (
            "risk: {thresholds: {request_count: {warning: 1.0e9, critical: 2.0e+9}}}",
            "risk.thresholds.request_count.warning",
            "write 1.0e+9",
        ),
        ("etl: {value_limits: {max_value: 1e15}}", "etl.value_limits.max_value", "write 1.0e+15"),
        ("etl: {percent_repair_tolerance: 5E0}", "etl.percent_repair_tolerance", "write 5.0e+0"),
        # numbers and booleans as strings, booleans where text is expected
        ("backtest: {windows: '3'}", "backtest.windows", "drop the quotes"),
        ("selection: {shrinkage: '0.5'}", "selection.shrinkage", "drop the quotes"),
        ("forecast: {calibrate: 'false'}", "forecast.calibrate", "write true or false"),
        ("report: {hide_code: 'yes'}", "report.hide_code", "write true or false"),
        ("models: {prophet: {weekly_seasonality: on}}", "", ""),
        ("backtest: {windows: true}", "backtest.windows", "expected type integer"),
        # NaN and infinity pass every JSON Schema bound
        ("etl: {percent_repair_tolerance: .nan}", "etl.percent_repair_tolerance", "finite"),
        ("risk: {buffer_pct: .inf}", "risk.buffer_pct", "finite"),
        # the plausible window and what depends on it
        ("etl: {timestamp_max: now}", "etl.timestamp_max", "must match"),
        (
            "etl: {timestamp_min: '2030-01-01', timestamp_max: 2029-01-01}",
            "etl.timestamp_max",
            "not after",
        ),
        ("etl: {timestamp_max: '2300-01-01'}", "etl.timestamp_max", "outside 1677-09-21"),
        ("etl: {timestamp_max: '2026-08-10'}", "synthetic.start", "outside etl.timestamp_min"),
        ("synthetic: {start: '2026-13-45'}", "synthetic.start", "is not a date"),
        ("data: {history_end: today}", "data.history_end", "must match"),
        (
            LOCAL + "  history_end: 1999-06-01T00:00:00Z",
            "data.history_end",
            "outside etl.timestamp_min",
        ),
        # threshold levels merged from a service override
        (
            "risk: {service_overrides: {web: {cpu_utilization: {warning: 95}}}}",
            "risk.service_overrides.web.cpu_utilization",
            "warning (95) must not exceed critical (90)",
        ),
        (
            "risk: {service_overrides: {web: {memory_utilization: {critical: 120}}}}",
            "risk.service_overrides.web.memory_utilization.critical",
            "above 100",
        ),
        ("models: {prophet: {holidays: [{name: x, date: someday}]}}", "", ""),
        ("models: {enabled: []}", "models.enabled", "should be non-empty"),
        ("models: {enabled: [theta, theta]}", "models.enabled", "non-unique"),
    ],
)
def test_config_that_used_to_fail_late_fails_validation(tmp_path, text, key, detail):
    if not key:  # cases whose key and detail are written out below
        key, detail = LATE_FAILURE_DETAILS[text]
    with pytest.raises(ConfigError) as err:
        validated_config(snakemake_yaml(tmp_path, text))
    message = str(err.value)
    assert f"config key '{key}'" in message, message
    assert detail in message, message
    assert "\n" not in message


LATE_FAILURE_DETAILS = {
    LOCAL + "  metric_patterns: [{pattern: '(cpu', metric: cpu_utilization}]": (
        "data.metric_patterns[0].pattern",
        "'(cpu' is not a valid regular expression: missing ), unterminated subpattern",
    ),
    "models: {prophet: {weekly_seasonality: on}}": (
        "models.prophet.weekly_seasonality",
        "yes/no/on/off/true/false as a boolean: quote it",
    ),
    "models: {prophet: {holidays: [{name: x, date: someday}]}}": (
        "models.prophet.holidays[0].date",
        "'someday' is not a date",
    ),
}


@pytest.mark.parametrize(
    "patterns",
    [["[a-", "cpu"], ["cpu", "*mem"], ["(?P<x>a)(?P<x>b)"]],
)
def test_every_metric_pattern_must_compile(patterns):
    entries = [{"pattern": p, "metric": "cpu_utilization"} for p in patterns]
    bad = next(i for i, p in enumerate(patterns) if p != "cpu")
    with pytest.raises(ConfigError, match=rf"data\.metric_patterns\[{bad}\]\.pattern"):
        validated_config({"data": {"source": "local", "path": "x", "metric_patterns": entries}})


def test_yaml_spellings_that_are_numbers_still_pass(tmp_path):
    cfg = validated_config(
        snakemake_yaml(
            tmp_path,
            "forecast: {horizon: 24}\n"
            "etl: {value_limits: {max_value: 1.0e+15, max_bytes_per_second: 2.5e+11}}\n",
        )
    )
    assert cfg["forecast"]["horizon"] == 24 and isinstance(cfg["forecast"]["horizon"], int)
    assert cfg["etl"]["value_limits"]["max_value"] == 1e15
    assert cfg["etl"]["value_limits"]["max_bytes_per_second"] == 2.5e11


def test_filled_defaults_satisfy_their_own_schema(schema):
    """Defaults are filled after validation: a default the schema rejects (1.0e12 written
    without a sign is text to YAML) would reach the stages unchecked."""
    from capforecast.config import _Validator

    errors = list(_Validator(schema).iter_errors(validated_config({})))
    assert errors == []
    local = validated_config({"data": {"source": "local", "path": "x"}})
    assert list(_Validator(schema).iter_errors(local)) == []


# Objects whose keys are the user's own names, not settings (each still has a value schema),
# and AutoGluon's hyperparameters, which belong to AutoGluon and are passed through as given.
FREE_FORM = {"properties.models.properties.autogluon.properties.hyperparameters"}


def _object_schemas(node, path=""):
    if isinstance(node, dict):
        if node.get("type") == "object" or "properties" in node:
            yield path, node
        for key, value in node.items():
            yield from _object_schemas(value, f"{path}.{key}" if path else key)
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _object_schemas(value, f"{path}[{i}]")


def test_no_object_in_the_schema_accepts_unknown_keys(schema):
    open_objects = []
    for path, node in _object_schemas(schema):
        if path in FREE_FORM or "default" in path.split(".")[-1:]:
            continue
        extra = node.get("additionalProperties")
        fixed_keys = "properties" in node
        if (fixed_keys and extra is not False) or (not fixed_keys and not isinstance(extra, dict)):
            open_objects.append(path)
    assert open_objects == []


def test_training_backend_is_chosen_per_model_family():
    cfg = validated_config({})
    assert cfg["training"]["backend"] == {
        "baseline": "local",
        "statsforecast": "local",
        "prophet": "local",
        "autogluon": "local",
    }
    remote = {"training": {"backend": {"autogluon": "sagemaker", "prophet": "sagemaker"}}}
    aws = {"aws": {"bucket": "b", "role_arn": "arn:aws:iam::123456789012:role/r"}}
    backend = validated_config({**remote, **aws})["training"]["backend"]
    assert backend["autogluon"] == backend["prophet"] == "sagemaker"
    assert backend["baseline"] == backend["statsforecast"] == "local"


@pytest.mark.parametrize(
    "cfg, key, words",
    [
        ({"training": {"backend": "sagemaker"}}, "training.backend", "object"),
        ({"training": {"backend": {"prophet": "cloud"}}}, "training.backend.prophet", "local"),
        ({"training": {"backend": {"arima": "local"}}}, "training.backend.arima", ""),
        ({"training": {"backend": {"prophet": "sagemaker"}}}, "aws.bucket", "prophet"),
        (
            {"training": {"backend": {"prophet": "sagemaker"}}, "aws": {"bucket": "b"}},
            "aws.role_arn",
            "setup-role",
        ),
        (
            {
                "training": {
                    "backend": {"prophet": "sagemaker"},
                    "use_spot": True,
                    "max_run_seconds": 3600,
                    "max_wait_seconds": 600,
                },
                "aws": {"bucket": "b", "role_arn": "arn:aws:iam::1:role/r"},
            },
            "training.max_wait_seconds",
            "max_run_seconds",
        ),
    ],
)
def test_bad_training_settings_fail_in_one_line(cfg, key, words):
    with pytest.raises(ConfigError) as info:
        validated_config(cfg)
    message = str(info.value)
    assert key in message and words in message
    assert "\n" not in message


def test_the_generator_has_its_own_horizon_and_thresholds():
    """synthetic.horizon / synthetic.thresholds default to forecast.horizon / risk.thresholds'
    defaults, and are checked like them."""
    cfg = validated_config({})
    assert cfg["synthetic"]["horizon"] == cfg["forecast"]["horizon"]
    assert cfg["synthetic"]["thresholds"] == cfg["risk"]["thresholds"]
    with pytest.raises(ConfigError, match=r"synthetic\.thresholds\.cpu_utilization.*exceed"):
        validated_config(
            {"synthetic": {"thresholds": {"cpu_utilization": {"warning": 95, "critical": 90}}}}
        )
    with pytest.raises(ConfigError, match=r"synthetic\.thresholds\.disk_used_percent\.critical"):
        validated_config(
            {"synthetic": {"thresholds": {"disk_used_percent": {"warning": 95, "critical": 120}}}}
        )
