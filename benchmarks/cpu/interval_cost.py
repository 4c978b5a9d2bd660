"""What the subset intervals and FD∞ cost at N = 50 000 with 2048-d features, against a cell's own time.

Measures on this machine (float64, the threads given): one 2048-d ``eigvalsh``, the matmul rate, and
``subset_metrics(fid)`` (SE + FD∞) at a small N beside the old percentile bootstrap's FID at the same N; checks
a cost model (a subset of k samples costs min(k, d)·k·d multiply-adds for its covariance or Gram matrix and
one eigen-decomposition of min(k, d); 2 N d² per level for the whitened features) against the measured time,
then extrapolates it to N = 50 000 and divides by an assumed GPU cell time (stated; not measured here).
Side by side: at N/8 > d (as at N = 50 000, d = 2048) the eighths of every partition (before) against those of
``FD_PARTITIONS`` partitions (now: FD∞ uses only their mean), measured at a smaller d, and both extrapolated.

    python -m benchmarks.cpu.interval_cost [--n 1024] [--partitions 16] [--check-n 4104 --check-d 256]
"""
from __future__ import annotations

import argparse
import os
import statistics
import time

import torch

from ddim_bench.scoring import subsets as S
from ddim_bench.scoring import uncertainty as U

D = 2048
LAYERS = {"fid": "f"}
# A CIFAR-10 cell at N = 50 000 on one GPU: the DDPM UNet's 12.2 GFLOP per call (6.1 G multiply-adds) at an
# assumed 100 TFLOP/s sustained: S = 10 → 61 s, S = 100 → 610 s.
CELL_GPU_S = {10: 50_000 * 10 * 12.2e9 / 100e12, 100: 50_000 * 100 * 12.2e9 / 100e12}
GPU_FP64_FLOPS, GPU_EIG_S = 50e12, 0.04   # assumed H200 float64 matmul rate and one 2048-d syevd


def timed(fn, repeats=3) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def model(n: int, partitions: int, flops_rate: float, eig_s, d: int = D, eighths: int | None = None) -> float:
    """Seconds of subset_metrics(fid) under the cost model (``eig_s(k)``: one eigvalsh of size k); the eighths
    of ``eighths`` partitions (default :data:`S.FD_PARTITIONS`; none when N/8 <= d: FD∞ does not use them)."""
    eighths = min(partitions, S.FD_PARTITIONS if eighths is None else eighths)
    flops, t = 0.0, 0.0
    for j in range(1, 4):
        k = n // 8 * 8 // 2 ** j
        parts = partitions if j < 3 else (eighths if k > d else 0)
        flops += 2 * n * d * d * (parts > 0) + parts * 2 ** j * 2 * min(k, d) * k * d   # whitening + covariances
        t += parts * 2 ** j * eig_s(min(k, d))
    return t + eig_s(d) + (flops + 2 * n * d * d) / flops_rate


def side_by_side(n: int, d: int, partitions: int, g) -> tuple[float, float]:
    """subset_metrics(fid) at N, d (N/8 > d, the regime of N = 50 000 with 2048-d features) with the eighths of
    every partition (before) and of FD_PARTITIONS (now): seconds, measured one after the other."""
    ref = {"f": torch.randn(4 * d, d, generator=g, dtype=torch.float64)}
    gen = {"f": torch.randn(n, d, generator=g, dtype=torch.float64) * 1.1 + 0.05}
    U.bootstrap_metrics(gen, ref, LAYERS, ("fid",), replicates=1)        # the reference's √Σ, once for both
    now, S.FD_PARTITIONS = S.FD_PARTITIONS, partitions
    try:
        before = timed(lambda: S.subset_metrics(gen, ref, LAYERS, ("fid",), partitions=partitions), 1)
    finally:
        S.FD_PARTITIONS = now
    return before, timed(lambda: S.subset_metrics(gen, ref, LAYERS, ("fid",), partitions=partitions), 1)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=1024)
    p.add_argument("--partitions", type=int, default=16)
    p.add_argument("--replicates", type=int, default=20, help="bootstrap replicates timed (scaled to 200)")
    p.add_argument("--check-n", type=int, default=4104, help="N of the side-by-side run (N/8 > --check-d)")
    p.add_argument("--check-d", type=int, default=256)
    a = p.parse_args(argv)
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    g = torch.Generator().manual_seed(0)
    m = torch.randn(D, 2 * D, generator=g, dtype=torch.float64)
    rate = 2 * D * D * 2 * D / timed(lambda: m @ m.T)
    sym = m @ m.T / (2 * D)
    eig = {k: timed(lambda k=k: torch.linalg.eigvalsh(sym[:k, :k])) for k in (128, 256, 512, 1024, D)}

    def eig_s(k):
        return eig[min(eig, key=lambda x: abs(x - k))] * (k / min(eig, key=lambda x: abs(x - k))) ** 3

    ref = {"f": torch.randn(5000, D, generator=g, dtype=torch.float64)}
    gen = {"f": torch.randn(a.n, D, generator=g, dtype=torch.float64) * 1.1 + 0.05}
    U.bootstrap_metrics(gen, ref, LAYERS, ("fid",), replicates=1)        # the reference's √Σ, once for both
    sub = timed(lambda: S.subset_metrics(gen, ref, LAYERS, ("fid",), partitions=a.partitions), 1)
    boot = timed(lambda: U.bootstrap_metrics(gen, ref, LAYERS, ("fid",), replicates=a.replicates), 1)
    boot200 = boot * 200 / a.replicates
    print(f"this machine: {rate / 1e9:.1f} GFLOP/s float64, eigvalsh({D}) {eig[D]:.2f} s")
    print(f"N = {a.n}, d = {D}: subsets (SE + FD∞, {a.partitions} partitions) {sub:.1f} s "
          f"(model {model(a.n, a.partitions, rate, eig_s):.1f} s); bootstrap FID, 200 replicates "
          f"{boot200:.1f} s (from {a.replicates}); ratio bootstrap / subsets {boot200 / sub:.1f}")
    before, now = side_by_side(a.check_n, a.check_d, a.partitions, g)
    models = [model(a.check_n, a.partitions, rate, eig_s, a.check_d, e) for e in (a.partitions, None)]
    print(f"N = {a.check_n}, d = {a.check_d} (N/8 > d): eighths of all {a.partitions} partitions {before:.1f} s, "
          f"of {S.FD_PARTITIONS} {now:.1f} s (model {models[0]:.1f} / {models[1]:.1f} s); ratio {before / now:.2f}")
    gpu_eig = lambda k: GPU_EIG_S * (k / D) ** 3                     # noqa: E731
    for label, eighths in (("before", a.partitions), ("now", None)):
        cpu = model(50_000, a.partitions, rate, eig_s, D, eighths)
        gpu = model(50_000, a.partitions, GPU_FP64_FLOPS, gpu_eig, D, eighths)
        print(f"{label}: N = 50 000, d = {D}: this CPU {cpu:.0f} s; a GPU (assumed {GPU_FP64_FLOPS / 1e12:.0f} "
              f"TFLOP/s float64, {GPU_EIG_S * 1e3:.0f} ms per {D}-d eigvalsh) {gpu:.1f} s; "
              + "; ".join(f"cell at S = {st} (assumed {c:.0f} s): + {gpu / c:.1%}" for st, c in CELL_GPU_S.items()))


if __name__ == "__main__":
    main()
