"""A real single-node SLURM on 127.0.0.1 for the tests (Debian's slurmctld, slurmd, munge).

``local_slurm`` installs the packages when they are missing (``make slurm``: apt-get, needs
root, as in CI), writes a private configuration, and starts munged (as the munge user),
slurmctld and slurmd in the foreground, so every daemon is a child of this process with a known
PID; teardown cancels what is left in the queue and stops each of them by that PID. Where the
packages cannot be installed or the daemons do not come up, the tests that use it are skipped
with the reason.

Recipe (slurm-wlm 22.05, no cgroups, no accounting database): ``ProctrackType=proctrack/linuxproc``,
``TaskPlugin=task/none``, ``SelectType=select/cons_tres``, ``CommunicationParameters=
NoCtldInAddrAny,NoInAddrAny``. Every job is written to a job-completion log
(``jobcomp/filetxt``): the record that jobs really went through sbatch and slurmd. Snakemake's
SLURM executor has its job step drop ``SLURM_CONF``, so ``srun`` inside a job reads
``/etc/slurm/slurm.conf``: the fixture writes it there (and removes it afterwards) unless a
configuration it did not write is already there, in which case it skips.
"""

from __future__ import annotations

import fcntl
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

PACKAGES = ("slurmctld", "slurmd", "slurm-client", "munge")
BINARIES = ("munged", "slurmctld", "slurmd", "sbatch", "squeue", "scancel", "sinfo")
SYSTEM_CONF = Path("/etc/slurm/slurm.conf")
# First line of every slurm.conf this fixture writes: a leftover of an interrupted session
# may be replaced, anyone else's configuration is never touched.
MARKER = "# written by capforecast tests/slurm_local.py"
# One local SLURM per machine at a time (daemons of two sessions would share
# /etc/slurm/slurm.conf, and a job step would talk to the other's controller).
LOCK = Path(tempfile.gettempdir()) / "capforecast-local-slurm.lock"
LOCK_WAIT_S = 1200
PARTITION = "capforecast"
NODE = "localhost"
ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class LocalSlurm:
    conf: Path
    workdir: Path
    jobcomp: Path
    partition: str = PARTITION

    def env(self) -> dict[str, str]:
        """Environment for a client (sbatch, snakemake --executor slurm)."""
        return {"SLURM_CONF": str(self.conf)}

    def completed_jobs(self) -> list[dict[str, str]]:
        """Records of the job-completion log (JobId, JobName, JobState, ...), one per job."""
        if not self.jobcomp.exists():
            return []
        records = []
        for line in self.jobcomp.read_text().splitlines():
            fields = {}
            for item in line.split():
                key, _, value = item.partition("=")
                fields[key] = value
            if fields:
                records.append(fields)
        return records

    def queue(self) -> list[str]:
        out = subprocess.run(
            ["squeue", "--noheader", "--format=%i %j %T"],
            capture_output=True,
            text=True,
            env={**os.environ, **self.env()},
            timeout=30,
        )
        return [line for line in out.stdout.splitlines() if line.strip()]


def missing_binaries() -> list[str]:
    return [name for name in BINARIES if shutil.which(name) is None]


def install_packages() -> str | None:
    """`make slurm` (apt-get); the reason it failed, or None."""
    if not missing_binaries():
        return None
    if shutil.which("make") is None:
        return "make is not installed"
    proc = subprocess.run(
        ["make", "-s", "-C", str(ROOT), "slurm"], capture_output=True, text=True, timeout=900
    )
    if proc.returncode != 0 or missing_binaries():
        tail = (proc.stdout + proc.stderr).strip().splitlines()[-3:]
        return f"`make slurm` could not install {', '.join(PACKAGES)}: {' | '.join(tail)}"
    return None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def node_memory_mb() -> int:
    """What the node offers to jobs: 3/4 of the machine's memory (other work shares it)."""
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) * 3 // 4 // 1024
    return 4096


def slurm_conf(state: Path, munge_socket: Path) -> str:
    ctld_port, slurmd_port = free_port(), free_port()
    cpus = os.cpu_count() or 1
    return "\n".join(
        [
            MARKER,
            "ClusterName=capforecast",
            "SlurmctldHost=localhost(127.0.0.1)",
            f"SlurmctldPort={ctld_port}",
            f"SlurmdPort={slurmd_port}",
            "SlurmUser=root",
            "SlurmdUser=root",
            "AuthType=auth/munge",
            "CredType=cred/munge",
            f"AuthInfo=socket={munge_socket}",
            f"StateSaveLocation={state / 'ctld'}",
            f"SlurmdSpoolDir={state / 'spool'}",
            f"SlurmctldPidFile={state / 'slurmctld.pid'}",
            f"SlurmdPidFile={state / 'slurmd.pid'}",
            f"SlurmctldLogFile={state / 'slurmctld.log'}",
            f"SlurmdLogFile={state / 'slurmd.log'}",
            "ProctrackType=proctrack/linuxproc",
            "TaskPlugin=task/none",
            "JobAcctGatherType=jobacct_gather/none",
            "AccountingStorageType=accounting_storage/none",
            "JobCompType=jobcomp/filetxt",
            f"JobCompLoc={state / 'jobcomp.txt'}",
            "SelectType=select/cons_tres",
            "SelectTypeParameters=CR_Core_Memory",
            "CommunicationParameters=NoCtldInAddrAny,NoInAddrAny",
            "MpiDefault=none",
            "SwitchType=switch/none",
            "ReturnToService=2",
            # Finished jobs stay visible to squeue for 10 minutes: the executor's status
            # command without an accounting database.
            "MinJobAge=600",
            "SlurmctldTimeout=30",
            "SlurmdTimeout=30",
            "InactiveLimit=0",
            "KillWait=5",
            (
                f"NodeName={NODE} NodeAddr=127.0.0.1 NodeHostname={socket.gethostname()} "
                f"CPUs={cpus} RealMemory={node_memory_mb()} State=UNKNOWN"
            ),
            f"PartitionName={PARTITION} Nodes={NODE} Default=YES MaxTime=INFINITE State=UP",
            "",
        ]
    )


def _stop(proc: subprocess.Popen, name: str, errors: list[str]) -> None:
    """Stop one daemon this fixture started, by its PID."""
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)
        errors.append(f"{name} (pid {proc.pid}) ignored SIGTERM and was killed")


def _wait_for(check, timeout: float, what: str, procs: dict[str, subprocess.Popen]) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for name, proc in procs.items():
            if proc.poll() is not None:
                raise RuntimeError(f"{name} exited with code {proc.returncode} before {what}")
        if check():
            return
        time.sleep(0.5)
    raise RuntimeError(f"timed out after {timeout:.0f} s waiting for {what}")


def _munge_dir() -> Path:
    """A private directory munged can reach: pytest's tmp dirs are 0700 root-only."""
    path = Path(tempfile.mkdtemp(prefix="capforecast-munge-"))
    munge = pwd.getpwnam("munge")
    path.chmod(0o711)  # the socket's directory must be world-executable
    os.chown(path, munge.pw_uid, munge.pw_gid)
    return path


@pytest.fixture(scope="session")
def local_slurm(tmp_path_factory) -> Iterator[LocalSlurm]:
    """munged, slurmctld and slurmd on 127.0.0.1 for the session; every one stopped by PID."""
    if os.geteuid() != 0:
        pytest.skip("a local SLURM needs root (apt-get, munged as the munge user, slurmd)")
    reason = install_packages()
    if reason:
        pytest.skip(reason)
    lock = _machine_lock()
    if lock is None:
        pytest.skip(f"another local SLURM held {LOCK} for {LOCK_WAIT_S} s")
    if SYSTEM_CONF.exists() and not SYSTEM_CONF.read_text().startswith(MARKER):
        lock.close()
        pytest.skip(f"{SYSTEM_CONF} exists and was not written by these tests: not touching it")

    state = tmp_path_factory.mktemp("slurm")
    for sub in ("ctld", "spool"):
        (state / sub).mkdir()
    munge_dir = _munge_dir()
    munge_socket = munge_dir / "munge.socket.2"
    conf = state / "slurm.conf"
    conf.write_text(slurm_conf(state, munge_socket))
    SYSTEM_CONF.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(conf, SYSTEM_CONF)
    env = {**os.environ, "SLURM_CONF": str(conf)}

    procs: dict[str, subprocess.Popen] = {}
    logs = []
    try:
        munge_log = open(state / "munged.out", "w")  # noqa: SIM115 (closed at teardown)
        logs.append(munge_log)
        munge = pwd.getpwnam("munge")
        procs["munged"] = subprocess.Popen(
            [
                "munged",
                "--foreground",
                f"--socket={munge_socket}",
                "--key-file=/etc/munge/munge.key",
                f"--pid-file={munge_dir / 'munged.pid'}",
                f"--log-file={munge_dir / 'munged.log'}",
                f"--seed-file={munge_dir / 'munged.seed'}",
                "--num-threads=2",
            ],
            stdout=munge_log,
            stderr=subprocess.STDOUT,
            # As the munge user itself (no runuser in between: its PID is munged's).
            user=munge.pw_uid,
            group=munge.pw_gid,
            extra_groups=[],
        )
        _wait_for(munge_socket.exists, 20, "the munge socket", procs)
        for name, cmd in (
            ("slurmctld", ["slurmctld", "-D", "-i", "-f", str(conf)]),
            ("slurmd", ["slurmd", "-D", "-N", NODE, "-f", str(conf)]),
        ):
            out = open(state / f"{name}.out", "w")  # noqa: SIM115 (closed at teardown)
            logs.append(out)
            procs[name] = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env)

        def node_idle() -> bool:
            proc = subprocess.run(
                ["sinfo", "--noheader", "--format=%t", f"--nodes={NODE}"],
                capture_output=True,
                text=True,
                env=env,
                timeout=30,
            )
            return proc.stdout.strip() == "idle"

        _wait_for(node_idle, 60, "the node to be idle", procs)
    except (RuntimeError, OSError, subprocess.SubprocessError) as err:
        errors: list[str] = []
        for name in reversed(list(procs)):
            _stop(procs[name], name, errors)
        for handle in logs:
            handle.close()
        _remove_system_conf()
        shutil.rmtree(munge_dir, ignore_errors=True)
        lock.close()
        tails = "; ".join(
            f"{path.name}: {' | '.join(path.read_text().splitlines()[-3:])}"
            for path in sorted(state.glob("*.log")) + sorted(state.glob("*.out"))
            if path.exists() and path.stat().st_size
        )
        pytest.skip(f"local SLURM did not start: {err} ({tails})")

    slurm = LocalSlurm(conf=conf, workdir=state, jobcomp=state / "jobcomp.txt")
    yield slurm

    errors = []
    subprocess.run(["scancel", f"--partition={PARTITION}"], env=env, timeout=30, check=False)
    deadline = time.monotonic() + 30
    while slurm.queue() and time.monotonic() < deadline:
        time.sleep(1)
    for name in ("slurmd", "slurmctld", "munged"):
        _stop(procs[name], name, errors)
    for handle in logs:
        handle.close()
    _remove_system_conf()
    shutil.rmtree(munge_dir, ignore_errors=True)
    deadline = time.monotonic() + 20
    while _job_processes() and time.monotonic() < deadline:
        time.sleep(0.5)
    leftovers = _job_processes()
    lock.close()
    assert not errors and not leftovers, (errors, leftovers)


def _machine_lock():
    """An exclusive lock on LOCK (released when the handle closes), or None after waiting."""
    handle = open(LOCK, "a")  # noqa: SIM115 (held for the session)
    deadline = time.monotonic() + LOCK_WAIT_S
    while True:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return handle
        except BlockingIOError:
            if time.monotonic() > deadline:
                handle.close()
                return None
            time.sleep(2)


def _remove_system_conf() -> None:
    if SYSTEM_CONF.exists() and SYSTEM_CONF.read_text().startswith(MARKER):
        SYSTEM_CONF.unlink()


def _job_processes() -> list[str]:
    """slurmstepd processes still alive once slurmd is stopped (there must be none)."""
    found = []
    for proc_dir in Path("/proc").iterdir():
        if not proc_dir.name.isdigit():
            continue
        try:
            cmdline = (proc_dir / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if cmdline.startswith("slurmstepd"):
            found.append(f"{proc_dir.name}: {cmdline.strip()}")
    return found
