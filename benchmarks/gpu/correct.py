"""GPU check, part 2: correctness on the device.

* ``ddim.sample`` on the device equals the CPU run (same weights; η = 0 from the same x_T, η = 1 with the
  harness's per-sample noise drawn on each device) within tolerance;
* per-sample noise (the harness's seeding, η = 1) gives the same images at batch 1 and at batch 64.

Both run in full fp32 (TF32 off), so the tolerance can be tight: 1e-4 of the largest |x|.
"""
from __future__ import annotations

import copy
import time

import torch

from benchmarks.common import SCHEDULE, TINY
from benchmarks.gpu.common import Budget, Ctx, no_tf32, num, seeded_batch, table
from ddim_bench.images import to_uint8_rgb
from ddim_bench.models.unet import UNet
from ddim_bench.sampling import ddim

SMALL = dict(in_channels=3, out_ch=3, ch=32, ch_mult=[1, 2, 2], num_res_blocks=1, attn_resolutions=[8],
             dropout=0.0, resolution=16)
SIZES = {"full": dict(model=SMALL, batch=16, steps=20, big=64, eta_steps=10, picks=[0, 1, 31, 63]),
         "quick": dict(model=TINY, batch=4, steps=5, big=8, eta_steps=3, picks=[0, 7])}
RTOL = 1e-4


def small_model(cfg: dict) -> torch.nn.Module:
    torch.manual_seed(0)
    return UNet(**cfg).eval().requires_grad_(False)


def check_row(name: str, a: torch.Tensor, b: torch.Tensor, extra: str = "") -> list:
    diff, scale = (a - b).abs().max().item(), b.abs().max().item()
    tol = RTOL * max(scale, 1.0)
    return [name, num(diff), num(scale), num(tol), "PASS" if diff <= tol else "FAIL", extra]


def device_vs_cpu(ctx: Ctx, size: dict, eta: float) -> list:
    """η = 0 from the same x_T; η = 1 with the harness's per-sample noise drawn on each device."""
    model = small_model(size["model"])
    shape = (size["model"]["in_channels"], size["model"]["resolution"], size["model"]["resolution"])
    alphas, taus = ddim.alphas_cumprod(**SCHEDULE), ddim.timesteps(1000, size["steps"])
    indices = list(range(size["batch"]))
    x_T, gen = seeded_batch(0, indices, shape, "cpu")
    on_cpu = ddim.sample(model, x_T, alphas, taus, eta=eta, generator=gen if eta else None)
    if eta:
        x_T, gen = seeded_batch(0, indices, shape, ctx.device)
    on_dev = ddim.sample(copy.deepcopy(model).to(ctx.device), x_T.to(ctx.device), alphas, taus, eta=eta,
                         generator=gen if eta else None).cpu()
    what = "per-sample noise drawn on each device" if eta else "same x_T"
    return check_row(f"sample() on {ctx.device} vs cpu, eta={eta:g} ({what}), B={size['batch']}, S={size['steps']}",
                     on_dev, on_cpu, "" if ctx.cuda else "no GPU: cpu against itself")


def batch_invariance(ctx: Ctx, size: dict) -> list:
    model = small_model(size["model"]).to(ctx.device)
    shape = (size["model"]["in_channels"], size["model"]["resolution"], size["model"]["resolution"])
    alphas, taus = ddim.alphas_cumprod(**SCHEDULE), ddim.timesteps(1000, size["eta_steps"])

    def run(indices):
        x_T, gen = seeded_batch(0, indices, shape, ctx.device)
        return ddim.sample(model, x_T, alphas, taus, eta=1.0, generator=gen).cpu()

    big = run(list(range(size["big"])))
    picks = [i for i in size["picks"] if i < size["big"]]
    singles = torch.cat([run([i]) for i in picks])
    same = (to_uint8_rgb(big[picks]) == to_uint8_rgb(singles)).flatten(1).all(1).sum().item()
    return check_row(f"per-sample noise on {ctx.device}, eta=1, S={size['eta_steps']}: batch 1 vs batch {size['big']}",
                     singles, big[picks], f"samples {picks}: {same}/{len(picks)} uint8 images identical")


def run(ctx: Ctx, budget: Budget) -> dict:
    size = dict(SIZES["quick" if ctx.quick else "full"])
    rows = []
    with no_tf32():
        t0 = time.perf_counter()
        rows.append(device_vs_cpu(ctx, size, 0.0))
        first = time.perf_counter() - t0
        rows.append(device_vs_cpu(ctx, size, 1.0))
        estimate = first * size["big"] * size["eta_steps"] / max(size["batch"] * size["steps"], 1) * 2
        if budget.fits(estimate):
            rows.append(batch_invariance(ctx, size))
        else:
            budget.skip("batch-1 vs batch-64 noise check", estimate)
    cols = ["check", "max |diff|", "max |x|", "tolerance", "status", "note"]
    return {"tables": [table("Correctness (fp32, TF32 off)", cols, rows)],
            "failed": [r[0] for r in rows if r[4] != "PASS"]}
