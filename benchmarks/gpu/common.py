"""What the GPU-check parts share: the run's context, each part's time budget, number formatting."""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch


class Budget:
    """A part's wall-clock allowance.  ``fits(estimate)`` says whether work estimated from a first measurement
    still fits; ``skip`` records the line that says why something did not run."""

    def __init__(self, seconds: float):
        self.seconds, self.start, self.lines = float(seconds), time.perf_counter(), []

    def used(self) -> float:
        return time.perf_counter() - self.start

    def left(self) -> float:
        return self.seconds - self.used()

    def fits(self, estimate: float) -> bool:
        return estimate <= self.left()

    def skip(self, what: str, estimate: float | None = None) -> None:
        est = f"estimated {estimate:.0f} s, " if estimate is not None else ""
        self.lines.append(f"skipped: {what} ({est}{max(self.left(), 0):.0f} s left of this part's "
                          f"{self.seconds:.0f} s budget)")


@dataclass
class Ctx:
    """The run: device, --quick, the parsed arguments, the output folder; parts add what later parts need."""
    device: torch.device
    quick: bool
    args: object
    out: str
    peak: dict = field(default_factory=dict)
    notes: list = field(default_factory=list)

    @property
    def cuda(self) -> bool:
        return self.device.type == "cuda"


def num(value, digits: int = 3) -> str:
    """A number for a table cell: 3 significant digits, '-' for None."""
    if value is None:
        return "-"
    if isinstance(value, str):
        return value
    if value != 0 and (abs(value) >= 1e5 or abs(value) < 1e-3):
        return f"{value:.{digits - 1}e}"
    return f"{value:.{digits}g}"


def pct(value) -> str:
    return "-" if value is None else f"{100 * value:.1f} %"


def table(title: str, columns: list[str], rows: list[list]) -> dict:
    return {"title": title, "columns": columns, "rows": rows}


class no_tf32:
    """Full fp32 in convolutions and matmuls inside the block (TF32 changes the last bits of CPU/GPU checks)."""

    def __enter__(self):
        self.saved = (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32)
        torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False

    def __exit__(self, *exc):
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = self.saved


def seeded_batch(seed: int, indices: list[int], shape, device):
    """x_T and the ``generator=`` argument of ``ddim.sample`` for samples ``indices``, built as the harness's
    ``generate.generate`` builds them (its counter-based per-sample noise).  The one place to change when
    ``ddim_bench.sampling.generate``'s seeding API changes."""
    from ddim_bench.sampling import generate
    noise = generate.SampleNoise(seed, indices, shape, device)
    return noise.initial(), noise
