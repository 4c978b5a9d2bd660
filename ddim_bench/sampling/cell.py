"""``Cell``: one sampler setting of a sweep, the single value that the grid, the store, the report and W&B share."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Cell:
    steps: int
    eta: float
    variance: str = "eta"
    skip: str = "uniform"
    clip_x0: bool = False

    @property
    def deterministic(self) -> bool:
        return self.variance == "eta" and self.eta == 0

    def label(self) -> str:
        v = "σ̂" if self.variance == "hat" else f"η={self.eta:g}"
        return f"S={self.steps} {v} {self.skip}"
