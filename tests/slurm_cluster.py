"""pytest fixture: a real single-node SLURM cluster for the whole test session.

Use it from a test module (the tests folder is on ``sys.path`` under pytest)::

    from slurm_cluster import slurm_cluster  # noqa: F401

    @pytest.mark.slurm
    def test_something(slurm_cluster):
        subprocess.run(["sbatch", "--wait", ...], env=slurm_cluster["env"], check=True, timeout=120)

The fixture yields a dict:

* ``env``: a copy of ``os.environ`` with ``SLURM_CONF`` set, the sbin folders on ``PATH`` and
  any inherited ``SLURM_*``/``SBATCH_*``/``SRUN_*``/``SALLOC_*`` variables dropped; pass it to
  every ``sbatch``/``srun``/``scontrol`` (or submitit) call.
* ``state_dir``: the cluster's folder (``slurm.conf``, ``log/``, ``env.sh``) as a ``Path``.
* ``slurm_conf``: the ``slurm.conf`` path as a string.
* ``partition``: ``"debug"``; ``node``: the node name; ``cpus``: the node's CPU count.

When SLURM is not installed (``slurm/local/install.sh``) or we are not root, the tests that use
the fixture are skipped, except under CI (the ``CI`` environment variable set), where they fail.
The cluster starts once per session, however many modules import the fixture, and is stopped
at the end of the session.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
START = REPO / "slurm" / "local" / "start.sh"
STOP = REPO / "slurm" / "local" / "stop.sh"

_SBIN = ("/usr/local/sbin", "/usr/sbin", "/sbin")
_NEEDED = ("sbatch", "srun", "scontrol", "sinfo", "squeue", "scancel", "slurmctld", "slurmd", "munged")
_DROP_PREFIXES = ("SLURM_", "SBATCH_", "SRUN_", "SALLOC_", "SUBMITIT_")

START_TIMEOUT_S = 150
STOP_TIMEOUT_S = 60

# Shared by every place the fixture is registered (a conftest import and a test-module import
# would otherwise make two fixture definitions and start two clusters).
_shared: dict = {"cluster": None, "users": 0}


def _path_with_sbin(path: str | None) -> str:
    parts = [p for p in (path or "").split(os.pathsep) if p]
    return os.pathsep.join(parts + [p for p in _SBIN if p not in parts])


def _skip_or_fail(reason: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"{reason} (CI is set, so this is an error, not a skip)", pytrace=False)
    pytest.skip(reason)


def missing_binaries() -> list[str]:
    path = _path_with_sbin(os.environ.get("PATH"))
    return [b for b in _NEEDED if shutil.which(b, path=path) is None]


def cluster_env(slurm_conf: str | os.PathLike) -> dict[str, str]:
    """A clean client environment for the cluster whose slurm.conf is given."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(_DROP_PREFIXES)}
    env["PATH"] = _path_with_sbin(env.get("PATH"))
    env["SLURM_CONF"] = str(slurm_conf)
    return env


def _tail(path: Path, n: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return "(no log)"


def _start(state_dir: Path) -> dict:
    try:
        proc = subprocess.run(
            ["bash", str(START), str(state_dir)],
            env=cluster_env(state_dir / "slurm.conf"),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=START_TIMEOUT_S,
        )
    except subprocess.TimeoutExpired:
        subprocess.run(["bash", str(STOP), str(state_dir)], timeout=STOP_TIMEOUT_S, check=False)
        pytest.fail(f"slurm/local/start.sh did not finish within {START_TIMEOUT_S}s", pytrace=False)
    if proc.returncode != 0:
        logs = "\n".join(
            f"--- {name}\n{_tail(state_dir / 'log' / name)}" for name in ("slurmctld.log", "slurmd.log", "munged.log")
        )
        subprocess.run(["bash", str(STOP), str(state_dir)], timeout=STOP_TIMEOUT_S, check=False)
        pytest.fail(
            f"slurm/local/start.sh failed (rc={proc.returncode})\n{proc.stdout}\n{proc.stderr}\n{logs}", pytrace=False
        )
    conf = state_dir / "slurm.conf"
    env = cluster_env(conf)
    node = socket.gethostname().split(".")[0]
    info = subprocess.run(
        ["sinfo", "-h", "-N", "-o", "%N %c"], env=env, capture_output=True, text=True, timeout=30, check=True
    ).stdout.split()
    if len(info) >= 2:
        node, cpus = info[0], int(info[1])
    else:
        cpus = os.cpu_count() or 1
    return {
        "env": env,
        "state_dir": state_dir,
        "slurm_conf": str(conf),
        "partition": "debug",
        "node": node,
        "cpus": cpus,
    }


@pytest.fixture(scope="session")
def slurm_cluster(tmp_path_factory):
    """Start (once) the local SLURM cluster of slurm/local/start.sh and yield its client info."""
    if _shared["cluster"] is None:
        missing = missing_binaries()
        if missing:
            _skip_or_fail(f"SLURM is not installed (missing: {', '.join(missing)}); run slurm/local/install.sh")
        if os.geteuid() != 0:
            _skip_or_fail("the local SLURM cluster must be started as root")
        # A short base keeps the munge socket path well under the 108-byte unix socket limit.
        _shared["cluster"] = _start(tmp_path_factory.mktemp("slurm"))
    _shared["users"] += 1
    try:
        yield _shared["cluster"]
    finally:
        _shared["users"] -= 1
        if _shared["users"] == 0 and _shared["cluster"] is not None:
            state_dir = _shared["cluster"]["state_dir"]
            _shared["cluster"] = None
            subprocess.run(
                ["bash", str(STOP), str(state_dir)],
                stdin=subprocess.DEVNULL,
                capture_output=True,
                timeout=STOP_TIMEOUT_S,
                check=False,
            )


# --- small helpers for tests that drive the cluster by hand -------------------------------------


def job_state(cluster: dict, job_id: str) -> str:
    """The job's state as `scontrol show job` reports it ("" once the record is gone)."""
    out = subprocess.run(
        ["scontrol", "-o", "show", "job", str(job_id)],
        env=cluster["env"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    ).stdout
    for field in out.split():
        if field.startswith("JobState="):
            return field.split("=", 1)[1]
    return ""


def wait_for(predicate, timeout: float, interval: float = 0.5, what: str = "condition"):
    """Poll ``predicate`` until it returns something truthy; fail the test after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.0f}s waiting for {what}", pytrace=False)
        time.sleep(interval)


def catches(pid: int, sig: int) -> bool:
    """Whether process ``pid`` has a handler for ``sig`` (its SigCgt mask in /proc)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    mask = int(next(ln for ln in status.splitlines() if ln.startswith("SigCgt:")).split()[1], 16)
    return bool(mask >> (sig - 1) & 1)
