"""What a sweep stores per (cell, seed block): the key fields, and ``CellRecord``, which owns the column list.

A record is a JSON object on disk (see :mod:`ddim_bench.evaluation.store`); ``CellRecord`` is its typed view:
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
