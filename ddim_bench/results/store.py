"""The results store: one checksummed JSON record per cell plus its side files, keyed by what determines it.

Layout under ``<root>/cells/``::

    <key>.json          {"format": 2, "sha256": ..., "record": {...}, "files": {".samples.pt": {"sha256", "bytes"}}}
    <key>.samples.pt    side files (kept images, features…), written before the record
    <key>.lock          the claim of the process computing the cell, a renewed lease (see ``cell_locks.py``)
    corrupt/            records and side files that failed verification, moved aside (never deleted)

``sha256`` is taken over the canonical JSON (sorted keys, no spaces) of ``{"record", "files"}``; each side file's
own sha256 is listed in ``files``.  A record on disk whose checksums match means the cell is complete; anything
else (truncated, edited, a side file changed or missing, no checksum) is named in one warning line, moved to
``corrupt/`` and counted as not done, so the sweep computes the cell again.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import sys

from ddim_bench.results import cell_locks
from ddim_bench.results.cell_locks import DEFAULT_LEASE_S, CellClaim, claim_lock
from ddim_bench.io import aside_stamp, atomic_write, move_aside

FORMAT = 2


def _canonical(obj) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _identity(st: os.stat_result) -> tuple:
    return st.st_ino, st.st_size, st.st_mtime_ns


def _to_bytes(value) -> bytes:
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    import torch
    buf = io.BytesIO()
    torch.save(value, buf)
    return buf.getvalue()


class Corrupt(Exception):
    """A cell file failed verification; ``path`` is the bad file, ``args[0]`` the reason."""

    def __init__(self, path: str, reason: str, record_id: tuple | None = None):
        super().__init__(reason)
        self.path, self.record_id = path, record_id


class LostClaim(Exception):
    """The claim of a cell was taken over (not renewed in time) before its record was written."""


class ResultStore:
    """Records and side files of finished cells under ``<root>/cells``, checksummed, plus per-cell claims.

    ``lease_s``: this process's claims are renewed every ``lease_s / 10`` seconds and count as abandoned when not
    renewed for ``lease_s`` (on any host); a claim of a dead process on this host is taken over at once.
    """

    def __init__(self, root: str, lease_s: float = DEFAULT_LEASE_S):
        self.root = root
        self.cells = os.path.join(root, "cells")
        self.lease_s = float(lease_s)
        self._checked: dict[str, tuple] = {}  # side file -> (identity, sha256) verified by this object

    def path(self, key: str, suffix: str = ".json") -> str:
        return os.path.join(self.cells, key + suffix)

    # ------------------------------------------------------------------ writing
    def check_writable(self) -> None:
        """One-line UserError, before anything is computed, when the cells folder cannot be written."""
        from ddim_bench.errors import UserError
        try:
            os.makedirs(self.cells, exist_ok=True)
            atomic_write(os.path.join(self.cells, f".write-test-{os.getpid()}"), b"")
            os.unlink(os.path.join(self.cells, f".write-test-{os.getpid()}"))
            lacking = cell_locks.check_filesystem(self.cells)
        except OSError as e:
            raise UserError(f"results folder {self.root} is not writable ({e.strerror or e}); "
                            f"set paths.results_dir to a writable folder") from None
        if lacking:
            raise UserError(f"paths.results_dir={self.root} is on a filesystem that cannot hold cell claims: "
                            f"{lacking}; use a local disk, NFS, Lustre or GPFS folder")

    def put(self, key: str, record: dict, files: dict | None = None, *, samples=None,
            claim: CellClaim | None = None) -> None:
        """Side files first, record last: a record on disk means the cell is complete.

        ``files`` maps a suffix (``".samples.pt"``, ``".features.pt"``…) to bytes or an object for ``torch.save``;
        ``samples=x`` is shorthand for ``files={".samples.pt": x}``.  With ``claim``, nothing is written unless the
        claim is still held (checked before the side files and again before the record): raises ``LostClaim``.
        """
        self._check_held(claim)
        files = dict(files or {})
        if samples is not None:
            files[".samples.pt"] = samples
        listed = {}
        for suffix, value in files.items():
            if not suffix.startswith(".") or "/" in suffix or suffix in (".json", ".lock"):
                raise ValueError(f"side-file suffix {suffix!r} must start with '.' and not be .json/.lock")
            data = _to_bytes(value)
            atomic_write(self.path(key, suffix), data)
            listed[suffix] = {"sha256": _sha256(data), "bytes": len(data)}
        self._check_held(claim)
        body = json.loads(json.dumps({"record": record, "files": listed}, default=str))  # what reading gives back
        doc = {"format": FORMAT, "sha256": _sha256(_canonical(body)), **body}
        atomic_write(self.path(key), json.dumps(doc, indent=1, sort_keys=True) + "\n")

    def _check_held(self, claim: CellClaim | None) -> None:
        if claim is not None and not claim.held():
            raise LostClaim(f"{claim.path}: {claim.lost}")

    # ------------------------------------------------------------------ reading and verifying
    def _read(self, key: str) -> tuple[dict, dict, tuple] | None:
        """``(record, files, identity of the record file)`` of a verified cell, None when there is no record;
        raises Corrupt."""
        path = self.path(key)
        try:
            with open(path, "rb") as f:
                raw, ident = f.read(), _identity(os.fstat(f.fileno()))
        except FileNotFoundError:
            return None
        try:
            doc = json.loads(raw)
        except ValueError as e:
            raise Corrupt(path, f"unreadable JSON: {e}", ident) from None
        if not isinstance(doc, dict) or "sha256" not in doc:
            raise Corrupt(path, "no checksum", ident)
        body = {"record": doc.get("record"), "files": doc.get("files")}
        if not isinstance(body["record"], dict) or not isinstance(body["files"], dict):
            raise Corrupt(path, "record or file list missing", ident)
        if doc.get("sha256") != _sha256(_canonical(body)):
            raise Corrupt(path, "checksum mismatch", ident)
        for suffix, meta in body["files"].items():
            try:
                self._check_file(key, suffix, meta)
            except Corrupt as err:
                err.record_id = ident
                raise
        return body["record"], body["files"], ident

    def _check_file(self, key: str, suffix: str, meta: dict, keep: bool = False) -> bytes | None:
        """Hash the side file against ``meta``; its bytes when ``keep``.  A file already checked by this store
        object and unchanged since (same inode, size and mtime) is not hashed again unless kept."""
        path = self.path(key, suffix)
        try:
            with open(path, "rb") as f:
                ident = _identity(os.fstat(f.fileno()))
                if not keep and self._checked.get(path) == (ident, meta.get("sha256")):
                    return None
                h, data, size = hashlib.sha256(), [], 0
                for chunk in iter(lambda: f.read(1 << 22), b""):
                    h.update(chunk)
                    size += len(chunk)
                    if keep:
                        data.append(chunk)
        except FileNotFoundError:
            raise Corrupt(path, "missing") from None
        if size != meta.get("bytes", size) or h.hexdigest() != meta.get("sha256"):
            raise Corrupt(path, f"checksum mismatch ({size} bytes)")
        self._checked[path] = (ident, meta.get("sha256"))
        return b"".join(data) if keep else None

    def _quarantine(self, key: str, err: Corrupt) -> None:
        """Move the cell's record and side files to ``cells/corrupt/`` and say so in one line.

        Nothing is moved when the record is no longer the one that was read (another process moved it aside or
        rewrote it meanwhile): the caller just counts the cell as not done this time.
        """
        try:
            if _identity(os.stat(self.path(key))) != err.record_id:
                return
        except FileNotFoundError:
            return
        stamp = aside_stamp()
        names = [n for n in os.listdir(self.cells) if n.startswith(key + ".") and not n.endswith(".lock")]
        moved = {}
        for name in sorted(names, key=lambda n: not n.endswith(".json")):  # the record first: cell undone
            dest = move_aside(os.path.join(self.cells, name), stamp)  # None: another reader moved it already
            if dest is not None:
                moved[name] = dest
        if key + ".json" in moved:
            bad = moved.get(os.path.basename(err.path), moved[key + ".json"])
            print(f"warning: {err.path} is corrupt ({err}); moved to {os.path.relpath(bad, self.root)} and the cell "
                  "will be recomputed", file=sys.stderr, flush=True)

    def _verified(self, key: str) -> tuple[dict, dict, tuple] | None:
        try:
            return self._read(key)
        except Corrupt as err:
            self._quarantine(key, err)
            return None

    def verify(self, key: str) -> bool:
        """True when the cell's record and side files match their checksums; a bad cell is moved aside."""
        return self._verified(key) is not None

    def has(self, key: str) -> bool:
        """The cell is done: its record is present and verified."""
        return self.verify(key)

    def pending(self, keys) -> list[str]:
        """The keys (in order) whose cells are not done."""
        return [k for k in keys if not self.has(k)]

    def record(self, key: str) -> dict | None:
        """The verified record of a cell, or None."""
        got = self._verified(key)
        return got[0] if got else None

    def records(self) -> list[dict]:
        """Every verified record, by key; bad ones are reported, moved aside and skipped."""
        if not os.path.isdir(self.cells):
            return []
        keys = sorted(n[:-5] for n in os.listdir(self.cells)
                      if n.endswith(".json") and not n.startswith(".") and os.path.isfile(os.path.join(self.cells, n)))
        return [r for r in (self.record(k) for k in keys) if r is not None]

    def load_file(self, key: str, suffix: str):
        """A verified side file, ``torch.load``-ed (``weights_only=True``, CPU); None when the cell or file is
        absent, or corrupt (then reported and moved aside)."""
        got = self._verified(key)
        if got is None:
            return None
        _, files, ident = got
        if suffix not in files:
            return None
        try:
            data = self._check_file(key, suffix, files[suffix], keep=True)
        except Corrupt as err:  # changed since _verified read it
            err.record_id = ident
            self._quarantine(key, err)
            return None
        import torch
        return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)

    def samples(self, key: str):
        """The cell's kept images (uint8 [k, C, H, W]) or None."""
        return self.load_file(key, ".samples.pt")

    # ------------------------------------------------------------------ reference features
    @staticmethod
    def reference_file(key: str) -> str:
        """Where the reference features named ``key`` are kept, relative to the root (a record's ``reference_file``)."""
        return f"reference/{key}.pt"

    def put_reference(self, rel: str, features: dict) -> None:
        """The reference features beside the records (float16), once: the report's paired differences need them."""
        path = os.path.join(self.root, rel)
        if not os.path.isfile(path):
            import torch
            buf = io.BytesIO()
            torch.save({k: v.half() for k, v in features.items()}, buf)
            atomic_write(path, buf.getvalue())

    def reference_path(self, records: list[dict]) -> str | None:
        """The file of the reference features the records were scored against, when they all share one and it is
        there; else None."""
        files = {r.get("reference_file") for r in records}
        if len(files) != 1 or None in files or not os.path.isfile(os.path.join(self.root, next(iter(files)))):
            return None
        return os.path.join(self.root, next(iter(files)))

    def reference(self, records: list[dict]) -> dict | None:
        """The reference features the records were scored against ({layer: float16 [M, d]}), when they all share
        one file and it is there; else None."""
        path = self.reference_path(records)
        if path is None:
            return None
        import torch
        return torch.load(path, map_location="cpu", weights_only=True)

    # ------------------------------------------------------------------ claims
    def claim(self, key: str) -> CellClaim | None:
        """Claim the cell before computing it: a handle (a context manager that releases it), or None when another
        live process holds the cell or it is already done (checked again after claiming)."""
        handle = claim_lock(self.path(key, ".lock"), lease_s=self.lease_s)
        if handle is not None and self.has(key):
            handle.release()
            return None
        return handle

    def holder(self, key: str) -> dict | None:
        """Who holds the cell's claim: ``{"host", "pid", "age_s" (since its last renewal), "lease_s", "stale" (why
        it is abandoned, or None)}``; None when there is no claim."""
        path = self.path(key, ".lock")
        got = cell_locks.read_lock(path)
        if got is None:
            return None
        owner, st = got
        now = cell_locks.fs_now(self.cells)
        return {"host": owner.get("host"), "pid": owner.get("pid"), "age_s": cell_locks.heartbeat_age(st, now),
                "lease_s": float(owner.get("lease_s") or self.lease_s),
                "stale": cell_locks.stale_reason(owner, st, now, self.lease_s)}
