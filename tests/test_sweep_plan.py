"""plan=true: the sweep's cost before any sampling, nothing written; its model calls are the ones the sweep counts."""
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from ddim_bench.sweep import plan as sweep_plan, run as sweep
from ddim_bench.sweep import estimate as P

N = 6


def overrides(ckpt, results, *extra):
    # quad skip at S = 40 repeats τ (ddim makes fewer calls than steps); heun 2S − 1; pndm S + 9
    return [f"checkpoint={ckpt}", f"paths.results_dir={results}", f"n_samples={N}", "seeds=[0,1]",
            "grid.samplers=[ddim,heun,pndm]", "grid.steps=[4,40]", "grid.skip=quad", "grid.eta=[0.0]",
            "grid.hat=false", "logger.wandb.mode=disabled", "metrics.bootstrap.replicates=5", "sampler.batch_size=4",
            *extra]


@pytest.mark.slow  # a sweep in-process
def test_planned_model_calls_are_the_calls_the_sweep_counts(untrained_ckpt, tmp_path, capsys):
    args = overrides(untrained_ckpt, tmp_path / "res", f"hydra.run.dir={tmp_path / 'run'}")
    (job,) = sweep_plan.show([sweep_plan.compose(args)], False)
    printed = capsys.readouterr().out
    assert not (tmp_path / "res").exists() and not (tmp_path / "run").exists()
    assert f"model calls: {job.calls:,}" in printed and "calibrated now" in printed
    assert (job.cells, job.blocks, job.n, job.images) == (6, 2, N, 6 * 2 * N)
    done = sweep.run_sweep(sweep_plan.compose(args))
    assert len(done) == 12
    assert sum(r["nfe"] * r["n_scored"] for r in done) == job.calls  # nfe: counted by a wrapper round the network
    by = {(r["sampler"], r["steps"]): r["nfe"] for r in done}
    # quad repeats one τ at S = 40: ddim and heun run on 39 distinct τ
    assert by[("heun", 40)] == 2 * 39 - 1 and by[("pndm", 4)] == 13 and by[("ddim", 40)] == 39
    assert all(r["nfe"] == r["nfe_predicted"] for r in done)
    # Planned again on the same folder: the rate is the newest record's, and it gives back that record's time.
    (again,) = sweep_plan.show([sweep_plan.compose(args)], False)
    newest = max(done, key=lambda r: (r["created"], r["key"]))
    out = capsys.readouterr().out
    assert again.rate.source.startswith("measured") and again.rate.source in out
    assert "= 12 records, 12 already in the results folder" in out
    assert P.record_seconds(N, newest["nfe"], again.rate, 1) == pytest.approx(newest["cell_seconds"], rel=1e-9)
    # ... and what is done is not planned again: all 12 records, then the 3 whose files are removed
    assert (again.done, again.calls, again.images, again.seconds) == (12, 0, 0, 0)
    removed = sorted(done, key=lambda r: r["key"])[:3]
    for r in removed:
        (tmp_path / "res" / "cells" / f"{r['key']}.json").unlink()
    (left,) = sweep_plan.show([sweep_plan.compose(args)], False)
    assert "= 12 records, 9 already in the results folder" in capsys.readouterr().out
    assert (left.done, left.images) == (9, 3 * N)
    assert left.calls == sum(r["nfe"] * r["n_scored"] for r in removed)


def run_plan(tmp_path, *args):
    env = {k: v for k, v in os.environ.items() if k != "WANDB_SERVICE"}
    env["DDIM_BENCH_CACHE"] = str(tmp_path / "cache")
    return subprocess.run([str(Path(sys.executable).parent / "ddim-bench-sweep"), *args],
                          capture_output=True, text=True, timeout=300, cwd=tmp_path, env=env)


@pytest.mark.slow
def test_plan_prints_and_writes_nothing_also_under_the_slurm_launcher(untrained_ckpt, tmp_path):
    (tmp_path / "my-conf" / "grid").mkdir(parents=True)  # a user's own config folder (--config-dir)
    (tmp_path / "my-conf" / "grid" / "mine.yaml").write_text("samplers: [ddim]\nsteps: [7]\neta: [0.0]\n"
                                                               "hat: false\nskip: uniform\n")
    before = sorted(str(p) for p in tmp_path.rglob("*"))
    one = run_plan(tmp_path, "plan=true", *overrides(untrained_ckpt, "res")[:-2])
    assert one.returncode == 0, one.stderr[-2000:]
    assert "6 cells x 2 seed blocks x N=6 = 12 records" in one.stdout and "estimated device-hours" in one.stdout
    multi = run_plan(tmp_path, "-m", "plan=true", "hydra/launcher=slurm_gpu", f"checkpoint={untrained_ckpt}",
                     "sampler.steps=3,5", "sampler.eta=0,1", "n_samples=2000000", "slurm.time_min=5",
                     "eval.accelerator=cpu")
    assert multi.returncode == 0, multi.stderr[-2000:]
    assert "SLURM: array of 4 tasks" in multi.stdout and "time limit of 5 min" in multi.stdout
    need = float(re.search(r"the longest ~([\d,.]+) min", multi.stdout).group(1).replace(",", ""))
    assert need > 5 and "warning: a task needs" in multi.stdout
    assert "model calls: 32,000,000" in multi.stdout  # 2e6 samples x (3 + 5 + 3 + 5) calls
    small = run_plan(tmp_path, "-m", "plan=true", "hydra/launcher=slurm_gpu", f"checkpoint={untrained_ckpt}",
                     "sampler.steps=3,5", "n_samples=10", "slurm.time_min=5", "eval.accelerator=cpu")
    assert "array of 2 tasks" in small.stdout and "warning" not in small.stdout
    own = run_plan(tmp_path, "plan=true", "--config-dir", "my-conf", "grid=mine", f"checkpoint={untrained_ckpt}",
                   "n_samples=10")
    assert "1 cells x 1 seed blocks x N=10" in own.stdout and "model calls: 70 " in own.stdout, own.stderr
    assert sorted(str(p) for p in tmp_path.rglob("*")) == before  # no results, no outputs/ or .hydra, no cache
