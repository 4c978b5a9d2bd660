"""Seeded generation for one sampler cell, split over ranks.

Sample i's x_T and step noise come from its own counter-keyed stream (``noise.SampleNoise`` keyed by
(seed, i)), so a sample does not depend on batch size or the number of processes.
"""
from __future__ import annotations

import time

import torch

from ddim_bench.sampling import ddim
from ddim_bench.images import to_uint8_rgb
from ddim_bench.sampling.cell import Cell
from ddim_bench.sampling.noise import SampleNoise


def initial_noise(seed: int, indices, shape, device) -> torch.Tensor:
    """x_T of samples ``indices`` under ``seed`` (float32, [len(indices), *shape]), as ``generate`` draws it."""
    return SampleNoise(seed, indices, shape, device).initial()


def rank_indices(n: int, rank: int, world: int) -> list[int]:
    """Disjoint sample indices for one rank (strided, so every rank gets the same count ±1)."""
    return list(range(rank, n, world))


def generate(model, alphas, cell: Cell, indices, shape, seed: int, batch_size: int, device, on_batch=None) -> dict:
    """Sample ``indices`` with the cell's sampler; ``on_batch(images_uint8, idx)`` sees each batch.

    Returns the sampling seconds (warm-up batch excluded), the images made, the network calls per sample counted
    by a wrapper around the model (``nfe``) and the sampler's formula for them (``nfe_predicted``).
    """
    from ddim_bench.sampling.cost import CallCounter
    from ddim_bench.sampling.samplers import run_sampler
    counter = CallCounter(model)
    stochastic = not cell.deterministic

    def run(idx):
        noise = SampleNoise(seed, idx, shape, device)
        if cell.sampler == "ddim":
            taus = ddim.timesteps(alphas.numel(), cell.steps, cell.skip)
            return ddim.sample(counter, noise.initial(), alphas, taus, eta=cell.eta, variance=cell.variance,
                               clip_x0=cell.clip_x0, generator=noise if stochastic else None)
        return run_sampler(cell.sampler, counter, noise.initial(), alphas, cell.steps, skip=cell.skip,
                           eta=cell.eta, clip_x0=cell.clip_x0, generator=noise if stochastic else None)

    if indices:  # warm-up batch, not timed
        run(indices[: min(len(indices), batch_size, 8)])
    sync(device)
    seconds, done, calls = 0.0, 0, None
    for b in range(0, len(indices), batch_size):
        idx = indices[b:b + batch_size]
        counter.reset()
        t0 = time.perf_counter()
        x0 = run(idx)
        sync(device)
        seconds += time.perf_counter() - t0
        calls = counter.calls
        done += len(idx)
        if on_batch is not None:
            on_batch(to_uint8_rgb(x0).cpu(), idx)
    predicted = calls_per_image(cell, alphas.numel())
    return {"seconds": seconds, "images": done, "nfe": calls if calls is not None else predicted,
            "nfe_predicted": predicted}


def calls_per_image(cell: Cell, num_timesteps: int) -> int:
    """The sampler's formula for its network calls per sample (NFE): ddim's distinct τ, else the registry's for
    the distinct τ of the cell's grid (the other samplers run on it with repeats dropped: quad, S ≥ 30)."""
    from ddim_bench.sampling.samplers import get_spec
    taus = ddim.timesteps(num_timesteps, cell.steps, cell.skip)
    if cell.sampler == "ddim":
        return ddim.model_calls(taus)
    return get_spec(cell.sampler).nfe(len(set(taus)))


def sync(device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)
