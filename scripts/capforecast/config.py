"""Configuration: validate against config/schema.yaml and fill in its defaults.

The Snakefile, the tests, the notebooks and the SageMaker entry point all go
through ``validated_config`` so that they see the same defaults and the same
one-line errors.
"""

from __future__ import annotations

import copy
import datetime
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from capforecast import metric_names
from capforecast.errors import ConfigError
from capforecast.holdout import parse_history_end

SCHEMA_PATH = Path(__file__).resolve().parents[2] / "config" / "schema.yaml"


def load_schema(path: Path = SCHEMA_PATH) -> dict[str, Any]:
    return yaml.safe_load(Path(path).read_text())


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
    if error.validator == "type":
        return f"expected type {error.validator_value}"
    if error.validator == "required":
        return "missing required key"
    if error.validator == "pattern":
        return f"must match {error.validator_value}"
    if error.validator == "anyOf" and error.context:
        # e.g. "must match ^[a-z][a-z0-9_]*$; or expected type object"
        return "; or ".join(dict.fromkeys(_allowed(sub) for sub in error.context))
    return error.message


def validated_config(
    config: Mapping[str, Any] | None, schema: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """Return a deep copy of ``config`` with schema defaults filled in.

    Raises ``ConfigError`` naming the offending key (dotted path) and what is allowed.
    """
    schema = schema or load_schema()
    cfg = dates_as_text(copy.deepcopy(dict(config or {})))
    validator = jsonschema.Draft202012Validator(schema)
    errors = sorted(validator.iter_errors(cfg), key=lambda e: list(map(str, e.absolute_path)))
    if errors:
        err = errors[0]
        value = err.instance if err.validator != "additionalProperties" else None
        detail = _allowed(err)
        shown = f"value {value!r} is invalid; {detail}" if value is not None else detail
        raise ConfigError(_key_path(err), shown)
    cfg = _fill_defaults(cfg, schema)
    _check_semantics(cfg)
    if cfg["backtest"]["horizon"] is None:
        # The schema's documented default: backtest at the horizon that is forecast.
        cfg["backtest"]["horizon"] = cfg["forecast"]["horizon"]
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
    parse_history_end(data.get("history_end"), cfg["etl"]["freq"])
    _check_input_mapping(data)
    metric_names.check_config(cfg)
    for metric, levels in cfg["risk"]["thresholds"].items():
        if levels["warning"] > levels["critical"]:
            raise ConfigError(
                f"risk.thresholds.{metric}",
                f"warning ({levels['warning']}) must not exceed critical ({levels['critical']})",
            )
        if metric in cfg["etl"]["percent_metrics"] and levels["critical"] > 100:
            raise ConfigError(
                f"risk.thresholds.{metric}.critical",
                f"{levels['critical']} is above 100 for a percentage metric",
            )
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
