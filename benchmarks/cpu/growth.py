"""Growth: sampling time per image-step and peak RSS over N and S, each configuration in a fresh process.

Goals: time linear in N·S (time/(N·S) within 25 % over the grid), memory flat in S (RSS growth while
sampling does not grow with the number of steps).
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
from pathlib import Path

import torch

from benchmarks.common import SCHEDULE, Opts, Row, main_for, noise, tiny_unet
from benchmarks.timing import median, timed

ROOT = Path(__file__).resolve().parents[2]
SIZES = {"full": dict(n=(250, 500, 1000), steps=(10, 50), repeats=3),
         "quick": dict(n=(32, 64), steps=(2, 4), repeats=1)}
# glibc raises its mmap threshold as large blocks are freed, after which freed activations stay in the heap and
# the RSS peak creeps up with the number of allocations (run length) rather than with live tensors.  The memory
# worker fixes the threshold so that its RSS follows the live tensors; timings come from a default process.
FIXED_MALLOC = {"MALLOC_MMAP_THRESHOLD_": str(128 * 1024)}


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


def worker(n: int, steps: int, repeats: int) -> dict:
    """One configuration, in its own process: the median sampling time and the peak RSS while sampling."""
    from ddim_bench.sampling import ddim
    model, x_T = tiny_unet(), noise(n)
    alphas, taus = ddim.alphas_cumprod(**SCHEDULE), ddim.timesteps(1000, steps)
    ddim.sample(model, x_T[:8], alphas, taus[:2])  # warm-up on a small batch
    windowed = reset_peak_rss()  # else the peak is the whole process's, imports included
    before = proc_status_mb("VmRSS") or 0.0
    seconds = [timed(lambda: ddim.sample(model, x_T, alphas, taus)) for _ in range(repeats)]
    peak = peak_rss_mb()
    return {"n": n, "steps": steps, "seconds": median(seconds), "rss_before_mb": before, "peak_rss_mb": peak,
            "growth_mb": peak - before, "peak_window": "sampling" if windowed else "process"}


def run_worker(n: int, steps: int, threads: int, repeats: int, env: dict | None = None) -> dict:
    cmd = [sys.executable, "-m", "benchmarks.cpu.growth", "--worker", str(n), str(steps), "--threads", str(threads),
           "--repeats", str(repeats)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, cwd=ROOT, env={**os.environ, **(env or {})})
    return json.loads(out.stdout.strip().splitlines()[-1])


def growth_run(n: int, steps: int, threads: int, repeats: int) -> dict:
    timing = run_worker(n, steps, threads, repeats)
    memory = run_worker(n, steps, threads, 1, FIXED_MALLOC)
    return {**timing, "default_malloc_growth_mb": timing["growth_mb"], "growth_mb": memory["growth_mb"],
            "peak_rss_mb": memory["peak_rss_mb"]}


def growth_row(i: int, r: dict, ref: dict) -> Row:
    per_image_step = r["seconds"] / (r["n"] * r["steps"])
    return Row(f"5.{i}", f"growth N={r['n']:>4} S={r['steps']:>2}: time/(N*S), 1 = N={ref['n']} S={ref['steps']}",
               per_image_step / (ref["seconds"] / (ref["n"] * ref["steps"])),
               detail=f"{r['seconds']:.2f} s; RSS +{r['growth_mb']:.0f} MB while sampling "
                      f"(+{r['default_malloc_growth_mb']:.0f} MB with glibc's adaptive mmap threshold)", extra=r)


def memory_flatness(runs: list[dict], ns, steps) -> float:
    by = {(r["n"], r["steps"]): r["growth_mb"] for r in runs}
    lo, hi = steps[0], steps[-1]
    return max(max(by[(n, hi)], 1.0) / max(by[(n, lo)], 1.0) for n in ns)


def rows(opts: Opts) -> list[Row]:
    size = SIZES["quick" if opts.quick else "full"]
    ns, steps = size["n"], size["steps"]
    runs = [growth_run(n, s, opts.threads, opts.repeats or size["repeats"]) for n in ns for s in steps]
    out = [growth_row(i, r, runs[-1]) for i, r in enumerate(runs, 1)]
    norm = [row.value for row in out]
    out.append(Row("5a", "growth: time linear in N*S (max / min of time/(N*S))", max(norm) / min(norm), 1.25))
    out.append(Row("5b", f"growth: memory flat in S (max over N of RSS growth S={steps[-1]} / S={steps[0]})",
                   memory_flatness(runs, ns, steps), 1.10))
    return out


def main(argv=None):
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument("--worker", nargs=2, type=int)
    known, rest = p.parse_known_args(argv)
    if known.worker:  # one configuration in this fresh process: print its JSON line
        w = argparse.ArgumentParser()
        w.add_argument("--threads", type=int, default=1)
        w.add_argument("--repeats", type=int, default=1)
        args = w.parse_args(rest)
        torch.set_num_threads(args.threads)
        print(json.dumps(worker(*known.worker, repeats=args.repeats)))
        return None
    return main_for(rows, __doc__.splitlines()[0], "perf-growth.json", rest)


if __name__ == "__main__":
    main()
