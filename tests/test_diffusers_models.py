"""Public diffusion models as checkpoints: diffusers folders (save_pretrained) and Hub ids, all offline.

A tiny ``UNet2DModel`` + ``DDPMScheduler`` saved with ``save_pretrained`` goes through the one sampling path:
our DDIM equals diffusers' own ``DDIMPipeline`` on it, it is swept, reported and logged to W&B offline, and
bad folders or an unreachable Hub id stop with one line.
"""
import hashlib
import os
import shutil

import pytest
import torch
from wandb_records import find_runs, read_run

from ddim_bench import config
from ddim_bench.sweep import prepare, run as sweep
from ddim_bench.errors import UserError
from ddim_bench.results import store
from ddim_bench.models import checkpoint
from ddim_bench.sampling import ddim

T = 100


def save_tiny(folder, sample_size=8, channels=1, pipeline=True, safe=True, seed=0):
    """A random tiny UNet2DModel (+ DDPMScheduler with T = 100 as a DDPMPipeline) saved with save_pretrained."""
    import safetensors.torch  # noqa: F401  (older diffusers save with it without importing it)
    from diffusers import DDPMPipeline, DDPMScheduler, UNet2DModel
    torch.manual_seed(seed)
    unet = UNet2DModel(sample_size=sample_size, in_channels=channels, out_channels=channels, layers_per_block=1,
                       block_out_channels=(8, 16), down_block_types=("DownBlock2D", "AttnDownBlock2D"),
                       up_block_types=("AttnUpBlock2D", "UpBlock2D"), norm_num_groups=4, attention_head_dim=8)
    sched = DDPMScheduler(num_train_timesteps=T, beta_schedule="linear", beta_start=1e-4, beta_end=0.02)
    target = DDPMPipeline(unet=unet, scheduler=sched) if pipeline else unet
    target.save_pretrained(str(folder), safe_serialization=safe)
    return unet.eval(), sched


def sha256(path):
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ddpm-tiny")
    unet, sched = save_tiny(folder)
    return folder, unet, sched


def test_pipeline_folder_loads_with_its_schedule_and_content_hash(tiny, tmp_path):
    folder, unet, _ = tiny
    loaded = checkpoint.load(str(folder))
    assert loaded.arch == "diffusers" and loaded.shape == (1, 8, 8)
    assert loaded.schedule == {"num_timesteps": T, "schedule": "linear", "beta_start": 1e-4, "beta_end": 0.02}
    weights = folder / "unet" / "diffusion_pytorch_model.safetensors"
    assert loaded.info["sha256"] == sha256(weights) and loaded.info["weights_file"] == weights.name
    model = checkpoint.build_model(loaded)
    x, t = torch.randn(3, 1, 8, 8), torch.tensor([0, 50, 99])
    assert torch.equal(model(x, t), unet(x, t).sample)
    bare = tmp_path / "bare"
    _, sched = save_tiny(bare, pipeline=False)  # a bare UNet folder: no scheduler, the diffusion config decides
    loaded = checkpoint.load(str(bare))
    assert loaded.schedule is None and loaded.info["sha256"] == sha256(bare / "diffusion_pytorch_model.safetensors")
    sched.save_pretrained(str(bare))  # a flat repo: config.json and scheduler_config.json side by side
    assert checkpoint.load(str(bare)).schedule["num_timesteps"] == T


def test_reconstruction_runs_on_a_diffusers_folder(tiny, cache_dir, tmp_path, compose):
    from ddim_bench.tasks import reconstruct
    cfg = compose("reconstruct", f"checkpoint={tiny[0]}", f"paths.results_dir={tmp_path}", "n_images=8",
                  f"hydra.run.dir={tmp_path}/run", "steps=[5,20]", "logger.wandb.mode=disabled")
    out = reconstruct.run(cfg)
    assert [r["steps"] for r in out] == [5, 20] and all(r["mse"] > 0 for r in out)
    assert {r["checkpoint_sha256"] for r in out} == {sha256(tiny[0] / "unet" / "diffusion_pytorch_model.safetensors")}


def test_pickle_weights_load_only_through_weights_only(tmp_path):
    good = tmp_path / "bin"
    unet, _ = save_tiny(good, safe=False)
    loaded = checkpoint.load(str(good))
    assert loaded.info["weights_file"] == "diffusion_pytorch_model.bin"
    x, t = torch.randn(2, 1, 8, 8), torch.tensor([3, 70])
    assert torch.equal(checkpoint.build_model(loaded)(x, t), unet(x, t).sample)
    bad = tmp_path / "evil"
    shutil.copytree(good, bad)
    sd = torch.load(good / "unet" / "diffusion_pytorch_model.bin", weights_only=True)
    torch.save({**sd, "payload": Payload()}, bad / "unet" / "diffusion_pytorch_model.bin")
    with pytest.raises(UserError, match=r"^checkpoint=.*evil: diffusers cannot load its UNet2DModel"):
        checkpoint.build_model(checkpoint.load(str(bad)))
    assert not Payload.unpickled


class Payload:
    """An object a weights_only load refuses to build (a full unpickler would call __setstate__)."""
    unpickled = False

    def __setstate__(self, state):
        Payload.unpickled = True


@pytest.mark.parametrize("clip", [False, True])
def test_our_ddim_equals_diffusers_ddim_pipeline(tiny, clip):
    """Leading skip (our uniform), η = 0, the same x_T: DDIMPipeline's output to 1e-5, before its clamp too."""
    from diffusers import DDIMPipeline, DDIMScheduler
    folder, unet, sched = tiny

    class Recording(DDIMScheduler):
        def step(self, *args, **kwargs):
            out = super().step(*args, **kwargs)
            self.last = out.prev_sample
            return out

    pipe = DDIMPipeline(unet=unet, scheduler=sched)  # the pipeline makes its own DDIMScheduler from the config
    assert pipe.scheduler.config.timestep_spacing == "leading" and pipe.scheduler.config.set_alpha_to_one
    pipe.scheduler = scheduler = Recording.from_config(pipe.scheduler.config, clip_sample=clip)
    pipe.set_progress_bar_config(disable=True)
    theirs = pipe(batch_size=4, generator=torch.Generator().manual_seed(7), num_inference_steps=10, eta=0.0,
                  output_type="pt").images
    if not torch.is_tensor(theirs):  # older diffusers return NHWC numpy arrays for any output_type but "pil"
        theirs = torch.from_numpy(theirs).permute(0, 3, 1, 2)
    loaded = checkpoint.load(str(folder))
    x_T = torch.randn((4, 1, 8, 8), generator=torch.Generator().manual_seed(7))
    ours = ddim.sample(checkpoint.build_model(loaded), x_T, config.build_alphas(loaded.schedule),
                       ddim.timesteps(T, 10, "uniform"), eta=0.0, clip_x0=clip)
    assert (ours - scheduler.last).abs().max() < 1e-5
    assert ((ours / 2 + 0.5).clamp(0, 1) - theirs).abs().max() < 1e-5
    assert ours.abs().max() > 0.1  # not a trivially equal pair


def test_diffusers_folder_is_swept_reported_and_logged(tiny, cache_dir, tmp_path, compose, cli, monkeypatch):
    folder = tiny[0]
    overrides = [f"checkpoint={folder}", f"paths.results_dir={tmp_path}", "n_samples=24",
                 f"hydra.run.dir={tmp_path}/run", "grid.steps=[3,5]", "grid.eta=[0.0]", "grid.hat=false",
                 "grid.samplers=[ddim,dpmpp_2m]", "logger.wandb.mode=offline", "sweep_name=hub",
                 "metrics.bootstrap.replicates=10"]
    cfg = compose("sweep", *overrides)
    done = sweep.run_sweep(cfg)
    weights_sha = sha256(folder / "unet" / "diffusion_pytorch_model.safetensors")
    assert len(done) == 4 and {(r["sampler"], r["steps"]) for r in done} == {
        (s, n) for s in ("ddim", "dpmpp_2m") for n in (3, 5)}
    for r in done:
        assert r["checkpoint_sha256"] == weights_sha and r["checkpoint"]["kind"] == "diffusers"
        assert r["schedule"]["num_timesteps"] == T and r["nfe"] == r["nfe_predicted"] and r["fid"] > 0
    assert sweep.run_sweep(cfg) == [], "records are keyed by content: a rerun computes nothing"
    commit = hub_cache_with(folder, cache_dir, repo="tiny/swept")  # the same weights as a Hub model, offline
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    via_hub = compose("sweep", *[o for o in overrides if not o.startswith("checkpoint=")], "checkpoint=tiny/swept")
    assert prepare.prepare(via_hub, False)["loaded"].info["revision"] == commit
    assert sweep.run_sweep(via_hub) == [], "the same weights from the Hub are the same records"
    cli("ddim-bench-report", f"results_dir={tmp_path}", "sweep_name=hub", "logger.wandb.mode=offline",
        f"hydra.run.dir={tmp_path / 'report-run'}")
    runs = [read_run(p) for p in find_runs(str(tmp_path))]
    evals = {r["config"]["key"]: r for r in runs if r["job_type"] == "eval"}
    recs = {r["key"]: r for r in store.ResultStore(str(tmp_path)).records()}
    assert set(evals) == set(recs) and len(recs) == 4
    for key, run in evals.items():
        assert run["summary"]["fid"] == pytest.approx(recs[key]["fid"], rel=1e-12)
        assert run["config"]["checkpoint_sha256"] == weights_sha and run["config"]["checkpoint"]["kind"] == "diffusers"
    report = next(r for r in runs if r["job_type"] == "report")
    assert len(report["tables"]["records"]["data"]) == 4
    assert (tmp_path / "report" / "cells.csv").is_file()


def hub_cache_with(folder, cache, repo="tiny/ddpm", commit="0123456789abcdef0123456789abcdef01234567"):
    """The Hub cache layout (models--owner--name/refs, snapshots/<commit>) holding ``folder``, as a download
    leaves it."""
    base = cache / "huggingface" / f"models--{repo.replace('/', '--')}"
    shutil.copytree(folder, base / "snapshots" / commit)
    (base / "refs").mkdir()
    (base / "refs" / "main").write_text(commit)
    return commit


def test_hub_id_from_the_cache_offline_records_its_revision(tiny, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    commit = hub_cache_with(tiny[0], tmp_path)
    for ref in ("tiny/ddpm", f"tiny/ddpm@{commit}", "tiny/ddpm@main"):
        loaded = checkpoint.load(ref, cache_dir=str(tmp_path), download=False)
        assert loaded.info["repo"] == "tiny/ddpm" and loaded.info["revision"] == commit
        assert loaded.info["sha256"] == sha256(tiny[0] / "unet" / "diffusion_pytorch_model.safetensors")
        assert loaded.schedule["num_timesteps"] == T


def test_plan_finds_a_hub_model_in_the_per_user_cache(tiny, tmp_path, cli):
    """``plan=true`` loads the checkpoint as the sweep does: a Hub id from the one cache every app shares
    (``$DDIM_BENCH_CACHE``), whatever the working directory."""
    hub_cache_with(tiny[0], tmp_path / "cache")
    proc = cli("ddim-bench-sweep", "plan=true", "checkpoint=tiny/ddpm", "experiment=digits", "data.resolution=8",
               "n_samples=10", "grid.steps=[5]", f"paths.results_dir={tmp_path / 'res'}",
               env={"HF_HUB_OFFLINE": "1", "DDIM_BENCH_CACHE": str(tmp_path / "cache")}, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "model calls: 200 " in proc.stdout, proc.stdout  # 4 cells (3 eta rows + sigma-hat) x 10 samples x 5
    assert not (tmp_path / "res").exists()


def one_line(proc):
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert proc.returncode == 2 and len(lines) == 1, (proc.returncode, proc.stderr[-2000:])
    return lines[0]


def test_hub_id_without_network_or_cache_is_one_line(tmp_path, cli):
    proc = cli("ddim-bench-sweep", "checkpoint=google/ddpm-cifar10-32", f"paths.cache_dir={tmp_path / 'cache'}",
               f"paths.results_dir={tmp_path / 'res'}", f"hydra.run.dir={tmp_path / 'run'}",
               env={"HF_HUB_OFFLINE": "1"}, timeout=120, check=False)
    line = one_line(proc)
    assert "checkpoint=google/ddpm-cifar10-32 is no local path, and as a Hub model it is not in the cache" in line
    assert "hf download google/ddpm-cifar10-32" in line and "save_pretrained" in line
    assert not (tmp_path / "res").exists()
    with pytest.raises(UserError, match="download=false"):
        checkpoint.load("google/ddpm-cifar10-32", cache_dir=str(tmp_path / "cache"), download=False)


@pytest.mark.parametrize("size,channels", [(16, 1), (8, 3)])
def test_wrong_resolution_or_channels_is_one_line(tmp_path, cli, size, channels):
    folder = tmp_path / f"m{size}x{channels}"
    save_tiny(folder, sample_size=size, channels=channels)
    proc = cli("ddim-bench-sweep", f"checkpoint={folder}", f"paths.results_dir={tmp_path / 'res'}",
               f"hydra.run.dir={tmp_path / 'run'}", "logger.wandb.mode=offline", check=False)
    line = one_line(proc)
    assert f"checkpoint={folder} takes ({channels}, {size}, {size})" in line and "data.resolution" in line
    assert not (tmp_path / "res").exists()


def test_the_schedule_override_is_checked_against_the_folders_own(tiny, tmp_path, compose):
    cfg = compose("sweep", f"checkpoint={tiny[0]}", f"paths.results_dir={tmp_path}", f"hydra.run.dir={tmp_path}/r",
                  "diffusion.num_timesteps=1000", "logger.wandb.mode=disabled")
    with pytest.raises(UserError, match=r"diffusion.num_timesteps=1000 differs from the checkpoint's own"):
        prepare.prepare(cfg, multirun=False)


def test_unsupported_folders_are_refused_by_name(tmp_path):
    import json
    folder = tmp_path / "vpred"
    save_tiny(folder)
    path = folder / "scheduler" / "scheduler_config.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), "prediction_type": "v_prediction"}))
    with pytest.raises(UserError, match=r"predicts v_prediction, not ε"):
        checkpoint.load(str(folder))
    os.remove(folder / "unet" / "diffusion_pytorch_model.safetensors")
    with pytest.raises(UserError, match="has no diffusion_pytorch_model"):
        checkpoint.load(str(folder))


@pytest.mark.parametrize("preset,repo,res", [("cifar10_table1", "google/ddpm-cifar10-32", 32),
                                             ("lsun_church_256", "google/ddpm-ema-church-256", 256),
                                             ("lsun_bedroom_256", "google/ddpm-ema-bedroom-256", 256)])
def test_presets_compose_with_the_hub_models(compose, tmp_path, preset, repo, res):
    extra = [] if preset.startswith("cifar10") else [f"data.root={tmp_path}"]
    cfg = compose("sweep", f"experiment={preset}", *extra)
    assert cfg.checkpoint == repo and cfg.data.resolution == res and cfg.download is True
    assert cfg.metrics.extractor == "inception-v3-compat" and cfg.n_samples == 50000 and len(cfg.seeds) == 3
    assert cfg.sampler.skip == ("quad" if preset.startswith("cifar10") else "uniform")
    if extra:
        assert cfg.data.root == str(tmp_path) and cfg.data._target_.endswith("ImageFolderDataModule")
        with pytest.raises(UserError, match=r"^data.root is not set; pass data.root=...$"):
            config.build_datamodule(compose("sweep", f"experiment={preset}").data)


def test_the_fast_path_wraps_a_diffusers_model(tiny):
    from ddim_bench.models import fast
    loaded = checkpoint.load(str(tiny[0]))
    x, t = torch.randn(4, 1, 8, 8), torch.tensor([1, 20, 60, 99])
    plain = checkpoint.build_model(loaded)(x, t)
    cl = fast.wrap(checkpoint.build_model(loaded), {"channels_last": True}, "cpu")
    bf16 = fast.wrap(checkpoint.build_model(loaded), {"bf16": True}, "cpu")
    assert (cl(x, t) - plain).abs().max() < 1e-5
    out = bf16(x, t)
    assert out.dtype == torch.float32 and 0 < (out - plain).abs().max() < 0.1 * plain.abs().max()
