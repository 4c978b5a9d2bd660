"""FID exact at any scale: float64 moments summed over batches and processes, exactly N samples scored."""
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch_fidelity.metric_fid import fid_featuresdict_to_statistics, fid_statistics_to_metric

from ddim_bench.sweep import run as sweep
from ddim_bench.results import store
from ddim_bench.scoring.moments import Moments, fid

HERE = Path(__file__).resolve().parent
N = 101  # a multiple of neither the batch sizes (5, 8) nor the process count (2); above the digits' d = 64:
D = 32   # with N <= d the covariance is singular and √λ of its rounding-level eigenvalues moves FID by ~1e-8


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max())


def gaussian(n, d, seed, shift=0.0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(n, d, generator=g) @ torch.randn(d, d, generator=g) / d ** 0.5 + shift).float()


def test_fid_from_moments_is_torch_fidelitys_fid():
    x, y = gaussian(300, 48, 0, 0.3), gaussian(400, 48, 1)
    want = fid_statistics_to_metric(fid_featuresdict_to_statistics({"f": x.double()}, "f"),
                                    fid_featuresdict_to_statistics({"f": y.double()}, "f"), False)
    m = Moments.zeros(48)
    for batch in x.split(7):  # batches summed one after the other give the statistics of the whole set
        m.add(batch)
    assert m.n == 300
    mu, cov = m.mean_cov()
    assert torch.allclose(mu, x.double().mean(0), rtol=0, atol=1e-12)
    assert rel(cov, torch.from_numpy(np.cov(x.double().numpy(), rowvar=False))) < 1e-12
    assert fid(m, Moments.of(y)) == pytest.approx(want["frechet_inception_distance"], rel=1e-9)
    assert fid(Moments.of(y), Moments.of(y)) == pytest.approx(0, abs=1e-9)
    with pytest.raises(ValueError, match="at least 2"):
        Moments.of(x[:1]).mean_cov()


def dist_moments(tmp_path, world: int, batch: int, d: int = D) -> dict:
    out = tmp_path / f"moments-{world}-{batch}.pt"
    proc = subprocess.run([sys.executable, str(HERE / "dist_moments.py"), str(world), str(N), str(batch), str(d),
                           str(out)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return torch.load(out, weights_only=True)


@pytest.mark.slow
def test_moments_of_one_rank_equal_two_ranks(tmp_path):
    """Real Lightning Fabric DDP, 2 CPU processes (gloo), one thread each: the summed moments are the same."""
    from dist_moments import features
    one, two = dist_moments(tmp_path, 1, 8), dist_moments(tmp_path, 2, 5)
    assert (one["world"], two["world"]) == (1, 2)
    assert one["n"] == two["n"] == N and two["rank_n"] == (N + 1) // 2  # every sample scored, once
    assert rel(two["s"], one["s"]) < 1e-9 and rel(two["ss"], one["ss"]) < 1e-9
    whole = features(range(N), D).double()
    assert rel(one["ss"], whole.T @ whole) < 1e-12 and rel(one["s"], whole.sum(0)) < 1e-12
    ref = Moments.of(features(range(500, 600), D))
    f1 = fid(Moments(one["n"], one["s"], one["ss"]), ref)
    assert fid(Moments(two["n"], two["s"], two["ss"]), ref) == pytest.approx(f1, rel=1e-9)


def one_record(results) -> dict:
    (r,) = store.ResultStore(str(results)).records()
    return r


@pytest.mark.slow
def test_exactly_n_scored_on_one_and_two_processes(untrained_ckpt, tmp_path, cli, compose):
    common = [f"checkpoint={untrained_ckpt}", f"n_samples={N}", "grid.steps=[3]", "grid.eta=[1.0]",
              "grid.hat=false", "sampler.batch_size=8", "logger.wandb.mode=disabled",
              "metrics.bootstrap.replicates=10", f"paths.cache_dir={tmp_path / 'cache'}"]
    cli("ddim-bench-sweep", *common, f"paths.results_dir={tmp_path / 'one'}", f"hydra.run.dir={tmp_path / 'r1'}")
    cli("ddim-bench-sweep", *common, "eval.devices=2", f"paths.results_dir={tmp_path / 'two'}",
        f"hydra.run.dir={tmp_path / 'r2'}")
    one, two = one_record(tmp_path / "one"), one_record(tmp_path / "two")
    assert (one["world_size"], two["world_size"]) == (1, 2)
    for results, r in ((tmp_path / "one", one), (tmp_path / "two", two)):
        assert r["n_scored"] == N
        assert store.ResultStore(str(results)).load_file(r["key"], ".features.pt")["64"].shape[0] == N
    assert two["fid"] == pytest.approx(one["fid"], rel=1e-9)
    assert two["kid_mean"] == pytest.approx(one["kid_mean"], rel=1e-6)  # cubic kernel of float32 features
    # FID alone needs no per-sample features: only the moments are summed, and the number is the same.
    cfg = compose("sweep", *common[:-1], f"paths.cache_dir={tmp_path / 'cache'}", "metrics.isc=false",
                  "metrics.kid=false", "metrics.prc=false", "metrics.bootstrap.replicates=0",
                  "metrics.keep_features=false", f"paths.results_dir={tmp_path / 'fid'}",
                  f"hydra.run.dir={tmp_path / 'r3'}")
    (alone,) = sweep.run_sweep(cfg)
    assert alone["n_scored"] == N and alone["fid"] == pytest.approx(one["fid"], rel=1e-9)
    assert "fid_lo" not in alone and not list((tmp_path / "fid" / "cells").glob("*.features.pt"))
