"""The results store: one JSON record per cell, written atomically, keyed by what determines it."""
from __future__ import annotations

import hashlib
import json
import os
import tempfile


def cell_key(fields: dict) -> str:
    """A stable hash of everything that determines a cell's numbers."""
    blob = json.dumps(fields, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


def atomic_write(path: str, data: bytes) -> None:
    """Write to a temporary file in the same folder, fsync, then rename over ``path``."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=os.path.basename(path))
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; results are meant to be shared
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


class ResultStore:
    """``<root>/cells/<key>.json`` (the record) and ``<root>/cells/<key>.samples.pt`` (kept images)."""

    def __init__(self, root: str):
        self.root = root
        self.cells = os.path.join(root, "cells")

    def path(self, key: str, suffix: str = ".json") -> str:
        return os.path.join(self.cells, key + suffix)

    def has(self, key: str) -> bool:
        return os.path.isfile(self.path(key))

    def get(self, key: str) -> dict:
        with open(self.path(key)) as f:
            return json.load(f)

    def put(self, key: str, record: dict, samples=None) -> None:
        """Images first, record last: a record on disk means the cell is complete."""
        if samples is not None:
            import io
            import torch
            buf = io.BytesIO()
            torch.save(samples, buf)
            atomic_write(self.path(key, ".samples.pt"), buf.getvalue())
        atomic_write(self.path(key), json.dumps(record, indent=1, sort_keys=True).encode())

    def samples(self, key: str):
        import torch
        p = self.path(key, ".samples.pt")
        return torch.load(p, map_location="cpu", weights_only=True) if os.path.isfile(p) else None

    def records(self) -> list[dict]:
        if not os.path.isdir(self.cells):
            return []
        out = []
        for name in sorted(os.listdir(self.cells)):
            if name.endswith(".json") and not name.startswith(".tmp-"):
                with open(os.path.join(self.cells, name)) as f:
                    out.append(json.load(f))
        return out
