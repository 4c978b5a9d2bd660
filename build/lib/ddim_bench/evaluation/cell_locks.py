"""Exclusive per-cell lock files, so that two sweeps on one results folder never compute the same cell twice.

A lock ``cells/<key>.lock`` is a small JSON file::

    {"host": "node12", "pid": 4242, "pid_start": 81234567, "boot_id": "…", "created": 1767225600.5,
     "token": "9f1c…"}

``pid_start`` is the owner's start time in clock ticks since boot (field 22 of ``/proc/<pid>/stat``; null where
there is no /proc) and ``token`` a random id of this claim.  The file is written complete under a temporary
name and then hard-linked to ``<key>.lock``: the link fails when the lock exists, so creation is atomic and a
reader never sees a half-written lock (the ``O_CREAT|O_EXCL`` guarantee, also on NFS).

A lock is *stale*, and taken over with a one-line note, when its owner is on this host (same host name and boot)
and its pid no longer runs, or runs a different process (other start time), or the host was rebooted.  A lock
from another host cannot be checked: it counts as live until it is ``max_age_s`` old (by its ``created`` time,
against this host's clock; default 24 h, ``ResultStore(lock_max_age_s=...)``).  Taking over renames the stale
lock aside (only one process can rename it), checks that what it renamed is the lock it judged stale (else puts
it back), deletes it and claims again.
"""
from __future__ import annotations

import json
import os
import secrets
import socket
import sys
import time

DEFAULT_MAX_AGE_S = 24 * 3600.0


def _proc_start(pid: int) -> int | None:
    """Start time of ``pid`` in clock ticks since boot, from /proc; None where unknown."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
        return int(stat[stat.rindex(")") + 2:].split()[19])  # field 22; the name in (...) may hold spaces
    except (OSError, ValueError, IndexError):
        return None


def _boot_id() -> str | None:
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            return f.read().strip()
    except OSError:
        return None


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by another user
        return True
    return True


def owner_info() -> dict:
    """What a new lock records about this process."""
    return {"host": socket.gethostname(), "pid": os.getpid(), "pid_start": _proc_start(os.getpid()),
            "boot_id": _boot_id(), "created": time.time(), "token": secrets.token_hex(8)}


def stale_reason(owner: dict, max_age_s: float) -> str | None:
    """Why a lock with this content is stale, or None when its owner may still be working."""
    if owner.get("host") != socket.gethostname():
        age = time.time() - float(owner.get("created") or 0)
        return f"older than {max_age_s:.0f} s" if age > max_age_s else None
    boot = _boot_id()
    if owner.get("boot_id") and boot and owner["boot_id"] != boot:
        return "the host has rebooted since"
    pid = int(owner.get("pid") or -1)
    if pid <= 0 or not _pid_alive(pid):
        return "no longer running"
    start = _proc_start(pid)
    if owner.get("pid_start") is not None and start is not None and start != owner["pid_start"]:
        return "its pid now belongs to another process"
    return None


def _read(path: str) -> dict | None:
    try:
        with open(path) as f:
            return json.load(f)
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return {}  # unreadable: judged by what it lacks (no host: another host's, created 0 → stale by age)


def _create(path: str, owner: dict) -> bool:
    """Create ``path`` with ``owner`` as content if it does not exist; False when it does."""
    folder = os.path.dirname(path)
    os.makedirs(folder, exist_ok=True)
    tmp = os.path.join(folder, f".{os.path.basename(path)}.{owner['token']}.tmp")
    with open(tmp, "w") as f:
        json.dump(owner, f)
        f.flush()
        os.fsync(f.fileno())
    try:
        os.link(tmp, path)
        return True
    except FileExistsError:
        return False
    finally:
        os.unlink(tmp)


class CellClaim:
    """A held lock; ``release()`` (or leaving the ``with`` block) removes it if it is still ours."""

    def __init__(self, path: str, owner: dict):
        self.path, self.owner = path, owner
        self.released = False

    def release(self) -> None:
        if self.released:
            return
        self.released = True
        current = _read(self.path)
        if current and current.get("token") == self.owner["token"]:
            os.unlink(self.path)
        else:
            print(f"warning: {self.path} is no longer held by this process (taken over as stale?); left as is",
                  file=sys.stderr, flush=True)

    def __enter__(self) -> "CellClaim":
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def _take_over(path: str, seen: dict, reason: str) -> None:
    """Remove the stale lock ``seen`` unless another process already replaced it."""
    aside = os.path.join(os.path.dirname(path), f".{os.path.basename(path)}.stale-{secrets.token_hex(6)}")
    try:
        os.rename(path, aside)
    except FileNotFoundError:  # someone else took it over first
        return
    if _read(aside) != seen:  # we moved a newer, live lock: put it back
        try:
            os.link(aside, path)
        except FileExistsError:
            pass
        os.unlink(aside)
        return
    os.unlink(aside)
    print(f"note: {path} was left by pid {seen.get('pid')} on {seen.get('host')} ({reason}); taking it over",
          file=sys.stderr, flush=True)


def claim_lock(path: str, max_age_s: float = DEFAULT_MAX_AGE_S) -> CellClaim | None:
    """Create the lock at ``path`` for this process; None when a live owner holds it."""
    for _ in range(5):
        owner = owner_info()
        if _create(path, owner):
            return CellClaim(path, owner)
        seen = _read(path)
        if seen is None:  # released meanwhile: try again
            continue
        reason = stale_reason(seen, max_age_s)
        if reason is None:
            return None
        _take_over(path, seen, reason)
    return None
