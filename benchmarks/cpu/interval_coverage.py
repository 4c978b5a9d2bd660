"""Interval coverage: do the 95 % intervals contain the answer 95 % of the time, and is their SE the real spread?

Not a timed test: it prints one Markdown row per (method, d, N, quantity) with the coverage of nominal 95 %
intervals over independent simulated seed blocks and the median interval SE over the sd of the point values
across blocks (``ddim_bench.scoring.coverage``: Gaussian features, a fixed reference, E[metric at N] by Monte
Carlo; FD∞ against the analytic Fréchet distance).  Goal: coverage 93–97 %, SE ratio 0.85–1.15.

    python -m benchmarks.cpu.interval_coverage                       # the subset method, every row of docs/intervals.md
    python -m benchmarks.cpu.interval_coverage --method bootstrap    # the percentile bootstrap it replaced
    python -m benchmarks.cpu.interval_coverage --d 64 --n 250 --families fid paired --blocks 50   # a part
    python -m benchmarks.cpu.interval_coverage --records RESULTS_DIR   # a sweep's seed blocks of one cell

``--records``: the row on a real model, from a sweep of one cell over many seed blocks (``grid=none``,
``seeds=[0,…,29]``): each block's interval against the mean over blocks.
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


def record_rows(results_dir: str) -> list[str]:
    """One row per metric of the single cell whose seed blocks are stored under ``results_dir``."""
    from ddim_bench.results.store import ResultStore
    recs = ResultStore(results_dir).records()
    cells = {tuple(r.get(k) for k in ("sampler", "steps", "eta", "variance", "skip", "n_samples")) for r in recs}
    if len(cells) != 1 or len(recs) < 3:
        raise SystemExit(f"--records: need one cell's records of >= 3 seed blocks under {results_dir}/cells, "
                         f"got {len(recs)} records of {len(cells)} cells")
    (cell,) = cells
    return [f"| {cell} | {r['blocks']} blocks | {k} | {r['coverage']:.1%} of the mean | SE / sd {r['se_ratio']:.2f} "
            f"| mean {r['mean']:.4g} | sd {r['sd']:.4g} |" for k, r in C.over_blocks(recs).items()]


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--method", choices=("subsets", "bootstrap"), default="subsets")
    p.add_argument("--d", type=int, nargs="+", default=[64, 2048])
    p.add_argument("--n", type=int, nargs="+", default=[250, 1000, 5000])
    p.add_argument("--families", nargs="+", choices=FAMILIES, default=list(FAMILIES))
    p.add_argument("--blocks", type=int, default=200)
    p.add_argument("--partitions", type=int, default=16)
    p.add_argument("--replicates", type=int, default=200, help="bootstrap replicates (--method bootstrap)")
    p.add_argument("--records", help="a results folder: the coverage row of its one cell's seed blocks")
    a = p.parse_args(argv)
    if a.records:
        print("\n".join(record_rows(a.records)))
        return
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    print(HEADER, flush=True)
    for d in a.d:
        for n in a.n:
            for fam in a.families:
                for line in rows(a.method, d, n, fam, a.blocks, a.partitions, a.replicates):
                    print(line, flush=True)


if __name__ == "__main__":
    main()
