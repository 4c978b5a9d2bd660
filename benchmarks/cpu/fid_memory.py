"""Peak memory of scoring one cell per rank at N = 50 000 with 2048-d features, and what the intervals hold.

The real path (``cell_run.evaluate``: sampling, per-batch features, FID's float64 moments summed over ranks,
per-sample features gathered to rank 0, the score) with stand-ins where the cost is not the point: a network
that returns zeros (one step on 3×4×4 images) and an extractor that returns random 2048-d float32 features.
Each configuration runs in its own process(es) (Lightning Fabric, gloo on CPU, NCCL on CUDA); a rank's figure is
its peak resident memory during the cell above what it held before (Linux ``VmHWM`` reset through
``/proc/self/clear_refs``), and with CUDA ``torch.cuda.max_memory_allocated``.

* ``fid``: FID alone (no IS/KID/PR, no intervals, ``keep_features=false``): only the moments are held.
* ``features``: the per-sample features are held for the intervals and the paired claims (``keep_features``,
  what ``metrics.bootstrap`` resamples), gathered to rank 0.  The bootstrap's own working memory comes on top
  (float64 copies of the features on ``eval`` device; see ``draws.fid_draws``); it is not run here.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import torch  # noqa: E402

from benchmarks.common import Opts, Row, main_for  # noqa: E402
from benchmarks.cpu.growth import reset_peak_rss  # noqa: E402

SIZES = {"full": dict(n=50_000, d=2048, batch=500), "quick": dict(n=2_000, d=2048, batch=250)}
REF_N = 4096  # reference moments only (their size does not depend on the reference count)


def _status_mb(field: str) -> float:
    with open("/proc/self/status") as f:
        line = next(ln for ln in f if ln.startswith(field + ":"))
    return int(line.split()[1]) / 1024


class Zero(torch.nn.Module):
    def forward(self, x, t):
        return torch.zeros_like(x)


def stand_in_scorer(d: int, device):
    """A real :class:`Scorer` (its ``score``) whose extractor is replaced by random d-wide float32 features."""
    from ddim_bench.scoring.metrics import Scorer

    class RandomFeatures(Scorer):
        def features(self, images, dtype=torch.float64, device="cpu"):
            return {"2048": torch.rand(len(images), d, device=device, dtype=dtype or torch.float32)}

    s = object.__new__(RandomFeatures)
    s.device, s.enabled, s.prc, s.layers = torch.device(device), {"fid": True, "isc": False, "kid": False}, \
        False, {"fid": "2048"}
    s.__dict__["widths"] = {"2048": (d, torch.float32)}
    s.reference_features = {}  # FID comes from the reference moments; nothing else is scored
    return s


def child(mode: str, n: int, d: int, batch: int, out: str) -> None:
    """One configuration, on every rank of the world Fabric starts (``WORLD`` in the environment)."""
    from ddim_bench.config import build_alphas
    from ddim_bench.dist import Dist
    from ddim_bench.sweep.cell_run import Context, evaluate
    from ddim_bench.scoring.moments import Moments
    from ddim_bench.sampling.cell import Cell
    torch.set_num_threads(1)
    cuda = torch.cuda.is_available()
    dist = Dist(SimpleNamespace(accelerator="cuda" if cuda else "cpu", devices=int(os.environ["WORLD"]),
                                num_nodes=1))
    scorer = stand_in_scorer(d, dist.device)
    ref = Moments.zeros(d, dist.device)
    for _ in range(0, REF_N, batch):
        ref.add(torch.rand(batch, d, device=dist.device))
    ctx = Context(dist, Zero(), build_alphas(dict(num_timesteps=1000, schedule="linear", beta_start=1e-4,
                                                  beta_end=0.02)).to(dist.device), (3, 4, 4), scorer, n, 0, batch,
                  SimpleNamespace(replicates=0, level=0.95, seed=0), None, mode == "features", ref)
    before, exact = _status_mb("VmRSS"), reset_peak_rss()
    if cuda:
        torch.cuda.synchronize()
        dev0 = torch.cuda.memory_allocated()
    outcome = evaluate(ctx, Cell(1, 0.0), 0)
    res = {"rank": dist.rank, "world": dist.world, "host_mb": _status_mb("VmHWM") - before, "exact": exact,
           "device_mb": torch.cuda.max_memory_allocated() / 2 ** 20 - dev0 / 2 ** 20 if cuda else None,
           "held_mb": sum(v.nbytes for v in outcome.features.values()) / 2 ** 20 if outcome else None,
           "n_scored": outcome.fields["n_scored"] if outcome else None}
    Path(f"{out}.rank{dist.rank}.json").write_text(json.dumps(res))
    dist.barrier()


def run(mode: str, world: int, size: dict, folder: str) -> list[dict]:
    out = os.path.join(folder, f"{mode}-{world}")
    env = {**os.environ, "WORLD": str(world), "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(Path(__file__).resolve().parents[2]),
                                          os.environ.get("PYTHONPATH", "")])}
    subprocess.run([sys.executable, "-m", "benchmarks.cpu.fid_memory", "--child", mode, str(size["n"]), str(size["d"]),
                    str(size["batch"]), out], check=True, env=env, cwd=Path(__file__).resolve().parents[2],
                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=1800)
    return [json.loads(Path(f"{out}.rank{r}.json").read_text()) for r in range(world)]


def rows(opts: Opts) -> list[Row]:
    import tempfile
    size = SIZES["quick" if opts.quick else "full"]
    n, d = size["n"], size["d"]
    with tempfile.TemporaryDirectory() as tmp:
        fid1, = run("fid", 1, size, tmp)
        feat1, = run("features", 1, size, tmp)
        feat2 = run("features", 2, size, tmp)
    assert fid1["n_scored"] == feat1["n_scored"] == feat2[0]["n_scored"] == n
    moments_mb, feats_mb = 8 * d * (d + 1) / 2 ** 20, n * d * 4 / 2 ** 20

    def dev(r):
        return "" if r["device_mb"] is None else f"; device {r['device_mb']:.0f} MB"

    exact = "" if fid1["exact"] else " (VmHWM could not be reset: figures include what the process held before)"
    tag = f"N={n}, d={d}"
    return [
        Row("5a", f"scoring memory, FID alone (moments), 1 rank, {tag}", fid1["host_mb"], unit="MB",
            detail=f"host peak above the start{dev(fid1)}; Σf, Σffᵀ float64 = {moments_mb:.0f} MB{exact}"),
        Row("5b", f"  per-sample features held for the intervals, 1 rank, {tag}", feat1["host_mb"], unit="MB",
            detail=f"held on rank 0: {feat1['held_mb']:.0f} MB (N·d·4 B float32 = {feats_mb:.0f} MB); "
                   f"on disk as float16 {feats_mb / 2:.0f} MB per record{dev(feat1)}; not in these figures: the "
                   f"reference features rank 0 holds (float64, {50_000 * d * 8 / 2 ** 20:.0f} MB for "
                   f"50 000 × {d}), the bootstrap's float64 working copies"),
        Row("5c", f"  same, 2 ranks: rank 0 (gathers) / rank 1, {tag}", feat2[0]["host_mb"], unit="MB",
            detail=f"rank 1 {feat2[1]['host_mb']:.0f} MB{dev(feat2[0])}"),
        Row("5d", "  features held / FID alone, 1 rank (ratio, side by side)", feat1["host_mb"] / fid1["host_mb"],
            detail="FID alone: memory independent of N; the intervals need the N per-sample features on rank 0"),
    ]


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--child"]:
        mode, n, d, batch, out = argv[1:6]
        return child(mode, int(n), int(d), int(batch), out)
    return main_for(rows, __doc__.splitlines()[0], "perf-fid-memory.json", argv)


if __name__ == "__main__":
    main()
