"""Stopping on a signal: SIGTERM (preemption, ``scancel``, ``scontrol requeue``, the time limit), SIGINT and the
job's warning signal (``slurm.signal``) become a :class:`Stopped` exception in the main thread, so that claims are
released and nothing is left half-written on the way out, and the process exits non-zero (128 + the signal's
number), so that SLURM does not count the task as done."""
from __future__ import annotations

import contextlib
import os
import signal
import subprocess


_early: list[int] = []  # a signal noted by :func:`hold` before the work began
_held: list[int] = []  # the signals :func:`hold` set to be noted


def hold(*signums: int) -> None:
    """First thing in an app, before the heavy imports: those of the signals (SIGUSR1 and SIGUSR2 when none is
    named) whose default action would still kill the process are noted instead, so that one sent during start-up
    (SLURM may send its warning signal up to a minute early) is acted on when :func:`stop_on` begins, rather than
    killing the task without a requeue."""
    def note(signum, frame):
        if not _early:
            _early.append(signum)

    for s in signums or (signal.SIGUSR1, signal.SIGUSR2):
        if signal.getsignal(s) == signal.SIG_DFL:
            signal.signal(s, note)
            _held.append(s)


def release() -> int | None:
    """Gives the signals :func:`hold` noted back their default action (for a library that installs its own handler
    only where none is set, as Lightning's SLURM requeue does); the signal noted meanwhile, if any."""
    while _held:
        signal.signal(_held.pop(), signal.SIG_DFL)
    return _early.pop() if _early else None


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
    the previous handlers are restored after it.  One of them noted by :func:`hold` before the block raises at its
    start."""
    fired = []

    def handler(signum, frame):
        if not fired:
            fired.append(signum)
            raise Stopped(signum)

    previous = {s: signal.signal(s, handler) for s in dict.fromkeys(signums)}
    try:
        early = [s for s in _early if s in previous]
        _early.clear()
        if early:
            fired.append(early[0])
            raise Stopped(early[0])
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
