"""The benchmark sweep end to end on the embedded digits: records, caches, seed blocks, resume, 1 vs 2 processes."""
import json
import subprocess
import time

import pytest
import torch

from ddim_bench.sweep import prepare, run as sweep
from ddim_bench.scoring import metrics
from ddim_bench.results import store
from ddim_bench.results.record import cell_key, key_fields
from ddim_bench.sampling.cell import Cell, cells_from_config

N = 40


@pytest.fixture
def sweep_cfg(compose, trained):
    def make(results, *overrides, ckpt=None):
        ckpt = ckpt or trained / "checkpoints" / "last.ckpt"
        return compose("sweep", f"checkpoint={ckpt}", f"paths.results_dir={results}", f"n_samples={N}",
                       f"hydra.run.dir={results}/run", "logger.wandb.mode=disabled", "metrics.bootstrap.replicates=20",
                       *overrides)
    return make


def records(results):
    return {(r["steps"], r["eta"], r["variance"], r["seed"]): r for r in store.ResultStore(str(results)).records()}


def test_sweep_writes_one_record_per_cell_and_seed_and_reuses_reference_features(sweep_cfg, tmp_path):
    before, cache = metrics.REFERENCE_COMPUTATIONS, f"paths.cache_dir={tmp_path / 'cache'}"
    sweep.run_sweep(sweep_cfg(tmp_path / "a", "grid.steps=[5,10]", "grid.eta=[0.0]", "grid.hat=false",
                              "seeds=[0,1]", cache))
    assert metrics.REFERENCE_COMPUTATIONS == before + 1
    sweep.run_sweep(sweep_cfg(tmp_path / "b", "grid.steps=[5]", "grid.eta=[1.0]", "grid.hat=false", cache))
    assert metrics.REFERENCE_COMPUTATIONS == before + 1, "the second sweep must reuse the cached reference"
    recs = records(tmp_path / "a")
    assert set(recs) == {(s, 0.0, "eta", seed) for s in (5, 10) for seed in (0, 1)}
    results = store.ResultStore(str(tmp_path / "a"))
    for r in recs.values():
        assert r["n_samples"] == N and r["reference_n"] == 1500 and r["extractor"].startswith("digits")
        assert r["nfe"] == r["steps"] and r["fid"] > 0 and r["is_mean"] >= 1
        assert r["fid_lo"] <= r["fid"] <= r["fid_hi"] and r["ci_method"] == "subsets" and r["ci_partitions"] == 16
        assert r["fid_hi"] - r["fid_lo"] == pytest.approx(2 * 2.4 * r["fid_se"], rel=0.05)  # Student t, 6.4 df
        assert "fid_inf" not in r  # N/4 = 10 samples < d = 64: no FD∞
        assert r["sec_per_image"] == pytest.approx(r["seconds"] / N)
        assert r["checkpoint"]["weights"] == "ema" and r["checkpoint"]["sha256"] == r["checkpoint_sha256"]
        assert results.samples(r["key"]).shape == (N, 3, 8, 8)
        assert results.load_file(r["key"], ".features.pt")["64"].dtype == torch.float16
    # one seed block shares x_T across cells; another block starts elsewhere
    s5, s10 = results.samples(recs[(5, 0.0, "eta", 0)]["key"]), results.samples(recs[(10, 0.0, "eta", 0)]["key"])
    other = results.samples(recs[(5, 0.0, "eta", 1)]["key"])
    assert (s5.float() - s10.float()).abs().mean() < (s5.float() - other.float()).abs().mean()


def test_sigma_hat_cells_have_one_key_from_grid_and_multirun(sweep_cfg, tmp_path):
    grid = cells_from_config(sweep_cfg(tmp_path, "grid.steps=[10]", "grid.eta=[0.0]", "grid.hat=true"))
    multi = cells_from_config(sweep_cfg(tmp_path, "sampler.steps=10", "sampler.variance=hat", "sampler.eta=0.0",
                                        "sampler.clip_x0=true"), multirun=True)
    hat = [c for c in grid if c.variance == "hat"]
    assert hat == multi == [Cell(10, 1.0, "hat", "uniform", True)]
    fields = dict(n_samples=N, checkpoint_sha256="x", weights="ema", schedule={}, extractor="e", reference="r",
                  keep_images=64, fast={}, noise_version=2)
    assert cell_key(key_fields(hat[0], 0, **fields)) == cell_key(key_fields(multi[0], 0, **fields))
    assert Cell(10, 0.3, "hat").label == Cell(10, 1.0, "hat", clip_x0=False).label == "S=10 σ̂ uniform"


def test_steps_are_checked_against_the_checkpoints_own_T(sweep_cfg, trained, tmp_path):
    """The checkpoint's schedule (T = 50 here) decides, not the config's T = 1000 — before any sampling."""
    blob = torch.load(trained / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    blob["hyper_parameters"]["schedule"]["num_timesteps"] = 50
    ckpt = tmp_path / "t50.ckpt"
    torch.save(blob, ckpt)
    with pytest.raises(Exception, match=r"grid.steps=100 must be in \[1, 50\]"):
        sweep.run_sweep(sweep_cfg(tmp_path / "r", "grid.steps=[10,100]", "grid.eta=[0.0]", ckpt=ckpt))
    assert not (tmp_path / "r" / "cells").exists()
    done = sweep.run_sweep(sweep_cfg(tmp_path / "ok", "grid.steps=[50]", "grid.eta=[0.0]", "grid.hat=false",
                                     ckpt=ckpt))
    assert done[0]["schedule"]["num_timesteps"] == 50 and done[0]["steps"] == 50


def test_rerun_skips_finished_records(sweep_cfg, tmp_path):
    first = sweep.run_sweep(sweep_cfg(tmp_path, "grid.steps=[4]", "grid.eta=[0.0]", "grid.hat=false"))
    again = sweep.run_sweep(sweep_cfg(tmp_path, "grid.steps=[4,6]", "grid.eta=[0.0]", "grid.hat=false",
                                      "seeds=[0,1]"))
    assert len(first) == 1 and sorted((r["steps"], r["seed"]) for r in again) == [(4, 1), (6, 0), (6, 1)]


def test_killed_sweep_resumes_with_the_same_numbers(trained, tmp_path, cli, bin_dir, root_dir):
    args = [f"checkpoint={trained / 'checkpoints' / 'last.ckpt'}", f"n_samples={N}", "grid.steps=[3,4,30]",
            "grid.eta=[0.0]", "grid.hat=false", "logger.wandb.mode=disabled", "sampler.batch_size=8",
            "metrics.bootstrap.replicates=10"]
    cells = tmp_path / "r" / "cells"
    proc = subprocess.Popen([str(bin_dir / "ddim-bench-sweep"), *args, f"paths.results_dir={tmp_path / 'r'}",
                             f"hydra.run.dir={tmp_path / 'run1'}"], cwd=root_dir,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    while time.time() < deadline and len(list(cells.glob("*.json"))) < 1:
        time.sleep(0.2)
    proc.kill()
    proc.wait()
    done = {p.name: p.read_bytes() for p in cells.glob("*.json")}
    assert 1 <= len(done) < 3, "the sweep should have been killed part-way"
    cli("ddim-bench-sweep", *args, f"paths.results_dir={tmp_path / 'r'}", f"hydra.run.dir={tmp_path / 'run2'}")
    assert all((cells / name).read_bytes() == blob for name, blob in done.items()), "finished cells were redone"
    cli("ddim-bench-sweep", *args, f"paths.results_dir={tmp_path / 'clean'}", f"hydra.run.dir={tmp_path / 'run3'}")
    resumed, clean = records(tmp_path / "r"), records(tmp_path / "clean")
    assert set(resumed) == set(clean) and len(clean) == 3
    for k in clean:
        assert resumed[k]["fid"] == pytest.approx(clean[k]["fid"], rel=1e-9, abs=1e-9)
        assert resumed[k]["fid_lo"] == pytest.approx(clean[k]["fid_lo"], rel=1e-9, abs=1e-9)


def test_two_sweeps_on_one_folder_compute_each_record_once(trained, tmp_path, bin_dir, root_dir):
    args = [str(bin_dir / "ddim-bench-sweep"), f"checkpoint={trained / 'checkpoints' / 'last.ckpt'}",
            f"n_samples={N}", "grid.steps=[3,4,5,6]", "grid.eta=[0.0]", "grid.hat=false", "sampler.batch_size=8",
            "logger.wandb.mode=disabled", "metrics.bootstrap.replicates=10", f"paths.results_dir={tmp_path / 'r'}"]
    procs = [subprocess.Popen([*args, f"hydra.run.dir={tmp_path / f'run{i}'}"], cwd=root_dir, text=True,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE) for i in range(2)]
    logs = [p.communicate(timeout=600)[1] for p in procs]
    assert all(p.returncode == 0 for p in procs), logs
    computed = [ln for log in logs for ln in log.splitlines() if ln.startswith("  S=") and ": FID " in ln]
    assert len(computed) == 4, logs  # each of the 4 records computed by exactly one of the two processes
    assert len(records(tmp_path / "r")) == 4


def test_one_and_two_processes_give_the_same_fid(trained, tmp_path, cli):
    common = [f"checkpoint={trained / 'checkpoints' / 'last.ckpt'}", f"n_samples={N}", "grid.steps=[5]",
              "grid.eta=[1.0]", "grid.hat=true", "logger.wandb.mode=disabled", "sampler.batch_size=16",
              "metrics.bootstrap.replicates=10"]
    cli("ddim-bench-sweep", *common, f"paths.results_dir={tmp_path / 'one'}", f"hydra.run.dir={tmp_path / 'r1'}")
    cli("ddim-bench-sweep", *common, "eval.devices=2", f"paths.results_dir={tmp_path / 'two'}",
        f"hydra.run.dir={tmp_path / 'r2'}")
    one, two = records(tmp_path / "one"), records(tmp_path / "two")
    assert set(one) == set(two) == {(5, 1.0, "eta", 0), (5, 1.0, "hat", 0)}
    for k in one:
        assert two[k]["world_size"] == 2 and one[k]["world_size"] == 1
        assert two[k]["fid"] == pytest.approx(one[k]["fid"], rel=1e-6)
        assert two[k]["kid_mean"] == pytest.approx(one[k]["kid_mean"], rel=1e-6)
        s1 = store.ResultStore(str(tmp_path / "one")).samples(one[k]["key"])
        s2 = store.ResultStore(str(tmp_path / "two")).samples(two[k]["key"])
        assert torch.equal(s1, s2)


def test_multirun_evaluates_one_cell_per_job_into_one_folder(trained, tmp_path, cli):
    cli("ddim-bench-sweep", "-m", f"checkpoint={trained / 'checkpoints' / 'last.ckpt'}", f"n_samples={N}",
        "sampler.steps=3,5", "sampler.eta=0.0", f"paths.results_dir={tmp_path / 'res'}",
        f"hydra.sweep.dir={tmp_path / 'multi'}", "logger.wandb.mode=offline", "metrics.bootstrap.replicates=10")
    recs = records(tmp_path / "res")
    assert set(recs) == {(3, 0.0, "eta", 0), (5, 0.0, "eta", 0)}
    runs = list((tmp_path / "res" / "runs").glob("*/wandb/offline-run-*"))
    assert len(runs) == 2
    on_disk = json.loads((tmp_path / "res" / "cells" / f"{recs[(3, 0.0, 'eta', 0)]['key']}.json").read_text())
    assert on_disk["record"]["fid"] == recs[(3, 0.0, "eta", 0)]["fid"] > 0 and len(on_disk["sha256"]) == 64


def test_mixed_sampler_grid_counts_nfe_and_resumes(sweep_cfg, tmp_path):
    args = ("grid.samplers=[ddim,dpmpp_2m,heun,pndm]", "grid.steps=[4]", "grid.eta=[0.0]", "grid.hat=false")
    first = sweep.run_sweep(sweep_cfg(tmp_path, *args))
    by = {r["sampler"]: r for r in first}
    assert set(by) == {"ddim", "dpmpp_2m", "heun", "pndm"}
    assert by["heun"]["nfe"] == 2 * 4 - 1 and by["pndm"]["nfe"] == 4 + 9 and by["dpmpp_2m"]["nfe"] == 4
    assert all(r["nfe"] == r["nfe_predicted"] and r["flops_per_image"] > 0 for r in first)
    assert by["pndm"]["skip"] == "uniform" and by["dpmpp_2m"]["skip"] == "uniform"
    again = sweep.run_sweep(sweep_cfg(tmp_path, *args, "seeds=[0,1]"))
    assert sorted(r["sampler"] for r in again) == sorted(by) and all(r["seed"] == 1 for r in again)
    # every sampler of a block starts from the same x_T: its samples stay closest to the same seed's ddim samples
    results = store.ResultStore(str(tmp_path))
    ddim0 = results.samples(by["ddim"]["key"]).float()
    for name in ("dpmpp_2m", "heun"):
        same = (results.samples(by[name]["key"]).float() - ddim0).pow(2).mean()
        other = (results.samples(by[name]["key"]).float() - ddim0.roll(1, 0)).pow(2).mean()
        assert same < other, name


def test_a_classifier_of_other_data_is_named_before_any_work(sweep_cfg, tmp_path, capsys):
    """metrics=mnist on a digits checkpoint scores with a network trained on MNIST: said in one warning line."""
    prepare.prepare(sweep_cfg(tmp_path / "r", "metrics=mnist"), False)
    err = capsys.readouterr().err
    assert "warning: metrics=mnist scores with a classifier trained on mnist images, but data=digits" in err
    prepare.prepare(sweep_cfg(tmp_path / "r"), False)
    assert "warning" not in capsys.readouterr().err
