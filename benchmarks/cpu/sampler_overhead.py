"""What ``ddim.sample`` costs on top of its network calls, with counter-based per-sample noise and without.

One process, one small CPU network (three 3×3 convolutions on 16×16 single-channel images, batch 64 by
default).  Each repeat runs, in turn (``benchmarks.timing.interleaved``), the package's own ``ddim.sample``:

* floor: the network alone, called with the inputs that one η = 0 sampling run gives it (recorded once);
* ``sample()`` at η = 0;
* ``sample()`` at η = 1 with per-sample noise from ``noise.SampleNoise`` (what ``generate`` uses);
* ``sample()`` at η = 1 with one ``torch.Generator`` per sample (``generator=[...]``: each sample's z drawn by
  ``normal_`` in a Python loop, B × S small calls; the per-sample method before counter-based noise);
* a yardstick: ``sample()`` at η = 1 with one ``torch.Generator`` for the batch (one ``torch.randn`` per step: no
  per-sample property, about the cheapest noise torch has on a CPU).

Both per-sample η = 1 variants build their per-batch noise source inside the timed call, as ``generate`` does
per batch.  A figure is the median over repeats of (variant time ÷ floor time) from the same repeat.  glibc's
malloc is given a fixed mmap threshold first (``--default-malloc`` to skip): with its adaptive one, megabyte-sized
activations alternate between mmap (page faults on every call) and the heap depending on the allocation history,
which moves the floor by up to 2× between variants and swamps the sampler's own cost.  Denormal floats are
flushed to zero (``--keep-denormals`` to skip): the untrained network's activations on η = 1 inputs hold more
denormals than on the η = 0 inputs the floor replays, which alone makes its calls ~5 % slower and would be
billed to the noise.

    .venv/bin/python -m benchmarks.cpu.sampler_overhead [--quick] [--channels 16] [--steps 50] [--repeats 15]
"""
from __future__ import annotations

import argparse
import ctypes
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a file: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import torch  # noqa: E402

from benchmarks.common import Opts, Row, arg_parser, machine, opts_from, print_table, write_json  # noqa: E402
from benchmarks.timing import interleaved, median, median_ratio  # noqa: E402
from ddim_bench.sampling import ddim  # noqa: E402
from ddim_bench.sampling.noise import SampleNoise  # noqa: E402

SIZES = {"full": dict(channels=16, batch=64, steps=50), "quick": dict(channels=8, batch=16, steps=10)}
FLOOR = "floor (network alone)"


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


def per_sample_generators(seed: int, n: int) -> list[torch.Generator]:
    """One generator per sample, seeded (seed · 1000003 + i) mod (2⁶³ − 1)."""
    return [torch.Generator().manual_seed((seed * 1_000_003 + i) % (2 ** 63 - 1)) for i in range(n)]


def variants(model, x_T, alphas, taus, seed: int) -> dict:
    """The timed functions: the floor and ``ddim.sample`` with each noise source."""
    n, shape = len(x_T), tuple(x_T.shape[1:])
    recorder = Recorder(model)
    ddim.sample(recorder, x_T, alphas, taus, eta=0.0)

    def floor():
        for x, t in recorder.inputs:
            model(x, t)

    def sample(eta: float, noise=lambda: None):
        return lambda: ddim.sample(model, x_T, alphas, taus, eta=eta, generator=noise())

    return {FLOOR: floor,
            "sample() eta=0": sample(0.0),
            "sample() eta=1, SampleNoise": sample(1.0, lambda: SampleNoise(seed, range(n), shape)),
            "sample() eta=1, one generator per sample": sample(1.0, lambda: per_sample_generators(seed, n)),
            "yardstick: eta=1, one randn per step (batch)": sample(1.0, lambda: torch.Generator().manual_seed(seed))}


def fix_malloc() -> bool:
    """glibc only: a fixed mmap threshold (32 MiB) and trim threshold (1 GiB); False where there is no glibc."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        return bool(libc.mallopt(-3, 32 << 20)) and bool(libc.mallopt(-1, 1 << 30))  # M_MMAP_/M_TRIM_THRESHOLD
    except (OSError, AttributeError):
        return False


def rows(opts: Opts, size: dict | None = None, malloc: bool = True, flush_denormals: bool = True) -> list[Row]:
    size = size or SIZES["quick" if opts.quick else "full"]
    fixed = fix_malloc() if malloc else False
    ftz = torch.set_flush_denormal(True) if flush_denormals else False
    torch.manual_seed(0)
    model = ThreeConv(size["channels"]).eval().requires_grad_(False)
    alphas, taus = ddim.alphas_cumprod(1000), ddim.timesteps(1000, size["steps"])
    x_T = SampleNoise(0, range(size["batch"]), (1, 16, 16)).initial()
    with torch.no_grad():
        times = interleaved(variants(model, x_T, alphas, taus, seed=0), opts.reps(15, 3), warmup=2)
    floor = times[FLOOR]
    setting = (f"batch {size['batch']}, S={size['steps']}, {size['channels']} channels, "
               f"{median(floor) / size['steps'] * 1e3:.2f} ms per network call; malloc "
               f"{'fixed' if fixed else 'default'}, denormals {'flushed' if ftz else 'kept'}")
    out = []
    for i, (name, ts) in enumerate((k, v) for k, v in times.items() if k != FLOOR):
        over = (median(ts) - median(floor)) / size["steps"] * 1e6
        out.append(Row(f"1{'abcd'[i]}", f"{name} / network alone", median_ratio(ts, floor),
                       detail=f"{over:.0f} us per step over the floor; {setting}",
                       extra={"seconds": ts, "floor_seconds": floor}))
    return out


def main(argv=None) -> list[Row]:
    p = arg_parser(__doc__.splitlines()[0], "perf-sampler.json")
    p.add_argument("--channels", type=int, default=None, help="width of the middle convolution")
    p.add_argument("--batch", type=int, default=None)
    p.add_argument("--steps", type=int, default=None, help="S: sampling steps (all stochastic at eta=1 but the last)")
    p.add_argument("--default-malloc", action="store_true", help="keep glibc's adaptive mmap threshold")
    p.add_argument("--keep-denormals", action="store_true", help="do not flush denormal floats to zero")
    args = p.parse_args(argv)
    opts = opts_from(args)
    size = dict(SIZES["quick" if opts.quick else "full"])
    size.update({k: getattr(args, k) for k in size if getattr(args, k) is not None})
    info = machine(opts.threads)
    out = rows(opts, size, malloc=not args.default_malloc, flush_denormals=not args.keep_denormals)
    print_table(out, info, opts.quick)
    write_json(args.out, out, info, opts)
    print(f"written {args.out}")
    return out


if __name__ == "__main__":
    main()
