"""Restarted training through the real CLI: one CSV history, one W&B run id, bad checkpoints handled."""
import csv
import os
import shutil
import signal
import subprocess
import time
from collections import Counter

import pytest

from wandb_records import find_runs, read_run

EVERY = 8  # checkpoint every EVERY steps
FAST = ("trainer.enable_progress_bar=false", f"callbacks.checkpoint_every_n_steps={EVERY}",
        "trainer.log_every_n_steps=2", "callbacks.sample_grid.every_n_steps=0", "logger.wandb.mode=offline",
        "model.ch=8")


@pytest.fixture(scope="session")
def train(cli):
    """``train(run folder, max_steps, *overrides, check=True)`` through the CLI."""
    def run_train(run, steps, *extra, check=True):
        return cli("ddim-bench-train", f"hydra.run.dir={run}", f"trainer.max_steps={steps}", *FAST, *extra,
                   timeout=300, check=check)
    return run_train


def rows(run):
    with open(run / "csv" / "metrics.csv") as f:
        return list(csv.DictReader(f))


def loss_steps(table):
    return [int(r["step"]) for r in table if r.get("train/loss")]


def assert_one_history(table, last_step):
    """Every logged step once per metric, in step order, up to ``last_step``."""
    steps = loss_steps(table)
    assert steps == list(range(1, last_step + 1, 2)), steps  # log_every_n_steps=2 logs steps 1, 3, 5…
    lr = [int(r["step"]) for r in table if r.get("lr-Adam")]
    assert lr == steps
    assert [int(r["step"]) for r in table] == sorted(int(r["step"]) for r in table)


def logged_so_far(run) -> int:
    """The last step with a logged loss while the run writes its CSV (-1 before the first)."""
    try:
        return max(loss_steps(rows(run)), default=-1)
    except (OSError, ValueError, KeyError):
        return -1


def wandb_ids(run):
    return [read_run(r)["id"] for r in find_runs(run)]


@pytest.fixture(scope="module")
def first_part(tmp_path_factory, train):
    """20 steps, checkpoints at 8 and 16 (last.ckpt = step 16): rows of steps 17 and 19 come after it."""
    run = tmp_path_factory.mktemp("restart") / "first"
    train(run, 20)
    assert loss_steps(rows(run)) == list(range(1, 20, 2))
    return run


def copy_of(first_part, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(first_part, run, symlinks=True)
    return run


def test_rerun_with_more_steps_continues_csv_and_wandb_run(first_part, train, tmp_path):
    run = copy_of(first_part, tmp_path)
    before = rows(run)
    proc = train(run, 40)
    assert f"resuming from {run / 'checkpoints' / 'last.ckpt'}" in proc.stdout + proc.stderr
    after = rows(run)
    assert_one_history(after, 39)
    # rows before the resumed checkpoint (step 16) are the first start's, untouched; 17 and 19 were logged again
    assert [r for r in after if int(r["step"]) < 16] == [r for r in before if int(r["step"]) < 16]
    ids = wandb_ids(run)
    assert len(ids) == 2 and len(set(ids)) == 1, ids  # offline: one folder per start, one run id
    assert (run / "wandb_run_id").read_text().strip() == ids[0]
    second = max(find_runs(run))  # offline-run-<time>-<id>: the later start sorts last
    steps = [h["trainer/global_step"] for h in read_run(second)["history"] if "train/loss" in h]
    assert steps and min(steps) >= 16


def test_truncated_last_ckpt_falls_back_to_the_previous_checkpoint(first_part, train, tmp_path):
    run = copy_of(first_part, tmp_path)
    last = run / "checkpoints" / "last.ckpt"
    last.write_bytes(last.read_bytes()[: last.stat().st_size // 2])
    proc = train(run, 24)
    previous = run / "checkpoints" / f"step_{16:07d}.ckpt"
    warned = [ln for ln in proc.stderr.splitlines() if ln.startswith("warning:") and "ckpt" in ln]
    assert len(warned) == 1 and str(last) in warned[0] and str(previous) in warned[0], proc.stderr
    assert "not a readable checkpoint" in warned[0]
    assert f"resuming from {previous}" in proc.stdout + proc.stderr
    assert_one_history(rows(run), 23)
    assert len(set(wandb_ids(run))) == 1


def wandb_services() -> set[int]:
    pids = set()
    for d in os.listdir("/proc"):
        try:
            if d.isdigit() and b"wandb-core" in open(f"/proc/{d}/cmdline", "rb").read():
                pids.add(int(d))
        except OSError:
            pass
    return pids


def kill_new_wandb_services(before: set[int]) -> None:
    for pid in wandb_services() - before:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def test_killed_run_resumes_with_its_history(train, bin_dir, root_dir, tmp_path, clean_env):
    run = tmp_path / "run"
    cmd = [str(bin_dir / "ddim-bench-train"), f"hydra.run.dir={run}", "trainer.max_steps=100000", *FAST]
    services_before = wandb_services()
    with open(tmp_path / "killed.log", "w") as log:
        proc = subprocess.Popen(cmd, cwd=root_dir, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                                env=clean_env())
        try:
            deadline = time.monotonic() + 120
            while logged_so_far(run) <= 2 * EVERY:  # a checkpoint at 2 * EVERY, and rows logged after it
                assert proc.poll() is None and time.monotonic() < deadline, (tmp_path / "killed.log").read_text()
                time.sleep(0.05)
        finally:
            os.killpg(proc.pid, signal.SIGKILL)  # the CLI and its wandb service
            kill_new_wandb_services(services_before)  # as SLURM ends every process of a job, setsid or not
            proc.wait(timeout=30)
    assert (run / "checkpoints" / f"step_{2 * EVERY:07d}.ckpt").exists()
    train(run, 30)
    assert_one_history(rows(run), 29)
    runs = find_runs(run)
    assert len(runs) == 2 and len({os.path.basename(r).rsplit("-", 1)[1] for r in runs}) == 1, runs
    assert read_run(max(runs))["id"] == (run / "wandb_run_id").read_text().strip()


def test_truncated_explicit_ckpt_path_stops_before_anything_is_written(first_part, train, tmp_path):
    bad = tmp_path / "bad.ckpt"
    bad.write_bytes((first_part / "checkpoints" / "last.ckpt").read_bytes()[:1000])
    run = tmp_path / "run"
    proc = train(run, 24, f"ckpt_path={bad}", check=False)
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert proc.returncode != 0
    assert len(lines) == 1 and lines[0].startswith(f"error: ckpt_path={bad} is not a readable checkpoint ("), lines
    written = Counter(p.name for p in run.iterdir()) if run.exists() else Counter()
    assert not {"wandb", "csv", "checkpoints", "wandb_run_id"} & set(written), written
