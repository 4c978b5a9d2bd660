"""Stopping on a signal: SIGTERM (preemption, ``scancel``, ``scontrol requeue``, the time limit), SIGINT and the
job's warning signal (``slurm.signal``) become a :class:`Stopped` exception in the main thread, so that claims are
released and nothing is left half-written on the way out, and the process exits non-zero (128 + the signal's
number), so that SLURM does not count the task as done."""
from __future__ import annotations

import contextlib
import os
import signal
import subprocess


class Stopped(BaseException):
    """Raised in the main thread by a signal; a BaseException, so that ``except Exception`` does not swallow it."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = int(signum)

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


@contextlib.contextmanager
def stop_on(*signums: int):
    """Within the block the signals raise :class:`Stopped` (once: a second signal during the clean-up is ignored);
    the previous handlers are restored after it."""
    fired = []

    def handler(signum, frame):
        if not fired:
            fired.append(signum)
            raise Stopped(signum)

    previous = {s: signal.signal(s, handler) for s in dict.fromkeys(signums)}
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


def from_spec(spec) -> int | None:
    """The signal of a SLURM ``--signal`` value: ``USR1@90``, ``B:USR2@60``, ``SIGUSR1``, ``10@90``."""
    if not spec:
        return None
    name = str(spec).split("@")[0].split(":")[-1].strip().upper()
    if name.isdigit():
        return int(name)
    try:
        return int(signal.Signals[name if name.startswith("SIG") else "SIG" + name])
    except KeyError:
        return None


def slurm_job() -> str | None:
    """This task's SLURM job id as ``scontrol`` names it (``<array job>_<task>`` in an array), or None."""
    array_job, task = os.environ.get("SLURM_ARRAY_JOB_ID"), os.environ.get("SLURM_ARRAY_TASK_ID")
    if array_job and task:
        return f"{array_job}_{task}"
    return os.environ.get("SLURM_JOB_ID")


def requeue_self() -> str | None:
    """``scontrol requeue`` this SLURM job (as Lightning does on its warning signal); what happened, or None
    outside SLURM."""
    job = slurm_job()
    if not job:
        return None
    try:
        done = subprocess.run(["scontrol", "requeue", job], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as err:
        return f"could not requeue job {job} ({err})"
    if done.returncode != 0:
        return f"could not requeue job {job} ({(done.stderr or done.stdout).strip()})"
    return f"job {job} requeued"
