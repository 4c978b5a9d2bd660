"""What the benchmark modules share besides timing: the row type, the tiny model, options, table and JSON."""
from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import warnings
from dataclasses import asdict, dataclass, field

import torch

TINY = dict(in_channels=1, out_ch=1, ch=32, ch_mult=[1, 2], num_res_blocks=1, attn_resolutions=[4], dropout=0.0,
            resolution=8)
SCHEDULE = dict(num_timesteps=1000, schedule="linear", beta_start=1e-4, beta_end=0.02)


@dataclass
class Opts:
    """What every benchmark takes: smoke-run sizes or full ones, timed repeats, torch threads."""
    quick: bool = False
    repeats: int | None = None      # None: the benchmark's own default
    threads: int = 1

    def reps(self, full: int, quick: int) -> int:
        return self.repeats or (quick if self.quick else full)


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
        if self.extra.get("error"):
            return "ERROR"
        if self.value is None:
            return "SKIP"
        if self.goal is None:
            return "info"
        return "PASS" if self.value <= self.goal else "MISS"


def skip_row(key: str, label: str, why: str) -> Row:
    return Row(key, label, None, detail=f"skipped: {why}")


def tiny_unet(seed: int = 0):
    from ddim_bench.models.unet import UNet
    torch.manual_seed(seed)
    return UNet(**TINY).eval().requires_grad_(False)


def noise(n: int, seed: int = 1) -> torch.Tensor:
    return torch.randn(n, TINY["in_channels"], TINY["resolution"], TINY["resolution"],
                       generator=torch.Generator().manual_seed(seed))


def per_sample_generators(n: int, device="cpu") -> list[torch.Generator]:
    """One generator per sample, seeded by its index (what ``ddim.sample(generator=[...])`` takes)."""
    return [torch.Generator(device=device).manual_seed(i) for i in range(n)]


class StubModel(torch.nn.Module):
    """Returns a fixed ε: what is left of a sampling loop when the network costs nothing."""

    def __init__(self, like: torch.Tensor):
        super().__init__()
        self.eps = torch.randn_like(like) * 0.1

    def forward(self, x, t):
        return self.eps


def quiet_lightning() -> None:
    for name in ("pytorch_lightning", "lightning", "lightning.pytorch", "lightning.fabric", "lightning_fabric"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", module="pytorch_lightning|lightning|lightning_fabric")


def machine(threads: int) -> dict:
    return {"torch": torch.__version__, "python": platform.python_version(),
            "cpu": platform.processor() or platform.machine(), "cpu_count": os.cpu_count(),
            "usable_cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
            "threads": threads, "load_avg_start": list(os.getloadavg())}


def format_value(row: Row) -> str:
    if row.value is None:
        return "-"
    return {"%": f"{row.value:.1f} %", "us": f"{row.value:.0f} us"}.get(row.unit, f"{row.value:.3f}")


def format_goal(row: Row) -> str:
    return "" if row.goal is None else f"<= {row.goal:g}{' %' if row.unit == '%' else ''}"


def print_table(rows: list[Row], info: dict, quick: bool) -> None:
    mode = " (quick: smoke-run sizes, too small for the goals)" if quick else ""
    end = info.get("load_avg_end", info["load_avg_start"])
    print(f"ddim-bench perf{mode}: torch {info['torch']}, {info['threads']} thread(s) on "
          f"{info['usable_cpus']} usable CPUs, load average {info['load_avg_start'][0]:.1f} -> {end[0]:.1f}")
    width = max((len(r.label) for r in rows), default=0)
    for r in rows:
        print(f"{r.key:<5} {r.label:<{width}}  {format_value(r):>9}  {format_goal(r):>8}  {r.status}")
        if r.detail:
            print(f"{'':<5}   {r.detail}")


def write_json(path: str, rows: list[Row], info: dict, opts: Opts) -> None:
    from ddim_bench.io import atomic_write
    blob = {"quick": opts.quick, "machine": info, "options": asdict(opts),
            "rows": [{**asdict(r), "status": r.status} for r in rows]}
    atomic_write(path, json.dumps(blob, indent=1, default=list) + "\n")


def arg_parser(description: str, out: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--out", default=os.path.join("outputs", out), help="JSON results (written atomically)")
    p.add_argument("--quick", action="store_true", help="small sizes and few repeats: a smoke run")
    p.add_argument("--threads", type=int, default=1,
                   help="torch.set_num_threads for every figure (default 1: on a shared machine more threads stall "
                        "at OpenMP barriers whenever another process holds a core; use all cores on a quiet one)")
    p.add_argument("--repeats", type=int, default=None, help="timed repeats per figure (the median is reported)")
    return p


def opts_from(args: argparse.Namespace) -> Opts:
    torch.set_num_threads(args.threads)
    return Opts(quick=args.quick, repeats=args.repeats, threads=args.threads)


def main_for(rows_fn, description: str, out: str, argv=None) -> list[Row]:
    """The command line of one benchmark module: run it, print its table, write its JSON."""
    args = arg_parser(description, out).parse_args(argv)
    opts = opts_from(args)
    info = machine(opts.threads)
    rows = rows_fn(opts)
    info["load_avg_end"] = list(os.getloadavg())
    print_table(rows, info, opts.quick)
    write_json(args.out, rows, info, opts)
    print(f"written {args.out}")
    return rows
