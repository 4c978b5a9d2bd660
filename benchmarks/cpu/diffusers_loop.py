"""``ddim.sample`` beside the same loop written with diffusers' ``DDIMScheduler``: same UNet, same x_T.

2a: whole sampling run, ours ÷ diffusers (outputs checked equal at η = 0);
2b: the loops alone (a stub network that costs nothing), µs per step side by side.
"""
from __future__ import annotations

import importlib.util

import torch

from benchmarks.common import (SCHEDULE, Opts, Row, StubModel, main_for, noise, per_sample_generators, skip_row,
                               tiny_unet)
from benchmarks.timing import interleaved, interleaved_per_call, median, median_ratio
from ddim_bench.sampling import ddim

SIZES = {"full": dict(batch=256, steps=50), "quick": dict(batch=64, steps=10)}


def diffusers_scheduler(alphas: torch.Tensor, steps: int):
    """diffusers' DDIMScheduler on our schedule, with the paper's uniform ("leading") timesteps."""
    from diffusers import DDIMScheduler
    prev = torch.cat([torch.ones(1, dtype=alphas.dtype), alphas[:-1]])
    betas = (1 - alphas / prev).numpy()
    sched = DDIMScheduler(num_train_timesteps=len(alphas), trained_betas=betas, timestep_spacing="leading",
                          set_alpha_to_one=True, clip_sample=False, steps_offset=0, prediction_type="epsilon")
    sched.set_timesteps(steps)
    return sched


@torch.no_grad()
def diffusers_sample(model, scheduler, x_T: torch.Tensor, eta: float = 0.0, generator=None) -> torch.Tensor:
    """The textbook diffusers loop; each step's t becomes a batch of t on x's device (what our network takes)."""
    x = x_T
    for t in scheduler.timesteps:
        eps = model(x, torch.full((len(x),), int(t), dtype=torch.long, device=x.device))
        x = scheduler.step(eps, t, x, eta=eta, generator=generator).prev_sample
    return x


def max_diffs(model, sched, x_T, alphas, taus) -> dict:
    """Max |ours − diffusers| at η = 0 (asserted close) and at η = 1 with the same per-sample generators."""
    ours, theirs = ddim.sample(model, x_T, alphas, taus), diffusers_sample(model, sched, x_T)
    scale = ours.abs().max().item()
    torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-4 * scale)
    out = {"eta0": (ours - theirs).abs().max().item(), "scale": scale, "eta1": None}
    try:  # per-sample generator lists: the η = 1 noise of both loops is then the same numbers
        n, dev = len(x_T), x_T.device
        ours1 = ddim.sample(model, x_T, alphas, taus, eta=1.0, generator=per_sample_generators(n, dev))
        theirs1 = diffusers_sample(model, sched, x_T, eta=1.0, generator=per_sample_generators(n, dev))
        out["eta1"] = (ours1 - theirs1).abs().max().item()
    except (TypeError, ValueError) as err:  # the sampler no longer takes generator lists
        out["eta1_error"] = str(err).splitlines()[0]
    return out


def rows(opts: Opts) -> list[Row]:
    size = SIZES["quick" if opts.quick else "full"]
    batch, steps, repeats = size["batch"], size["steps"], opts.reps(5, 3)
    label = f"sample / diffusers DDIMScheduler loop, eta=0, B={batch}, S={steps}"
    if importlib.util.find_spec("diffusers") is None:
        return [skip_row("2a", label, "diffusers is not installed (pip install -e .[dev])")]
    model, x_T = tiny_unet(), noise(batch)
    alphas, taus = ddim.alphas_cumprod(**SCHEDULE), ddim.timesteps(1000, steps)
    sched = diffusers_scheduler(alphas, steps)
    assert sorted(sched.timesteps.tolist()) == taus, "diffusers' 'leading' grid differs from uniform"
    diffs = max_diffs(model, sched, x_T, alphas, taus)
    t = interleaved({"ours": lambda: ddim.sample(model, x_T, alphas, taus),
                     "diffusers": lambda: diffusers_sample(model, sched, x_T)}, repeats)
    stub = StubModel(x_T)
    loop = interleaved_per_call({"ours": lambda: ddim.sample(stub, x_T, alphas, taus),
                                 "diffusers": lambda: diffusers_sample(stub, sched, x_T)}, max(repeats, 5))
    eta1 = f"{diffs['eta1']:.2e}" if diffs["eta1"] is not None else f"n/a ({diffs.get('eta1_error')})"
    return [Row("2a", label, median_ratio(t["ours"], t["diffusers"]), 0.97,
                detail=f"max |ours - diffusers| eta=0: {diffs['eta0']:.2e}, eta=1 per-sample gens: {eta1} "
                       f"(|x| up to {diffs['scale']:.0f})", extra={"times": t, "max_abs_diff": diffs}),
            Row("2b", "sampler loop alone / diffusers loop alone, stub network",
                median_ratio(loop["ours"], loop["diffusers"]),
                detail=f"{median(loop['ours']) / steps * 1e6:.0f} vs {median(loop['diffusers']) / steps * 1e6:.0f} "
                       f"us/step (torch.utils.benchmark, interleaved)", extra={"seconds_per_run": loop})]


def main(argv=None):
    return main_for(rows, __doc__.splitlines()[0], "perf-diffusers.json", argv)


if __name__ == "__main__":
    main()
