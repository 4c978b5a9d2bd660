"""Reference features cached on disk and verified when loaded: a damaged cache file is moved aside and recomputed.

A cache file ``<cache_dir>/references/<name>.pt`` holds ``{"format": 2, "features": {layer: float64 [N, d]},
"sha256": ...}``, the sha256 taken over each layer's name, dtype, shape and bytes.  Loading checks that it
unpickles (``weights_only=True``), has exactly the expected layers with one common N >= 1, and matches its
checksum; a file that fails (truncated, edited, from an older format) is named in one warning line, moved to
``references/corrupt/`` and computed again.
"""
from __future__ import annotations

import hashlib
import os
import sys

import torch

from ddim_bench.io import atomic_path, move_aside

FORMAT = 2


def features_sha256(features: dict) -> str:
    h = hashlib.sha256()
    for name in sorted(features):
        t = features[name].detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.view(torch.uint8).numpy().data if t.numel() else b"")
    return h.hexdigest()


class BadCache(Exception):
    pass


def load(path: str, layers: list[str]) -> dict:
    """The verified featuresdict in ``path``; raises BadCache saying what is wrong."""
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # truncated zip, bad pickle: torch raises RuntimeError, pickle errors, EOFError…
        raise BadCache(f"unreadable: {str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__}")
    if not isinstance(obj, dict) or obj.get("format") != FORMAT or not isinstance(obj.get("features"), dict):
        raise BadCache("not a reference-features file of this version")
    feats = obj["features"]
    if sorted(feats) != sorted(layers):
        raise BadCache(f"layers {sorted(feats)} instead of {sorted(layers)}")
    sizes = {len(v) if isinstance(v, torch.Tensor) and v.dim() == 2 else -1 for v in feats.values()}
    if len(sizes) != 1 or min(sizes) < 1:
        raise BadCache("features are not [N, d] tensors with one N >= 1")
    if features_sha256(feats) != obj.get("sha256"):
        raise BadCache("checksum mismatch")
    return feats


def save(path: str, features: dict) -> None:
    """Write atomically: a temporary file in the same folder, then rename."""
    with atomic_path(path) as tmp:
        torch.save({"format": FORMAT, "features": features, "sha256": features_sha256(features)}, tmp)


def set_aside(path: str, reason: str) -> None:
    dest = move_aside(path)
    if dest is not None:  # None: another process moved it first
        print(f"warning: reference cache {path} is bad ({reason}); moved to {dest}, computing it again",
              file=sys.stderr, flush=True)


def load_or_compute(path: str, layers: list[str], compute) -> dict:
    """The cached features at ``path`` if they verify, else ``compute()`` (then cached)."""
    if os.path.exists(path):
        try:
            return load(path, layers)
        except BadCache as e:
            set_aside(path, str(e))
    features = compute()
    save(path, features)
    return features
