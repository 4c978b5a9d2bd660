"""What the bootstrap intervals cost next to a cell, on the 2048-d (Inception-sized) feature path.

Measured here, each after a warm-up call:

(a) extracting features for N generated uint8 32×32 images with a random-weight stand-in extractor (three strided
    convolutions, then linear maps to 2048 features and 1008 logits — Inception-v3's sizes, not its cost);
(s) sampling, estimated: one forward of the DDPM CIFAR-10 UNet (random weights) per image and step, × N × S;
(b) ``bootstrap_metrics`` for FID, KID, IS and precision/recall with ``--replicates`` replicates against N random
    2048-d reference features, timed per metric; FID's batched ``eigvalsh`` is timed on its own as well (on a
    few matrices, scaled), because unlike the rest of FID it does not grow with N.

It prints the seconds, the ratio (b) / ((a) + (s)) for S = 10, 100, 1000, and an extrapolation to N = 50,000 with
the default 200 replicates:

* on this device, each measured part scaled by how it grows with N and R (stated per row; fixed overheads are
  scaled too, so small ``--n`` overstates the N² parts);
* on a GPU, from FLOP counts and assumed rates (``--gpu-*`` flags; nothing on a GPU is measured unless
  ``--device cuda`` is given, in which case the first extrapolation already is the GPU's).

Run: ``python -m benchmarks.cpu.bootstrap_cost [--n 500] [--replicates 100] [--threads 1] [--device cpu]``; in
``make perf`` (section ``bootstrap``, N = 500 and 100 replicates; ``--quick``: 100 and 10) as two ratios.
"""
from __future__ import annotations

import argparse
import time

import torch
import torch.nn as nn

from ddim_bench.scoring.draws import psd_sqrt
from ddim_bench.scoring.uncertainty import bootstrap_metrics
from ddim_bench.models.unet import UNet
from ddim_bench.sampling.cost import flops_per_call

D, CLASSES, TARGET_N, TARGET_R = 2048, 1008, 50_000, 200
CIFAR_UNET = dict(in_channels=3, out_ch=3, ch=128, ch_mult=[1, 2, 2, 2], num_res_blocks=2, attn_resolutions=[16],
                  dropout=0.0, resolution=32)
INCEPTION_GFLOP = 11.5  # Inception-v3 at 299×299: ≈ 5.7 G multiply-adds per image (published figure)


class StandIn(nn.Module):
    """uint8 [B, 3, 32, 32] → (features [B, 2048], logits [B, 1008]); random fixed weights."""

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 32, 3, 2, 1), nn.ReLU(), nn.Conv2d(32, 64, 3, 2, 1), nn.ReLU(),
                                  nn.Conv2d(64, 128, 3, 2, 1), nn.ReLU(), nn.Flatten())
        self.pool = nn.Linear(128 * 4 * 4, D)
        self.logits = nn.Linear(D, CLASSES)

    def forward(self, x):
        f = torch.relu(self.pool(self.body(x.float() / 127.5 - 1)))
        return f, self.logits(f)


def sync(device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def seconds(fn, device, warmup=None) -> float:
    """Wall seconds of ``fn()`` after one warm-up call (``warmup`` or ``fn`` itself)."""
    (warmup or fn)()
    sync(device)
    t0 = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - t0


@torch.no_grad()
def extract(net, images, device, batch=64) -> dict:
    parts = [net(b.to(device)) for b in images.split(batch)]
    return {"2048": torch.cat([p[0] for p in parts]).double().cpu(),
            "logits_unbiased": torch.cat([p[1] for p in parts]).double().cpu()}


def measure(n: int, r: int, dev) -> dict:
    """Seconds of each part at N = ``n`` with ``r`` replicates (see the module's docstring)."""
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (n, 3, 32, 32), generator=g, dtype=torch.uint8)
    torch.manual_seed(0)
    net = StandIn().to(dev).eval()
    m = {"n": n, "r": r}
    m["extract"] = seconds(lambda: extract(net, images, dev), dev, lambda: extract(net, images[:64], dev))
    gen = extract(net, images, dev)
    ref = {"2048": torch.randn(n, D, generator=g, dtype=torch.float64).abs(),
           "logits_unbiased": torch.randn(n, CLASSES, generator=g, dtype=torch.float64)}
    layers = {"fid": "2048", "kid": "2048", "prc": "2048", "isc": "logits_unbiased"}
    unet = UNet(**CIFAR_UNET).to(dev).eval()
    xb, tb = torch.randn(4, 3, 32, 32, device=dev), torch.full((4,), 500, device=dev)
    with torch.no_grad():
        m["forward"] = seconds(lambda: unet(xb, tb), dev) / 4           # per image and step
    m["unet_flops"] = flops_per_call(unet, (1, 3, 32, 32), dev)
    for fam in ("fid", "kid", "isc", "prc"):
        run = lambda: bootstrap_metrics(gen, ref, layers, metrics=(fam,), replicates=r, device=dev)  # noqa: E731
        warm = lambda: bootstrap_metrics(gen, ref, layers, metrics=(fam,), replicates=2, device=dev)  # noqa: E731
        m[fam] = seconds(run, dev, warm)
    k = min(r, 8)
    mat = torch.randn(k, D, D, dtype=torch.float64, device=dev)
    mat = mat @ mat.mT / D
    m["eig"] = seconds(lambda: torch.linalg.eigvalsh(mat), dev) * (r + 1) / k     # replicates + the point value
    m["sqrt"] = seconds(lambda: psd_sqrt(mat[0]), dev)
    m["boot"] = sum(m[f] for f in ("fid", "kid", "isc", "prc"))
    return m


def parts_table(m: dict) -> list[tuple]:
    """(part, seconds, how it grows, seconds at N = 50,000 and 200 replicates on this device)."""
    fn, fr = TARGET_N / m["n"], TARGET_R / m["r"]
    rest = m["fid"] - m["eig"] - m["sqrt"]
    return [("(a) feature extraction (stand-in net)", m["extract"], "N", m["extract"] * fn),
            ("FID: √Σ_ref (one eigh)", m["sqrt"], "1", m["sqrt"]),
            ("FID: batched eigvalsh", m["eig"], "R", m["eig"] * fr),
            ("FID: the rest (covariances, means)", rest, "R·N", rest * fn * fr),
            ("KID (100 subsets)", m["kid"], "R·N² (count quadratic forms)", m["kid"] * fn * fn * fr),
            ("IS (10 splits)", m["isc"], "R·N", m["isc"] * fn * fr),
            ("precision/recall", m["prc"], "N² (pairwise distances)", m["prc"] * fn * fn)]


def gpu_estimate(fp64_tflops: float, eigvalsh_s: float) -> tuple[float, dict]:
    """Seconds of all intervals at N = 50,000 and 200 replicates on a GPU, from FLOP counts and assumed rates."""
    nn_, r = TARGET_N, TARGET_R
    flops = {"FID covariances": 2 * r * nn_ * D * D, "KID": 2 * r * 100 * nn_ ** 2 + 6 * nn_ ** 2 * D,
             "precision/recall": 6 * nn_ ** 2 * D}
    return sum(flops.values()) / (fp64_tflops * 1e12) + r * eigvalsh_s, flops


def gpu_cell_seconds(unet_flops: float, steps: int, net_tflops: float) -> float:
    return TARGET_N * (unet_flops * steps + INCEPTION_GFLOP * 1e9) / (net_tflops * 1e12)


def rows(opts) -> list:
    """``make perf``'s rows: all intervals ÷ the cell's extraction and sampling, at N and at N = 50,000 (S = 50)."""
    from benchmarks.common import Row
    n, r = (100, 10) if opts.quick else (500, 100)
    m = measure(n, r, "cpu")
    big = parts_table(m)
    boot_big = sum(b for *_, b in big[1:])
    cell = m["extract"] + m["forward"] * n * 50
    detail = (f"N = {n} generated + {n} reference, d = {D}, {r} replicates: intervals {m['boot']:.3g} s, "
              f"extraction {m['extract']:.3g} s, sampling (estimate, CIFAR-10 UNet) {m['forward'] * n * 50:.3g} s")
    return [Row("7a", f"bootstrap intervals / cell (S=50), N={n}", m["boot"] / cell, detail=detail, extra=m),
            Row("7b", "bootstrap intervals / cell (S=50), N=50,000, 200 replicates (scaled)",
                boot_big / (cell * TARGET_N / n), detail="each part scaled by how it grows with N and R")]


def print_tables(m: dict, a) -> None:
    n = m["n"]
    print(f"| part | seconds | grows as | seconds at N = 50,000, {TARGET_R} replicates (this device) |")
    print("|---|---:|---|---:|")
    big = parts_table(m)
    for name, sec, growth, at_big in big:
        print(f"| {name} | {sec:.3g} | {growth} | {at_big:.3g} |")
    boot_big = sum(b for *_, b in big[1:])
    print(f"| (b) bootstrap, all intervals | {m['boot']:.3g} | | {boot_big:.3g} |")
    print(f"| one UNet forward per image (CIFAR-10 DDPM) | {m['forward']:.3g} | N·S | |\n")
    print("| S | (s) sampling estimate, s | (b) / ((a) + (s)) at N | same at N = 50,000 (this device) |")
    print("|---:|---:|---:|---:|")
    for steps in (10, 100, 1000):
        samp = m["forward"] * n * steps
        print(f"| {steps} | {samp:.3g} | {m['boot'] / (m['extract'] + samp):.3g} | "
              f"{boot_big / ((m['extract'] + samp) * TARGET_N / n):.3g} |")
    gpu_boot, flops = gpu_estimate(a.gpu_fp64_tflops, a.gpu_eigvalsh_s)
    print(f"\nGPU estimate at N = 50,000, {TARGET_R} replicates (assumed, not measured): FP64 GEMM at "
          f"{a.gpu_fp64_tflops:g} TFLOP/s for {sum(flops.values()):.2g} FLOP "
          f"({', '.join(f'{k} {v:.2g}' for k, v in flops.items())}), eigvalsh {a.gpu_eigvalsh_s:g} s × {TARGET_R}: "
          f"{gpu_boot:.3g} s.  The cell: UNet {m['unet_flops'] / 1e9:.3g} GFLOP per call (counted) and Inception "
          f"{INCEPTION_GFLOP:g} GFLOP per image at {a.gpu_net_tflops:g} TFLOP/s.\n")
    print("| S | cell seconds (estimate) | intervals / cell |")
    print("|---:|---:|---:|")
    for steps in (10, 20, 50, 100, 1000):
        cell = gpu_cell_seconds(m["unet_flops"], steps, a.gpu_net_tflops)
        print(f"| {steps} | {cell:.3g} | {gpu_boot / cell:.2g} |")
    print(f"\nWithin 10 % of a cell that takes at least {10 * gpu_boot:.3g} s on the GPU.")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=500, help="generated (and reference) samples")
    ap.add_argument("--replicates", type=int, default=100, help="measured with these; extrapolated to 200")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--gpu-fp64-tflops", type=float, default=50.0, help="assumed sustained FP64 GEMM rate")
    ap.add_argument("--gpu-eigvalsh-s", type=float, default=0.1, help="assumed seconds per 2048² FP64 eigvalsh")
    ap.add_argument("--gpu-net-tflops", type=float, default=100.0, help="assumed sustained rate for UNet/Inception")
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    wall0, cpu0 = time.perf_counter(), time.process_time()
    m = measure(a.n, a.replicates, a.device)
    share = (time.process_time() - cpu0) / (time.perf_counter() - wall0) / a.threads
    print(f"bootstrap cost, device {a.device}, {a.threads} thread(s), N = {a.n} generated + {a.n} reference, "
          f"d = {D}, {a.replicates} replicates; this process got {share:.0%} of its threads' CPU time (a busy "
          f"machine inflates every wall time below)\n")
    print_tables(m, a)


if __name__ == "__main__":
    main()
