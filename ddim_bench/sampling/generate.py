"""Seeded generation for one sampler cell, split over ranks.

Sample i always starts from x_T drawn from its own generator seeded by (base seed, i), and the same
generator supplies its step noise, so a sample does not depend on batch size or the number of processes.
"""
from __future__ import annotations

import sys
import time
import torch

from ddim_bench.sampling import ddim
from ddim_bench.images import to_uint8_rgb
from ddim_bench.sampling.cell import Cell


def sample_seed(base: int, index: int) -> int:
    return (int(base) * 1_000_003 + int(index)) % (2 ** 63 - 1)


def generators(base: int, indices, device) -> list[torch.Generator]:
    return [torch.Generator(device=device).manual_seed(sample_seed(base, i)) for i in indices]


def initial_noise(gens, shape, device) -> torch.Tensor:
    """x_T for each sample from its own generator; shape is [C, H, W]."""
    out = torch.empty((len(gens), *shape), device=device)
    for i, g in enumerate(gens):
        torch.randn(shape, generator=g, out=out[i], device=device)
    return out


def rank_indices(n: int, rank: int, world: int) -> list[int]:
    """Disjoint sample indices for one rank (strided, so every rank gets the same count ±1)."""
    return list(range(rank, n, world))


def generate(model, alphas, cell: Cell, indices, shape, seed: int, batch_size: int, device,
             on_batch=None, log_prefix: str = "") -> dict:
    """Sample ``indices``; ``on_batch(images_uint8, idx)`` sees each batch. Returns timing figures."""
    taus = ddim.timesteps(alphas.numel(), cell.steps, cell.skip)
    stochastic = not cell.deterministic

    def run(idx):
        gens = generators(seed, idx, device)
        x_T = initial_noise(gens, shape, device)
        return ddim.sample(model, x_T, alphas, taus, eta=cell.eta, variance=cell.variance,
                                clip_x0=cell.clip_x0, generator=gens if stochastic else None)

    if indices:  # warm-up batch, not timed
        run(indices[: min(len(indices), batch_size, 8)])
    sync(device)
    seconds, done = 0.0, 0
    for b in range(0, len(indices), batch_size):
        idx = indices[b:b + batch_size]
        t0 = time.perf_counter()
        x0 = run(idx)
        sync(device)
        seconds += time.perf_counter() - t0
        done += len(idx)
        if on_batch is not None:
            on_batch(to_uint8_rgb(x0).cpu(), idx)
        print(f"\r{log_prefix}{done}/{len(indices)} images, {done / max(seconds, 1e-9):.1f} img/s",
              end="", file=sys.stderr, flush=True)
    if indices:
        print(file=sys.stderr, flush=True)
    return {"seconds": seconds, "images": done, "nfe": ddim.model_calls(taus)}


def sync(device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)
