"""What a sweep will cost before any sampling: model calls, images, disk, device time (plain functions).

*Model calls* are image-level network evaluations: N × seed blocks × the sampler's formula for its calls per
image (``generate.calls_per_image``, the figure each record stores as ``nfe_predicted`` beside the counted
``nfe``); the untimed warm-up batch of each record is left out.

*Device time* of a record: N·NFE / r  +  N·o per device, where r is the sampling rate (image-calls per
device-second) and o the evaluation seconds per sample (features, scores, intervals, writing) — both from the
newest record of the same checkpoint on the same device when the results folder has one, else r from a short
calibration run of the network on this machine (o unknown: 0, said so).
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass

import torch

RECORD_JSON_BYTES = 4096  # a record's JSON (≈ 3–4 KB with its intervals and protocol line)
TORCH_SAVE_BYTES = 1536   # what torch.save adds around a tensor file
INCEPTION_WIDTHS = {"2048": 2048, "logits_unbiased": 1008}
DIGITS_WIDTHS = {"64": 64, "logits_unbiased": 10}


@dataclass
class Rate:
    """Sampling image-calls per device-second and evaluation seconds per sample, and where they come from."""
    calls_per_s: float
    eval_s_per_sample: float
    source: str


def feature_widths(metrics_cfg) -> dict[str, int]:
    """{layer: width} of the features a scorer extracts for this metrics config (no weights loaded)."""
    from ddim_bench.scoring.extractors import dinov2
    from ddim_bench.scoring.extractors.features import INCEPTION, extractor_name
    name = extractor_name(metrics_cfg)
    if name in dinov2.NAMES:
        return {dinov2.FEATURE: dinov2.VIT_SIZES[dinov2.NAMES[name]][0]}
    widths = INCEPTION_WIDTHS if name == INCEPTION else DIGITS_WIDTHS
    isc = bool(metrics_cfg.get("isc", True))
    return {k: v for k, v in widths.items() if k != "logits_unbiased" or isc}


def disk_bytes(records: int, n: int, shape, keep_images: int, widths: dict, keep_features: bool) -> dict:
    """Bytes the records, their kept samples (uint8) and per-sample features (float16) take in the results."""
    _, h, w = shape  # samples are kept as uint8 RGB
    per_sample_features = 2 * sum(widths.values()) if keep_features else 0
    return {"records": records * RECORD_JSON_BYTES,
            "samples": records * (min(keep_images, n) * 3 * h * w + TORCH_SAVE_BYTES) if keep_images else 0,
            "features": records * (n * per_sample_features + TORCH_SAVE_BYTES) if keep_features else 0}


def stored_records(results_dir: str) -> list[dict]:
    """The records in a results folder, read only (no checksums, nothing moved aside: timings for an estimate)."""
    import glob
    import json
    out = []
    for path in glob.glob(os.path.join(results_dir, "cells", "*.json")):
        try:
            with open(path) as f:
                rec = json.load(f).get("record")
        except (OSError, ValueError, AttributeError):
            continue
        if isinstance(rec, dict):
            out.append(rec)
    return out


def done_records(records: list[dict], cells: list, seeds, n: int, info: dict) -> set:
    """The (cell, seed) pairs of a job that ``records`` already hold: same cell, seed block, N, checkpoint weights
    (sha256) and weights kind (EMA or raw).  The rest of a record's key (extractor, reference set, noise version) is
    known only once the sweep has prepared them, so a record of another extractor or reference counts here although
    the sweep would compute it again."""
    from ddim_bench.sampling.cell import Cell
    wanted = {(c, int(s)) for c in cells for s in seeds}
    have = set()
    for r in records:
        try:
            if (r.get("checkpoint_sha256"), r.get("weights"), int(r.get("n_samples", -1))) == (
                    info["sha256"], info["weights"], n):
                have.add((Cell.from_record(r), int(r["seed"])))
        except (KeyError, TypeError, ValueError):
            continue
    return wanted & have


def measured_rate(records: list[dict], sha256: str, device: str) -> Rate | None:
    """From the newest record of this checkpoint measured on ``device`` (a ``dist.device_name``), or None."""
    mine = [r for r in records if r.get("checkpoint_sha256") == sha256 and r.get("device_name") == device
            and r.get("seconds") and r.get("nfe")]
    if not mine:
        return None
    r = max(mine, key=lambda rec: (rec.get("created", ""), rec.get("key", "")))  # ties (same second): by key
    world, n = int(r.get("world_size", 1)), int(r["n_samples"])
    rate = n * r["nfe"] / (r["seconds"] * world)
    extra = max(0.0, float(r.get("cell_seconds", r["seconds"])) - r["seconds"]) / n
    key = str(r.get("key", "?"))[:12]
    return Rate(rate, extra, f"measured: record {key} of {r.get('created', '?')} on {device} "
                             f"({n} samples, NFE {r['nfe']}, {world} device{'s' * (world > 1)})")


@torch.no_grad()
def calibrate(model, shape, batch: int, device, calls: int = 3) -> float:
    """Image-calls per second of the network alone on ``device``: ``calls`` timed calls on a batch."""
    from ddim_bench.sampling.generate import sync
    x = torch.randn(batch, *shape, device=device)
    t = torch.full((batch,), 500, device=device, dtype=torch.long)
    model(x, t)  # warm-up
    sync(device)
    t0 = time.perf_counter()
    for _ in range(calls):
        model(x, t)
    sync(device)
    return batch * calls / max(time.perf_counter() - t0, 1e-9)


def record_seconds(n: int, nfe: int, rate: Rate, world: int) -> float:
    """Wall seconds of one record on ``world`` devices."""
    return n * nfe / (rate.calls_per_s * world) + n * rate.eval_s_per_sample


def human_bytes(b: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if b < 1024 or unit == "TB":
            return f"{b:.0f} {unit}" if unit == "B" else f"{b:.1f} {unit}"
        b /= 1024
    return f"{b:.1f} TB"
