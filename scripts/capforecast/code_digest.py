"""Which library files a rule script runs, and one digest of them (a rule parameter).

Snakemake reruns a job when its ``script:`` changes but not when a module the script imports
changes. ``script_digest`` walks the script's imports with ``ast`` through the package (absolute
and relative imports, imports inside functions, ``importlib.import_module("pkg.mod")`` strings,
the ``__init__.py`` of every package on the way) plus the data files a module names next to
itself (``Path(__file__).with_name("metric_names.yaml")``, a ``templates`` folder), and hashes
them. Passed as a ``code`` param, an edit reruns exactly the rules whose scripts can run it.

Only the standard library is used: the workflow computes these digests at every DAG build,
so what each file names is kept on disk by content (``_cached_references``) and only looked
up again.
"""

from __future__ import annotations

import ast
import hashlib
import json
import os
import tempfile
from collections.abc import Iterable
from functools import cache, partial
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


def _package_module(package_dir: Path, file: Path) -> str:
    """The dotted name of ``file`` if it is a module of the package, else ``""`` (a rule script,
    a notebook)."""
    if file.suffix != ".py" or package_dir not in file.parents:
        return ""
    return _module_name(package_dir, file)


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
    holds no Python (a folder of modules is reached through imports instead). ``name`` has
    passed ``_may_name_a_file`` when the file was read."""
    try:
        target = directory / name
        if target.is_file() and target.suffix and target.suffix != ".py":
            return [target]
        if target.is_dir() and not any(target.rglob("*.py")):
            return sorted(p for p in target.rglob("*") if p.is_file())
    except (OSError, ValueError):
        return []
    return []


def _references(package_dir: Path, file: Path, tree: ast.AST) -> dict[str, list[str]]:
    """What one file names, before any lookup on disk: ``modules`` (dotted names whose file and
    parent packages run), ``members`` (``from base import name``: ``base.name`` if it is a
    module) and ``names`` (string constants that may name a data file next to the module)."""
    package = package_dir.name
    current = _package_module(package_dir, file)
    is_module = bool(current)
    # The package a relative import starts from: the module's own package.
    here = current if file.name == "__init__.py" else current.rpartition(".")[0]
    refs: dict[str, list[str]] = {"modules": [], "members": [], "names": []}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            refs["modules"].extend(alias.name for alias in node.names)
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
            refs["modules"].append(base)
            refs["members"].extend(f"{base}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            value = node.value
            if value.startswith(f"{package}.") and value.replace(".", "").isidentifier():
                # importlib.import_module("capforecast.forecast.models.stats") and similar.
                refs["modules"].append(value)
            elif is_module and _may_name_a_file(value):
                refs["names"].append(value)
    return {key: sorted(set(values)) for key, values in refs.items()}


def _may_name_a_file(name: str) -> bool:
    return bool(name) and not name.startswith((".", "/")) and "\n" not in name and len(name) <= 200


def _resolved(
    package_dir: Path, file: Path, refs: dict[str, list[str]]
) -> tuple[list[Path], list[Path]]:
    """Package modules and data files that ``refs`` of ``file`` name, as they are on disk now."""
    modules = [f for name in refs["modules"] for f in _with_parents(package_dir, name)]
    modules += [f for f in map(partial(_module_file, package_dir), refs["members"]) if f]
    data: list[Path] = []
    # Most string constants are messages: only a name whose first part is in the module's
    # folder is looked up.
    present = set(os.listdir(file.parent)) if refs["names"] else set()
    for name in refs["names"]:
        if name.split("/")[0] in present:
            data.extend(_data_files(file.parent, name))
    return modules, data


def _cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "capforecast" / "import-refs"


@cache
def _parser_version() -> str:
    """This module's own bytes: a change to how files are read invalidates every cached entry."""
    return hashlib.sha256(Path(__file__).read_bytes()).hexdigest()


def _cached_references(package_dir: Path, file: Path) -> dict[str, list[str]]:
    """``_references`` of the file, kept on disk by content (the module's name, its bytes and
    the parser's version), so a DAG build parses only files it has not seen before: parsing
    the whole package took about 1 s of every ``snakemake`` call, each SLURM job's included.
    The cache is an optimisation only: an unreadable or unwritable cache parses again."""
    raw = file.read_bytes()
    context = _package_module(package_dir, file) or f"{package_dir.name}:{file.suffix}"
    key = hashlib.sha256(
        b"\0".join([_parser_version().encode(), context.encode(), raw])
    ).hexdigest()
    entry = _cache_dir() / key[:2] / f"{key}.json"
    try:
        return json.loads(entry.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        pass
    tree = ast.parse(_source(file), filename=str(file))
    refs = _references(package_dir, file, tree)
    try:
        entry.parent.mkdir(parents=True, exist_ok=True)
        # Written whole, then renamed: a concurrent reader sees the old state or the new.
        with tempfile.NamedTemporaryFile(
            "w", dir=entry.parent, suffix=".tmp", delete=False, encoding="utf-8"
        ) as handle:
            json.dump(refs, handle)
        os.replace(handle.name, entry)
    except OSError:
        pass
    return refs


def _file_refs(package_dir: Path, file: Path) -> tuple[tuple[Path, ...], tuple[Path, ...]]:
    stat = file.stat()
    return _parsed_refs(package_dir, file, stat.st_mtime_ns, stat.st_size)


@cache
def _parsed_refs(
    package_dir: Path, file: Path, mtime_ns: int, size: int
) -> tuple[tuple[Path, ...], tuple[Path, ...]]:
    """References of one file, looked up once per version of it (mtime and size) and process."""
    modules, data = _resolved(package_dir, file, _cached_references(package_dir, file))
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
