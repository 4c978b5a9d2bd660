"""Training through the real CLI: loss, checkpoints with raw and EMA weights, W&B records, DDP, bad config."""
import csv
import shutil

import pytest
import torch

from ddim_bench.models import checkpoint
from wandb_records import find_runs, read_run


def losses(run):
    with open(run / "csv" / "metrics.csv") as f:
        return [float(r["train/loss"]) for r in csv.DictReader(f) if r.get("train/loss")]


def test_training_on_digits_lowers_the_loss(trained):
    loss = losses(trained)
    assert len(loss) >= 10
    first, last = sum(loss[:3]) / 3, sum(loss[-3:]) / 3
    assert last < 0.5 * first, (first, last)


def test_checkpoint_holds_raw_and_ema_weights_and_loads_safely(trained, train_steps):
    raw = torch.load(trained / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert raw["global_step"] == train_steps
    key = "model.conv_in.weight"
    assert not torch.equal(raw["state_dict"][key], raw["current_model_state"][key])  # EMA != raw
    ema = checkpoint.load(str(trained / "checkpoints" / "last.ckpt"), "ema")
    cur = checkpoint.load(str(trained / "checkpoints" / "last.ckpt"), "raw")
    assert ema.info["weights"] == "ema" and cur.info["weights"] == "raw"
    assert torch.equal(ema.state_dict["conv_in.weight"], raw["state_dict"][key])
    model = checkpoint.build_model(ema)
    assert model(torch.zeros(2, 1, 8, 8), torch.tensor([0, 999])).shape == (2, 1, 8, 8)
    assert sorted(p.name for p in (trained / "samples").glob("*.png")) == ["step_0000200.png", "step_0000400.png"]


def test_fid_during_training_is_logged_and_keeps_the_best_checkpoint(trained):
    with open(trained / "csv" / "metrics.csv") as f:
        fids = [(int(r["step"]), float(r["val/fid"])) for r in csv.DictReader(f) if r.get("val/fid")]
    assert [s for s, _ in fids] == [200, 400], fids
    assert all(v > 0 for _, v in fids)
    best = torch.load(trained / "checkpoints" / "best-fid.ckpt", map_location="cpu", weights_only=True)
    cb = [v for k, v in best["callbacks"].items() if "best-fid" in str(v.get("dirpath", "")) or "val/fid" in k][0]
    assert cb["best_model_score"].item() == pytest.approx(min(v for _, v in fids), rel=1e-5)


def test_wandb_train_run_is_readable_offline(trained):
    runs = find_runs(str(trained))
    assert len(runs) == 1
    run = read_run(runs[0])
    assert run["job_type"] == "train"
    assert run["config"]["optim"]["lr"] == pytest.approx(2e-3) and run["config"]["data"]["name"] == "digits"
    logged = [h["train/loss"] for h in run["history"] if "train/loss" in h]
    assert logged and logged == pytest.approx(losses(trained)[: len(logged)], rel=1e-5)
    assert run["summary"]["checkpoint"].endswith("checkpoints/last.ckpt")


def test_ddp_with_two_cpu_processes(tmp_path, cli):
    cli("ddim-bench-train", "trainer=ddp_cpu", "trainer.max_steps=12", "trainer.enable_progress_bar=false",
        "trainer.log_every_n_steps=4",
        "logger=csv", "callbacks.sample_grid.every_n_steps=0", f"hydra.run.dir={tmp_path}", timeout=300)
    ckpts = sorted(p.name for p in (tmp_path / "checkpoints").glob("*.ckpt"))
    assert ckpts == ["last.ckpt"]
    loaded = checkpoint.load(str(tmp_path / "checkpoints" / "last.ckpt"))
    assert loaded.info["step"] == 12
    assert checkpoint.build_model(loaded) is not None
    assert len(list(tmp_path.rglob("metrics.csv"))) == 1


def test_last_checkpoint_holds_the_final_step_and_a_copied_folder_keeps_its_name(tmp_path, cli):
    """7 steps saved every 5: last.ckpt is step 7 (not 5); resumed to 9 steps in a copy, it is still last.ckpt."""
    run = ("trainer.enable_progress_bar=false", "logger=csv", "callbacks.sample_grid.every_n_steps=0",
           "callbacks.checkpoint_every_n_steps=5")
    cli("ddim-bench-train", *run, "trainer.max_steps=7", f"hydra.run.dir={tmp_path / 'a'}", timeout=300)
    ckpts = tmp_path / "a" / "checkpoints"
    assert sorted(p.name for p in ckpts.glob("*.ckpt")) == ["last.ckpt", "step_0000005.ckpt"]
    assert checkpoint.load(str(ckpts / "last.ckpt")).info["step"] == 7
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    resumed = cli("ddim-bench-train", *run, "trainer.max_steps=9", f"hydra.run.dir={tmp_path / 'b'}", timeout=300)
    assert "resuming from" in resumed.stdout and "last.ckpt" in resumed.stdout, resumed.stdout[-500:]
    names = sorted(p.name for p in (tmp_path / "b" / "checkpoints").glob("*.ckpt"))
    assert names == ["last.ckpt", "step_0000005.ckpt"], names
    assert checkpoint.load(str(tmp_path / "b" / "checkpoints" / "last.ckpt")).info["step"] == 9


@pytest.mark.parametrize("override,needle", [
    ("sampler.eta=-0.5", "sampler.eta=-0.5"),
    ("sampler.steps=5000", "sampler.steps=5000"),
    ("data=imagenet", "data=imagenet"),
    ("optim.lr=0", "optim.lr=0"),
    ("logger.wandb.mode=bogus", "logger.wandb.mode=bogus"),
])
def test_bad_config_values_give_one_line_errors(tmp_path, override, needle, cli):
    proc = cli("ddim-bench-train", override, f"hydra.run.dir={tmp_path / 'run'}", check=False, timeout=120)
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert proc.returncode != 0
    assert len(lines) == 1 and lines[0].startswith("error: ") and needle in lines[0], proc.stderr
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_missing_cifar10_root_names_the_key(tmp_path, cli):
    proc = cli("ddim-bench-train", "experiment=cifar10_ddim", f"data.root={tmp_path / 'none'}",
               "trainer.accelerator=cpu", f"hydra.run.dir={tmp_path / 'run'}", "logger=csv", check=False)
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert proc.returncode != 0 and len(lines) == 1 and "data.root" in lines[0], proc.stderr
