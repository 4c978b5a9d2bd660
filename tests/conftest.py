"""Shared fixtures: a small digits model trained once per session through the real CLI."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

# One thread per process: the suite starts several torch processes (DDP, SLURM tasks) on small machines,
# where oversubscribed OpenMP threads cost far more than they give on these tiny models.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
sys.path.insert(0, str(Path(__file__).parent))
from slurm_cluster import slurm_cluster  # noqa: E402,F401  (session fixture: a real local SLURM)

TRAIN_STEPS = 400


def cli(name: str, *overrides: str, env: dict | None = None, timeout: int = 900, check: bool = True):
    """Run one of the project's console scripts; returns the CompletedProcess."""
    proc = subprocess.run([str(BIN / name), *overrides], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})}, cwd=ROOT)
    if check and proc.returncode != 0:
        raise AssertionError(f"{name} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("cache")
    os.environ["DDIM_BENCH_CACHE"] = str(path)
    return path


@pytest.fixture(scope="session")
def trained(tmp_path_factory, cache_dir):
    """A tiny UNet trained on digits for TRAIN_STEPS steps, W&B offline: the run folder."""
    out = tmp_path_factory.mktemp("train")
    cli("ddim-bench-train", f"hydra.run.dir={out}", f"trainer.max_steps={TRAIN_STEPS}",
        "trainer.enable_progress_bar=false", "callbacks.checkpoint_every_n_steps=200",
        "callbacks.sample_grid.every_n_steps=200", "callbacks.sample_grid.steps=10", "logger.wandb.mode=offline",
        "callbacks.fid.every_n_steps=200", "callbacks.fid.n_samples=64", "callbacks.fid.steps=10")
    assert (out / "checkpoints" / "last.ckpt").is_file()
    return out
