"""Batch jobs on the local SLURM cluster, for the test modules that use the ``slurm_cluster`` fixture: submit,
wait for a requeued job, read what a run left behind."""
from __future__ import annotations

import csv
import os
import shlex
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import torch
from slurm_cluster import job_state, wait_for

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent

# Keep the jobs small: no sample grids, no progress bar, CSV logs only.
QUIET = ("trainer.enable_progress_bar=false", "callbacks.sample_grid.every_n_steps=0", "logger=csv",
         "trainer.log_every_n_steps=5")
JOB_TIME_MIN = 10  # SLURM time limit of every job here: nothing outlives a hung test for long
REQUEUE_TIMEOUT_S = 420

RUNNING_STATES = {"PENDING", "CONFIGURING", "RUNNING", "COMPLETING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED",
                  "SUSPENDED", "RESIZING", "STAGE_OUT"}

@pytest.fixture(scope="module")
def job_names(slurm_cluster):
    """Unique job names for this module; whatever still runs under them at the end is cancelled."""
    names: list[str] = []
    tag = uuid.uuid4().hex[:8]

    def new(kind: str) -> str:
        names.append(f"e2e-{kind}-{tag}")
        return names[-1]

    yield new
    for name in names:
        subprocess.run(["scancel", "--full", f"--name={name}"], env=slurm_cluster["env"], capture_output=True,
                       timeout=30, check=False)


def client_env(cluster: dict, cache: Path, root: Path) -> dict[str, str]:
    """The cluster's client environment (sbatch passes it on to the jobs), with this test's folders.

    One torch thread per task: the jobs share the node's few cores (OverSubscribe), and torch's default
    of one thread per core makes every step many times slower there."""
    return {**cluster["env"], "DDIM_BENCH_CACHE": str(cache), "DDIM_BENCH_ROOT": str(root), "PYTHONUNBUFFERED": "1",
            "OMP_NUM_THREADS": "1"}


def run(cmd: list[str], env: dict, timeout: float) -> subprocess.CompletedProcess:
    try:
        proc = subprocess.run([str(c) for c in cmd], env=env, cwd=ROOT, capture_output=True, text=True,
                              timeout=timeout)
    except subprocess.TimeoutExpired as err:
        out = (err.stdout or b"")[-3000:], (err.stderr or b"")[-3000:]
        pytest.fail(f"{Path(str(cmd[0])).name} did not finish within {timeout}s:\n{out[0]!r}\n{out[1]!r}")
    assert proc.returncode == 0, (f"{Path(str(cmd[0])).name} failed ({proc.returncode}):\n"
                                  f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


def sbatch(env: dict, name: str, output: Path, command: str, *options: str, timeout: float = 60,
           time_min: int = JOB_TIME_MIN) -> str:
    """Submit ``command`` as a batch job from the repository root, with a time limit of ``time_min`` minutes;
    returns the job id (``--wait``: when done)."""
    proc = run(["sbatch", "--parsable", f"--job-name={name}", f"--output={output}", f"--chdir={ROOT}",
                f"--time={time_min}", *options, "--wrap", command], env, timeout)
    return proc.stdout.strip().split(";")[0]


def app(name: str, *overrides: str) -> str:
    return " ".join(shlex.quote(str(a)) for a in (BIN / name, *overrides))


def requeued_log(cluster: dict, job: str, output: Path, what: str,
                 timeout: float = REQUEUE_TIMEOUT_S) -> tuple[str, str, str]:
    """Waits for a requeued batch job to end well; its log, and the log's parts before and after the second start."""
    def finished():
        state = job_state(cluster, job)
        return (state or "GONE") if state not in RUNNING_STATES else None

    state = wait_for(finished, timeout, interval=1, what=what)
    log = output.read_text(errors="replace")
    assert state in {"COMPLETED", "GONE"}, f"job ended {state}:\n{log[-3000:]}"
    first, _, rerun = log.partition("start restart_count=1")
    return log, first, rerun


def global_step(ckpt: Path) -> int:
    return int(torch.load(ckpt, map_location="cpu", weights_only=True)["global_step"])


def logged_steps(run_dir: Path, version: str = "") -> list[int]:
    with open(run_dir / "csv" / version / "metrics.csv") as f:
        return [int(r["step"]) for r in csv.DictReader(f) if r.get("train/loss")]


def tree(root: Path) -> str:
    return "\n".join(sorted(str(p.relative_to(root)) for p in root.rglob("*")))


def python_process(marker: str) -> int | None:
    """The pid of a Python process whose command line holds ``marker`` (not srun's), or None."""
    for pid in (p for p in os.listdir("/proc") if p.isdigit()):
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if "python" in Path(cmd[0].decode(errors="replace")).name and marker.encode() in b" ".join(cmd):
            return int(pid)
    return None
