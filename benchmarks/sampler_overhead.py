"""What ``ddim.sample`` costs on top of its network calls, before and after counter-based per-sample noise.

One process, one small CPU network (three 3×3 convolutions on 16×16 single-channel images, batch 64 by
default, ``torch.set_num_threads(2)``).  Each repeat runs, in an order rotated from repeat to repeat:

* floor: the network alone, called with the inputs that one η = 0 sampling run gives it (recorded once);
* ``sample()`` at η = 0;
* ``sample()`` at η = 1 with per-sample noise from ``noise.SampleNoise`` (the current method);
* the previous method, η = 0 and η = 1: a local copy of the old sampling step and of the old per-sample draw
  (one ``torch.Generator`` per sample, each row filled by ``normal_`` in a Python loop: B × S small calls).

and, as a yardstick, ``sample()`` at η = 1 with one ``torch.Generator`` for the batch (one ``torch.randn`` per step:
no per-sample property, about the cheapest noise torch has on a CPU).

Both per-sample η = 1 variants build their per-batch noise source (SampleNoise / B seeded generators) inside
the timed call, as ``generate`` does per batch.  A figure is the median over repeats of (variant time ÷ floor
time) from the same repeat, so load that drifts between repeats touches both alike.  glibc's malloc is given a
fixed mmap threshold first (``--default-malloc`` to skip): with its adaptive one, megabyte-sized activations
alternate between mmap (page faults on every call) and the heap depending on the allocation history, which
moves the floor by up to 2× between variants and swamps the sampler's own cost.  Denormal floats are flushed
to zero (``--keep-denormals`` to skip): the untrained network's activations on η = 1 inputs hold more denormals
than on the η = 0 inputs the floor replays, which alone makes its calls ~5 % slower and would be billed to the
noise.  With flushing, the network's cost does not depend on which run's inputs it sees.

    .venv/bin/python benchmarks/sampler_overhead.py [--channels 16] [--steps 50] [--repeats 15]
"""
from __future__ import annotations

import argparse
import ctypes
import math
import statistics
import time

import torch

from ddim_bench.sampling import ddim
from ddim_bench.sampling.noise import SampleNoise


class ThreeConv(torch.nn.Module):
    """ε̂(x, t): three 3×3 convolutions with SiLU between; t enters as a per-sample bias."""

    def __init__(self, channels: int):
        super().__init__()
        self.c1 = torch.nn.Conv2d(1, channels, 3, padding=1)
        self.c2 = torch.nn.Conv2d(channels, channels, 3, padding=1)
        self.c3 = torch.nn.Conv2d(channels, 1, 3, padding=1)

    def forward(self, x, t):
        h = torch.nn.functional.silu(self.c1(x) + (t.to(x.dtype) / 1000).view(-1, 1, 1, 1))
        return self.c3(torch.nn.functional.silu(self.c2(h)))


class Recorder(torch.nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model, self.inputs = model, []

    def forward(self, x, t):
        self.inputs.append((x.clone(), t.clone()))
        return self.model(x, t)


# ------------------------------------------------------------------ the previous method (for "before" only)

def previous_sample(model, x_T, alphas_cumprod, taus, eta: float, gens) -> torch.Tensor:
    """PREVIOUS METHOD, kept here only as the benchmark's baseline: the sampling loop as it was before
    counter-based noise (x̂0 formed every step, then √α_prev x̂0 + √(1−α_prev−σ²) ε̂ + σz), with z drawn row by
    row from one ``torch.Generator`` per sample."""
    alphas = alphas_cumprod.double()
    buf = torch.empty_like(x_T)
    rows = buf.unbind(0)

    def draw():
        for row, g in zip(rows, gens):
            row.normal_(generator=g)
        return buf

    x, t_batch = x_T, torch.empty(x_T.shape[0], dtype=torch.long)
    for i in reversed(range(len(taus))):
        t, t_prev = taus[i], (taus[i - 1] if i > 0 else -1)
        if t == t_prev:
            continue
        a_t, a_prev = float(alphas[t]), (float(alphas[t_prev]) if t_prev >= 0 else 1.0)
        eps = model(x, t_batch.fill_(t))
        x0 = (x - math.sqrt(1 - a_t) * eps) / math.sqrt(a_t)
        s = ddim.sigma(a_t, a_prev, eta)
        out = math.sqrt(a_prev) * x0 + math.sqrt(max(1 - a_prev - s * s, 0.0)) * eps
        x = (out + s * draw()) if s > 0 else out
    return x


def previous_generators(seed: int, n: int) -> list[torch.Generator]:
    """PREVIOUS METHOD: one generator per sample, seeded (seed · 1000003 + i) mod (2⁶³ − 1)."""
    return [torch.Generator().manual_seed((seed * 1_000_003 + i) % (2 ** 63 - 1)) for i in range(n)]


# ------------------------------------------------------------------ timing

def variants(model, x_T, alphas, taus, seed: int) -> dict:
    n = len(x_T)
    shape = tuple(x_T.shape[1:])
    inputs = Recorder(model)
    ddim.sample(inputs, x_T, alphas, taus, eta=0.0)
    inputs = inputs.inputs

    @torch.no_grad()
    def floor():
        for x, t in inputs:
            model(x, t)

    @torch.no_grad()
    def now_eta1():
        noise = SampleNoise(seed, range(n), shape)
        ddim.sample(model, x_T, alphas, taus, eta=1.0, generator=noise)

    @torch.no_grad()
    def before_eta1():
        previous_sample(model, x_T, alphas, taus, 1.0, previous_generators(seed, n))

    @torch.no_grad()
    def batch_randn():
        ddim.sample(model, x_T, alphas, taus, eta=1.0, generator=torch.Generator().manual_seed(seed))

    return {"floor (network alone)": floor,
            "sample() eta=0": torch.no_grad()(lambda: ddim.sample(model, x_T, alphas, taus, eta=0.0)),
            "sample() eta=1, SampleNoise (now)": now_eta1,
            "previous: sample() eta=0": torch.no_grad()(lambda: previous_sample(model, x_T, alphas, taus, 0.0, [])),
            "previous: eta=1, per-sample generator loop": before_eta1,
            "yardstick: eta=1, one randn per step (batch)": batch_randn}


def fix_malloc() -> bool:
    """glibc only: a fixed mmap threshold (32 MiB) and trim threshold (1 GiB); False where there is no glibc."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        return bool(libc.mallopt(-3, 32 << 20)) and bool(libc.mallopt(-1, 1 << 30))  # M_MMAP_/M_TRIM_THRESHOLD
    except (OSError, AttributeError):
        return False


def measure(fns: dict, repeats: int, warmup: int = 2) -> dict[str, list[float]]:
    """Seconds per call of each function, interleaved; the order rotates by one each repeat."""
    names = list(fns)
    for _ in range(warmup):
        for name in names:
            fns[name]()
    times = {name: [] for name in names}
    for r in range(repeats):
        for name in names[r % len(names):] + names[:r % len(names)]:
            t0 = time.perf_counter()
            fns[name]()
            times[name].append(time.perf_counter() - t0)
    return times


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--channels", type=int, default=16, help="width of the middle convolution")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--steps", type=int, default=50, help="S: sampling steps (all stochastic at eta=1 but the last)")
    p.add_argument("--repeats", type=int, default=15)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--default-malloc", action="store_true", help="keep glibc's adaptive mmap threshold")
    p.add_argument("--keep-denormals", action="store_true", help="do not flush denormal floats to zero")
    args = p.parse_args(argv)
    fixed = False if args.default_malloc else fix_malloc()
    ftz = False if args.keep_denormals else torch.set_flush_denormal(True)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = ThreeConv(args.channels).eval().requires_grad_(False)
    alphas, taus = ddim.alphas_cumprod(1000), ddim.timesteps(1000, args.steps)
    x_T = SampleNoise(0, range(args.batch), (1, 16, 16)).initial()
    times = measure(variants(model, x_T, alphas, taus, seed=0), args.repeats)
    floor = times["floor (network alone)"]
    per_call = statistics.median(floor) / args.steps * 1e3
    print(f"torch {torch.__version__}, {args.threads} threads, batch {args.batch}, S={args.steps}, "
          f"3 convolutions with {args.channels} channels: {per_call:.2f} ms per network call "
          f"(median of {args.repeats} interleaved repeats; malloc {'fixed' if fixed else 'default'}, "
          f"denormals {'flushed' if ftz else 'kept'})")
    print(f"{'variant':<48} {'ms/run':>8} {'÷ floor':>8} {'us/step over floor':>19}")
    for name, ts in times.items():
        ratio = statistics.median(a / b for a, b in zip(ts, floor))
        extra = (statistics.median(ts) - statistics.median(floor)) / args.steps * 1e6
        print(f"{name:<48} {statistics.median(ts) * 1e3:8.1f} {ratio:8.3f} {extra:19.0f}")


if __name__ == "__main__":
    main()
