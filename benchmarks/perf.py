"""``ddim-bench-perf``: how much the harness costs on top of the network, as side-by-side ratios.

Every figure is a ratio of two things timed in this one process (or, for growth, the same worker run per
configuration), interleaved A, B, A, B … after a warm-up; the figure is the median over repeats of the
per-repeat ratio, so load that drifts between repeats touches both sides alike.  Rows:

1. sampler overhead: ``ddim.sample`` ÷ (model calls × one bare forward of the same batch);
2. ``sample`` ÷ a diffusers ``DDIMScheduler`` loop on the same UNet and x_T (outputs checked equal at η = 0);
3. the Lightning training step ÷ a plain PyTorch loop (same model, batch, optimizer), steady state;
4. evaluation: the share of a one-cell sweep's wall time spent outside sampling;
5. growth: sampling time per image-step and peak RSS over N and S, each configuration in a fresh process.
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import importlib.util
import json
import logging
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from dataclasses import asdict, dataclass, field

import torch

from ddim_bench.sampling import ddim
from ddim_bench.models.unet import UNet

TINY = dict(in_channels=1, out_ch=1, ch=32, ch_mult=[1, 2], num_res_blocks=1, attn_resolutions=[4], dropout=0.0,
            resolution=8)
SCHEDULE = dict(num_timesteps=1000, schedule="linear", beta_start=1e-4, beta_end=0.02)
SECTIONS = ("sampler", "diffusers", "training", "evaluation", "growth")


@dataclass
class Settings:
    threads: int
    repeats: int = 5
    warmup: int = 1
    batch: int = 256
    steps: int = 50
    train_batch: int = 128
    train_steps: int = 40
    train_skip: int = 5
    eval_n: int = 1000
    eval_steps: int = 50
    eval_repeats: int = 3
    growth_n: tuple = (250, 500, 1000)
    growth_steps: tuple = (10, 50)
    growth_repeats: int = 3

    @classmethod
    def quick(cls, threads: int) -> "Settings":
        return cls(threads, repeats=3, batch=64, steps=10, train_batch=32, train_steps=10, train_skip=3,
                   eval_n=100, eval_steps=5, eval_repeats=1, growth_n=(32, 64), growth_steps=(2, 4), growth_repeats=1)


@dataclass
class Row:
    key: str
    label: str
    value: float | None
    goal: float | None = None          # the value must be <= goal; None: reported, not judged
    unit: str = "x"
    detail: str = ""
    extra: dict = field(default_factory=dict)

    @property
    def status(self) -> str:
        if self.value is None:
            return "SKIP"
        if self.goal is None:
            return "info"
        return "PASS" if self.value <= self.goal else "MISS"


# ---------------------------------------------------------------------------------------------- timing


def timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def interleaved(fns: dict, repeats: int, warmup: int) -> dict[str, list[float]]:
    """Seconds per call of each function, run in turn (A, B, A, B …) after ``warmup`` untimed rounds."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    times = {k: [] for k in fns}
    for _ in range(repeats):
        for k, fn in fns.items():
            times[k].append(timed(fn))
    return times


def median_ratio(num: list[float], den: list[float]) -> float:
    return statistics.median(a / b for a, b in zip(num, den))


def tiny_unet(seed: int = 0) -> UNet:
    torch.manual_seed(seed)
    return UNet(**TINY).eval().requires_grad_(False)


def noise(n: int, seed: int = 1) -> torch.Tensor:
    return torch.randn(n, TINY["in_channels"], TINY["resolution"], TINY["resolution"],
                       generator=torch.Generator().manual_seed(seed))


def per_sample_generators(n: int) -> list[torch.Generator]:
    return [torch.Generator().manual_seed(i) for i in range(n)]


class StubModel(torch.nn.Module):
    """Returns a fixed ε: what is left of a sampling loop when the network costs nothing."""

    def __init__(self, like: torch.Tensor):
        super().__init__()
        self.eps = torch.randn_like(like) * 0.1

    def forward(self, x, t):
        return self.eps


# ---------------------------------------------------------------------------------------------- 1. sampler


class CallClock(torch.nn.Module):
    """Wraps a model: adds up the wall time of its calls and, if asked, keeps a copy of their inputs."""

    def __init__(self, model, record: bool = False):
        super().__init__()
        self.model, self.seconds, self.record, self.inputs = model, 0.0, record, []

    def forward(self, x, t):
        if self.record:
            self.inputs.append((x.clone(), t.clone()))
        t0 = time.perf_counter()
        out = self.model(x, t)
        self.seconds += time.perf_counter() - t0
        return out


def recorded_inputs(model, x_T, alphas, taus, eta) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The (x, t) of every model call of one sampling run (same per-sample generator seeds as timed)."""
    rec = CallClock(model, record=True)
    gens = per_sample_generators(len(x_T)) if eta else None
    ddim.sample(rec, x_T, alphas, taus, eta=eta, generator=gens)
    return rec.inputs


def bench_sampler(s: Settings) -> list[Row]:
    """``sample`` against the same network calls on the same inputs, replayed without the sampler."""
    model, x_T = tiny_unet(), noise(s.batch)
    alphas, taus = ddim.alphas_cumprod(**SCHEDULE), ddim.timesteps(1000, s.steps)
    rows = []
    for tag, eta in (("a", 0.0), ("b", 1.0)):
        inputs = recorded_inputs(model, x_T, alphas, taus, eta)
        clock, in_model = CallClock(model), []

        def run():
            clock.seconds = 0.0
            gens = per_sample_generators(s.batch) if eta else None
            ddim.sample(clock, x_T, alphas, taus, eta=eta, generator=gens)
            in_model.append(clock.seconds)

        @torch.no_grad()
        def bare():
            for x, t in inputs:
                model(x, t)

        t = interleaved({"sample": run, "bare": bare}, s.repeats, s.warmup)
        in_model = in_model[s.warmup:]
        fwd_ms = statistics.median(t["bare"]) / len(inputs) * 1e3
        rows.append(Row(f"1{tag}", f"sampler overhead eta={eta:g}{' per-sample gens' if eta else ''}: "
                                   f"sample / ({len(inputs)} x forward), B={s.batch}",
                        median_ratio(t["sample"], t["bare"]), 1.03,
                        detail=f"sample {statistics.median(t['sample']):.2f} s, bare forward {fwd_ms:.1f} ms/call "
                               f"(same inputs, replayed); same run split: sample / its own network calls = "
                               f"{median_ratio(t['sample'], in_model):.4f}",
                        extra={"times": t, "network_seconds_in_sample": in_model}))
    rows += loop_alone_rows(s, x_T, alphas, taus)
    return rows


def loop_alone_rows(s: Settings, x_T, alphas, taus) -> list[Row]:
    """µs per step of ``sample`` with a stub network: the sampler's own cost (info rows)."""
    stub, rows = StubModel(x_T), []
    for tag, eta in (("c", 0.0), ("d", 1.0)):
        gens = per_sample_generators(s.batch) if eta else None
        t = interleaved({"loop": lambda: ddim.sample(stub, x_T, alphas, taus, eta=eta, generator=gens)},
                        max(s.repeats, 5), 1)["loop"]
        rows.append(Row(f"1{tag}", f"sampler loop alone eta={eta:g}, stub network (us/step)",
                        statistics.median(t) / len(taus) * 1e6, unit="us"))
    return rows


# ---------------------------------------------------------------------------------------------- 2. diffusers


def diffusers_scheduler(alphas: torch.Tensor):
    from diffusers import DDIMScheduler
    prev = torch.cat([torch.ones(1, dtype=alphas.dtype), alphas[:-1]])
    betas = (1 - alphas / prev).numpy()
    return DDIMScheduler(num_train_timesteps=len(alphas), trained_betas=betas, timestep_spacing="leading",
                         set_alpha_to_one=True, clip_sample=False, steps_offset=0, prediction_type="epsilon")


@torch.no_grad()
def diffusers_sample(model, scheduler, x_T: torch.Tensor, eta: float = 0.0, generator=None) -> torch.Tensor:
    x = x_T
    for t in scheduler.timesteps:
        eps = model(x, t.expand(len(x)))
        x = scheduler.step(eps, t, x, eta=eta, generator=generator).prev_sample
    return x


def bench_diffusers(s: Settings) -> list[Row]:
    label = f"sample / diffusers DDIMScheduler loop, eta=0, B={s.batch}, S={s.steps}"
    if importlib.util.find_spec("diffusers") is None:
        return [Row("2a", label, None, 0.97, detail="skipped: diffusers is not installed (pip install -e .[dev])")]
    model, x_T = tiny_unet(), noise(s.batch)
    alphas, taus = ddim.alphas_cumprod(**SCHEDULE), ddim.timesteps(1000, s.steps)
    sched = diffusers_scheduler(alphas)
    sched.set_timesteps(s.steps)
    assert sorted(sched.timesteps.tolist()) == taus, "diffusers' leading spacing differs from uniform"
    diffs = equality_check(model, sched, x_T, alphas, taus)
    t = interleaved({"ours": lambda: ddim.sample(model, x_T, alphas, taus),
                     "diffusers": lambda: diffusers_sample(model, sched, x_T)}, s.repeats, s.warmup)
    stub = StubModel(x_T)
    loop = interleaved({"ours": lambda: ddim.sample(stub, x_T, alphas, taus),
                        "diffusers": lambda: diffusers_sample(stub, sched, x_T)}, max(s.repeats, 5), 1)
    return [Row("2a", label, median_ratio(t["ours"], t["diffusers"]), 0.97,
                detail=f"max |ours - diffusers| eta=0: {diffs[0]:.2e}, eta=1 per-sample gens: {diffs[1]:.2e} "
                       f"(|x| up to {diffs[2]:.0f})", extra={"times": t, "max_abs_diff": diffs[:2]}),
            Row("2b", "sampler loop alone / diffusers loop alone, stub network",
                median_ratio(loop["ours"], loop["diffusers"]),
                detail=f"{statistics.median(loop['ours']) / s.steps * 1e6:.0f} vs "
                       f"{statistics.median(loop['diffusers']) / s.steps * 1e6:.0f} us/step")]


def equality_check(model, sched, x_T, alphas, taus) -> tuple[float, float, float]:
    """Max |ours − diffusers| at η = 0 (asserted close) and at η = 1 with the same per-sample generators."""
    ours, theirs = ddim.sample(model, x_T, alphas, taus), diffusers_sample(model, sched, x_T)
    scale = ours.abs().max().item()
    torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-4 * scale)
    n = len(x_T)
    ours1 = ddim.sample(model, x_T, alphas, taus, eta=1.0, generator=per_sample_generators(n))
    theirs1 = diffusers_sample(model, sched, x_T, eta=1.0, generator=per_sample_generators(n))
    return (ours - theirs).abs().max().item(), (ours1 - theirs1).abs().max().item(), scale


# ---------------------------------------------------------------------------------------------- 3. training


def quiet_lightning() -> None:
    for name in ("pytorch_lightning", "lightning", "lightning.pytorch", "lightning.fabric", "lightning_fabric"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", module="pytorch_lightning|lightning|lightning_fabric")


def digits_loader(batch: int):
    from torch.utils.data import DataLoader
    from ddim_bench.data.modules import DigitsDataModule
    ds = DigitsDataModule().dataset("train")
    return DataLoader(ds, batch_size=batch, shuffle=True, drop_last=True, num_workers=0)


def steady_seconds_per_step(ends: list[float], skip: int) -> float:
    """Wall time per step from the end of step ``skip`` to the end of the last: startup excluded."""
    return (ends[-1] - ends[skip - 1]) / (len(ends) - skip)


def lightning_fit(module, loader, steps: int, root: str) -> list[float]:
    import pytorch_lightning as pl

    class Clock(pl.Callback):
        def __init__(self):
            self.ends = []

        def on_train_batch_end(self, *args):
            self.ends.append(time.perf_counter())

    clock = Clock()
    trainer = pl.Trainer(accelerator="cpu", devices=1, max_steps=steps, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                         default_root_dir=root, callbacks=[clock])
    trainer.fit(module, train_dataloaders=loader)
    return clock.ends


def plain_fit(module, loader, steps: int) -> list[float]:
    """The same step by hand: diffusion loss, zero_grad, backward, Adam step, LR-schedule step."""
    conf = module.configure_optimizers()
    opt, sched = conf["optimizer"], conf["lr_scheduler"]["scheduler"]
    module.train()
    ends, batches = [], iter(loader)
    while len(ends) < steps:
        batch = next(batches, None)
        if batch is None:
            batches = iter(loader)
            continue
        loss = module.diffusion_loss(batch[0])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        ends.append(time.perf_counter())
    return ends


def bench_training(s: Settings) -> list[Row]:
    from ddim_bench.training.module import DiffusionModule
    quiet_lightning()
    torch.manual_seed(0)
    base = DiffusionModule(TINY, SCHEDULE, lr=2e-4)
    loader = digits_loader(s.train_batch)
    per_step = {"lightning": [], "plain": []}
    with tempfile.TemporaryDirectory() as root:
        for r in range(s.repeats + s.warmup):
            lt = steady_seconds_per_step(lightning_fit(copy.deepcopy(base), loader, s.train_steps, root),
                                         s.train_skip)
            torch.set_num_threads(s.threads)
            pt = steady_seconds_per_step(plain_fit(copy.deepcopy(base), loader, s.train_steps), s.train_skip)
            if r >= s.warmup:
                per_step["lightning"].append(lt)
                per_step["plain"].append(pt)
    return [Row("3", f"Lightning training step / plain PyTorch step, B={s.train_batch}, steady state",
                median_ratio(per_step["lightning"], per_step["plain"]), 1.05,
                detail=f"{statistics.median(per_step['lightning']) * 1e3:.1f} vs "
                       f"{statistics.median(per_step['plain']) * 1e3:.1f} ms/step, steps {s.train_skip + 1}.."
                       f"{s.train_steps} of each fit", extra={"seconds_per_step": per_step})]


# ---------------------------------------------------------------------------------------------- 4. evaluation


@contextlib.contextmanager
def stopwatch(targets: dict[str, tuple[object, str]]):
    """Patch ``owner.name`` for each label with a wrapper adding its wall time to ``spent[label]``."""
    spent, saved = {k: 0.0 for k in targets}, []

    def timed_call(fn, label):
        def wrapper(*args, **kwargs):
            t0 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                spent[label] += time.perf_counter() - t0
        return wrapper

    for label, (owner, name) in targets.items():
        saved.append((owner, name, getattr(owner, name)))
        setattr(owner, name, timed_call(getattr(owner, name), label))
    try:
        yield spent
    finally:
        for owner, name, fn in reversed(saved):
            setattr(owner, name, fn)


def write_checkpoint(folder: str) -> str:
    """An untrained tiny UNet as a ddim-bench checkpoint (timing does not depend on the weights' quality)."""
    from ddim_bench.training.module import DiffusionModule
    torch.manual_seed(0)
    module = DiffusionModule(TINY, SCHEDULE)
    path = os.path.join(folder, "untrained.ckpt")
    torch.save({"state_dict": module.state_dict(), "hyper_parameters": dict(module.hparams), "global_step": 0}, path)
    return path


def compose_sweep(overrides: list[str]):
    from hydra import compose, initialize_config_dir
    from hydra.core.hydra_config import HydraConfig
    from ddim_bench import cli
    with initialize_config_dir(config_dir=str(cli.CONF_DIR), version_base="1.3"):
        cfg = compose("sweep", overrides=overrides, return_hydra_config=True)
    HydraConfig.instance().set_config(cfg)
    return cfg


def timed_sweep(folder: str, ckpt: str, n: int, steps: int) -> tuple[dict, float, dict]:
    """Run a one-cell sweep; returns its record, its wall seconds and the seconds spent in each part."""
    from ddim_bench.models import checkpoint
    from ddim_bench.evaluation import metrics
    from ddim_bench.evaluation import store
    from ddim_bench.apps import sweep
    from ddim_bench.tracking import runs as tracking_runs
    cfg = compose_sweep([f"checkpoint={ckpt}", f"paths.results_dir={folder}/results", f"hydra.run.dir={folder}/run",
                         f"n_samples={n}", f"sampler.steps={steps}", "sampler.eta=0.0", "grid=none",
                         "logger.wandb.mode=disabled"])
    parts = {"load checkpoint": (checkpoint, "load"), "build model": (checkpoint, "build_model"),
             "build scorer": (metrics.Scorer, "__init__"), "reference features (cache)": (metrics.Scorer, "reference"),
             "generate": (sweep, "generate"), "features": (metrics.Scorer, "features"),
             "score": (metrics.Scorer, "score"), "write record": (store.ResultStore, "put"),
             "write samples.png / tracker": (tracking_runs, "log_cell")}
    with stopwatch(parts) as spent:
        t0 = time.perf_counter()
        records = sweep.run_sweep(cfg)
        total = time.perf_counter() - t0
    return records[0], total, spent


def bench_evaluation(s: Settings) -> list[Row]:
    """The sweep whose share outside sampling is the median is reported, with its breakdown."""
    quiet_lightning()
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = write_checkpoint(tmp)
        with open(os.devnull, "w") as devnull, contextlib.redirect_stderr(devnull):  # progress lines
            timed_sweep(os.path.join(tmp, "warm"), ckpt, 20, 2)  # fills the classifier and reference caches
            for r in range(s.eval_repeats):
                record, total, spent = timed_sweep(os.path.join(tmp, f"timed{r}"), ckpt, s.eval_n, s.eval_steps)
                runs.append((100 * (total - record["seconds"]) / total, record, total, spent))
    share, record, total, spent = sorted(runs, key=lambda run: run[0])[len(runs) // 2]
    sampling = record["seconds"]
    in_cell = record["cell_seconds"] + spent["write record"] + spent["write samples.png / tracker"]
    breakdown = {"sampling (timed batches)": sampling, **spent, "whole sweep": total}
    shown = ", ".join(f"{k} {v:.2f}" for k, v in breakdown.items() if k not in ("generate", "whole sweep"))
    return [Row("4a", f"evaluation: share outside sampling, one-cell sweep, N={s.eval_n}, S={s.eval_steps}, digits",
                share, 10.0, unit="%", detail=f"whole sweep {total:.1f} s; {shown} s",
                extra={"seconds": breakdown, "shares": [run[0] for run in runs]}),
            Row("4b", "  same, per cell of a grid (setup shared by the cells left out)",
                100 * (in_cell - sampling) / in_cell, unit="%",
                detail=f"cell {in_cell:.1f} s, of which warm-up batch and features "
                       f"{spent['generate'] - sampling:.2f} s")]


# ---------------------------------------------------------------------------------------------- 5. growth


def proc_status_mb(field_name: str) -> float | None:
    """A memory line of /proc/self/status (VmRSS, VmHWM) in MiB; None where there is no /proc."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field_name + ":"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def reset_peak_rss() -> bool:
    """Start a new peak-RSS window (Linux: writing 5 to clear_refs resets VmHWM to the current RSS)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def peak_rss_mb() -> float:
    hwm = proc_status_mb("VmHWM")
    return hwm if hwm is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def growth_worker(n: int, steps: int, repeats: int) -> dict:
    """One configuration, in its own process: the median sampling time and the peak RSS while sampling."""
    model, x_T = tiny_unet(), noise(n)
    alphas, taus = ddim.alphas_cumprod(**SCHEDULE), ddim.timesteps(1000, steps)
    ddim.sample(model, x_T[:8], alphas, taus[:2])  # warm-up on a small batch
    windowed = reset_peak_rss()  # else the peak is the whole process's, imports included
    before = proc_status_mb("VmRSS") or 0.0
    seconds = [timed(lambda: ddim.sample(model, x_T, alphas, taus)) for _ in range(repeats)]
    peak = peak_rss_mb()
    return {"n": n, "steps": steps, "seconds": statistics.median(seconds), "rss_before_mb": before,
            "peak_rss_mb": peak, "growth_mb": peak - before, "peak_window": "sampling" if windowed else "process"}


# glibc raises its mmap threshold as large blocks are freed, after which freed activations stay in the heap and
# the RSS peak creeps up with the number of allocations (run length) rather than with live tensors.  The memory
# worker fixes the threshold so that its RSS follows the live tensors; timings come from a default process.
FIXED_MALLOC = {"MALLOC_MMAP_THRESHOLD_": str(128 * 1024)}


def run_growth_worker(n: int, steps: int, s: Settings, repeats: int, env: dict | None = None) -> dict:
    cmd = [sys.executable, "-m", "ddim_bench.perf", "--growth-worker", str(n), str(steps),
           "--threads", str(s.threads), "--repeats", str(repeats)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, env={**os.environ, **(env or {})})
    return json.loads(out.stdout.strip().splitlines()[-1])


def growth_run(n: int, steps: int, s: Settings) -> dict:
    timing = run_growth_worker(n, steps, s, s.growth_repeats)
    memory = run_growth_worker(n, steps, s, 1, FIXED_MALLOC)
    return {**timing, "default_malloc_growth_mb": timing["growth_mb"], "growth_mb": memory["growth_mb"],
            "peak_rss_mb": memory["peak_rss_mb"]}


def growth_row(i: int, r: dict, ref: dict) -> Row:
    per_image_step = r["seconds"] / (r["n"] * r["steps"])
    return Row(f"5.{i}", f"growth N={r['n']:>4} S={r['steps']:>2}: time/(N*S), 1 = N={ref['n']} S={ref['steps']}",
               per_image_step / (ref["seconds"] / (ref["n"] * ref["steps"])),
               detail=f"{r['seconds']:.2f} s; RSS +{r['growth_mb']:.0f} MB while sampling "
                      f"(+{r['default_malloc_growth_mb']:.0f} MB with glibc's adaptive mmap threshold)", extra=r)


def bench_growth(s: Settings) -> list[Row]:
    runs = [growth_run(n, steps, s) for n in s.growth_n for steps in s.growth_steps]
    rows = [growth_row(i, r, runs[-1]) for i, r in enumerate(runs, 1)]
    norm = [row.value for row in rows]
    rows.append(Row("5a", "growth: time linear in N*S (max / min of time/(N*S))", max(norm) / min(norm), 1.25))
    rows.append(Row("5b", f"growth: memory flat in S (max over N of RSS growth S={s.growth_steps[-1]} / "
                          f"S={s.growth_steps[0]})", memory_flatness(runs, s), 1.10))
    return rows


def memory_flatness(runs: list[dict], s: Settings) -> float:
    by = {(r["n"], r["steps"]): r["growth_mb"] for r in runs}
    lo, hi = s.growth_steps[0], s.growth_steps[-1]
    return max(max(by[(n, hi)], 1.0) / max(by[(n, lo)], 1.0) for n in s.growth_n)


# ---------------------------------------------------------------------------------------------- report


BENCHES = {"sampler": bench_sampler, "diffusers": bench_diffusers, "training": bench_training,
           "evaluation": bench_evaluation, "growth": bench_growth}


def machine(threads: int) -> dict:
    return {"torch": torch.__version__, "python": platform.python_version(), "cpu": platform.processor() or
            platform.machine(), "cpu_count": os.cpu_count(), "usable_cpus": len(os.sched_getaffinity(0)),
            "threads": threads, "load_avg_start": list(os.getloadavg())}


def format_value(row: Row) -> str:
    if row.value is None:
        return "-"
    return {"%": f"{row.value:.1f} %", "us": f"{row.value:.0f} us"}.get(row.unit, f"{row.value:.3f}")


def format_goal(row: Row) -> str:
    if row.goal is None:
        return ""
    return f"<= {row.goal:g}{' %' if row.unit == '%' else ''}"


def print_table(rows: list[Row], info: dict, quick: bool) -> None:
    mode = " (quick: smoke-run sizes, too small for the goals)" if quick else ""
    print(f"ddim-bench perf{mode}: torch {info['torch']}, {info['threads']} thread(s) on "
          f"{info['usable_cpus']} usable CPUs, load average {info['load_avg_start'][0]:.1f} -> "
          f"{info['load_avg_end'][0]:.1f}")
    width = max(len(r.label) for r in rows)
    for r in rows:
        print(f"{r.key:<5} {r.label:<{width}}  {format_value(r):>9}  {format_goal(r):>8}  {r.status}")
        if r.detail:
            print(f"{'':<5}   {r.detail}")


def write_json(path: str, rows: list[Row], info: dict, settings: Settings, quick: bool) -> None:
    from ddim_bench.io import atomic_write
    blob = {"quick": quick, "machine": info, "settings": asdict(settings),
            "rows": [{**asdict(r), "status": r.status} for r in rows]}
    atomic_write(path, json.dumps(blob, indent=1, default=list).encode())


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="ddim-bench-perf", description=__doc__.splitlines()[0])
    p.add_argument("--out", default=os.path.join("outputs", "perf.json"), help="JSON results (written atomically)")
    p.add_argument("--quick", action="store_true", help="small sizes and few repeats: a smoke run")
    p.add_argument("--threads", type=int, default=1,
                   help="torch.set_num_threads for every figure (default 1: on a shared machine more threads stall "
                        "at OpenMP barriers whenever another process holds a core; use all cores on a quiet one)")
    p.add_argument("--repeats", type=int, default=None, help="timed repeats per figure (median is reported)")
    p.add_argument("--only", nargs="+", choices=SECTIONS, default=list(SECTIONS), help="sections to run")
    p.add_argument("--growth-worker", nargs=2, type=int, metavar=("N", "S"), help=argparse.SUPPRESS)
    return p.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.growth_worker:
        print(json.dumps(growth_worker(*args.growth_worker, repeats=args.repeats or 1)))
        return
    settings = Settings.quick(args.threads) if args.quick else Settings(args.threads)
    if args.repeats:
        settings.repeats = args.repeats
    info, rows = machine(args.threads), []
    for name in args.only:
        torch.set_num_threads(args.threads)
        rows += BENCHES[name](settings)
        print(f"[{name} done]", file=sys.stderr, flush=True)
    info["load_avg_end"] = list(os.getloadavg())
    print_table(rows, info, args.quick)
    write_json(args.out, rows, info, settings, args.quick)
    print(f"written {args.out}")


if __name__ == "__main__":
    main()
