"""End to end on the local SLURM cluster (slurm/local/start.sh, fixture ``slurm_cluster``).

* DDP training with two srun tasks (gloo on CPU): one run folder, one checkpoint, one set of logs,
  and both ranks took part.
* A 2x2 sampler sweep through hydra-submitit-launcher (``hydra/launcher=slurm_cpu``) runs as one
  job array; the report over its results has the four cells.
* A training job requeued mid-run (``scontrol requeue``) resumes from its step checkpoint and stops
  at the configured step count.

Plus a quick check (no SLURM needed) of the rank-aware Hydra settings in conf/hydra/default.yaml.
"""
from __future__ import annotations

import csv
import os
import re
import subprocess
import time

import pytest
from slurm_cluster import catches, slurm_cluster, wait_for  # noqa: F401
from slurm_jobs import (BIN, JOB_TIME_MIN, QUIET, ROOT, app, client_env, global_step, job_names,  # noqa: F401
                        logged_steps, python_process, requeued_log, run, sbatch, tree)

DDP_STEPS = 20
REQUEUE_STEPS = 60
REQUEUE_EVERY = 10

DDP_TIMEOUT_S = 300
SWEEP_TIMEOUT_S = 420
REPORT_TIMEOUT_S = 180
FIRST_CKPT_TIMEOUT_S = 240
REQUEUE_TIMEOUT_S = 420


# --------------------------------------------------------------------------------- no SLURM needed
def test_hydra_outputs_are_rank_aware_and_the_run_dir_is_stable_under_slurm(monkeypatch):
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from ddim_bench import cli

    def hydra_cfg(**env):
        for var in [v for v in os.environ if v.startswith("SLURM_")] + ["RANK", "LOCAL_RANK", "ENVIRONMENT"]:
            monkeypatch.delenv(var, raising=False)
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        with initialize_config_dir(config_dir=str(cli.CONF_DIR), version_base="1.3"):
            cfg = compose("train", overrides=["paths.root_dir=/r"], return_hydra_config=True)
        log = OmegaConf.create({"f": "${ddim_rank0_log:/r/x/train.log}"}).f
        return OmegaConf.select(cfg, "hydra.run.dir"), OmegaConf.select(cfg, "hydra.output_subdir"), log

    stamp = r"/r/outputs/train/\d{4}-\d\d-\d\d_\d\d-\d\d-\d\d"
    run_dir, subdir, log = hydra_cfg()
    assert re.fullmatch(stamp, run_dir) and subdir == ".hydra" and log == "/r/x/train.log"
    # sbatch script, its srun steps (every rank), an array element, a plain srun
    batch = {"ENVIRONMENT": "BATCH", "SLURM_JOB_ID": "42"}
    assert hydra_cfg(**batch, SLURM_PROCID="0") == ("/r/outputs/train/slurm-42", ".hydra", "/r/x/train.log")
    assert hydra_cfg(**batch, SLURM_STEP_ID="0", SLURM_PROCID="0")[:2] == ("/r/outputs/train/slurm-42-0", ".hydra")
    assert hydra_cfg(**batch, SLURM_STEP_ID="0", SLURM_PROCID="1") == ("/r/outputs/train/slurm-42-0", None, os.devnull)
    assert hydra_cfg(**batch, SLURM_ARRAY_JOB_ID="40", SLURM_ARRAY_TASK_ID="3")[0] == "/r/outputs/train/slurm-40_3"
    assert hydra_cfg(SLURM_JOB_ID="44", SLURM_STEP_ID="1", SLURM_PROCID="0")[0] == "/r/outputs/train/slurm-44-1"
    # interactive allocations keep the timestamp: salloc's shell, srun --pty
    assert re.fullmatch(stamp, hydra_cfg(SLURM_JOB_ID="45")[0])
    assert re.fullmatch(stamp, hydra_cfg(SLURM_JOB_ID="46", SLURM_STEP_ID="0", SLURM_PTY_PORT="4000")[0])
    # other launchers' ranks
    assert hydra_cfg(LOCAL_RANK="1")[1:] == (None, os.devnull)  # a Lightning DDP child process
    assert hydra_cfg(RANK="0", LOCAL_RANK="0")[1:] == (".hydra", "/r/x/train.log")
    assert hydra_cfg(RANK="3", LOCAL_RANK="0")[1:] == (None, os.devnull)


# ------------------------------------------------------------------------------------- on SLURM
@pytest.fixture(scope="module")
def ddp_run(slurm_cluster, job_names, tmp_path_factory):
    """``srun`` two tasks of ddim-bench-train (DDP, gloo on CPU), with the default (SLURM) run folder."""
    base = tmp_path_factory.mktemp("slurm_ddp")
    root, cache = base / "root", base / "cache"
    env = client_env(slurm_cluster, cache, root)
    output = base / "slurm.out"
    command = "srun --label --kill-on-bad-exit=1 " + app(
        "ddim-bench-train", "trainer.accelerator=cpu", "trainer.devices=2", "trainer.strategy=ddp",
        f"trainer.max_steps={DDP_STEPS}", *QUIET)
    job = sbatch(env, job_names("ddp"), output, command, "--wait", "--nodes=1", "--ntasks-per-node=2",
                 "--cpus-per-task=1", timeout=DDP_TIMEOUT_S)
    return {"job": job, "root": root, "cache": cache, "log": output.read_text(errors="replace")}


@pytest.mark.slurm
def test_ddp_training_under_srun_writes_one_run(ddp_run):
    root, job, log = ddp_run["root"], ddp_run["job"], ddp_run["log"]
    # Both tasks resolved the same run folder: outputs/train/slurm-<job>-<step>.
    runs = sorted(p.name for p in (root / "outputs" / "train").iterdir())
    assert runs == [f"slurm-{job}-0"], tree(root)
    run_dir = root / "outputs" / "train" / runs[0]
    assert sorted(root.rglob(".hydra")) == [run_dir / ".hydra"], tree(root)
    assert sorted(root.rglob("metrics.csv")) == [run_dir / "csv" / "metrics.csv"], tree(root)
    assert sorted(root.rglob("*.log")) == [run_dir / "train.log"], tree(root)
    assert sorted(p.name for p in root.rglob("*.ckpt")) == ["last.ckpt"], tree(root)
    assert global_step(run_dir / "checkpoints" / "last.ckpt") == DDP_STEPS
    assert max(logged_steps(run_dir)) == DDP_STEPS - 1
    # The srun tasks formed one process group of two (rank 0 could not have got past initialising a group of two
    # without rank 1; Lightning's info lines go to rank 0's train.log), and Lightning launched nothing itself.
    job_log = (run_dir / "train.log").read_text()
    assert re.search(r"GLOBAL_RANK: 0, MEMBER: 1/2", job_log), job_log[-3000:]
    assert f"checkpoint: {run_dir / 'checkpoints' / 'last.ckpt'}" in log
    assert "train_ddp_process" not in tree(root)


@pytest.mark.slurm
def test_sweep_runs_as_a_job_array_and_reports_four_cells(slurm_cluster, job_names, ddp_run, tmp_path):
    env = client_env(slurm_cluster, ddp_run["cache"], tmp_path / "root")
    results, sweep = tmp_path / "results", tmp_path / "sweep"
    ckpt = next((ddp_run["root"] / "outputs" / "train").glob("slurm-*/checkpoints/last.ckpt"))
    run([BIN / "ddim-bench-sweep", "-m", "hydra/launcher=slurm_cpu", "sampler.steps=3,5", "sampler.eta=0.0,1.0",
         f"checkpoint={ckpt}", "n_samples=24", f"paths.results_dir={results}", f"hydra.sweep.dir={sweep}",
         "logger.wandb.mode=disabled", f"hydra.launcher.name={job_names('sweep')}",
         f"hydra.launcher.timeout_min={JOB_TIME_MIN}"], env, SWEEP_TIMEOUT_S)

    # One array of four: submitit keeps one folder per element, named <array job>_<index> (%A_%a).
    submitit = sweep / ".submitit"
    elements = sorted(p.name for p in submitit.iterdir() if re.fullmatch(r"\d+_\d+", p.name))
    assert len({e.split("_")[0] for e in elements}) == 1, elements
    assert sorted(int(e.split("_")[1]) for e in elements) == [0, 1, 2, 3], elements
    for element in elements:
        logs = "".join(p.read_text(errors="replace") for p in (submitit / element).glob("*_log.*"))
        assert f"job_id={element}," in logs, logs[-2000:]
    script = next(submitit.glob("*/*_submission.sh")).read_text()
    assert re.search(r"^#SBATCH --array=0-3\b", script, re.M), script
    assert sorted(p.parent.name for p in sweep.glob("*/.hydra")) == ["0", "1", "2", "3"]

    run([BIN / "ddim-bench-report", f"results_dir={results}", "logger.wandb.mode=disabled"], env,
        REPORT_TIMEOUT_S)
    with open(results / "report" / "results.csv") as f:
        rows = list(csv.DictReader(f))
    assert sorted((int(r["steps"]), float(r["eta"])) for r in rows) == [(3, 0.0), (3, 1.0), (5, 0.0), (5, 1.0)]
    assert all(int(r["n_samples"]) == 24 and float(r["fid"]) >= 0 for r in rows)


@pytest.mark.slurm
def test_requeued_training_resumes_from_its_checkpoint(slurm_cluster, job_names, tmp_path):
    env = client_env(slurm_cluster, tmp_path / "cache", tmp_path / "root")
    run_dir, output = tmp_path / "run", tmp_path / "slurm.out"
    # The run folder is given as train_multinode.sbatch does; a requeued job runs this script again.
    command = "echo start restart_count=${SLURM_RESTART_COUNT:-0}; srun --kill-on-bad-exit=1 " + app(
        "ddim-bench-train", f"trainer.max_steps={REQUEUE_STEPS}",
        f"callbacks.checkpoint_every_n_steps={REQUEUE_EVERY}", f"hydra.run.dir={run_dir}", *QUIET)
    job = sbatch(env, job_names("requeue"), output, command, "--requeue", "--open-mode=append", "--nodes=1",
                 "--ntasks-per-node=1", "--cpus-per-task=1")

    wait_for(lambda: any((run_dir / "checkpoints").glob("step_*.ckpt")), FIRST_CKPT_TIMEOUT_S, interval=0.2,
             what="the first step checkpoint")
    # No USR1 here: the running step is killed (SIGTERM, then SIGKILL), so the rerun has only the files.
    run(["scontrol", "requeue", job], slurm_cluster["env"], 30)
    saved_before = sorted(p.name for p in (run_dir / "checkpoints").glob("step_*.ckpt"))

    log, first, rerun = requeued_log(slurm_cluster, job, output, "the requeued job to finish")
    assert first.startswith("start restart_count=0") and rerun, log[-3000:]
    assert "stopped: `max_steps" not in first, "the job finished before it was requeued: make the run longer"
    assert f"resuming from {run_dir / 'checkpoints' / 'last.ckpt'}" in rerun, rerun
    assert f"checkpoint: {run_dir / 'checkpoints' / 'last.ckpt'}" in rerun

    assert global_step(run_dir / "checkpoints" / "last.ckpt") == REQUEUE_STEPS
    steps = sorted(p.name for p in (run_dir / "checkpoints").glob("step_*.ckpt"))
    assert steps == [f"step_{s:07d}.ckpt" for s in range(REQUEUE_EVERY, REQUEUE_STEPS + 1, REQUEUE_EVERY)]
    assert len(saved_before) < len(steps), saved_before
    # one CSV history across the requeue: the first start's rows survive, no step is logged twice
    steps_logged = logged_steps(run_dir)
    assert steps_logged == sorted(set(steps_logged)) and max(steps_logged) == REQUEUE_STEPS - 1
    assert min(steps_logged) < len(saved_before) * REQUEUE_EVERY, "rows from before the requeue are kept"
    assert sorted(p.name for p in run_dir.rglob(".hydra")) == [".hydra"]


@pytest.mark.slurm
def test_training_warned_during_start_up_requeues_and_finishes(slurm_cluster, job_names, tmp_path):
    """SLURM may send its warning signal (USR1) up to a minute early, before Lightning has installed its requeue
    handler: the signal is noted during start-up and handed to that handler once training starts, so the job
    checkpoints, requeues itself and finishes, instead of dying from USR1's default action."""
    import signal
    env = client_env(slurm_cluster, tmp_path / "cache", tmp_path / "root")
    run_dir, output = tmp_path / "run", tmp_path / "slurm.out"
    command = "echo start restart_count=${SLURM_RESTART_COUNT:-0}; srun " + app(
        "ddim-bench-train", f"trainer.max_steps={REQUEUE_STEPS}", f"callbacks.checkpoint_every_n_steps={REQUEUE_EVERY}",
        f"hydra.run.dir={run_dir}", *QUIET)
    job = sbatch(env, job_names("early"), output, command, "--requeue", "--open-mode=append", "--nodes=1",
                 "--ntasks-per-node=1", "--cpus-per-task=1")
    pid = wait_for(lambda: python_process(f"hydra.run.dir={run_dir}"), FIRST_CKPT_TIMEOUT_S, interval=0.01,
                   what="the training process to start")
    deadline = time.monotonic() + 3  # start-up (imports, composing, data, model) takes longer than this
    while time.monotonic() < deadline and not catches(pid, signal.SIGUSR2):  # USR2: the start-up hold, not Lightning
        time.sleep(0.005)
    run(["scancel", "--signal=USR1", job], slurm_cluster["env"], 30)

    log, first, rerun = requeued_log(slurm_cluster, job, output, "the requeued job to finish")
    assert first.startswith("start restart_count=0") and rerun, log[-3000:]
    assert "stopped: `max_steps" not in first and "resuming from" in rerun, log[-3000:]  # checkpointed, requeued
    assert global_step(run_dir / "checkpoints" / "last.ckpt") == REQUEUE_STEPS


@pytest.mark.slurm
def test_sweep_task_requeued_mid_record_computes_it_once(slurm_cluster, job_names, trained, tmp_path):
    """``scontrol requeue`` of a running array task while it computes a record: the task stops on SIGTERM with
    its claim released and nothing written, and the requeued task computes the record, once."""
    import json
    import time

    from ddim_bench.results.store import ResultStore
    env = client_env(slurm_cluster, tmp_path / "cache", tmp_path / "root")
    results, sweep = tmp_path / "results", tmp_path / "sweep"
    cmd = [BIN / "ddim-bench-sweep", "-m", "hydra/launcher=slurm_cpu", "sampler.steps=40", "sampler.eta=0.0,1.0",
           f"checkpoint={trained / 'checkpoints' / 'last.ckpt'}", "n_samples=400", "sampler.batch_size=8",
           "metrics.bootstrap.replicates=10", f"paths.results_dir={results}", f"hydra.sweep.dir={sweep}",
           "logger.wandb.mode=disabled", f"hydra.launcher.name={job_names('requeue-sweep')}",
           f"hydra.launcher.timeout_min={JOB_TIME_MIN}"]
    proc = subprocess.Popen([str(c) for c in cmd], env=env, cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        cells = results / "cells"
        lock = wait_for(lambda: next(iter(cells.glob("*.lock")), None) if cells.is_dir() else None,
                        SWEEP_TIMEOUT_S, interval=0.2, what="a task's claim")
        pid = json.loads(lock.read_text())["pid"]
        with open(f"/proc/{pid}/environ") as f:
            task = dict(v.split("=", 1) for v in f.read().split("\0") if "=" in v)
        job = f"{task['SLURM_ARRAY_JOB_ID']}_{task['SLURM_ARRAY_TASK_ID']}"
        key = lock.name[: -len(".lock")]
        requeued_at = time.time()
        run(["scontrol", "requeue", job], slurm_cluster["env"], 30)
        assert not (cells / f"{key}.json").exists(), "the record was done before the requeue: make it longer"
        wait_for(lambda: "Restarts=1" in run(["scontrol", "-o", "show", "job", job], slurm_cluster["env"], 30).stdout,
                 60, what="the requeue to be counted")
        out, err = proc.communicate(timeout=REQUEUE_TIMEOUT_S)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, f"{out[-2000:]}\n{err[-3000:]}"
    store = ResultStore(str(results))
    record = store.record(key)
    assert record is not None and record["created"] >= time.strftime("%Y-%m-%dT%H:%M:%S",
                                                                      time.localtime(requeued_at - 1))
    assert len(store.records()) == 2 and not list(cells.glob("*.lock")) and not (cells / "corrupt").exists()
    logs = "".join(p.read_text(errors="replace") for p in (sweep / ".submitit" / job).glob("*_log.err"))
    # both attempts' logs: the first stopped on SIGTERM, released the claim; the second found it free and computed
    first, _, second = logs.partition("stopped by SIGTERM: the record in progress was not written and its claim "
                                      "is released")
    assert second, logs[-3000:]
    assert "taking it over" not in second and ", skipped" not in second, second[-3000:]
    assert logs.count("S=40 η = 0") + logs.count("S=40 η = 1") == 1, logs[-3000:]  # the record's line, once
    assert "0 done before, 1 computed now" in second and "0 failed, 0 missing" in second


@pytest.mark.slurm
def test_sweep_warned_of_its_time_limit_requeues_itself_and_finishes(slurm_cluster, job_names, trained, tmp_path):
    """The job's warning signal (``slurm.signal``, USR1 here) mid-record, sent as SLURM sends it before the time
    limit (to the job's steps; sent by hand, since SLURM may send it up to a minute early): the task stops with
    its claim released and requeues itself; the next start finishes every record, each once."""
    import json

    from ddim_bench.results.store import ResultStore
    env = client_env(slurm_cluster, tmp_path / "cache", tmp_path / "root")
    results, output = tmp_path / "results", tmp_path / "slurm.out"
    command = "echo start restart_count=${SLURM_RESTART_COUNT:-0}; srun " + app(
        "ddim-bench-sweep", f"checkpoint={trained / 'checkpoints' / 'last.ckpt'}", "grid.steps=[20,21,22]",
        "grid.eta=[0.0]", "grid.hat=false", "n_samples=200", "sampler.batch_size=8", "metrics.bootstrap.replicates=10",
        f"paths.results_dir={results}", f"hydra.run.dir={tmp_path / 'run'}", "logger.wandb.mode=disabled",
        "slurm.signal=USR1@90")
    job = sbatch(env, job_names("limit"), output, command, "--signal=USR1@90", "--requeue", "--open-mode=append",
                 "--ntasks=1", "--cpus-per-task=1")
    cells = results / "cells"
    lock = wait_for(lambda: next(iter(cells.glob("*.lock")), None) if cells.is_dir() else None, SWEEP_TIMEOUT_S,
                    interval=0.2, what="the sweep's first claim")
    key = lock.name[: -len(".lock")]
    assert json.loads(lock.read_text())["pid"]
    run(["scancel", "--signal=USR1", job], slurm_cluster["env"], 30)

    log, first, rerun = requeued_log(slurm_cluster, job, output, "the requeued start to finish the sweep")
    assert "stopped by SIGUSR1: the record in progress was not written and its claim is released" in first, log
    assert f"job {job} requeued" in first and rerun, log[-3000:]
    assert log.count("η = 0 uniform: FID ") == 3, log[-3000:]  # each record's line once over both starts
    assert ResultStore(str(results)).record(key) is not None
    assert len(ResultStore(str(results)).records()) == 3 and not list(cells.glob("*.lock"))
    assert rerun.rstrip().endswith("0 failed, 0 missing"), rerun[-2000:]
