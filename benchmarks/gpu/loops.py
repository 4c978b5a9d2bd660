"""GPU check, part 3b: the same sampling loop through diffusers' DDIMScheduler beside ``ddim.sample``, η = 0,
on the same (fast-path) network, batch and x_T, timed interleaved; outputs compared."""
from __future__ import annotations

import importlib.util

from benchmarks.gpu.common import Budget, num, table
from benchmarks.timing import interleaved, median, median_ratio
from ddim_bench.sampling import ddim

COLUMNS = ["config", "S", "ours img/s", "diffusers img/s", "ours / diffusers (time)", "max |diff| / max |x|"]


def diffusers_rows(run, budget: Budget, labels: list[str], models: dict) -> dict:
    title = "ddim.sample beside a diffusers DDIMScheduler loop (eta=0)"
    args, rows, lines = run.ctx.args, [], []
    if importlib.util.find_spec("diffusers") is None:
        return {**table(title, COLUMNS, []), "lines": ["skipped: diffusers is not installed"]}
    from benchmarks.cpu.diffusers_loop import diffusers_sample, diffusers_scheduler
    steps = args.diffusers_steps
    sched = diffusers_scheduler(run.alphas, steps)
    taus = ddim.timesteps(1000, steps)
    if sorted(sched.timesteps.tolist()) != taus:
        return {**table(title, COLUMNS, []), "lines": ["skipped: diffusers' 'leading' grid differs from ours"]}
    for label in dict.fromkeys(labels):
        model = models.get(label)
        if model is None:
            lines.append(f"skipped: {label}: its configuration did not run")
            continue
        estimate = (args.repeats + 1) * 2 * ddim.model_calls(taus) * run.per_call[label] * 1.2
        if not budget.fits(estimate):
            budget.skip(f"diffusers loop beside ours, {label}", estimate)
            continue
        try:
            ours = ddim.sample(model, run.x, run.alphas, taus)
            theirs = diffusers_sample(model, sched, run.x)
            rel = ((ours - theirs).abs().max() / ours.abs().max()).item()
            t = interleaved({"ours": lambda: ddim.sample(model, run.x, run.alphas, taus),
                             "diffusers": lambda: diffusers_sample(model, sched, run.x)}, args.repeats, warmup=0)
        except Exception as err:  # noqa: BLE001 - reported; the other configuration still runs
            lines.append(f"error: {label}: {type(err).__name__}: {str(err).strip().splitlines()[0][:300]}")
            continue
        rows.append([label, steps, num(run.batch / median(t["ours"])), num(run.batch / median(t["diffusers"])),
                     num(median_ratio(t["ours"], t["diffusers"])), num(rel)])
    return {**table(title, COLUMNS, rows), "lines": lines}
