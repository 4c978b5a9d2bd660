"""Shared fixtures: the project's console scripts (``cli``), composed and validated app configs (``compose``), and
a small digits model trained once per session through the real CLI (``trained``)."""
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
# A test that needs one of these runs the apps end to end (console scripts, a trained model, SLURM): marked slow.
END_TO_END = {"cli", "trained", "bin_dir", "clean_env", "slurm_cluster"}
APPS = {"train": "TrainApp", "sweep": "SweepApp", "report": "ReportApp", "reconstruct": "ReconstructApp",
        "interpolate": "InterpolateApp"}


def pytest_collection_modifyitems(items):
    """``-m "not slow"`` (``make test-quick``) leaves out every end-to-end test: those marked ``slow`` and those
    using an END_TO_END fixture, directly or through another fixture."""
    for item in items:
        if END_TO_END & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)


def app_env(extra: dict | None = None) -> dict:
    """The environment a console script gets, as if started from a shell: not attached to the W&B service that
    this test process may have started (``WANDB_SERVICE``), which would outlive a killed app and hold its runs."""
    return {**{k: v for k, v in os.environ.items() if k != "WANDB_SERVICE"}, **(extra or {})}


def run_cli(name: str, *overrides: str, env: dict | None = None, timeout: int = 900, check: bool = True):
    proc = subprocess.run([str(BIN / name), *overrides], capture_output=True, text=True, timeout=timeout,
                          env=app_env(env), cwd=ROOT)
    if check and proc.returncode != 0:
        raise AssertionError(f"{name} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


@pytest.fixture(scope="session")
def cli():
    """``cli(name, *overrides, env=None, timeout=900, check=True)``: run a console script, return the process."""
    return run_cli


@pytest.fixture(scope="session")
def clean_env():
    """``clean_env(extra=None)``: the environment for an app started with Popen (see ``app_env``)."""
    return app_env


@pytest.fixture(scope="session")
def bin_dir():
    return BIN


@pytest.fixture(scope="session")
def root_dir():
    return ROOT


def compose_app(app: str, *overrides: str, typed: bool = True):
    """The app's config as Hydra composes it (HydraConfig set, as inside the app), validated by its schema."""
    from hydra import compose, initialize_config_dir
    from hydra.core.hydra_config import HydraConfig

    from ddim_bench import cli as app_cli, schema
    from ddim_bench.validation import validate
    with initialize_config_dir(config_dir=str(app_cli.CONF_DIR), version_base="1.3"):
        cfg = compose(app, overrides=list(overrides), return_hydra_config=True)
    cfg.hydra.runtime.output_dir = cfg.hydra.run.dir  # what Hydra sets when it runs the app
    HydraConfig.instance().set_config(cfg)
    if not typed:
        return cfg
    from omegaconf import OmegaConf, open_dict
    with open_dict(cfg):
        del cfg["hydra"]
    return validate(OmegaConf.create(OmegaConf.to_container(cfg)), getattr(schema, APPS[app]))


@pytest.fixture(scope="session")
def compose():
    """``compose(app, *overrides, typed=True)``: the composed (and validated) config of an app."""
    return compose_app


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory):
    """One cache for the session's apps (``$DDIM_BENCH_CACHE``, restored at the end of the session)."""
    path = tmp_path_factory.mktemp("cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DDIM_BENCH_CACHE", str(path))
        yield path


@pytest.fixture(scope="session")
def trained(tmp_path_factory, cache_dir):
    """A tiny UNet trained on digits for TRAIN_STEPS steps, W&B offline: the run folder."""
    out = tmp_path_factory.mktemp("train")
    run_cli("ddim-bench-train", f"hydra.run.dir={out}", f"trainer.max_steps={TRAIN_STEPS}",
            "trainer.enable_progress_bar=false", "callbacks.checkpoint_every_n_steps=200",
            "callbacks.sample_grid.every_n_steps=200", "callbacks.sample_grid.steps=10", "logger.wandb.mode=offline",
            "callbacks.fid.every_n_steps=200", "callbacks.fid.n_samples=64", "callbacks.fid.steps=10")
    assert (out / "checkpoints" / "last.ckpt").is_file()
    return out


@pytest.fixture(scope="session")
def train_steps():
    return TRAIN_STEPS


@pytest.fixture(scope="module")
def one_thread():
    """In-process torch work single-threaded for a module (as the CLI apps run here); restored afterwards."""
    import torch
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def untrained_ckpt(tmp_path_factory):
    """A tiny untrained digits UNet as a ddim-bench checkpoint: for counts and equalities that need no training."""
    import torch
    from ddim_bench.training.module import DiffusionModule
    torch.manual_seed(0)
    module = DiffusionModule(dict(in_channels=1, out_ch=1, ch=32, ch_mult=[1, 2], num_res_blocks=1,
                                  attn_resolutions=[4], dropout=0.0, resolution=8),
                             dict(num_timesteps=1000, schedule="linear", beta_start=1e-4, beta_end=0.02))
    path = tmp_path_factory.mktemp("ckpt") / "untrained.ckpt"
    torch.save({"state_dict": module.state_dict(), "hyper_parameters": dict(module.hparams), "global_step": 0}, path)
    return path
