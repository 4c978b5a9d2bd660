"""Writing files so that a reader never sees half of one, and keeping bad files instead of deleting them.

Every result is written through ``atomic_path`` (a temporary file in the same folder, fsync, rename over the
target); every file that fails a check is moved by ``move_aside`` to ``corrupt/`` beside it."""
from __future__ import annotations

import json
import os
import tempfile
import time
from contextlib import contextmanager

CORRUPT_DIR = "corrupt"


@contextmanager
def atomic_path(path: str):
    """Yield a temporary path beside ``path`` (same ending, so writers that pick a format by name work); when the
    block ends without an error it is fsync-ed, made shared-readable (0644) and renamed over ``path``; otherwise
    it is removed and ``path`` is untouched."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix="-" + os.path.basename(path))
    os.close(fd)
    try:
        yield tmp
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; results are meant to be shared
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def atomic_write(path: str, data: bytes | str) -> None:
    """Write ``data`` to ``path`` atomically (shared-readable, 0644)."""
    if isinstance(data, str):
        data = data.encode()
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        f.write(data)


def write_json(path: str, obj) -> None:
    atomic_write(path, json.dumps(obj, indent=1, sort_keys=True, default=str) + "\n")


def aside_stamp() -> str:
    """The prefix of moved-aside names: time and process, so two processes never pick the same name."""
    return f"{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"


def move_aside(path: str, stamp: str | None = None) -> str | None:
    """Move a bad file to ``corrupt/<stamp>-<name>`` beside it (kept, never deleted; ``-<n>`` added to the stamp
    when that name is taken).  Returns the new path, or None when ``path`` is gone (another process moved it)."""
    folder = os.path.join(os.path.dirname(os.path.abspath(path)), CORRUPT_DIR)
    os.makedirs(folder, exist_ok=True)
    stamp, name = stamp or aside_stamp(), os.path.basename(path)
    target, n = os.path.join(folder, f"{stamp}-{name}"), 1
    while os.path.exists(target):
        target, n = os.path.join(folder, f"{stamp}-{n}-{name}"), n + 1
    try:
        os.replace(path, target)
    except FileNotFoundError:
        return None
    return target
