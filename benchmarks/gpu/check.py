"""``make gpu-check``: one prepared script for a GPU machine — environment, correctness on the device, the
CIFAR-10 UNet's sampling throughput along the fast path, and the apps end to end; a JSON and a Markdown table.

Each part has its own time budget and skips, with a line, what a first measurement says would overrun.  With
--quick, and on a machine without CUDA, it runs a small CPU version of the same code paths (tiny model, small
batch, S in {2, 4}, no compile, a few training steps), so the script is exercised by the tests.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
import traceback
from pathlib import Path

if __package__ in (None, ""):  # run as a file (python benchmarks/gpu/check.py): make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import torch  # noqa: E402

from benchmarks.gpu import apps, correct, env, speed  # noqa: E402
from benchmarks.gpu.common import Budget, Ctx  # noqa: E402
from benchmarks.gpu.report import markdown  # noqa: E402

PARTS = {"env": ("1. Environment", env.run, None),
         "correctness": ("2. Correctness on the device", correct.run, "budget_correct"),
         "speed": ("3. CIFAR-10 UNet sampling throughput", speed.run, "budget_speed"),
         "apps": ("4. End to end through the apps", apps.run, "budget_apps")}
# sizes of the GPU run, and of the small CPU version (--quick, or no CUDA)
FULL = dict(batches=[512, 256], steps=[10, 50, 100], eta1_steps=10, diffusers_steps=50, repeats=3,
            train_steps=300, sweep_n=1000, sweep_steps=[10, 50], sweep_eta=[0.0, 1.0], logger=None, train_extra=[])
QUICK = dict(batches=[16], steps=[2, 4], eta1_steps=4, diffusers_steps=4, repeats=2,
             train_steps=4, sweep_n=32, sweep_steps=[2], sweep_eta=[0.0], logger="none",
             train_extra=["trainer.precision=32-true", "data.batch_size=16", "callbacks.sample_grid.n=4",
                          "callbacks.sample_grid.steps=2"])


def csv(kind):
    return lambda text: [kind(v) for v in text.split(",") if v]


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default=os.environ.get("GPU_CHECK_OUT") or os.path.join("outputs", "gpu-check"),
                   help="folder for gpu-check.json and gpu-check.md (default: $GPU_CHECK_OUT, else %(default)s)")
    p.add_argument("--quick", action="store_true", help="the small CPU version (also chosen when there is no CUDA)")
    p.add_argument("--parts", nargs="+", choices=list(PARTS), default=list(PARTS))
    p.add_argument("--total-budget", type=float, default=420, help="seconds for all parts together")
    p.add_argument("--budget-correct", type=float, default=30)
    p.add_argument("--budget-speed", type=float, default=270)
    p.add_argument("--budget-apps", type=float, default=120)
    p.add_argument("--batches", type=csv(int), help="candidate batches, the largest that fits is used (512,256)")
    p.add_argument("--mem-fraction", type=float, default=0.5, help="largest share of GPU memory a forward may take")
    p.add_argument("--steps", type=csv(int), help="S values of the throughput table (10,50,100)")
    p.add_argument("--eta1-steps", type=int, help="the S at which eta=1 is timed beside eta=0 (10)")
    p.add_argument("--diffusers-steps", type=int, help="the S of the diffusers loop beside ours (50)")
    p.add_argument("--repeats", type=int, help="interleaved timed repeats; medians are reported (3)")
    p.add_argument("--compile-guess", type=float, default=60, help="seconds a torch.compile is assumed to take "
                   "before one has been measured")
    p.add_argument("--experiment", default="mnist", help="the preset trained and swept by the apps part")
    p.add_argument("--train-steps", type=int)
    p.add_argument("--sweep-n", type=int, help="samples per sweep cell")
    p.add_argument("--sweep-steps", type=csv(int))
    p.add_argument("--sweep-eta", type=csv(float))
    p.add_argument("--logger", help="logger=... override for the apps (default: theirs; none in --quick)")
    p.add_argument("--train-extra", nargs="*", help="more overrides for ddim-bench-train")
    p.add_argument("--work", default=os.path.join("outputs", "gpu-check-work"), help="the apps' run folders")
    args = p.parse_args(argv)
    args.no_cuda = not torch.cuda.is_available()
    args.quick = args.quick or args.no_cuda
    for key, value in (QUICK if args.quick else FULL).items():
        if getattr(args, key, None) is None:
            setattr(args, key, value)
    return args


def run_part(name: str, ctx: Ctx, total: Budget, later: list[str]) -> dict:
    """One part, within its own budget and what the total leaves once the later parts' budgets are set aside."""
    title, fn, budget_key = PARTS[name]
    kept = sum(getattr(ctx.args, PARTS[n][2]) for n in later if PARTS[n][2])
    seconds = max(min(getattr(ctx.args, budget_key), total.left() - kept), 0) if budget_key else max(total.left(), 1)
    budget = Budget(seconds)
    print(f"[gpu-check] {title}: budget {seconds:.0f} s", file=sys.stderr, flush=True)
    part = {"title": title, "budget": round(seconds, 1), "tables": [], "lines": []}
    if seconds <= 0:
        part.update(status="skipped", lines=[f"skipped: {title}: no time left of the total budget"])
        return part
    try:
        part.update(fn(ctx, budget))
        part["status"] = "fail" if part.get("failed") else "ok"
    except Exception as err:  # noqa: BLE001 - one part's failure is reported; the others still run
        traceback.print_exc()
        part.update(status="error", error=f"{type(err).__name__}: {err}"[:500])
        part["lines"] = part["lines"] + [f"error: {part['error']}"]
    part["lines"] = part["lines"] + budget.lines
    errors = [ln for ln in part["lines"] + [ln for t in part["tables"] for ln in t.get("lines", [])]
              if ln.startswith("error:")]
    if errors and part["status"] == "ok":
        part["status"] = "partial"  # some rows failed (their error lines say why), the others are there
    if not any(t["rows"] for t in part["tables"]) and part["status"] == "ok":
        part["status"] = "skipped"
    part["seconds"] = round(budget.used(), 1)
    return part


def main(argv=None) -> int:
    args = parse_args(argv)
    device = torch.device("cpu" if args.quick else "cuda")
    ctx = Ctx(device=device, quick=args.quick, args=args, out=args.out)
    total = Budget(args.total_budget)
    if args.no_cuda:
        ctx.notes.append("no CUDA device: running the --quick CPU version")
    result = {"created": time.strftime("%Y-%m-%dT%H:%M:%S"), "quick": args.quick, "device": str(device),
              "notes": ctx.notes, "arguments": {k: v for k, v in vars(args).items()}, "parts": {}}
    for i, name in enumerate(args.parts):
        result["parts"][name] = run_part(name, ctx, total, args.parts[i + 1:])
    result["wall_seconds"] = round(total.used(), 1)
    from ddim_bench.io import atomic_write
    md = markdown(result)
    atomic_write(os.path.join(args.out, "gpu-check.json"), json.dumps(result, indent=1, default=str) + "\n")
    atomic_write(os.path.join(args.out, "gpu-check.md"), md)
    print(md)
    print(f"written {os.path.join(args.out, 'gpu-check.json')} and gpu-check.md")
    return 1 if any(p["status"] in ("error", "fail", "partial") for p in result["parts"].values()) else 0


if __name__ == "__main__":
    sys.exit(main())
