"""``ddim-bench-reconstruct`` and ``ddim-bench-interpolate`` on the session's digits model (Table 2, Fig. 6)."""
import csv
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from ddim_bench import config, paper
from ddim_bench.tasks import reconstruct
from ddim_bench.images import upscale
from ddim_bench.models import checkpoint
from ddim_bench.reporting.reconstruction import reconstruction_records, report_reconstruction
from ddim_bench.sampling import inversion
from ddim_bench.sampling.cell import Cell
from ddim_bench.sampling.generate import generate
from wandb_records import find_runs, read_run

N, PAIRS, POINTS, PX = 32, 3, 11, 8
SHOWN = 32  # grids upscale 8-px images to 32 px (ddim_bench.images.MIN_TILE)
STEPS = [10, 20, 50, 100]


def rec_args(ckpt, results, run_dir):
    return [f"checkpoint={ckpt}", f"paths.results_dir={results}", f"hydra.run.dir={run_dir}", f"n_images={N}",
            f"steps=[{','.join(map(str, STEPS))}]"]


def interp_args(ckpt, results, run_dir):
    return [f"checkpoint={ckpt}", f"paths.results_dir={results}", f"hydra.run.dir={run_dir}", f"pairs={PAIRS}",
            f"points={POINTS}", "steps=[10,50]"]


def load_records(results):
    return {r["steps"]: r for r in reconstruction_records(str(results))}


@pytest.fixture(scope="module")
def done(trained, tmp_path_factory, cli):
    """Real CLI runs with W&B offline: the results folder."""
    out = tmp_path_factory.mktemp("inversion")
    ckpt = trained / "checkpoints" / "last.ckpt"
    proc = cli("ddim-bench-reconstruct", *rec_args(ckpt, out / "results", out / "r1"), "logger.wandb.mode=offline")
    assert f"reconstruction: {out / 'results' / 'reconstruction'}/" in proc.stderr  # where the output is
    cli("ddim-bench-interpolate", *interp_args(ckpt, out / "results", out / "r2"), "logger.wandb.mode=offline")
    return out / "results"


def test_reconstruction_error_falls_with_steps(done):
    recs = load_records(done)
    assert sorted(recs) == STEPS
    mse = [recs[s]["mse"] for s in STEPS]
    assert all(b < a for a, b in zip(mse, mse[1:])), mse  # the ODE's discretisation error shrinks with S
    assert mse[-1] < 1e-3
    for s, r in recs.items():
        assert r["nfe"] == s and r["n_images"] == N and r["split"] == "test" and r["skip"] == "uniform"
        assert r["mse_min"] <= r["mse"] <= r["mse_max"] and r["mse_std"] >= 0
        assert len(r["mse_per_image"]) == N and np.mean(r["mse_per_image"]) == pytest.approx(r["mse"])
        assert r["encode_seconds"] > 0 and r["decode_seconds"] > 0 and r["weights"] == "ema"
        assert r["strip"].startswith(f"S{s}-uniform-")  # named by S, not by a hash alone
        strip = Image.open(done / "reconstruction" / r["strip"])
        # originals over reconstructions, a labelled margin on the left and on top (as the consistency grid)
        assert strip.size == (64 + 8 * (SHOWN + 1) + 1, 18 + 2 * (SHOWN + 1) + 1)
        margin = np.asarray(strip)[18:, :64]
        assert (margin < 128).any() and (margin == 255).mean() > 0.8  # label text in a white margin


def test_wandb_runs_hold_the_records(done):
    runs = {read_run(d)["job_type"]: read_run(d) for d in find_runs(done)}
    assert set(runs) == {"reconstruction", "interpolation"}
    rec = runs["reconstruction"]
    logged = {row["S"]: row["reconstruction/mse"] for row in rec["history"] if "S" in row}
    assert logged == pytest.approx({s: r["mse"] for s, r in load_records(done).items()})
    assert len(rec["tables"]["reconstruction"]["data"]) == len(STEPS)
    assert any(f.startswith("media/images/interpolation/") for f in runs["interpolation"]["files"])


def test_table2_report_holds_the_records_values(done):
    rep = report_reconstruction(str(done))
    recs = load_records(done)
    table = open(rep["paths"]["table2"]).read()
    assert table == rep["markdown"] and "CIFAR-10" in table
    for r in recs.values():
        assert f"{r['mse']:.4g}" in table and f"{r['mse_std']:.4g}" in table
    for v in paper.TABLE2.values():
        assert f"{v:.4g}" in table
    with open(rep["paths"]["reconstruction_csv"]) as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == len(STEPS)
    for row in rows:
        r = recs[int(row["steps"])]
        assert float(row["mse"]) == pytest.approx(r["mse"]) and row["key"] == r["key"]
        assert float(row["paper_cifar10_mse"]) == paper.TABLE2[r["steps"]]
    assert Image.open(rep["paths"]["reconstruction_mse"]).size[0] > 100
    assert {"interpolation_S10", "interpolation_S50", "interpolation_side_by_side"} <= set(rep["paths"])


def test_interpolation_grids_use_the_sweeps_seeds(done, trained):
    tile = SHOWN + 1
    for s in (10, 50):
        assert Image.open(done / "interpolation" / f"S{s}.png").size == (POINTS * tile + 1, PAIRS * tile + 1)
    side = Image.open(done / "interpolation" / "side_by_side.png")
    assert side.size == (POINTS * tile + 1, 2 * PAIRS * tile + 1)  # one row per (pair, S)
    # the ends of pair 0 are the sweep's samples 0 and 1 of seed block 0 at S=10, η=0
    loaded = checkpoint.load(str(trained / "checkpoints" / "last.ckpt"))
    images = []
    generate(checkpoint.build_model(loaded), config.build_alphas(loaded.schedule), Cell(10, 0.0), [0, 1],
             (1, PX, PX), 0, 2, "cpu", lambda im, idx: images.append(im))
    grid = torch.from_numpy(np.array(Image.open(done / "interpolation" / "S10.png"))).permute(2, 0, 1)
    ends = [grid[:, 1:tile, 1:tile], grid[:, 1:tile, 1 + (POINTS - 1) * tile:POINTS * tile]]
    for got, want in zip(ends, upscale(images[0])):
        assert (got.int() - want.int()).abs().max() <= 1


def test_rerun_skips_finished_records(done, trained, tmp_path, monkeypatch, compose):
    results = tmp_path / "results"
    shutil.copytree(done, results)
    before = {p.name: p.read_bytes() for p in (results / "reconstruction" / "cells").glob("*.json")}
    calls = []
    real = inversion.reconstruct
    monkeypatch.setattr(inversion, "reconstruct", lambda model, images, alphas, taus, *a: calls.append(len(taus))
                        or real(model, images, alphas, taus, *a))
    cfg = compose("reconstruct", *rec_args(trained / "checkpoints" / "last.ckpt", results, tmp_path / "run"),
                  "steps=[10,5,100]", "logger.wandb.mode=disabled")
    out = reconstruct.run(cfg)
    assert calls == [5], "only the new S may be computed"
    assert [r["steps"] for r in out] == [10, 5, 100]
    assert all((results / "reconstruction" / "cells" / n).read_bytes() == b for n, b in before.items())
    assert load_records(results)[5]["mse"] > load_records(results)[10]["mse"]
