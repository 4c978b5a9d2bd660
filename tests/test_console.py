"""What the console and the run folder show a user: Ctrl-C is one line in the sweep and in training, and
Lightning's info lines land in the job's log file (not on the console, not nowhere)."""
import os
import signal
import subprocess
import time

import pytest

INTERRUPTED = "interrupted; rerun the same command to resume"


def interrupt_when(cmd, cwd, env, ready, timeout=180, merged=False):
    """Start ``cmd``, send it Ctrl-C (SIGINT) once ``ready()`` is true; (return code, stderr, or stdout and stderr
    as one stream, as a terminal shows them, when ``merged``)."""
    proc = subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.PIPE, text=True, env=env, start_new_session=True,
                            stderr=subprocess.STDOUT if merged else subprocess.PIPE)
    try:
        deadline = time.monotonic() + timeout
        while not ready():
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
            time.sleep(0.1)
        os.kill(proc.pid, signal.SIGINT)
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    return proc.returncode, out if merged else err


@pytest.mark.slow
def test_ctrl_c_is_one_line_in_the_sweep(trained, bin_dir, root_dir, tmp_path, clean_env):
    results = tmp_path / "results"
    cmd = [str(bin_dir / "ddim-bench-sweep"), f"checkpoint={trained / 'checkpoints' / 'last.ckpt'}",
           f"paths.results_dir={results}", f"hydra.run.dir={tmp_path / 'run'}", "logger.wandb.mode=disabled",
           "grid.steps=[10,20]", "grid.eta=[0.0]", "grid.hat=false", "n_samples=64", "sampler.batch_size=4",
           "seeds=[0,1,2,3,4,5,6,7]"]
    code, err = interrupt_when(cmd, root_dir, clean_env(), lambda: len(list((results / "cells").glob("*.json"))) >= 1)
    # the sweep's own stop line (its signal handling releases the claim of the record in progress)
    assert code == 130 and err.strip().splitlines()[-1].startswith("stopped by SIGINT: "), err
    assert err.strip().endswith("rerun to resume") and "Traceback" not in err


@pytest.mark.slow
def test_ctrl_c_is_one_line_in_training_and_lightning_logs_to_train_log(bin_dir, root_dir, tmp_path, clean_env):
    run = tmp_path / "run"
    cmd = [str(bin_dir / "ddim-bench-train"), f"hydra.run.dir={run}", "trainer.max_steps=100000",
           "callbacks.checkpoint_every_n_steps=5", "callbacks.sample_grid.every_n_steps=0",
           "logger.wandb.mode=disabled"]
    code, err = interrupt_when(cmd, root_dir, clean_env(), lambda: (run / "checkpoints" / "last.ckpt").exists(),
                               merged=True)
    # the line on its own below the progress bar (it was glued to the bar's last line, and the bar redrawn after it)
    assert code == 130 and err.replace("\r", "\n").strip().splitlines()[-1] == INTERRUPTED, err[-2000:]
    assert "Traceback" not in err and "KeyboardInterrupt" not in err
    log = (run / "train.log").read_text()
    assert "Detected KeyboardInterrupt" in log and "GPU available" in log, log  # Lightning's info lines, in the file
    assert "GPU available" not in err


def test_one_cache_for_every_app_wherever_it_starts(compose, monkeypatch, tmp_path):
    """Before, the cache was ``./.cache``: started from another folder, an app trained the classifiers again."""
    from ddim_bench.cli import user_cache_dir
    monkeypatch.delenv("DDIM_BENCH_CACHE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.chdir(tmp_path)
    assert user_cache_dir() == str(tmp_path / "xdg" / "ddim-bench")
    for app in ("sweep", "train", "report"):
        args = ["checkpoint=x"] if app == "sweep" else []
        assert compose(app, *args).paths.cache_dir == user_cache_dir()
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert user_cache_dir() == os.path.join(os.path.expanduser("~"), ".cache", "ddim-bench")
    monkeypatch.setenv("DDIM_BENCH_CACHE", str(tmp_path / "mine"))
    cfg = compose("sweep", "checkpoint=x", "metrics=inception")
    assert cfg.metrics.weights_path == str(tmp_path / "mine" / "weights" / "weights-inception-2015-12-05-6726825d.pth")
