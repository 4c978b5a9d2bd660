"""GPU check, part 3: the CIFAR-10 UNet (official config, random weights) sampling at a batch that fills the GPU.

For each fast-path switch added in turn (fp32, bf16, + channels_last, + compile, + CUDA graphs) it times the
bare network call (the floor) and ``ddim.sample`` at each S, interleaved in one run, and reports images/s, the
ratio to the floor, and the achieved FLOP/s (FlopCounterMode on one network call) as a share of the GPU's peak;
η = 1 (the harness's per-sample noise) beside η = 0, and the same loop through diffusers beside ours
(benchmarks/gpu/loops.py).
"""
from __future__ import annotations

import copy
import time

import torch

from benchmarks.common import SCHEDULE, TINY
from benchmarks.gpu.common import Budget, Ctx, num, pct, seeded_batch, table
from benchmarks.gpu.env import fp32_peak_key
from benchmarks.gpu.loops import diffusers_rows
from benchmarks.timing import interleaved, median, median_ratio, timed
from ddim_bench.models import fast
from ddim_bench.models.checkpoint import OFFICIAL_CIFAR10_MODEL
from ddim_bench.models.unet import UNet
from ddim_bench.sampling import ddim

LADDER = [("fp32", {}), ("bf16", {"bf16": True}), ("+ channels_last", {"bf16": True, "channels_last": True}),
          ("+ compile", {"bf16": True, "channels_last": True, "compile": True}),
          ("+ CUDA graphs", {"bf16": True, "channels_last": True, "compile": True, "compile_mode": "reduce-overhead"})]
FLOOR_CALLS = 3            # bare network calls per floor measurement
SAMPLER_SLACK = 1.15       # estimate: a sampling step costs at most this many floor calls


class Run:
    """The state shared by the ladder's rows: model, batch, inputs, schedule, FLOPs per call."""

    def __init__(self, ctx: Ctx, base: torch.nn.Module, batch: int, shape):
        self.ctx, self.base, self.batch, self.shape = ctx, base, batch, shape
        self.x = torch.randn(batch, *shape, generator=torch.Generator().manual_seed(0)).to(ctx.device)
        self.t = torch.full((batch,), 500, dtype=torch.long, device=ctx.device)
        self.alphas = ddim.alphas_cumprod(**SCHEDULE)
        self.x_noise, self.gens = seeded_batch(0, list(range(batch)), shape, ctx.device)
        self.flops = flops_per_call(base, self.x, self.t)
        self.compile_seconds: float | None = None
        self.per_call: dict[str, float] = {}   # floor seconds per network call, by configuration

    def sampler(self, model, steps: int, eta: float = 0.0):
        taus = ddim.timesteps(1000, steps)
        if eta:
            return lambda: ddim.sample(model, self.x_noise, self.alphas, taus, eta=eta, generator=self.gens)
        return lambda: ddim.sample(model, self.x, self.alphas, taus)

    def floor(self, model):
        @torch.no_grad()
        def bare():
            for _ in range(FLOOR_CALLS):
                model(self.x, self.t)
        return bare


def flops_per_call(model, x, t) -> int:
    from torch.utils.flop_counter import FlopCounterMode
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(x, t)
    return counter.get_total_flops()


def choose_batch(ctx: Ctx, base, shape, candidates: list[int], lines: list[str]) -> int:
    """The largest candidate whose fp32 forward peaks under --mem-fraction of the GPU's memory."""
    if not ctx.cuda:
        return candidates[0]
    total = torch.cuda.get_device_properties(ctx.device).total_memory
    for b in sorted(candidates, reverse=True):
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(ctx.device)
        try:
            x = torch.randn(b, *shape, device=ctx.device)
            with torch.no_grad():
                base(x, torch.zeros(b, dtype=torch.long, device=ctx.device))
            torch.cuda.synchronize()
        except torch.cuda.OutOfMemoryError:
            lines.append(f"batch {b}: out of memory")
            continue
        peak = torch.cuda.max_memory_allocated(ctx.device)
        lines.append(f"batch {b}: fp32 forward peaks at {peak / 2 ** 30:.1f} of {total / 2 ** 30:.0f} GiB")
        if peak <= ctx.args.mem_fraction * total:
            return b
    return min(candidates)


def allowed(ctx: Ctx, label: str, switches: dict, lines: list[str]) -> bool:
    if switches.get("compile") and not ctx.cuda:
        lines.append(f"skipped: {label}: no compile in the --quick/CPU run")
        return False
    if switches.get("bf16") and ctx.cuda and not torch.cuda.is_bf16_supported():
        lines.append(f"skipped: {label}: this GPU has no bfloat16")
        return False
    return True


def measure(run: Run, budget: Budget, label: str, switches: dict, share: float, out: dict) -> torch.nn.Module | None:
    """One rung of the ladder: warm-up (compile), floor, then each S that fits in ``share`` seconds."""
    args, ctx = run.ctx.args, run.ctx
    model = fast.wrap(copy.deepcopy(run.base), switches, ctx.device)
    t0 = time.perf_counter()
    run.sampler(model, 2)()  # compiles, autotunes, records CUDA graphs
    run.sampler(model, 2)()
    warm = time.perf_counter() - t0
    if switches.get("compile"):
        run.compile_seconds = warm
    per_call = run.per_call[label] = timed(run.floor(model)) / FLOOR_CALLS
    peak_key = "bf16" if switches.get("bf16") else fp32_peak_key()
    peak = ctx.peak.get(peak_key)
    out["floors"].append([label, num(warm), num(per_call * 1e3), num(run.batch / per_call),
                          num(run.flops / per_call / 1e12), pct(run.flops / per_call / peak if peak else None),
                          f"{peak_key} {peak / 1e12:g}" if peak else "unknown"])
    start = time.perf_counter()
    for steps in args.steps:
        calls, with_eta1 = ddim.model_calls(ddim.timesteps(1000, steps)), steps == args.eta1_steps
        estimate = args.repeats * (calls * (2 if with_eta1 else 1) + FLOOR_CALLS) * per_call * SAMPLER_SLACK
        if time.perf_counter() - start + estimate > share or not budget.fits(estimate):
            budget.skip(f"{label} S={steps}", estimate)
            continue
        fns = {"sample": run.sampler(model, steps), "floor": run.floor(model)}
        if with_eta1:
            fns["eta1"] = run.sampler(model, steps, eta=1.0)
        t = interleaved(fns, args.repeats, warmup=0)
        floor_run = [f / FLOOR_CALLS * calls for f in t["floor"]]
        sec = median(t["sample"])
        achieved = run.flops * calls / sec
        out["rows"].append([label, steps, num(run.batch / sec), num(run.batch / median(floor_run)),
                            num(median_ratio(t["sample"], floor_run)), num(achieved / 1e12),
                            pct(achieved / peak if peak else None),
                            num(median_ratio(t["eta1"], t["sample"])) if with_eta1 else "-"])
    return model


def run(ctx: Ctx, budget: Budget) -> dict:
    args, lines = ctx.args, []
    cfg = TINY if ctx.quick else OFFICIAL_CIFAR10_MODEL
    torch.manual_seed(0)
    base = UNet(**cfg).eval().requires_grad_(False).to(ctx.device)
    shape = (cfg["in_channels"], cfg["resolution"], cfg["resolution"])
    batch = choose_batch(ctx, base, shape, args.batches, lines)
    r = Run(ctx, base, batch, shape)
    lines.append(f"model: {'tiny UNet (--quick)' if ctx.quick else 'CIFAR-10 UNet, official config'}, "
                 f"{sum(p.numel() for p in base.parameters()) / 1e6:.1f} M parameters, random weights; batch {batch}; "
                 f"{r.flops / batch / 1e9:.2f} GFLOP per image per network call (FlopCounterMode)")
    ladder = [(label, sw) for label, sw in LADDER if allowed(ctx, label, sw, lines)]
    out, models = {"floors": [], "rows": []}, {}
    for i, (label, switches) in enumerate(ladder):
        compile_est = (r.compile_seconds or args.compile_guess) if switches.get("compile") else 0.0
        later = sum(r.compile_seconds or args.compile_guess for _, sw in ladder[i + 1:] if sw.get("compile"))
        share = (budget.left() - later - compile_est) / (len(ladder) - i)
        if share <= 0 or not budget.fits(compile_est + later):
            budget.skip(f"{label} (compile and warm-up)", compile_est)
            continue
        try:
            models[label] = measure(r, budget, label, switches, share, out)
        except Exception as err:  # noqa: BLE001 - e.g. no C compiler for torch.compile: the other rungs still run
            lines.append(f"error: {label}: {type(err).__name__}: {str(err).strip().splitlines()[0][:300]}")
    ran = list(models)  # diffusers beside the first and the fastest configuration that ran
    diffusers = diffusers_rows(r, budget, [ran[0], ran[-1]] if ran else [], models)
    return {"tables": [
        table(f"Network floor per configuration (B={batch})",
              ["config", "compile + warm-up s", "floor ms/call", "floor img-calls/s", "TFLOP/s", "of peak", "peak"],
              out["floors"]),
        table(f"sample() images/s, fast-path switches cumulative (B={batch}; eta=1 uses per-sample noise)",
              ["config", "S", "img/s", "floor img/s", "sample / floor", "TFLOP/s", "of peak", "eta=1 / eta=0"],
              out["rows"]),
        diffusers], "lines": lines}
