"""A stand-in ε-network for measuring the harness at scale without a GPU (``checkpoint=stand-in``).

It has the CIFAR-10 UNet's interface and shapes — ``model(x [B, 3, 32, 32], t [B]) → ε [B, 3, 32, 32]``, the
paper's linear schedule with T = 1000 — but is one 1×1 convolution with fixed seeded weights, so a sweep's time
and memory are the harness's own (sampler, scoring, intervals, store, W&B) and not the network's.  Its numbers
mean nothing: it is for benchmarks (``benchmarks/paper_scale.py``), never for results.
"""
from __future__ import annotations

import hashlib

import torch

NAME = "stand-in"
SHAPE = (3, 32, 32)
SCHEDULE = dict(num_timesteps=1000, schedule="linear", beta_start=0.0001, beta_end=0.02)
SEED = 0


class StandInEps(torch.nn.Module):
    """ε(x, t) = a 1×1 convolution of x (fixed random weights, seed ``SEED``) scaled by a smooth function of t."""

    def __init__(self, channels: int = SHAPE[0]):
        super().__init__()
        g = torch.Generator().manual_seed(SEED)
        self.conv = torch.nn.Conv2d(channels, channels, 1)
        with torch.no_grad():
            self.conv.weight.copy_(torch.randn(self.conv.weight.shape, generator=g) * 0.3)
            self.conv.bias.zero_()

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        scale = 0.5 + 0.5 * torch.cos(t.to(x.dtype) / 1000 * torch.pi)
        return self.conv(x) * scale.reshape(-1, 1, 1, 1)


def is_stand_in(path) -> bool:
    return path == NAME


def loaded():
    """The :class:`checkpoint.Loaded` of ``checkpoint=stand-in`` (no file: the weights are made from the seed)."""
    from ddim_bench.models.checkpoint import Loaded
    digest = hashlib.sha256(f"{NAME}|{SHAPE}|seed={SEED}".encode()).hexdigest()
    return Loaded({}, {"in_channels": SHAPE[0], "resolution": SHAPE[1]}, dict(SCHEDULE),
                  {"kind": NAME, "weights": "ema", "sha256": digest, "path": NAME}, arch=NAME)
