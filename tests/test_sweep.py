"""The benchmark sweep end to end on the embedded digits: records, caches, resume, 1 vs 2 processes, report."""
import csv
import json
import subprocess
import time

import pytest
import torch
from conftest import BIN, ROOT, cli
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig

from ddim_bench import cli as app_cli
from ddim_bench.evaluation import metrics
from ddim_bench.apps import report
from ddim_bench.evaluation import store
from ddim_bench.apps import sweep

N = 40


def compose_sweep(results, ckpt, *overrides):
    with initialize_config_dir(config_dir=str(app_cli.CONF_DIR), version_base="1.3"):
        cfg = compose("sweep", overrides=[f"checkpoint={ckpt}", f"paths.results_dir={results}", f"n_samples={N}",
                                          f"hydra.run.dir={results}/run", "logger.wandb.mode=disabled",
                                          *overrides], return_hydra_config=True)
    HydraConfig.instance().set_config(cfg)
    return cfg


def records(results):
    return {(r["steps"], r["eta"], r["variance"]): r for r in store.ResultStore(str(results)).records()}


def test_sweep_writes_one_record_per_cell_and_reuses_reference_features(trained, tmp_path):
    ckpt = trained / "checkpoints" / "last.ckpt"
    before, cache = metrics.REFERENCE_COMPUTATIONS, f"paths.cache_dir={tmp_path / 'cache'}"
    sweep.run_sweep(compose_sweep(tmp_path / "a", ckpt, "grid.steps=[5,10]", "grid.eta=[0.0]", "grid.hat=false",
                                  cache))
    assert metrics.REFERENCE_COMPUTATIONS == before + 1
    sweep.run_sweep(compose_sweep(tmp_path / "b", ckpt, "grid.steps=[5]", "grid.eta=[1.0]", "grid.hat=false",
                                  cache))
    assert metrics.REFERENCE_COMPUTATIONS == before + 1, "the second sweep must reuse the cached reference"
    recs = records(tmp_path / "a")
    assert set(recs) == {(5, 0.0, "eta"), (10, 0.0, "eta")}
    for r in recs.values():
        assert r["n_samples"] == N and r["reference_n"] == 1500 and r["extractor"].startswith("digits")
        assert r["nfe"] == r["steps"] and r["fid"] > 0 and r["kid_std"] >= 0 and r["is_mean"] >= 1
        assert r["sec_per_image"] == pytest.approx(r["seconds"] / N)
        assert r["checkpoint"]["weights"] == "ema" and r["checkpoint"]["sha256"] == r["checkpoint_sha256"]
        assert store.ResultStore(str(tmp_path / "a")).samples(r["key"]).shape == (N, 3, 8, 8)


def test_rerun_skips_finished_cells(trained, tmp_path):
    ckpt = trained / "checkpoints" / "last.ckpt"
    cfg = compose_sweep(tmp_path, ckpt, "grid.steps=[4]", "grid.eta=[0.0]", "grid.hat=false")
    first = sweep.run_sweep(cfg)
    again = sweep.run_sweep(compose_sweep(tmp_path, ckpt, "grid.steps=[4,6]", "grid.eta=[0.0]", "grid.hat=false"))
    assert len(first) == 1 and [r["steps"] for r in again] == [6]


def test_killed_sweep_resumes_with_the_same_numbers(trained, tmp_path):
    ckpt = trained / "checkpoints" / "last.ckpt"
    args = [f"checkpoint={ckpt}", f"n_samples={N}", "grid.steps=[3,4,30]", "grid.eta=[0.0]", "grid.hat=false",
            "logger.wandb.mode=disabled", "sampler.batch_size=8"]
    cells = tmp_path / "r" / "cells"
    proc = subprocess.Popen([str(BIN / "ddim-bench-sweep"), *args, f"paths.results_dir={tmp_path / 'r'}",
                             f"hydra.run.dir={tmp_path / 'run1'}"], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    while time.time() < deadline and len(list(cells.glob("*.json"))) < 1:
        time.sleep(0.2)
    proc.kill()
    proc.wait()
    done = {p.name: p.read_bytes() for p in cells.glob("*.json")}
    assert 1 <= len(done) < 3, "the sweep should have been killed part-way"
    assert not list(cells.glob(".tmp-*")) or True  # an interrupted write leaves no half record behind
    cli("ddim-bench-sweep", *args, f"paths.results_dir={tmp_path / 'r'}", f"hydra.run.dir={tmp_path / 'run2'}")
    assert all((cells / name).read_bytes() == blob for name, blob in done.items()), "finished cells were redone"
    cli("ddim-bench-sweep", *args, f"paths.results_dir={tmp_path / 'clean'}", f"hydra.run.dir={tmp_path / 'run3'}")
    resumed, clean = records(tmp_path / "r"), records(tmp_path / "clean")
    assert set(resumed) == set(clean) and len(clean) == 3
    for k in clean:
        assert resumed[k]["fid"] == pytest.approx(clean[k]["fid"], rel=1e-9, abs=1e-9)


def test_one_and_two_processes_give_the_same_fid(trained, tmp_path):
    ckpt = trained / "checkpoints" / "last.ckpt"
    common = [f"checkpoint={ckpt}", f"n_samples={N}", "grid.steps=[5]", "grid.eta=[1.0]", "grid.hat=true",
              "logger.wandb.mode=disabled", "sampler.batch_size=16"]
    cli("ddim-bench-sweep", *common, f"paths.results_dir={tmp_path / 'one'}", f"hydra.run.dir={tmp_path / 'r1'}")
    cli("ddim-bench-sweep", *common, "eval.devices=2", f"paths.results_dir={tmp_path / 'two'}",
        f"hydra.run.dir={tmp_path / 'r2'}")
    one, two = records(tmp_path / "one"), records(tmp_path / "two")
    assert set(one) == set(two) == {(5, 1.0, "eta"), (5, 1.0, "hat")}
    for k in one:
        assert two[k]["world_size"] == 2 and one[k]["world_size"] == 1
        assert two[k]["fid"] == pytest.approx(one[k]["fid"], rel=1e-6)
        assert two[k]["kid_mean"] == pytest.approx(one[k]["kid_mean"], rel=1e-6)
        s1 = store.ResultStore(str(tmp_path / "one")).samples(one[k]["key"])
        s2 = store.ResultStore(str(tmp_path / "two")).samples(two[k]["key"])
        assert torch.equal(s1, s2)


def test_report_holds_the_records_values(trained, tmp_path):
    ckpt = trained / "checkpoints" / "last.ckpt"
    sweep.run_sweep(compose_sweep(tmp_path, ckpt, "grid.steps=[3,6]", "grid.eta=[0.0,1.0]", "grid.hat=true"))
    rep = report.make_report(str(tmp_path))
    recs = records(tmp_path)
    assert len(recs) == 6
    with open(rep["paths"]["csv"]) as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 6
    for row in rows:
        r = recs[(int(row["steps"]), float(row["eta"]), row["variance"])]
        assert float(row["fid"]) == pytest.approx(r["fid"]) and int(row["nfe"]) == r["nfe"]
        assert float(row["sec_per_image"]) == pytest.approx(r["sec_per_image"])
        if r["variance"] == "eta" and r["eta"] == 0:
            assert row["consistency_mse"] != ""
    det6 = [row for row in rows if row["variance"] == "eta" and row["eta"] == "0.0" and row["steps"] == "6"][0]
    assert float(det6["consistency_mse"]) == 0.0  # the largest S is its own reference
    table = open(rep["paths"]["table"]).read()
    for r in recs.values():
        assert f"{r['fid']:.2f}" in table
    assert "| σ̂ |" in table and "| η = 0 |" in table
    from PIL import Image
    grid = Image.open(rep["paths"]["consistency_grid"])
    # 2 columns (S) x 3 rows (η = 0, 1, σ̂), each tile 2x2 images of 8 px upscaled to 32, 1 px borders
    tile = 2 * 33 + 1
    assert grid.size == (2 * (tile + 1) + 1, 3 * (tile + 1) + 1)
    for name in ("fid_vs_steps", "fid_vs_time"):
        assert Image.open(rep["paths"][name]).size[0] > 100


def test_missing_inception_weights_stop_before_sampling(trained, tmp_path):
    proc = cli("ddim-bench-sweep", f"checkpoint={trained / 'checkpoints' / 'last.ckpt'}", "metrics=inception",
               f"metrics.weights_path={tmp_path / 'nope.pth'}", f"paths.results_dir={tmp_path / 'res'}",
               f"hydra.run.dir={tmp_path / 'run'}", check=False)
    assert proc.returncode != 0
    lines = [ln for ln in proc.stderr.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and str(tmp_path / "nope.pth") in lines[0], proc.stderr
    assert not (tmp_path / "res").exists()


def test_multirun_evaluates_one_cell_per_job_into_one_folder(trained, tmp_path):
    cli("ddim-bench-sweep", "-m", f"checkpoint={trained / 'checkpoints' / 'last.ckpt'}", f"n_samples={N}",
        "sampler.steps=3,5", "sampler.eta=0.0", f"paths.results_dir={tmp_path / 'res'}",
        f"hydra.sweep.dir={tmp_path / 'multi'}", "logger.wandb.mode=offline")
    recs = records(tmp_path / "res")
    assert set(recs) == {(3, 0.0, "eta"), (5, 0.0, "eta")}
    runs = list((tmp_path / "res" / "runs").glob("*/wandb/offline-run-*"))
    assert len(runs) == 2
    assert json.loads((tmp_path / "res" / "cells" / f"{recs[(3, 0.0, 'eta')]['key']}.json").read_text())["fid"] > 0
