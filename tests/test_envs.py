"""Every rule that runs code declares a conda env, and env pins agree with requirements.lock."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]


def lock_pins() -> dict[str, str]:
    pins = {}
    for line in (ROOT / "requirements.lock").read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            name, version = line.split("==")
            pins[name.lower().replace("_", "-")] = version
    return pins


def rule_blocks() -> list[tuple[str, str, str]]:
    """(file, rule name, body) for every rule and `use rule` in the workflow."""
    blocks = []
    for path in [ROOT / "Snakefile", *sorted((ROOT / "rules").glob("*.smk"))]:
        text = path.read_text()
        starts = [
            (m.start(), m.group(1) or m.group(2))
            for m in re.finditer(r"^(?:rule (\w+):|use rule \w+ as (\w+))", text, re.M)
        ]
        for i, (start, name) in enumerate(starts):
            end = starts[i + 1][0] if i + 1 < len(starts) else len(text)
            blocks.append((path.name, name, text[start:end]))
    return blocks


def test_workflow_has_rules():
    names = {name for _, name, _ in rule_blocks()}
    for target in ("generate", "ingest", "clean", "features", "forecast", "risk", "report", "all"):
        assert target in names


@pytest.mark.parametrize("file,name,body", rule_blocks(), ids=lambda v: str(v)[:40])
def test_every_executing_rule_declares_an_env(file, name, body):
    runs_code = re.search(r"^\s+(script|shell|notebook|run):", body, re.M)
    inherits = body.startswith("use rule")
    if runs_code and not inherits:
        match = re.search(r'^\s+conda:\s*\n\s+"([^"]+)"', body, re.M)
        assert match, f"{file}: rule {name} runs code but declares no conda env"
        assert (ROOT / "rules" / match.group(1)).resolve().is_file()


@pytest.mark.parametrize("env_file", sorted((ROOT / "envs").glob("*.yaml")), ids=lambda p: p.name)
def test_env_pins_agree_with_lock(env_file):
    env = yaml.safe_load(env_file.read_text())
    pins = lock_pins()
    pip_section = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    checked = 0
    for spec in pip_section:
        if spec.startswith("-"):
            continue
        name, version = spec.split("==")
        key = name.lower().replace("_", "-")
        assert key in pins, f"{env_file.name}: {name} is not in requirements.lock"
        assert pins[key] == version, f"{env_file.name}: {name}=={version}, lock has {pins[key]}"
        checked += 1
    assert checked >= 3
    assert "python=3.11" in env["dependencies"]


@pytest.mark.parametrize("env_file", sorted((ROOT / "envs").glob("*.yaml")), ids=lambda p: p.name)
def test_env_installs_the_package(env_file):
    """Every env gets the capforecast package from the project the workflow runs: pip expands
    CAPFORECAST_ROOT, which rules/common.smk sets (snakemake builds the env from a copy of the
    file in .snakemake/conda/, so a path relative to envs/ would miss the project)."""
    env = yaml.safe_load(env_file.read_text())
    pip_section = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    assert "-e ${CAPFORECAST_ROOT}" in pip_section
    common = (ROOT / "rules" / "common.smk").read_text()
    assert "os.environ.update(CAPFORECAST_ROOT=str(workflow.basedir))" in common


def test_the_package_is_installable():
    """pyproject.toml builds the package from scripts/ with its data files."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert project["build-system"]["build-backend"] == "setuptools.build_meta"
    assert project["tool"]["setuptools"]["packages"]["find"]["where"] == ["scripts"]
    assert "--no-deps -e ." in (ROOT / "Makefile").read_text()
