"""Configuration: validate against config/schema.yaml and fill in its defaults.

The Snakefile, the tests, the notebooks and the SageMaker entry point all go
through ``validated_config`` so that they see the same defaults and the same
one-line errors.
"""

from __future__ import annotations

import copy
import datetime
import math
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jsonschema
import pandas as pd
import yaml

from capforecast import metric_names
from capforecast.aws import config_checks as aws_checks
from capforecast.contracts import quantile_column
from capforecast.errors import ConfigError
from capforecast.timestamps import parse_history_end, timestamp_window

SCHEMA_PATH = Path(__file__).resolve().parents[2] / "config" / "schema.yaml"
# Quantiles every stage reads: the median (point, bias, risk) and P10-P90 (coverage, calibration).
REQUIRED_QUANTILES: tuple[float, ...] = (0.1, 0.5, 0.9)
_YAML_BOOLEAN_WORDS = frozenset({"true", "false", "yes", "no", "on", "off"})
# Scientific notation YAML 1.1 (PyYAML, Snakemake) reads as text: 1e9, 1.0e9 (it wants 1.0e+9).
_YAML11_EXPONENT = re.compile(r"([+-]?\d+)(\.\d*)?[eE]([+-]?)(\d+)")


def _is_integer(checker: Any, instance: Any) -> bool:
    # JSON Schema counts 24.0 as an integer; range(), periods= and window counts do not.
    return isinstance(instance, int) and not isinstance(instance, bool)


_Validator = jsonschema.validators.extend(
    jsonschema.Draft202012Validator,
    type_checker=jsonschema.Draft202012Validator.TYPE_CHECKER.redefine("integer", _is_integer),
)


# libyaml's parser when PyYAML was built with it (same objects as yaml.safe_load, ~15x faster;
# the schema is read three times per validation).
_SCHEMA_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def load_schema(path: Path = SCHEMA_PATH) -> dict[str, Any]:
    return yaml.load(Path(path).read_text(), Loader=_SCHEMA_LOADER)


def _fill_defaults(instance: Any, schema: Mapping[str, Any]) -> Any:
    """Recursively insert ``default`` values for absent object properties."""
    if isinstance(instance, dict) and "properties" in schema:
        for key, sub in schema["properties"].items():
            if key not in instance and "default" in sub:
                instance[key] = copy.deepcopy(sub["default"])
            if key in instance:
                instance[key] = _fill_defaults(instance[key], sub)
        extra = schema.get("additionalProperties")
        if isinstance(extra, dict):
            for key in instance:
                if key not in schema["properties"]:
                    instance[key] = _fill_defaults(instance[key], extra)
    elif isinstance(instance, dict) and isinstance(schema.get("additionalProperties"), dict):
        for key in instance:
            instance[key] = _fill_defaults(instance[key], schema["additionalProperties"])
    elif isinstance(instance, list) and isinstance(schema.get("items"), dict):
        return [_fill_defaults(item, schema["items"]) for item in instance]
    return instance


def _key_path(error: jsonschema.ValidationError) -> str:
    parts = [str(p) if not isinstance(p, int) else f"[{p}]" for p in error.absolute_path]
    path = ".".join(parts).replace(".[", "[")
    if error.validator == "additionalProperties" and isinstance(error.instance, dict):
        allowed = set(error.schema.get("properties", {}))
        unknown = sorted(k for k in error.instance if k not in allowed)
        if unknown:
            path = ".".join([p for p in [path, unknown[0]] if p])
    if error.validator == "required" and isinstance(error.instance, dict):
        missing = [k for k in error.validator_value if k not in error.instance]
        if missing:
            path = ".".join([p for p in [path, missing[0]] if p])
    return path or "<root>"


def _allowed(error: jsonschema.ValidationError) -> str:
    schema = error.schema
    if error.validator == "enum":
        return f"allowed: {', '.join(map(str, schema['enum']))}"
    if error.validator == "additionalProperties":
        return f"unknown key; allowed: {', '.join(sorted(schema.get('properties', {})))}"
    if error.validator in {"minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"}:
        return f"must satisfy {error.validator} {error.validator_value}"
    if error.validator == "const":
        return f"the word {error.validator_value}"
    if error.validator == "type":
        return f"expected type {error.validator_value}{_type_hint(error)}"
    if error.validator == "required":
        return "missing required key"
    if error.validator == "pattern":
        return f"must match {error.validator_value}"
    if error.validator == "anyOf" and error.context:
        # e.g. "must match ^[a-z][a-z0-9_]*$; or expected type object"
        return "; or ".join(dict.fromkeys(_allowed(sub) for sub in error.context))
    return error.message


def _type_hint(error: jsonschema.ValidationError) -> str:
    """Why a value YAML read one way is not the type the key needs, when YAML is the cause."""
    value = error.instance
    expected = (
        {error.validator_value}
        if isinstance(error.validator_value, str)
        else set(error.validator_value)
    )
    if "integer" in expected and isinstance(value, float) and value.is_integer():
        return f" ({value!r} is a float: write {int(value)})"
    if expected & {"number", "integer"} and isinstance(value, str) and _is_number_text(value):
        exponent = _YAML11_EXPONENT.fullmatch(value.strip())
        if exponent:
            whole, fraction, sign, power = exponent.groups()
            return (
                f" (YAML 1.1 reads {value} as text: it needs a '.' and a signed exponent; write "
                f"{whole}{fraction or '.0'}e{sign or '+'}{power})"
            )
        return " (a number in quotes is text: drop the quotes)"
    if "string" in expected and isinstance(value, bool):
        return " (YAML reads unquoted yes/no/on/off/true/false as a boolean: quote it)"
    if "boolean" in expected and isinstance(value, str) and value.lower() in _YAML_BOOLEAN_WORDS:
        return " (write true or false without quotes)"
    return ""


def _is_number_text(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _non_finite_key(value: Any, path: str = "") -> str | None:
    """Dotted path of the first NaN or infinite number in ``value`` (YAML .nan, .inf), if any:
    JSON Schema bounds let them through (NaN fails no comparison)."""
    if isinstance(value, float) and not math.isfinite(value):
        return path or "<root>"
    if isinstance(value, Mapping):
        items = ((f"{path}.{key}" if path else str(key), item) for key, item in value.items())
    elif isinstance(value, list):
        items = ((f"{path}[{i}]", item) for i, item in enumerate(value))
    else:
        return None
    for sub_path, item in items:
        found = _non_finite_key(item, sub_path)
        if found is not None:
            return found
    return None


def validated_config(
    config: Mapping[str, Any] | None, schema: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """Return a deep copy of ``config`` with schema defaults filled in.

    Raises ``ConfigError`` naming the offending key (dotted path) and what is allowed.
    """
    schema = schema or load_schema()
    cfg = dates_as_text(copy.deepcopy(dict(config or {})))
    non_finite = _non_finite_key(cfg)
    if non_finite is not None:
        raise ConfigError(non_finite, "not a finite number (.nan and .inf are not allowed)")
    validator = _Validator(schema)
    errors = sorted(validator.iter_errors(cfg), key=lambda e: list(map(str, e.absolute_path)))
    if errors:
        err = errors[0]
        value = err.instance if err.validator != "additionalProperties" else None
        detail = _allowed(err)
        shown = f"value {value!r} is invalid; {detail}" if value is not None else detail
        raise ConfigError(_key_path(err), shown)
    cfg = _fill_defaults(cfg, schema)
    if cfg["backtest"]["horizon"] is None:
        # The schema's documented default: backtest at the horizon that is forecast.
        cfg["backtest"]["horizon"] = cfg["forecast"]["horizon"]
    _check_semantics(cfg)
    return sorted_keys(cfg)


def dates_as_text(value: Any) -> Any:
    """``value`` with every date and datetime as ISO 8601 text, recursively.

    YAML reads an unquoted ``2013-09-02T00:00:00Z`` as a datetime; the schema describes
    timestamps as strings, and a user should not have to know to quote them.
    """
    if isinstance(value, datetime.date):
        return value.isoformat()
    if isinstance(value, Mapping):
        return {key: dates_as_text(item) for key, item in value.items()}
    if isinstance(value, list):
        return [dates_as_text(item) for item in value]
    return value


def sorted_keys(value: Any) -> Any:
    """``value`` with every dict's keys sorted, recursively (lists keep their order).

    Snakemake compares a job's params with the last run's by their text, so the same settings
    written in another key order (a reformatted YAML file) would rerun every job from scratch.
    """
    if isinstance(value, Mapping):
        return {key: sorted_keys(value[key]) for key in sorted(value)}
    if isinstance(value, list):
        return [sorted_keys(item) for item in value]
    return value


def _check_semantics(cfg: Mapping[str, Any]) -> None:
    """Rules JSON Schema cannot express."""
    data = cfg["data"]
    if data["source"] == "local" and not data.get("path"):
        raise ConfigError("data.path", "required when data.source is 'local'")
    for key in ("etl.freq", "synthetic.freq"):
        _positive_step(cfg, key)
    _check_etl_freq(cfg["etl"]["freq"])
    low, high = timestamp_window(cfg["etl"]["timestamp_min"], cfg["etl"]["timestamp_max"])
    history_end = parse_history_end(data.get("history_end"), cfg["etl"]["freq"])
    if history_end is not None and not low <= history_end <= high:
        raise ConfigError(
            "data.history_end",
            f"{history_end.isoformat()} is outside etl.timestamp_min .. etl.timestamp_max "
            f"({low.isoformat()} .. {high.isoformat()})",
        )
    if data["source"] == "synthetic":
        _check_synthetic_window(cfg["synthetic"], low, high)
    _check_metric_kinds(cfg["etl"])
    _check_metric_patterns(data["metric_patterns"])
    _check_quantiles(cfg["forecast"])
    _check_holidays(cfg["models"]["prophet"]["holidays"])
    _check_input_mapping(data)
    metric_names.check_config(cfg)
    # s3 and cloudwatch sources (capforecast/aws/config_checks.py).
    aws_checks.check_config(cfg, load_schema()["properties"]["data"]["properties"])
    _check_thresholds(cfg["risk"], cfg["etl"]["percent_metrics"])
    _check_thresholds(
        {"thresholds": cfg["synthetic"]["thresholds"], "service_overrides": {}},
        cfg["etl"]["percent_metrics"],
        section="synthetic",
    )
    _check_training(cfg["training"], cfg["aws"])
    _check_series_estimate(cfg)
    catalogue = cfg["catalogue"]
    for i, svc in enumerate(cfg["synthetic"]["services"]):
        if svc["instance_type"] not in catalogue:
            raise ConfigError(
                f"synthetic.services[{i}].instance_type",
                f"'{svc['instance_type']}' is not in the catalogue; "
                f"known: {', '.join(sorted(catalogue))}",
            )
    names = [s["name"] for s in cfg["synthetic"]["services"]]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ConfigError("synthetic.services", f"duplicate service names: {', '.join(dupes)}")


def _check_training(training: Mapping[str, Any], aws: Mapping[str, Any]) -> None:
    """A family on SageMaker needs a bucket and an execution role; spot needs room to wait."""
    remote = sorted(f for f, backend in training["backend"].items() if backend == "sagemaker")
    if not remote:
        return
    for key in ("bucket", "role_arn"):
        if not aws[key]:
            raise ConfigError(
                f"aws.{key}",
                f"training.backend runs {', '.join(remote)} on sagemaker, which needs it "
                "(`python -m capforecast.aws setup-role` prints the role ARN)",
            )
    wait = training["max_wait_seconds"]
    if training["use_spot"] and wait is not None and wait < training["max_run_seconds"]:
        raise ConfigError(
            "training.max_wait_seconds",
            f"{wait} is below training.max_run_seconds ({training['max_run_seconds']}); "
            "spot training waits for capacity plus runs, so it must be at least that",
        )


def _check_series_estimate(cfg: Mapping[str, Any]) -> None:
    """forecast.series_per_partition sizes the partitions whose series cannot be counted when
    the workflow is planned (capforecast/aws/plan.py planned_series): an error where there are
    none, rather than a setting that does nothing."""
    if cfg["forecast"]["series_per_partition"] is None:
        return
    data = cfg["data"]
    if data["source"] == "s3":
        return
    services = data["cloudwatch"]["services"]
    if data["source"] == "cloudwatch" and any("instance_ids" not in svc for svc in services):
        return
    known = (
        "every data.cloudwatch service lists instance_ids"
        if data["source"] == "cloudwatch"
        else f"data.source {data['source']} has its series counted"
    )
    raise ConfigError(
        "forecast.series_per_partition",
        f"applies to S3 objects and to CloudWatch services selected by auto_scaling_group or "
        f"tags only; {known} when the workflow is planned: remove it",
    )


def _check_thresholds(
    risk: Mapping[str, Any], percent_metrics: list[str], section: str = "risk"
) -> None:
    """Warning at most critical, and at most 100 for a percentage metric: the global levels
    and each service override merged over them (a level left out is the global one), as the
    risk stage reads them (``capforecast.settings.merged_overrides``)."""
    levels_by_key = {
        f"{section}.thresholds.{metric}": (metric, levels)
        for metric, levels in risk["thresholds"].items()
    }
    for service, metrics in risk["service_overrides"].items():
        for metric, levels in metrics.items():
            merged = {**risk["thresholds"].get(metric, {}), **levels}
            key = f"risk.service_overrides.{service}.{metric}"
            for name in ("warning", "critical"):
                if name not in merged:
                    raise ConfigError(
                        f"{key}.{name}", f"needs a number: {metric} has no global {name} level"
                    )
            levels_by_key[key] = (metric, merged)
    for key, (metric, levels) in levels_by_key.items():
        for name in ("warning", "critical"):
            if metric in percent_metrics and levels[name] > 100:
                raise ConfigError(
                    f"{key}.{name}", f"{levels[name]:g} is above 100 for a percentage metric"
                )
        if levels["warning"] > levels["critical"]:
            raise ConfigError(
                key,
                f"warning ({levels['warning']:g}) must not exceed critical "
                f"({levels['critical']:g})",
            )


def _positive_step(cfg: Mapping[str, Any], key: str) -> pd.Timedelta:
    section, name = key.split(".")
    text = cfg[section][name]
    try:
        return pd.Timedelta(text)
    except (ValueError, OverflowError):
        raise ConfigError(key, f"{text!r} is too long an interval") from None


def _check_etl_freq(freq: str) -> None:
    """The modelling step must divide a day: bins are aligned to the epoch and the daily models
    count whole steps per day (7min would give a 'daily' season of 206 steps, 24 h 2 min)."""
    step, day = pd.Timedelta(freq), pd.Timedelta(days=1)
    if step > day or day % step:
        raise ConfigError("etl.freq", f"{freq!r} does not divide a day; e.g. 5min, 15min, 1h")


def _check_synthetic_window(
    synthetic: Mapping[str, Any], low: pd.Timestamp, high: pd.Timestamp
) -> None:
    """The generated history is a real calendar span inside the plausible window (else every
    sample would be quarantined as timestamp_outside_window)."""
    try:
        start = pd.Timestamp(synthetic["start"])
    except (ValueError, OverflowError):
        start = pd.NaT
    if pd.isna(start):
        raise ConfigError("synthetic.start", f"{synthetic['start']!r} is not a date")
    start = start.tz_localize("UTC") if start.tzinfo is None else start.tz_convert("UTC")
    end = start + pd.Timedelta(days=int(synthetic["days"]))
    if start < low or end > high:
        raise ConfigError(
            "synthetic.start",
            f"{synthetic['start']} + {synthetic['days']} days is outside etl.timestamp_min .. "
            f"etl.timestamp_max ({low.isoformat()} .. {high.isoformat()})",
        )


def _check_metric_kinds(etl: Mapping[str, Any]) -> None:
    """A metric has one kind: listed twice, one ceiling would silently override the other."""
    kind_of: dict[str, str] = {}
    for key, metrics in (
        ("etl.percent_metrics", etl["percent_metrics"]),
        ("etl.value_limits.byte_metrics", etl["value_limits"]["byte_metrics"]),
        ("etl.value_limits.count_metrics", etl["value_limits"]["count_metrics"]),
    ):
        for metric in metrics:
            other = kind_of.setdefault(metric, key)
            if other != key:
                raise ConfigError(key, f"{metric!r} is already in {other}; a metric has one kind")


def _check_metric_patterns(patterns: list[Mapping[str, Any]]) -> None:
    for i, entry in enumerate(patterns):
        try:
            re.compile(entry["pattern"])
        except re.error as err:
            raise ConfigError(
                f"data.metric_patterns[{i}].pattern",
                f"{entry['pattern']!r} is not a valid regular expression: {err}",
            ) from None


def _check_quantiles(forecast: Mapping[str, Any]) -> None:
    """The required levels are there, and no two levels share a column name (q0.1 style)."""
    levels = {round(float(q), 9) for q in forecast["quantiles"]}
    missing = [q for q in REQUIRED_QUANTILES if q not in levels]
    if missing:
        raise ConfigError(
            "forecast.quantiles",
            f"must include {', '.join(map(str, REQUIRED_QUANTILES))} (missing "
            f"{', '.join(map(str, missing))}): the median is the point forecast of bias and "
            "risk, P10-P90 the interval whose coverage is scored and calibrated",
        )
    columns: dict[str, float] = {}
    for key in ("quantiles", "extra_quantiles"):
        for q in forecast[key]:
            column = quantile_column(q)
            if columns.setdefault(column, q) != q:
                raise ConfigError(
                    f"forecast.{key}",
                    f"{q!r} and {columns[column]!r} would share the column {column}; "
                    "levels must differ in their first 6 significant digits",
                )


def _check_holidays(holidays: list[Mapping[str, Any]]) -> None:
    for i, holiday in enumerate(holidays):
        try:
            stamp = pd.Timestamp(holiday["date"])
        except (ValueError, TypeError, OverflowError):
            stamp = pd.NaT
        if pd.isna(stamp):
            raise ConfigError(
                f"models.prophet.holidays[{i}].date",
                f"{holiday['date']!r} is not a date; e.g. 2024-12-25",
            )


def _check_input_mapping(data: Mapping[str, Any]) -> None:
    """data.columns, data.metric_names and data.timestamp_unit describe local input files: a
    setting that would change nothing (synthetic data, a long-format column in series format)
    or name one column twice is an error rather than a silent no-op."""
    if data["source"] == "synthetic":
        defaults = load_schema()["properties"]["data"]["properties"]
        for key in ("columns", "metric_names", "timestamp_unit"):
            if data[key] != defaults[key]["default"]:
                raise ConfigError(f"data.{key}", "applies to data.source local only")
    columns = data["columns"]
    if data["format"] == "series":
        for key in ("resource_id", "metric"):
            if key in columns:
                raise ConfigError(
                    f"data.columns.{key}",
                    "series-format files have no such column (the resource is the file name)",
                )
    seen: dict[str, str] = {}
    for key, source in columns.items():
        name = str(source).strip().lower()
        if name in seen:
            raise ConfigError(f"data.columns.{key}", f"names the same column as {seen[name]}")
        seen[name] = f"data.columns.{key}"


def load_config(*paths: str | Path) -> dict[str, Any]:
    """Merge YAML files left to right (later wins, nested dicts merged) and validate."""
    merged: dict[str, Any] = {}
    for path in paths:
        text = Path(path).read_text()
        merged = deep_merge(merged, yaml.safe_load(text) or {})
    return validated_config(merged)


def deep_merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(dict(base))
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out
