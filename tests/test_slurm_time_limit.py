"""Jobs that run into a real time limit on the local SLURM cluster, with nothing sent by hand: SLURM itself sends
the warning signal (``--signal=USR1@60``) a minute before a two-minute limit, and the jobs must come back by
themselves and finish.

* A sweep launched through the SLURM launcher (``hydra/launcher=slurm_cpu``), more work than fits one start: each start keeps
  what it finished, the record in progress at the warning is given up and computed by a later start, each record
  once; the sweep exits 0.
* A training job: Lightning checkpoints and requeues on the warning; the requeued job resumes and stops at
  ``max_steps``.

How many starts a job takes depends on this machine's speed, so the tests require at least one requeue, none
killed by the limit itself, and the end state, not a number of starts.
"""
from __future__ import annotations

import re
import subprocess
import time

import pytest
from slurm_cluster import slurm_cluster  # noqa: F401
from slurm_jobs import (BIN, QUIET, ROOT, app, client_env, global_step, job_names,  # noqa: F401
                        logged_steps, requeued_log, sbatch)

LIMIT_MIN = 2          # the jobs' time limit
WARNING = "USR1@60"    # SLURM's warning signal, 60 s before the limit (the local cluster sends it on time)
TIMEOUT_S = 900        # a few starts of two minutes each, with the queue's delays

SEEDS = list(range(8))
SWEEP_SAMPLES = 1000   # about 10 s a record on one core: 8 records do not fit one start's minute
TRAIN_STEPS = 1200     # about 2 minutes of steps on one core: more than one start
CKPT_EVERY = 100


def restarts(env: dict, job: str) -> int:
    out = subprocess.run(["scontrol", "-o", "show", "job", job], env=env, capture_output=True, text=True,
                         timeout=30).stdout
    found = re.search(r"\bRestarts=(\d+)", out)
    return int(found.group(1)) if found else -1


@pytest.mark.slurm
def test_sweep_array_task_at_its_time_limit_requeues_and_finishes(slurm_cluster, job_names, trained, tmp_path):
    from ddim_bench.results.store import ResultStore
    env = client_env(slurm_cluster, tmp_path / "cache", tmp_path / "root")
    results, sweep = tmp_path / "results", tmp_path / "sweep"
    cmd = [BIN / "ddim-bench-sweep", "-m", "hydra/launcher=slurm_cpu", "sampler.steps=20", "sampler.eta=0.0",
           f"seeds=[{','.join(map(str, SEEDS))}]", f"checkpoint={trained / 'checkpoints' / 'last.ckpt'}",
           f"n_samples={SWEEP_SAMPLES}", "sampler.batch_size=25", "metrics.bootstrap.replicates=10",
           f"paths.results_dir={results}", f"hydra.sweep.dir={sweep}", "logger.wandb.mode=disabled",
           f"hydra.launcher.name={job_names('limit-sweep')}", f"hydra.launcher.timeout_min={LIMIT_MIN}",
           f"slurm.signal={WARNING}"]
    proc = subprocess.run([str(c) for c in cmd], env=env, cwd=ROOT, capture_output=True, text=True,
                          timeout=TIMEOUT_S)
    assert proc.returncode == 0, f"{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"

    [job_dir] = [p for p in (sweep / ".submitit").iterdir() if p.is_dir()]  # one job (an array of one cell)
    job = job_dir.name
    logs = "".join(p.read_text(errors="replace") for p in sorted(job_dir.glob("*_log.err")))
    assert "DUE TO TIME LIMIT" not in logs, logs[-3000:]
    assert restarts(slurm_cluster["env"], job) >= 1, logs[-3000:]
    stops = logs.count("stopped by SIGUSR1: the record in progress was not written and its claim is released")
    assert stops >= 1 and logs.count(f"job {job} requeued") == stops, logs[-3000:]
    assert logs.count("records already done; results in") == stops + 1, logs[-3000:]

    store = ResultStore(str(results))
    records = store.records()
    assert sorted(r["seed"] for r in records) == SEEDS
    cells = results / "cells"
    assert not list(cells.glob("*.lock")) and not (cells / "corrupt").exists()
    # the last start's account: work of the earlier starts kept, the rest computed once, nothing missing
    last = re.findall(r"(\d+) done before, (\d+) computed now, 0 by other processes, 0 held by live processes, "
                      r"0 failed, 0 missing", logs)
    assert len(last) == 1, logs[-3000:]
    before, now = map(int, last[0])
    assert before >= 1 and before + now == len(SEEDS), last
    assert all(r["n_samples"] == SWEEP_SAMPLES for r in records)
    [job_log] = sweep.glob("*/sweep.log")  # the Hydra job's log, appended to by every start
    lines = job_log.read_text()
    for seed in SEEDS:  # each record's line once over all starts
        assert lines.count(f"uniform seed {seed}: FID") == 1, lines[-3000:]


@pytest.mark.slurm
def test_training_at_its_time_limit_requeues_and_finishes(slurm_cluster, job_names, tmp_path):
    env = client_env(slurm_cluster, tmp_path / "cache", tmp_path / "root")
    run_dir, output = tmp_path / "run", tmp_path / "slurm.out"
    command = "echo start restart_count=${SLURM_RESTART_COUNT:-0}; srun " + app(
        "ddim-bench-train", f"trainer.max_steps={TRAIN_STEPS}", f"callbacks.checkpoint_every_n_steps={CKPT_EVERY}",
        f"hydra.run.dir={run_dir}", *QUIET)
    started = time.monotonic()
    job = sbatch(env, job_names("limit-train"), output, command, f"--signal={WARNING}", "--requeue",
                 "--open-mode=append", "--nodes=1", "--ntasks-per-node=1", "--cpus-per-task=1", time_min=LIMIT_MIN)

    log, first, rerun = requeued_log(slurm_cluster, job, output, "the job to finish after its time limits",
                                     timeout=TIMEOUT_S)
    assert "DUE TO TIME LIMIT" not in log, log[-3000:]
    assert first.startswith("start restart_count=0") and rerun, log[-3000:]
    assert "stopped: `max_steps" not in first and "resuming from" in rerun, log[-3000:]
    assert restarts(slurm_cluster["env"], job) >= 1
    assert global_step(run_dir / "checkpoints" / "last.ckpt") == TRAIN_STEPS
    # one CSV history across the starts: no step logged twice, the first start's rows kept
    steps = logged_steps(run_dir)
    assert steps == sorted(set(steps)) and max(steps) == TRAIN_STEPS - 1 and min(steps) < CKPT_EVERY
    assert time.monotonic() - started > LIMIT_MIN * 60 - 60, "finished within one start: make the run longer"
