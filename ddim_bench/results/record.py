"""What a sweep stores per (cell, seed block): the key fields, and ``CellRecord``, which owns the column list.

A record is a JSON object on disk (see :mod:`ddim_bench.results.store`); ``CellRecord`` is its typed view:
the report's CSV, the W&B table and the console all take their columns from ``CellRecord.columns()``.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any, Optional

from ddim_bench.sampling.cell import Cell

# Bump when the generated numbers of every cell change for the same settings (e.g. a new noise scheme).
RECORD_VERSION = 2


def cell_key(fields: dict) -> str:
    """A stable hash of everything that determines a record's numbers."""
    blob = json.dumps(fields, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


def key_fields(cell: Cell, seed: int, *, n_samples: int, checkpoint_sha256: str, weights: str, schedule: dict,
               extractor: str, reference: str, keep_images: int, fast: dict, noise_version: int,
               scheduler: dict | None = None) -> dict:
    """Everything that determines a (cell, seed) record's numbers — and nothing that does not (batch size,
    device count, bootstrap settings: intervals are recomputed from the stored features when those change).

    ``scheduler``: a diffusers sampler's effective configuration (``samplers.effective_config``: its class, full
    config, visited timesteps, per-step orders, diffusers' version), so that any switch inside diffusers gives
    another key.  Our DDIM is determined by the cell itself and has none in its key."""
    extra = {} if scheduler is None else {"scheduler": scheduler}
    return {**cell.fields(), **extra, "seed": int(seed), "n_samples": int(n_samples),
            "checkpoint_sha256": checkpoint_sha256, "weights": weights, "schedule": schedule, "extractor": extractor,
            "reference": reference, "keep_images": int(keep_images), "fast": fast, "noise_version": noise_version,
            "record_version": RECORD_VERSION}


@dataclass
class CellRecord:
    key: str
    sweep: str
    sampler: str
    steps: int
    eta: float
    variance: str
    skip: str
    seed: int
    n_samples: int
    fid: float
    fid_lo: Optional[float] = None
    fid_hi: Optional[float] = None
    fid_inf: Optional[float] = None     # FD∞ (Chong & Forsyth 2020) with its interval; absent in older records
    fid_inf_lo: Optional[float] = None
    fid_inf_hi: Optional[float] = None
    is_mean: Optional[float] = None
    is_lo: Optional[float] = None
    is_hi: Optional[float] = None
    kid_mean: Optional[float] = None
    kid_lo: Optional[float] = None
    kid_hi: Optional[float] = None
    precision: Optional[float] = None
    precision_lo: Optional[float] = None
    precision_hi: Optional[float] = None
    recall: Optional[float] = None
    recall_lo: Optional[float] = None
    recall_hi: Optional[float] = None
    consistency_mse: Optional[float] = None
    sec_per_image: Optional[float] = None
    images_per_sec: Optional[float] = None
    nfe: Optional[int] = None
    nfe_predicted: Optional[int] = None
    flops_per_image: Optional[float] = None
    peak_mem_mb: Optional[float] = None
    seconds: Optional[float] = None
    world_size: Optional[int] = None
    weights: Optional[str] = None
    extractor: Optional[str] = None
    reference: Optional[str] = None
    clip_x0: bool = False
    extra: dict = field(default_factory=dict, repr=False)

    @classmethod
    def columns(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls) if f.name != "extra"]

    @classmethod
    def from_dict(cls, rec: dict) -> "CellRecord":
        names = set(cls.columns())
        known = {k: v for k, v in rec.items() if k in names}
        known.setdefault("sampler", "ddim")
        return cls(**known, extra={k: v for k, v in rec.items() if k not in names})

    @property
    def cell(self) -> Cell:
        return Cell(self.steps, self.eta, self.variance, self.skip, self.clip_x0, self.sampler)

    def row(self) -> list[Any]:
        return [getattr(self, c) for c in self.columns()]


def measured_fields(scores: dict, intervals: dict, *, n_samples: int, n_scored: int, seconds: float, nfe: int,
                    nfe_predicted: int, flops_per_call: float | None, peak_mem_mb: float, world_size: int,
                    device: str, device_name: str, timings: dict) -> dict:
    """A record's measured part: the scores and their intervals, and what the cell cost (``seconds``: the
    sampling wall time, the slowest rank's; ``timings``: the scoring stages' seconds)."""
    return {**scores, **intervals, "n_scored": n_scored, "seconds": seconds, "sec_per_image": seconds / n_samples,
            "images_per_sec": n_samples / max(seconds, 1e-9), "nfe": nfe, "nfe_predicted": nfe_predicted,
            "flops_per_image": None if flops_per_call is None else flops_per_call * nfe,
            "peak_mem_mb": peak_mem_mb, "world_size": world_size, "device": device, "device_name": device_name,
            **timings}


def cell_record(key_fields: dict, key: str, measured: dict, *, sweep: str, sampler: str, scheduler: dict,
                checkpoint: dict, reference_split: str, reference_n: int, protocol: list, reference_file: str | None,
                feature_layers: dict) -> dict:
    """The record a sweep stores for one (cell, seed block): its key fields, its measured part
    (:func:`measured_fields`) and where it came from."""
    import time
    return {**key_fields, **measured, "scheduler": scheduler, "key": key, "sweep": sweep, "sampler": sampler,
            "checkpoint": checkpoint, "reference_split": reference_split, "reference_n": reference_n,
            "protocol": protocol, "reference_file": reference_file, "feature_layers": dict(feature_layers),
            "created": time.strftime("%Y-%m-%dT%H:%M:%S")}
