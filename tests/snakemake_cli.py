"""The project's Snakefile on the command line, for tests that run Snakemake in a subprocess."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SNAKEMAKE = str(Path(sys.executable).parent / "snakemake")


def snakemake_cmd(workdir: Path, config: Path, *args: str) -> list[str]:
    """`snakemake` on the project's Snakefile with results under ``workdir`` and one extra
    config file (given as `--configfile=X`: the bare option takes several values and would eat
    the targets)."""
    return [
        SNAKEMAKE,
        "-s",
        str(ROOT / "Snakefile"),
        "--directory",
        str(workdir),
        f"--configfile={config}",
        *args,
    ]


def planned(proc: subprocess.CompletedProcess) -> dict[str, int]:
    """Rule -> jobs of a dry run, from its job-stats table (the `total` row left out)."""
    counts, table = {}, False
    for line in (proc.stdout + proc.stderr).splitlines():
        if re.match(r"^-+\s+-+$", line.strip()):
            table = True
        elif table and (match := re.match(r"^(\w+)\s+(\d+)$", line.strip())):
            if match[1] == "total":
                break
            counts[match[1]] = int(match[2])
    return counts
