"""Interval coverage: do the 95 % intervals contain the answer 95 % of the time, and is their SE the real spread?

Not a timed test: it prints one Markdown row per (method, d, N, quantity) with the coverage of nominal 95 %
intervals over independent simulated seed blocks and the median interval SE over the sd of the point values
across blocks (``ddim_bench.scoring.coverage``: Gaussian features, a fixed reference, E[metric at N] by Monte
Carlo; FD∞ against the analytic Fréchet distance).  Goal: coverage 93–97 %, SE ratio 0.85–1.15.

    python -m benchmarks.cpu.interval_coverage                       # the subset method, every row of docs/intervals.md
    python -m benchmarks.cpu.interval_coverage --method bootstrap    # the percentile bootstrap it replaced
    python -m benchmarks.cpu.interval_coverage --d 64 --n 250 --families fid paired --blocks 50   # a part
"""
from __future__ import annotations

import argparse
import os
import time

import torch

from ddim_bench.scoring import coverage as C

FAMILIES = ("fid", "kid", "prc", "paired")
HEADER = ("| method | d | N | quantity | blocks | coverage | SE / sd | SE cv | mean | answer | s |\n"
          "|---|---|---|---|---|---|---|---|---|---|---|")


def rows(method: str, d: int, n: int, family: str, blocks: int, partitions: int, replicates: int) -> list[str]:
    cfg = C.Config(d=d, n=n, blocks=blocks, mc=blocks, m_ref=max(2000, 2 * d) if family in ("kid", "prc") else 5000)
    t0 = time.perf_counter()
    res = (C.paired(cfg, method, partitions, replicates) if family == "paired"
           else C.per_record(cfg, family, method, partitions, replicates))
    s = time.perf_counter() - t0
    out = []
    for key, r in res.items():
        name = {"delta": "paired Δ FID", "combined": f"Δ FID, mean of {cfg.combine} blocks",
                "fid_inf": "FD∞ (vs limit)"}.get(key, key)
        out.append(f"| {method} | {d} | {n} | {name} | {r['blocks']} | {r['coverage']:.1%} | {r['se_ratio']:.2f} | "
                   f"{r['se_cv']:.2f} | {r['mean']:.4g} | {r['truth']:.4g} | {s:.0f} |")
    return out


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--method", choices=("subsets", "bootstrap"), default="subsets")
    p.add_argument("--d", type=int, nargs="+", default=[64, 2048])
    p.add_argument("--n", type=int, nargs="+", default=[250, 1000, 5000])
    p.add_argument("--families", nargs="+", choices=FAMILIES, default=list(FAMILIES))
    p.add_argument("--blocks", type=int, default=200)
    p.add_argument("--partitions", type=int, default=16)
    p.add_argument("--replicates", type=int, default=200, help="bootstrap replicates (--method bootstrap)")
    a = p.parse_args(argv)
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    print(HEADER, flush=True)
    for d in a.d:
        for n in a.n:
            for fam in a.families:
                for line in rows(a.method, d, n, fam, a.blocks, a.partitions, a.replicates):
                    print(line, flush=True)


if __name__ == "__main__":
    main()
