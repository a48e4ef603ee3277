"""The Dockerfile stays in step with the project: it installs exactly requirements.lock the way
`make venv` does, on the Python the project requires, copies every file the workflow reads, and
runs as an unprivileged user. (The image is not built here: no Docker daemon on this machine.)
"""

from __future__ import annotations

import re
import shlex
import sys
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of the Dockerfile, continuation lines joined, comments dropped."""
    lines = []
    for line in (ROOT / "Dockerfile").read_text().splitlines():
        if line.strip().startswith("#"):
            continue
        lines.append(line)
    text = "\n".join(lines).replace("\\\n", " ")
    out = []
    for line in text.splitlines():
        if line.strip():
            word, _, rest = line.strip().partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def run_commands() -> list[str]:
    return [
        cmd.strip() for word, args in instructions() if word == "RUN" for cmd in args.split("&&")
    ]


def makefile_pins() -> dict[str, str]:
    """The pip and torch versions `make venv` installs before the lock."""
    text = (ROOT / "Makefile").read_text()
    return {
        "pip": re.search(r'"pip==([^"]+)"', text).group(1),
        "torch": re.search(r'install --quiet "torch==([^"]+)"', text).group(1),
    }


def lock_pins() -> dict[str, str]:
    pins = {}
    for line in (ROOT / "requirements.lock").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, version = line.split("==")
            pins[name.lower()] = version
    return pins


def test_base_image_is_slim_python_of_the_project():
    base = next(args for word, args in instructions() if word == "FROM")
    match = re.fullmatch(r"python:(\d+)\.(\d+)\.(\d+)-slim-bookworm", base)
    assert match, base
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["requires-python"] == ">=3.11,<3.12"
    # The Python the tests (and `make venv`) run on.
    assert (int(match.group(1)), int(match.group(2))) == sys.version_info[:2] == (3, 11)
    for env_file in (ROOT / "envs").glob("*.yaml"):
        assert "python=3.11" in yaml.safe_load(env_file.read_text())["dependencies"]


def test_installs_exactly_the_lock_like_make_venv():
    cmds = run_commands()
    pins = makefile_pins()
    lock = lock_pins()
    # pip and torch as the Makefile pins them; torch's CPU build, as the lock records it.
    assert f'pip install --quiet "pip=={pins["pip"]}"' in cmds
    torch = next(c for c in cmds if '"torch==' in c)
    assert f'"torch=={pins["torch"]}"' in torch and lock["torch"] == pins["torch"]
    assert "--index-url https://download.pytorch.org/whl/cpu" in torch
    # Then the lock itself, nothing resolved beyond it, and a consistency check.
    lock_install = [c for c in cmds if "-r " in c]
    assert lock_install == ["pip install --quiet --no-deps -r /opt/capforecast/requirements.lock"]
    assert cmds.index(torch) < cmds.index(lock_install[0]) < cmds.index("pip check")
    copies = [shlex.split(args) for word, args in instructions() if word == "COPY"]
    assert ["requirements.lock", "/opt/capforecast/requirements.lock"] in copies
    # No other package is installed with pip (it would not be in the lock).
    others = [c for c in cmds if "pip install" in c and c not in (torch, *lock_install)]
    assert others == [f'pip install --quiet "pip=={pins["pip"]}"'], others


def test_copies_every_file_the_workflow_reads():
    copied = set()
    for word, args in instructions():
        if word == "COPY":
            sources = [a for a in shlex.split(args) if not a.startswith("--")][:-1]
            copied.update(s.rstrip("/") for s in sources)
    # What the Snakefile and rule files refer to: scripts, envs, report captions, the config
    # file, and the notebooks the report rule runs.
    needed = {"Snakefile", "rules", "config", "notebooks", "profiles"}
    for path in [ROOT / "Snakefile", *(ROOT / "rules").glob("*.smk")]:
        for ref in re.findall(r'"\.\./([^/"]+)/', path.read_text()):
            needed.add(ref)
    configfile = re.search(r'configfile: "([^/"]+)/', (ROOT / "Snakefile").read_text())
    needed.add(configfile.group(1))
    assert {"scripts", "envs", "report"} <= needed
    assert needed <= copied, needed - copied
    for name in copied:
        assert (ROOT / name).exists(), name
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert not needed & set(ignored)
    assert {".venv", "results", ".snakemake", ".git"} <= set(ignored)


def test_runs_as_an_unprivileged_user():
    words = instructions()
    users = [args for word, args in words if word == "USER"]
    assert users and users[-1] not in ("root", "0")
    last_user = max(i for i, (word, _) in enumerate(words) if word == "USER")
    # Nothing after the switch needs root, and the workflow directory belongs to the user.
    assert not any(word == "RUN" for word, _ in words[last_user + 1 :])
    assert "chown capforecast:capforecast /opt/capforecast" in run_commands()
    workdirs = [args for word, args in words if word == "WORKDIR"]
    assert workdirs[-1] == "/opt/capforecast"
