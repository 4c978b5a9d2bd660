"""Per-cell claims as leases, so that processes on any hosts sharing one results folder never compute a record
twice, and a claim whose holder died (killed, preempted, node lost) blocks the cell for one lease time at most.

A claim ``cells/<key>.lock`` is a small JSON file::

    {"host": "node12", "pid": 4242, "pid_start": 81234567, "boot_id": "…", "created": 1767225600.5,
     "lease_s": 300, "token": "9f1c…"}

``pid_start`` is the holder's start time in clock ticks since boot (field 22 of ``/proc/<pid>/stat``) and
``token`` a random id of this claim.  The holder renews the claim every ``lease_s / 10`` seconds from a thread (a
heartbeat: the file's modification time is set to now, on the file it opened and found its own token in).

A claim is *stale*, and taken over with a one-line note, when it was not renewed for its ``lease_s`` — whatever
host it names — or, sooner, when its holder is on this host (same host name and boot) and no longer runs.  Ages
are measured on the filesystem's own clock (the modification time of a file written just then), so the nodes'
clocks need not agree.  A holder that lost its claim notices it (``held()`` is False) and writes nothing.

What this relies on from the filesystem holding ``results_dir`` (checked once by :func:`check_filesystem`):

* ``link()`` fails when the target exists, atomically: a claim is written complete under a temporary name and
  hard-linked to ``<key>.lock`` (the ``O_EXCL`` guarantee that NFS v3/v4, Lustre, GPFS/Spectrum Scale and local
  filesystems give to ``link``; some FUSE, SMB and object-store mounts have no hard links and are refused).
* ``rename()`` within a folder is atomic: a stale claim is renamed aside (only one process can), checked to be
  the claim judged stale (same content and modification time, else put back), then deleted.
* Modification times set by ``utime`` are seen by other clients within the lease time: NFS caches attributes
  for up to ``acregmax`` (60 s by default), so keep ``lease_s`` well above it (the default is 300 s).
"""
from __future__ import annotations

import errno
import json
import os
import secrets
import socket
import sys
import threading
import time

DEFAULT_LEASE_S = 300.0


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


def owner_info(lease_s: float = DEFAULT_LEASE_S) -> dict:
    """What a new claim records about this process."""
    return {"host": socket.gethostname(), "pid": os.getpid(), "pid_start": _proc_start(os.getpid()),
            "boot_id": _boot_id(), "created": time.time(), "lease_s": float(lease_s), "token": secrets.token_hex(8)}


def fs_now(folder: str) -> float:
    """Now, on the clock of the filesystem holding ``folder`` (the modification time of a file written now); this
    host's clock where the folder is read-only."""
    path = os.path.join(folder, f".clock-{secrets.token_hex(6)}")
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except OSError:
        return time.time()
    try:
        return os.fstat(fd).st_mtime
    finally:
        os.close(fd)
        os.unlink(path)


def read_lock(path: str) -> tuple[dict, os.stat_result] | None:
    """A claim's content and stat (of the same open file); None when there is none.  Unreadable content is ``{}``
    (judged by its age alone)."""
    try:
        with open(path, "rb") as f:
            raw, st = f.read(), os.fstat(f.fileno())
    except FileNotFoundError:
        return None
    try:
        owner = json.loads(raw)
    except ValueError:
        owner = {}
    return (owner if isinstance(owner, dict) else {}), st


def heartbeat_age(st: os.stat_result, now: float) -> float:
    return max(0.0, now - st.st_mtime)


def stale_reason(owner: dict, st: os.stat_result, now: float, lease_s: float = DEFAULT_LEASE_S) -> str | None:
    """Why a claim is stale, or None while its holder may still be working.  ``now``: :func:`fs_now`."""
    lease = float(owner.get("lease_s") or lease_s)  # the holder's own lease: it renews at a tenth of it
    age = heartbeat_age(st, now)
    if age > lease:
        return f"not renewed for {age:.0f} s, lease {lease:.0f} s"
    if owner.get("host") != socket.gethostname():
        return None
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
    """A held claim, renewed by a heartbeat thread until ``release()`` (or the end of the ``with`` block)."""

    def __init__(self, path: str, owner: dict):
        self.path, self.owner = path, owner
        self.released, self.lost = False, None  # lost: why the claim is no longer ours
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name=f"lease-{owner['token']}", daemon=True)
        self._thread.start()

    def _beat(self) -> None:
        interval = float(self.owner["lease_s"]) / 10
        while not self._stop.wait(interval):
            self.renew()

    def renew(self) -> bool:
        """Set the claim's time to now if the file is still ours; else note that the claim is lost."""
        try:
            with open(self.path, "rb") as f:
                mine = _token(f.read()) == self.owner["token"]
                if mine:
                    os.utime(f.fileno())
        except FileNotFoundError:  # renamed aside for a moment by a take-over that will put it back
            return False
        except OSError as e:
            print(f"warning: cannot renew {self.path} ({e.strerror or e})", file=sys.stderr, flush=True)
            return False
        if not mine and self.lost is None:
            self.lost = "taken over by another process after it was not renewed in time"
        return mine

    def held(self) -> bool:
        """The claim is still ours (read from the file now)."""
        got = read_lock(self.path)
        if got is None or got[0].get("token") != self.owner["token"]:
            self.lost = self.lost or ("removed" if got is None else "taken over by another process")
            return False
        return self.lost is None

    def release(self) -> None:
        if self.released:
            return
        self.released = True
        self._stop.set()
        got = read_lock(self.path)
        if got and got[0].get("token") == self.owner["token"]:
            os.unlink(self.path)

    def __enter__(self) -> "CellClaim":
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def _token(raw: bytes) -> str | None:
    try:
        return json.loads(raw).get("token")
    except (ValueError, AttributeError):
        return None


def _take_over(path: str, seen: tuple[dict, os.stat_result], reason: str) -> None:
    """Remove the stale claim ``seen`` unless another process renewed or replaced it meanwhile."""
    aside = os.path.join(os.path.dirname(path), f".{os.path.basename(path)}.stale-{secrets.token_hex(6)}")
    try:
        os.rename(path, aside)
    except FileNotFoundError:  # someone else took it over first
        return
    got = read_lock(aside)
    if got is None or got[0] != seen[0] or got[1].st_mtime_ns != seen[1].st_mtime_ns:
        try:  # we moved a renewed or newer claim: put it back
            os.link(aside, path)
        except FileExistsError:
            pass
        os.unlink(aside)
        return
    os.unlink(aside)
    owner = seen[0]
    print(f"note: {path} was left by pid {owner.get('pid')} on {owner.get('host')} ({reason}); taking it over",
          file=sys.stderr, flush=True)


def claim_lock(path: str, lease_s: float = DEFAULT_LEASE_S) -> CellClaim | None:
    """Create the claim at ``path`` for this process; None when a live holder has it."""
    for _ in range(5):
        owner = owner_info(lease_s)
        if _create(path, owner):
            return CellClaim(path, owner)
        seen = read_lock(path)
        if seen is None:  # released meanwhile: try again
            continue
        reason = stale_reason(*seen, fs_now(os.path.dirname(path)), lease_s)
        if reason is None:
            return None
        _take_over(path, seen, reason)
    return None


def check_filesystem(folder: str) -> str | None:
    """What the claims need and ``folder``'s filesystem lacks (hard links, settable times), or None."""
    probe = os.path.join(folder, f".link-test-{secrets.token_hex(6)}")
    linked = probe + ".lock"
    try:
        with open(probe, "w") as f:
            f.write("{}")
        try:
            os.link(probe, linked)
        except OSError as e:
            if e.errno in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.ENOSYS, errno.EMLINK, errno.EXDEV):
                return f"it has no hard links ({e.strerror})"
            raise
        try:
            os.link(probe, linked)
            return "creating an existing hard link does not fail"
        except FileExistsError:
            pass
        os.utime(linked)
        return None
    finally:
        for p in (probe, linked):
            if os.path.lexists(p):
                os.unlink(p)
