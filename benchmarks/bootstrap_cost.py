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

Run: ``python -m benchmarks.bootstrap_cost [--n 500] [--replicates 100] [--threads 1] [--device cpu]``.
"""
from __future__ import annotations

import argparse
import time

import torch
import torch.nn as nn

from ddim_bench.evaluation.draws import psd_sqrt
from ddim_bench.evaluation.uncertainty import bootstrap_metrics
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
    n, r, dev = a.n, a.replicates, a.device
    wall0, cpu0 = time.perf_counter(), time.process_time()
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (n, 3, 32, 32), generator=g, dtype=torch.uint8)
    torch.manual_seed(0)
    net = StandIn().to(dev).eval()
    t_extract = seconds(lambda: extract(net, images, dev), dev, lambda: extract(net, images[:64], dev))
    gen = extract(net, images, dev)
    ref = {"2048": torch.randn(n, D, generator=g, dtype=torch.float64).abs(),
           "logits_unbiased": torch.randn(n, CLASSES, generator=g, dtype=torch.float64)}
    layers = {"fid": "2048", "kid": "2048", "prc": "2048", "isc": "logits_unbiased"}

    unet = UNet(**CIFAR_UNET).to(dev).eval()
    xb, tb = torch.randn(4, 3, 32, 32, device=dev), torch.full((4,), 500, device=dev)
    with torch.no_grad():
        t_forward = seconds(lambda: unet(xb, tb), dev) / 4           # per image and step
    unet_flops = flops_per_call(unet, (1, 3, 32, 32), dev)

    parts = {}
    for fam in ("fid", "kid", "isc", "prc"):
        run = lambda: bootstrap_metrics(gen, ref, layers, metrics=(fam,), replicates=r, device=dev)  # noqa: E731
        warm = lambda: bootstrap_metrics(gen, ref, layers, metrics=(fam,), replicates=2, device=dev)  # noqa: E731
        parts[fam] = seconds(run, dev, warm)
    k = min(r, 8)
    m = torch.randn(k, D, D, dtype=torch.float64, device=dev)
    m = m @ m.mT / D
    t_eig = seconds(lambda: torch.linalg.eigvalsh(m), dev) * (r + 1) / k     # replicates + the point value
    t_sqrt = seconds(lambda: psd_sqrt(m[0]), dev)
    t_boot = sum(parts.values())

    share = (time.process_time() - cpu0) / (time.perf_counter() - wall0) / a.threads
    print(f"bootstrap cost, device {dev}, {a.threads} thread(s), N = {n} generated + {n} reference, "
          f"d = {D}, {r} replicates; this process got {share:.0%} of its threads' CPU time (a busy machine "
          f"inflates every wall time below)\n")
    print(f"| part | seconds | grows as | seconds at N = 50,000, {TARGET_R} replicates (this device) |")
    print("|---|---:|---|---:|")
    fn, fr = TARGET_N / n, TARGET_R / r
    rows = [("(a) feature extraction (stand-in net)", t_extract, "N", t_extract * fn),
            ("FID: √Σ_ref (one eigh)", t_sqrt, "1", t_sqrt),
            ("FID: batched eigvalsh", t_eig, "R", t_eig * fr),
            ("FID: the rest (covariances, means)", parts["fid"] - t_eig - t_sqrt, "R·N",
             (parts["fid"] - t_eig - t_sqrt) * fn * fr),
            ("KID (100 subsets)", parts["kid"], "R·N² (count quadratic forms)", parts["kid"] * fn * fn * fr),
            ("IS (10 splits)", parts["isc"], "R·N", parts["isc"] * fn * fr),
            ("precision/recall", parts["prc"], "N² (pairwise distances)", parts["prc"] * fn * fn)]
    for name, sec, growth, big in rows:
        print(f"| {name} | {sec:.3g} | {growth} | {big:.3g} |")
    boot_big = sum(big for _, _, _, big in rows[1:])
    print(f"| (b) bootstrap, all intervals | {t_boot:.3g} | | {boot_big:.3g} |")
    print(f"| one UNet forward per image (CIFAR-10 DDPM) | {t_forward:.3g} | N·S | |\n")

    print("| S | (s) sampling estimate, s | (b) / ((a) + (s)) at N | same at N = 50,000 (this device) |")
    print("|---:|---:|---:|---:|")
    for steps in (10, 100, 1000):
        samp = t_forward * n * steps
        print(f"| {steps} | {samp:.3g} | {t_boot / (t_extract + samp):.3g} | "
              f"{boot_big / ((t_extract + samp) * fn):.3g} |")

    # GPU, from FLOP counts and assumed rates (not measured).
    nn_, rate64, r = TARGET_N, a.gpu_fp64_tflops * 1e12, TARGET_R
    flops = {"FID covariances": 2 * r * nn_ * D * D, "KID": 2 * r * 100 * nn_ ** 2 + 6 * nn_ ** 2 * D,
             "precision/recall": 6 * nn_ ** 2 * D}
    gpu_boot = sum(flops.values()) / rate64 + r * a.gpu_eigvalsh_s
    print(f"\nGPU estimate at N = 50,000, {r} replicates (assumed, not measured): FP64 GEMM at "
          f"{a.gpu_fp64_tflops:g} TFLOP/s for {sum(flops.values()):.2g} FLOP "
          f"({', '.join(f'{k} {v:.2g}' for k, v in flops.items())}), eigvalsh {a.gpu_eigvalsh_s:g} s × {r}: "
          f"{gpu_boot:.3g} s.  The cell: UNet {unet_flops / 1e9:.3g} GFLOP per call (counted) and Inception "
          f"{INCEPTION_GFLOP:g} GFLOP per image at {a.gpu_net_tflops:g} TFLOP/s.\n")
    print("| S | cell seconds (estimate) | intervals / cell |")
    print("|---:|---:|---:|")
    for steps in (10, 20, 50, 100, 1000):
        cell = nn_ * (unet_flops * steps + INCEPTION_GFLOP * 1e9) / (a.gpu_net_tflops * 1e12)
        print(f"| {steps} | {cell:.3g} | {gpu_boot / cell:.2g} |")
    print(f"\nWithin 10 % of a cell that takes at least {10 * gpu_boot:.3g} s on the GPU.")


if __name__ == "__main__":
    main()
