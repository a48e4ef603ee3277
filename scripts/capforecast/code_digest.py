"""Which library files a rule script runs, and one digest of them (a rule parameter).

Snakemake reruns a job when its ``script:`` changes but not when a module the script imports
changes. ``script_digest`` walks the script's imports with ``ast`` through the package (absolute
and relative imports, imports inside functions, ``importlib.import_module("pkg.mod")`` strings,
the ``__init__.py`` of every package on the way) plus the data files a module names next to
itself (``Path(__file__).with_name("metric_names.yaml")``, a ``templates`` folder), and hashes
them. Passed as a ``code`` param, an edit reruns exactly the rules whose scripts can run it.

Only the standard library is used: the workflow computes these digests at every DAG build.
"""

from __future__ import annotations

import ast
import hashlib
import json
from collections.abc import Iterable
from functools import cache
from pathlib import Path

# Notebook lines that are not Python (IPython magics and shell escapes).
_MAGIC_PREFIXES = ("%", "!")


def _module_file(package_dir: Path, dotted: str) -> Path | None:
    """File of module ``dotted`` (``capforecast.forecast.models.stats``) in the package, if it
    is one."""
    parts = dotted.split(".")
    if parts[0] != package_dir.name:
        return None
    base = package_dir.joinpath(*parts[1:])
    for candidate in (base / "__init__.py", base.with_suffix(".py")):
        if candidate.is_file():
            return candidate
    return None


def _with_parents(package_dir: Path, dotted: str) -> list[Path]:
    """The module's file and the ``__init__.py`` of every package above it (Python runs them)."""
    parts = dotted.split(".")
    files = [_module_file(package_dir, ".".join(parts[:n])) for n in range(1, len(parts) + 1)]
    return [f for f in files if f is not None]


def _module_name(package_dir: Path, file: Path) -> str:
    rel = file.relative_to(package_dir.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _source(file: Path) -> str:
    """Python source of a module or of a notebook's code cells."""
    text = file.read_text(encoding="utf-8")
    if file.suffix != ".ipynb":
        return text
    cells = json.loads(text).get("cells", [])
    lines = []
    for cell in cells:
        if cell.get("cell_type") != "code":
            continue
        source = cell.get("source", "")
        source = "".join(source) if isinstance(source, list) else source
        lines.extend(
            line for line in source.splitlines() if not line.lstrip().startswith(_MAGIC_PREFIXES)
        )
    return "\n".join(lines)


def _data_files(directory: Path, name: str) -> list[Path]:
    """Files a string constant names next to a module: a file with a suffix, or a folder that
    holds no Python (a folder of modules is reached through imports instead)."""
    if not name or name.startswith((".", "/")) or "\n" in name or len(name) > 200:
        return []
    try:
        target = directory / name
        if target.is_file() and target.suffix and target.suffix != ".py":
            return [target]
        if target.is_dir() and not any(target.rglob("*.py")):
            return sorted(p for p in target.rglob("*") if p.is_file())
    except (OSError, ValueError):
        return []
    return []


def _imported(package_dir: Path, file: Path, tree: ast.AST) -> tuple[list[Path], list[Path]]:
    """Package modules and data files one file refers to (anywhere in it, functions included)."""
    package = package_dir.name
    is_module = file.suffix == ".py" and package_dir in file.parents
    current = _module_name(package_dir, file) if is_module else ""
    # The package a relative import starts from: the module's own package.
    here = current if file.name == "__init__.py" else current.rpartition(".")[0]
    modules: list[Path] = []
    data: list[Path] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                modules.extend(_with_parents(package_dir, alias.name))
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                if not is_module:
                    continue
                anchor = here.split(".") if here else []
                anchor = anchor[: len(anchor) - (node.level - 1)] if node.level > 1 else anchor
                base = ".".join([*anchor, *([node.module] if node.module else [])])
            else:
                base = node.module or ""
            if base.split(".")[0] != package:
                continue
            modules.extend(_with_parents(package_dir, base))
            for alias in node.names:
                sub = _module_file(package_dir, f"{base}.{alias.name}")
                if sub is not None:
                    modules.append(sub)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            value = node.value
            if value.startswith(f"{package}.") and value.replace(".", "").isidentifier():
                # importlib.import_module("capforecast.forecast.models.stats") and similar.
                modules.extend(_with_parents(package_dir, value))
            elif is_module:
                data.extend(_data_files(file.parent, value))
    return modules, data


def _file_refs(package_dir: Path, file: Path) -> tuple[tuple[Path, ...], tuple[Path, ...]]:
    stat = file.stat()
    return _parsed_refs(package_dir, file, stat.st_mtime_ns, stat.st_size)


@cache
def _parsed_refs(
    package_dir: Path, file: Path, mtime_ns: int, size: int
) -> tuple[tuple[Path, ...], tuple[Path, ...]]:
    """References of one file, parsed once per version of it (mtime and size)."""
    tree = ast.parse(_source(file), filename=str(file))
    modules, data = _imported(package_dir, file, tree)
    return tuple(modules), tuple(data)


def import_closure(start: Iterable[Path], package_dir: Path) -> list[Path]:
    """Every package module and data file reachable from ``start`` (scripts, notebooks or
    modules), the start files included, sorted."""
    package_dir = Path(package_dir).resolve()
    seen: set[Path] = set()
    todo = [Path(f).resolve() for f in start]
    while todo:
        file = todo.pop()
        if file in seen:
            continue
        seen.add(file)
        if file.suffix in (".py", ".ipynb"):
            modules, data = _file_refs(package_dir, file)
            todo.extend(modules)
            seen.update(data)
    return sorted(seen)


def digest_files(files: Iterable[Path], root: Path) -> str:
    """Short sha256 of the files' paths relative to ``root`` and their bytes (a moved checkout
    keeps its digests)."""
    digest = hashlib.sha256()
    root = Path(root).resolve()
    for file in sorted(Path(f).resolve() for f in files):
        digest.update(file.relative_to(root).as_posix().encode())
        digest.update(b"\0")
        digest.update(file.read_bytes())
        digest.update(b"\0")
    return digest.hexdigest()[:16]


@cache
def _cached_digest(files: tuple[Path, ...], package_dir: Path, root: Path) -> str:
    return digest_files(import_closure(files, package_dir), root)


def script_digest(*files: str | Path, package_dir: str | Path, root: str | Path) -> str:
    """Digest of ``files`` (a rule script, a notebook it runs) and of everything in the package
    they import, directly or not. Paths in the digest are relative to ``root`` (the project).

    Cached per process and set of files (Snakemake builds the DAG once per run; every rule asks
    once): an edit made later in the same process is not seen by ``script_digest``, only by
    ``digest_files(import_closure(...))``.
    """
    resolved = tuple(sorted(Path(f).resolve() for f in files))
    return _cached_digest(resolved, Path(package_dir).resolve(), Path(root).resolve())
