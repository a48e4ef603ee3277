"""The pinned stack a SageMaker training job installs: ``training-requirements.txt``.

Generated from ``requirements.lock``: the packages the model envs name (``envs/statsforecast.yaml``,
``envs/prophet.yaml``, ``envs/autogluon.yaml``) and everything they need, walked through the
installed distributions' metadata, each pinned to its version in the lock. torch comes from the
CPU wheel index, as in ``make venv``. ``tests/test_sagemaker_requirements.py`` checks that the
committed file is what this writes and agrees with the lock.

    python -m capforecast.aws.requirements            # rewrite the file after `make lock`
"""

from __future__ import annotations

import argparse
from importlib import metadata
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[3]
LOCK = ROOT / "requirements.lock"
MODEL_ENVS = ("statsforecast", "prophet", "autogluon")
OUTPUT = Path(__file__).with_name("training-requirements.txt")
HEADER = (
    "# Pinned training stack of a SageMaker job (generated from requirements.lock by\n"
    "# `python -m capforecast.aws.requirements`; do not edit by hand).\n"
    "--extra-index-url https://download.pytorch.org/whl/cpu\n"
)


def canonical(name: str) -> str:
    from packaging.utils import canonicalize_name

    return str(canonicalize_name(name))


def lock_pins(lock: Path = LOCK) -> dict[str, tuple[str, str]]:
    """canonical name -> (name as written, version) of every pin in the lock."""
    pins = {}
    for line in lock.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            name, version = line.split("==")
            pins[canonical(name)] = (name, version)
    return pins


def model_env_packages(root: Path = ROOT) -> list[str]:
    """The pip packages the model envs name."""
    names: list[str] = []
    for env in MODEL_ENVS:
        spec = yaml.safe_load((root / "envs" / f"{env}.yaml").read_text())
        pip = next(d["pip"] for d in spec["dependencies"] if isinstance(d, dict))
        names.extend(item.split("==")[0] for item in pip if not item.startswith("-"))
    return names


def closure(roots: list[str], pins: dict[str, tuple[str, str]]) -> list[str]:
    """``roots`` and their dependencies (extras followed, markers evaluated for this Linux
    Python 3.11), restricted to what the lock pins (build tools such as setuptools are not)."""
    from packaging.requirements import Requirement

    seen: set[tuple[str, frozenset[str]]] = set()
    todo = [(canonical(name), frozenset[str]()) for name in roots]
    while todo:
        name, extras = todo.pop()
        if (name, extras) in seen:
            continue
        seen.add((name, extras))
        for text in metadata.distribution(name).requires or []:
            req = Requirement(text)
            envs = [{"extra": e} for e in sorted(extras)] or [{"extra": ""}]
            if req.marker and not any(req.marker.evaluate(env) for env in envs):
                continue
            dep = canonical(req.name)
            if dep in pins:
                todo.append((dep, frozenset(req.extras)))
    return sorted({name for name, _ in seen})


def training_requirements(lock: Path = LOCK, root: Path = ROOT) -> str:
    pins = lock_pins(lock)
    names = closure(model_env_packages(root), pins)
    lines = [f"{pins[name][0]}=={pins[name][1]}" for name in names]
    return HEADER + "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, default=OUTPUT)
    args = parser.parse_args(argv)
    args.output.write_text(training_requirements())
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
