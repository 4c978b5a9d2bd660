"""What a sampler costs: network calls counted (``CallCounter``) and FLOPs per call (``flops_per_call``)."""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode


class CallCounter(nn.Module):
    """Wraps ``model(x, t)`` and counts its forward calls (NFE) and the batch rows they carried."""

    def __init__(self, model):
        super().__init__()
        self.model = model  # an nn.Module is registered as a submodule; a plain callable is kept as is
        self.calls = 0
        self.rows = 0

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        self.rows += int(x.shape[0])
        return self.model(x, t)

    def reset(self) -> None:
        self.calls = 0
        self.rows = 0


def flops_per_call(model, x_shape: Sequence[int], device, t: int = 0) -> int:
    """FLOPs of one network call per image: ``FlopCounterMode`` over ``model(x, t)`` on a batch of
    ``x_shape`` (batch first), divided by the batch.  It counts matmul/convolution/attention FLOPs
    (2 per multiply-add); element-wise ops are not counted."""
    x_shape = tuple(int(v) for v in x_shape)
    if len(x_shape) < 1 or x_shape[0] < 1:
        raise ValueError(f"x_shape must start with a batch size >= 1, got {x_shape}")
    params = list(model.parameters()) if isinstance(model, nn.Module) else []
    dtype = params[0].dtype if params else torch.float32
    x = torch.zeros(x_shape, dtype=dtype, device=device)
    tt = torch.full((x_shape[0],), int(t), dtype=torch.long, device=device)
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        model(x, tt)
    return counter.get_total_flops() // x_shape[0]
