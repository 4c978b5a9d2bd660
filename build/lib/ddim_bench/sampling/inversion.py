"""The paper's inversion tasks as plain functions (§5.3–5.4): encode → decode reconstruction, and the η = 0
decoding of slerp paths between seeded x_T.  No Hydra, no files: the apps do those."""
from __future__ import annotations

import time

import torch

from ddim_bench.sampling import ddim
from ddim_bench.sampling.generate import sync


def timed(fn, device):
    """``fn()`` and the wall seconds it took (CUDA synchronised)."""
    sync(device)
    t0 = time.perf_counter()
    out = fn()
    sync(device)
    return out, time.perf_counter() - t0


def reconstruct(model, images: torch.Tensor, alphas: torch.Tensor, taus: list[int], batch_size: int,
                device) -> tuple[torch.Tensor, float, float]:
    """Encode then decode ``images`` along ``taus`` in batches: (reconstructions, encode s, decode s)."""
    outs, enc_s, dec_s = [], 0.0, 0.0
    for b in range(0, len(images), batch_size):
        x0 = images[b:b + batch_size].to(device)
        x_T, t_enc = timed(lambda: ddim.encode(model, x0, alphas, taus), device)
        rec, t_dec = timed(lambda: ddim.sample(model, x_T, alphas, taus, eta=0.0), device)
        outs.append(rec.cpu())
        enc_s, dec_s = enc_s + t_enc, dec_s + t_dec
    return torch.cat(outs), enc_s, dec_s


def to_unit(x: torch.Tensor) -> torch.Tensor:
    """[−1, 1] → [0, 1] (no clamping)."""
    return (x.double() + 1) / 2


def reconstruction_errors(images: torch.Tensor, recs: torch.Tensor) -> dict:
    """Per-dimension squared error on the [0, 1] scale: the mean (as in Table 2), its spread over images and the
    per-image values (for paired comparisons across S: the same images at every S).

    ``mse`` compares the reconstruction clamped to the image range (what an image file holds);
    ``mse_unclamped`` is the raw ODE output's error.
    """
    ref = to_unit(images)
    per_image = (to_unit(recs.clamp(-1, 1)) - ref).pow(2).flatten(1).mean(1)
    raw = (to_unit(recs) - ref).pow(2).flatten(1).mean(1)
    return {"mse": per_image.mean().item(),
            "mse_std": per_image.std().item() if len(per_image) > 1 else 0.0,
            "mse_min": per_image.min().item(), "mse_max": per_image.max().item(),
            "mse_unclamped": raw.mean().item(), "mse_per_image": per_image.tolist()}


def interpolation_latents(seed: int, pairs: int, points: int, shape, device) -> torch.Tensor:
    """[pairs, points, C, H, W]: slerp from x_T of sample 2p to that of sample 2p+1 (the sweep's seeding)."""
    from ddim_bench.sampling.generate import initial_noise
    ends = initial_noise(seed, range(2 * pairs), shape, device)
    z0, z1 = ends[0::2], ends[1::2]
    path = [ddim.slerp(z0, z1, a) for a in torch.linspace(0, 1, points, dtype=torch.float64).tolist()]
    return torch.stack(path, dim=1)


def decode(model, x_T: torch.Tensor, alphas, taus, batch_size: int) -> torch.Tensor:
    """η = 0 decoding of ``x_T`` in batches; returns CPU images in [−1, 1]."""
    return torch.cat([ddim.sample(model, x_T[b:b + batch_size], alphas, taus, eta=0.0).clamp(-1, 1).cpu()
                      for b in range(0, len(x_T), batch_size)])
