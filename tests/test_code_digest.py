"""capforecast.code_digest: the import closure of a rule script and its digest."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

from capforecast import code_digest
from capforecast.code_digest import digest_files, import_closure, script_digest

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = ROOT / "scripts"
PACKAGE = SCRIPTS / "capforecast"


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A tiny project: scripts/rule.py and a package `pkg` exercising every kind of reference."""
    pkg = tmp_path / "scripts" / "pkg"
    write(pkg / "__init__.py", "")
    write(pkg / "a.py", "from pkg import b\nfrom pkg.sub import deep\n")
    write(pkg / "b.py", "from . import c\n")  # relative import from a module
    write(pkg / "c.py", "def f():\n    import pkg.lazy  # lazy import in a function\n")
    write(pkg / "lazy.py", "from .data_user import X\n")
    write(
        pkg / "data_user.py",
        'from pathlib import Path\nX = Path(__file__).with_name("table.yaml")\n'
        'T = Path(__file__).parent / "templates"\n',
    )
    write(pkg / "table.yaml", "a: 1\n")
    write(pkg / "templates" / "page.j2", "{{ x }}\n")
    write(pkg / "sub" / "__init__.py", "from .registry import R\n")
    write(pkg / "sub" / "registry.py", 'R = {"m": ("pkg.sub.dynamic", "fn")}\n')
    write(pkg / "sub" / "dynamic.py", "from .. import c\nfrom ..e import g\n")
    write(pkg / "sub" / "deep.py", "")
    write(pkg / "e.py", "g = 1\n")
    write(pkg / "unused.py", "import pkg.a\n")
    write(tmp_path / "scripts" / "rule.py", "import json\nfrom pkg import a\n")
    write(tmp_path / "scripts" / "other.py", "from pkg.e import g\n")
    return tmp_path


def names(files: list[Path], root: Path) -> set[str]:
    return {f.relative_to(root.resolve()).as_posix() for f in files}


def test_closure_follows_every_kind_of_import(project):
    closure = import_closure([project / "scripts" / "rule.py"], project / "scripts" / "pkg")
    assert names(closure, project) == {
        "scripts/rule.py",
        "scripts/pkg/__init__.py",
        "scripts/pkg/a.py",
        "scripts/pkg/b.py",
        "scripts/pkg/c.py",
        "scripts/pkg/lazy.py",
        "scripts/pkg/data_user.py",
        "scripts/pkg/table.yaml",
        "scripts/pkg/templates/page.j2",
        "scripts/pkg/sub/__init__.py",
        "scripts/pkg/sub/registry.py",
        "scripts/pkg/sub/dynamic.py",
        "scripts/pkg/sub/deep.py",
        "scripts/pkg/e.py",
    }


def test_closure_of_a_small_script_leaves_the_rest_out(project):
    closure = import_closure([project / "scripts" / "other.py"], project / "scripts" / "pkg")
    assert names(closure, project) == {
        "scripts/other.py",
        "scripts/pkg/__init__.py",
        "scripts/pkg/e.py",
    }


def test_notebook_code_cells_are_followed(project):
    nb = {
        "cells": [
            {"cell_type": "markdown", "source": ["import pkg.a\n"]},
            {"cell_type": "code", "source": ["%matplotlib inline\n", "from pkg import e\n"]},
        ]
    }
    notebook = write(project / "notebooks" / "n.ipynb", json.dumps(nb))
    closure = import_closure([notebook], project / "scripts" / "pkg")
    assert names(closure, project) == {
        "notebooks/n.ipynb",
        "scripts/pkg/__init__.py",
        "scripts/pkg/e.py",
    }


def digest(project: Path, script: str = "rule.py") -> str:
    return script_digest(
        project / "scripts" / script, package_dir=project / "scripts" / "pkg", root=project
    )


def test_digest_changes_with_closure_files_only(project):
    closure = import_closure([project / "scripts" / "rule.py"], project / "scripts" / "pkg")
    before = digest_files(closure, project)
    for rel in ("sub/dynamic.py", "table.yaml", "templates/page.j2", "__init__.py"):
        path = project / "scripts" / "pkg" / rel
        original = path.read_text()
        path.write_text(original + "# perturbed\n")
        assert digest_files(closure, project) != before, rel
        path.write_text(original)
    unused = project / "scripts" / "pkg" / "unused.py"
    unused.write_text(unused.read_text() + "# perturbed\n")
    closure_after = import_closure([project / "scripts" / "rule.py"], project / "scripts" / "pkg")
    assert digest_files(closure_after, project) == before


def test_digest_does_not_depend_on_where_the_project_is(project, tmp_path_factory):
    moved = tmp_path_factory.mktemp("moved") / "project"
    shutil.copytree(project, moved)
    assert digest(moved) == digest(project)
    assert digest(project, "other.py") != digest(project)


def fresh_closure(project: Path) -> set[str]:
    """The closure with the per-process memo cleared, so only the on-disk cache can help."""
    code_digest._parsed_refs.cache_clear()
    return names(
        import_closure([project / "scripts" / "rule.py"], project / "scripts" / "pkg"), project
    )


def test_the_on_disk_cache_gives_what_parsing_gives(project, tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    parsed = fresh_closure(project)
    entries = sorted((tmp_path / "cache" / "capforecast" / "import-refs").rglob("*.json"))
    # One entry per Python file of the closure (the script and 11 package modules).
    assert len(entries) == len([n for n in parsed if n.endswith(".py")]) == 12
    assert fresh_closure(project) == parsed
    # A damaged entry is parsed again, not trusted.
    for entry in entries:
        entry.write_text("{not json")
    assert fresh_closure(project) == parsed


def test_cached_files_still_see_edits_and_new_data_files(project, tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    before = fresh_closure(project)
    pkg = project / "scripts" / "pkg"
    # An edited module is a new cache entry: its new import is followed.
    write(pkg / "e.py", "from pkg import unused\ng = 1\n")
    assert fresh_closure(project) == before | {"scripts/pkg/e.py", "scripts/pkg/unused.py"}
    # The cache keeps names, not what they found: a data file created next to an unchanged
    # module joins the closure, and leaves it when it is removed.
    write(pkg / "e.py", "g = 1\n")
    (pkg / "table.yaml").unlink()
    assert fresh_closure(project) == before - {"scripts/pkg/table.yaml"}
    write(pkg / "table.yaml", "a: 2\n")
    assert fresh_closure(project) == before


def test_an_unwritable_cache_only_costs_a_parse(project, tmp_path, monkeypatch):
    blocked = tmp_path / "blocked"
    blocked.write_text("a file where the cache folder would be")
    monkeypatch.setenv("XDG_CACHE_HOME", str(blocked))
    assert fresh_closure(project) == names(
        import_closure([project / "scripts" / "rule.py"], project / "scripts" / "pkg"), project
    )


def test_rule_scripts_reach_the_modules_they_use():
    """The real package: helpers a script reaches indirectly are in its closure."""

    def closure(*files: Path) -> set[str]:
        return {
            f.relative_to(PACKAGE).as_posix()
            for f in import_closure(files, PACKAGE)
            if PACKAGE in f.parents
        }

    leaderboard = closure(SCRIPTS / "forecast_leaderboard.py")
    assert {
        "forecast/backtest.py",
        "forecast/models/__init__.py",
        "forecast/models/stats.py",
        "rulekit.py",
    } <= leaderboard
    assert {"forecast/fit.py", "forecast/panel.py", "forecast/models/base.py"} <= closure(
        SCRIPTS / "forecast_combine.py"
    )
    assert {"metric_names.py", "metric_names.yaml"} <= closure(SCRIPTS / "data_ingest_partition.py")
    report = closure(SCRIPTS / "reports_render.py", ROOT / "notebooks" / "capacity_risk.ipynb")
    assert {"reports/capacity_risk.py", "reports/common.py", "reports/html.py"} <= report
    assert {"decision/tables.py", "escape.py"} <= report
    assert "reports/data_quality.py" not in report
    assert {
        "reports/templates/offline/index.html.j2",
        "reports/templates/offline/conf.json",
    } <= report
    assert "decision/tables.py" not in closure(
        SCRIPTS / "reports_render.py", ROOT / "notebooks" / "data_quality.ipynb"
    )
    assert "code_digest.py" not in closure(*SCRIPTS.glob("*.py"))


def test_the_profile_reruns_on_changed_params_and_code():
    """The digests are params: a profile that left out the params trigger would ignore them."""
    profile = yaml.safe_load((ROOT / "profiles" / "default" / "config.yaml").read_text())
    triggers = profile.get("rerun-triggers")
    # Unset means Snakemake's default: every trigger.
    assert triggers is None or {"params", "code", "input", "mtime"} <= set(triggers)
