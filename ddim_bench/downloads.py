"""Public files the paper path needs, fetched once and checked against the checksum their source publishes.

* torch-fidelity's Inception weights: the first 8 hex digits of the file's sha256 are in its name (torch.hub's
  convention, ``weights-inception-2015-12-05-6726825d.pth``); that prefix is what is checked.
* The official DDPM CIFAR-10 checkpoint: the MD5 that the DDIM paper's code (``functions/ckpt_util.py``) checks.
* CIFAR-10: torchvision's own URL and MD5 (``data/modules.py``).
* DINOv2: its source publishes no checksum, so a file is checked by loading it (``weights_only``) instead.

A download goes to a temporary file beside its target, is checked, then renamed: no reader ever sees half a file.
An existing file that fails its check is named, moved to ``corrupt/`` beside it and fetched again.
"""
from __future__ import annotations

import hashlib
import http.client
import os
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Callable, Optional

from ddim_bench.errors import UserError
from ddim_bench.io import atomic_path, move_aside

CHUNK = 1 << 20
TIMEOUT_S = 60.0
ATTEMPTS = 2


@dataclass(frozen=True)
class Remote:
    """A public file: its name, where it comes from, what it is, and what it is checked against."""
    name: str
    url: str
    what: str
    sha256_prefix: str = ""          # leading hex digits of the sha256
    md5: tuple = ()                  # accepted MD5s (as the source publishes them)
    loads: Optional[Callable[[str], Optional[str]]] = None  # no checksum published: a load check instead

    def mismatch(self, path: str) -> str | None:
        """Why the file at ``path`` is not this one (None: it is)."""
        if self.sha256_prefix or self.md5:
            sha, md5 = digests(path)
            if self.sha256_prefix and not sha.startswith(self.sha256_prefix):
                return f"its sha256 starts {sha[:len(self.sha256_prefix)]}, not {self.sha256_prefix}"
            if self.md5 and md5 not in self.md5:
                return f"its MD5 is {md5}, not {' or '.join(self.md5)}"
        return self.loads(path) if self.loads else None


def digests(path: str) -> tuple[str, str]:
    """(sha256, md5) of a file, read once."""
    sha, md5 = hashlib.sha256(), hashlib.md5()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(CHUNK), b""):
            sha.update(chunk)
            md5.update(chunk)
    return sha.hexdigest(), md5.hexdigest()


_CHECKED: dict[tuple, bool] = {}  # (path, size, mtime) of files already checked by this process


def ensure(path: str, remote: Remote, download: bool, missing_line: str) -> str:
    """``path``, checked against ``remote``; fetched first when missing (or wrong, after moving it aside).

    ``missing_line`` is the one line for a file that is not there and cannot be fetched (file, URL, where to put
    it); a failed download appends why."""
    if os.path.isfile(path):
        stamp = (os.path.abspath(path), os.path.getsize(path), os.path.getmtime(path))
        if _CHECKED.get(stamp):
            return path
        why = remote.mismatch(path)
        if why is None:
            _CHECKED[stamp] = True
            return path
        aside = move_aside(path)
        say(f"warning: {path} is not {remote.what} ({why}); moved to {aside}")
        missing_line += f" (the file there was not it: {why}; moved to {aside})"
    if not download:
        raise UserError(missing_line + "; or set download=true")
    try:
        fetch(remote, path)
    except DownloadError as err:
        raise UserError(f"{missing_line} (download failed: {err})") from None
    return path


class DownloadError(Exception):
    """A transfer that did not give the file: no connection, or interrupted (tried again)."""


class ChecksumError(DownloadError):
    """A complete transfer of another file than the one asked for (not tried again)."""


def fetch(remote: Remote, path: str, timeout: float = TIMEOUT_S, attempts: int = ATTEMPTS) -> None:
    """Download ``remote`` to ``path`` via a temporary file beside it: checked, then renamed."""
    for attempt in range(1, attempts + 1):
        try:
            with atomic_path(path) as tmp:
                with open(tmp, "wb") as out:
                    _transfer(remote, path, out, timeout)
                why = remote.mismatch(tmp)
                if why is not None:
                    raise ChecksumError(f"{remote.url} gave a file that is not {remote.what}: {why}")
            return
        except ChecksumError:
            raise
        except DownloadError:
            if attempt == attempts:
                raise
            time.sleep(1.0)


def _transfer(remote: Remote, path: str, out, timeout: float) -> None:
    """Stream the URL into ``out``; a short body (fewer bytes than Content-Length) is an interrupted transfer."""
    got, size = 0, None
    try:
        with urllib.request.urlopen(remote.url, timeout=timeout) as resp:
            size = resp.headers.get("Content-Length")
            size = int(size) if size is not None else None
            say(f"fetching {remote.what} ({size / 1e6:.0f} MB) from {remote.url} into {path}" if size else
                f"fetching {remote.what} from {remote.url} into {path}")
            for chunk in iter(lambda: resp.read(CHUNK), b""):
                out.write(chunk)
                got += len(chunk)
    except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as err:
        raise DownloadError(_reason(err, got, size)) from None
    if size is not None and got != size:
        raise DownloadError(f"the transfer of {remote.url} stopped after {got:,} of {size:,} bytes")


def _reason(err: Exception, got: int, size: int | None) -> str:
    if size is not None:
        return f"the transfer stopped after {got:,} of {size:,} bytes ({type(err).__name__})"
    text = str(getattr(err, "reason", err)).strip().splitlines()
    return text[0][:160] if text else type(err).__name__


def say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)
