"""W&B tracking, checked offline by reading the ``.wandb`` files back (real wandb, no mocks)."""
from __future__ import annotations

import csv
import os
import secrets
import sys

import numpy as np
import pytest
import torch

wandb = pytest.importorskip("wandb")

from ddim_bench import tracking  # noqa: E402
from ddim_bench.errors import UserError  # noqa: E402
from ddim_bench.tracking.csv_history import CSVHistory  # noqa: E402
from wandb_records import WandbFormatError, find_runs, read_run  # noqa: E402

OFFLINE = {"wandb": {"project": "ddim-bench-test", "entity": None, "mode": "offline", "group": None,
                     "tags": ["unit"], "dir": None}}


@pytest.fixture(autouse=True)
def _isolated_wandb(tmp_path, monkeypatch):
    """Keep wandb's caches/staging inside the test folder and ignore the caller's W&B env."""
    home = tmp_path / "wandb_home"
    for var in ("WANDB_CACHE_DIR", "WANDB_DATA_DIR", "WANDB_CONFIG_DIR", "WANDB_ARTIFACT_DIR"):
        monkeypatch.setenv(var, str(home / var.lower()))
    for var in ("WANDB_MODE", "WANDB_DIR", "WANDB_PROJECT", "WANDB_ENTITY", "WANDB_RUN_GROUP",
                "WANDB_JOB_TYPE", "WANDB_NAME", "WANDB_RUN_ID", "WANDB_RESUME", "WANDB_API_KEY"):
        monkeypatch.delenv(var, raising=False)
    yield
    if wandb.run is not None:
        wandb.finish()


def _read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_tracker_round_trip(tmp_path):
    cfg = {"sampler": {"steps": 20, "eta": 0.5}, "seed": 3, "name": "cell"}
    img_path = tmp_path / "grid.png"
    from PIL import Image

    Image.fromarray(np.full((8, 8, 3), 200, dtype=np.uint8)).save(img_path)

    t = tracking.Tracker(OFFLINE, job_type="sweep", group="grid-a", name="S20-eta0.5", config=cfg,
                         dir=str(tmp_path / "cell"))
    assert t.run_dir and os.path.basename(t.run_dir).startswith("offline-run-")
    t.log({"fid": 12.5, "batch": 1}, step=0)
    t.log({"fid": 11.25, "batch": 2, "seconds": 0.75}, step=1)
    t.log({"fid": 10.0}, step=2)
    t.table("cells", ["S", "eta", "fid"], [[10, 0.0, 20.5], [20, 0.5, 12.5], [50, 1.0, 9.0]])
    t.image("samples", str(img_path), caption="S=20")
    t.image("noise", np.zeros((4, 4, 3), dtype=np.uint8))
    t.line_plot("fid_vs_S", [{"S": 10, "eta": 0.0, "fid": 20.5}, {"S": 20, "eta": 0.0, "fid": 12.5},
                             {"S": 10, "eta": 1.0, "fid": 25.0}], x="S", y="fid", series="eta", title="FID vs S")
    t.summary({"fid": 10.0, "best_S": 20, "note": "ok"})
    run_dir = t.run_dir
    t.finish()
    t.finish()  # idempotent

    run = read_run(run_dir)
    assert run["job_type"] == "sweep"
    assert run["group"] == "grid-a"
    assert run["name"] == "S20-eta0.5"
    assert run["project"] == "ddim-bench-test"
    assert run["tags"] == ["unit"]
    assert run["exit_code"] == 0
    assert run["config"] == cfg
    assert run["summary"]["fid"] == 10.0
    assert run["summary"]["best_S"] == 20
    assert run["summary"]["note"] == "ok"

    scalar_rows = [h for h in run["history"] if "fid" in h]
    assert [(h["_step"], h["fid"], h["batch"] if "batch" in h else None) for h in scalar_rows] == [
        (0, 12.5, 1), (1, 11.25, 2), (2, 10.0, None)]
    assert scalar_rows[1]["seconds"] == 0.75
    steps = [h["_step"] for h in run["history"]]
    assert steps == sorted(steps) and len(set(steps)) == len(steps)

    assert run["tables"]["cells"] == {"columns": ["S", "eta", "fid"],
                                      "data": [[10, 0.0, 20.5], [20, 0.5, 12.5], [50, 1.0, 9.0]]}
    chart = run["tables"]["fid_vs_S_table"]
    assert len(chart["data"]) == 3
    images = [h["samples"] for h in run["history"] if "samples" in h]
    assert len(images) == 1 and images[0]["_type"] == "image-file" and images[0]["caption"] == "S=20"
    assert images[0]["path"] in run["files"]
    assert any(f.startswith("media/table/cells") for f in run["files"])

    # the same scalars in a plain CSV beside the run
    rows = _read_csv(tmp_path / "cell" / "scalars.csv")
    assert [(r["step"], r["fid"], r["batch"], r["seconds"]) for r in rows] == [
        ("0", "12.5", "1", ""), ("1", "11.25", "2", "0.75"), ("2", "10.0", "", "")]
    assert _read_csv(tmp_path / "cell" / "tables" / "cells.csv")[1] == {"S": "20", "eta": "0.5", "fid": "12.5"}


def test_two_trackers_are_two_runs(tmp_path):
    dirs = []
    for i in range(2):
        t = tracking.Tracker(OFFLINE, job_type="sweep", group="g", name=f"cell{i}", config={"i": i},
                             dir=str(tmp_path / f"job{i}"))
        t.log({"x": float(i)})
        dirs.append(t.run_dir)
        t.finish()
    assert dirs[0] != dirs[1]
    found = find_runs(tmp_path)
    assert sorted(found) == sorted(dirs)
    runs = [read_run(d) for d in dirs]
    assert [r["name"] for r in runs] == ["cell0", "cell1"]
    assert [r["config"] for r in runs] == [{"i": 0}, {"i": 1}]
    assert [r["history"][0]["x"] for r in runs] == [0.0, 1.0]
    assert runs[0]["id"] != runs[1]["id"]


def test_tracker_context_manager_reinit(tmp_path):
    # an unfinished run is finished by the next Tracker (reinit="finish_previous")
    a = tracking.Tracker(OFFLINE, job_type="report", group=None, name="a", config={}, dir=str(tmp_path / "a"))
    a.log({"v": 1})
    with tracking.Tracker(OFFLINE, job_type="report", group=None, name="b", config={},
                          dir=str(tmp_path / "b")) as b:
        b.log({"v": 2})
    ra, rb = read_run(a.run_dir), read_run(b.run_dir)
    assert ra["exit_code"] == 0 and rb["exit_code"] == 0
    assert ra["group"] is None and rb["job_type"] == "report"
    assert [h["v"] for h in rb["history"]] == [2]


class _Tiny:
    """A tiny LightningModule / DataLoader pair, built lazily so importing the test stays cheap."""

    @staticmethod
    def build():
        import pytorch_lightning as pl
        import torch
        from torch.utils.data import DataLoader, TensorDataset

        class TinyModule(pl.LightningModule):
            def __init__(self, lr: float = 0.1):
                super().__init__()
                self.save_hyperparameters()
                self.layer = torch.nn.Linear(4, 1)

            def training_step(self, batch, batch_idx):
                x, y = batch
                loss = torch.nn.functional.mse_loss(self.layer(x), y)
                self.log("train/loss", loss)
                return loss

            def configure_optimizers(self):
                return torch.optim.SGD(self.parameters(), lr=self.hparams.lr)

        g = torch.Generator().manual_seed(0)
        ds = TensorDataset(torch.randn(16, 4, generator=g), torch.randn(16, 1, generator=g))
        return TinyModule(), DataLoader(ds, batch_size=4)


def _fit(loggers, root):
    import pytorch_lightning as pl

    module, loader = _Tiny.build()
    trainer = pl.Trainer(fast_dev_run=False, max_steps=3, logger=loggers, accelerator="cpu", devices=1,
                         log_every_n_steps=1, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, default_root_dir=str(root))
    trainer.fit(module, loader)
    return trainer


def test_lightning_logger_round_trip(tmp_path):
    from pytorch_lightning.loggers import WandbLogger

    run_config = {"model": {"ch": 8}, "optim": {"lr": 0.1}, "trainer": {"max_steps": 3}}
    loggers = tracking.lightning_logger(OFFLINE, run_config, save_dir=str(tmp_path), name="train-tiny")
    assert isinstance(loggers[1], CSVHistory) and isinstance(loggers[0], WandbLogger)
    _fit(loggers, tmp_path)
    run_dir = loggers[0].experiment.settings.sync_dir
    tracking.finish_active_run()

    run = read_run(run_dir)
    assert run["job_type"] == "train"
    assert run["name"] == "train-tiny"
    assert run["config"]["model"] == {"ch": 8}
    assert run["config"]["optim"] == {"lr": 0.1}
    assert run["config"]["lr"] == 0.1  # the module's hparams, via log_hyperparams
    losses = [h for h in run["history"] if "train/loss" in h]
    assert [h["trainer/global_step"] for h in losses] == [0, 1, 2]
    assert all(isinstance(h["train/loss"], float) for h in losses)
    assert run["summary"]["train/loss"] == losses[-1]["train/loss"]
    assert run_dir in find_runs(tmp_path)

    metrics = _read_csv(tmp_path / "csv" / "metrics.csv")
    assert len([r for r in metrics if r.get("train/loss")]) == 3


def test_csv_history_keeps_rows_before_the_resumed_step(tmp_path):
    (tmp_path / "csv").mkdir()
    (tmp_path / "csv" / "metrics.csv").write_text("loss,step\n0.5,1\n0.25,3\n0.2,5\n0.1,7\n0.0")  # 0.0: cut off
    logger = CSVHistory(str(tmp_path), keep_before_step=5)
    assert _read_csv(tmp_path / "csv" / "metrics.csv") == [{"loss": "0.5", "step": "1"}, {"loss": "0.25", "step": "3"}]
    logger.log_metrics({"loss": torch.tensor(0.3)}, step=5)
    logger.log_metrics({"lr": 0.01}, step=5)  # a new key widens the header of the rows before
    assert _read_csv(tmp_path / "csv" / "metrics.csv") == [
        {"loss": "0.5", "lr": "", "step": "1"}, {"loss": "0.25", "lr": "", "step": "3"},
        {"loss": "0.30000001192092896", "lr": "", "step": "5"}, {"loss": "", "lr": "0.01", "step": "5"}]
    CSVHistory(str(tmp_path))  # a fresh start begins a new file
    assert not (tmp_path / "csv" / "metrics.csv").exists()


def test_disabled_mode_writes_csv_only(tmp_path):
    off = {"wandb": dict(OFFLINE["wandb"], mode="disabled")}
    loggers = tracking.lightning_logger(off, {"a": 1}, save_dir=str(tmp_path / "train"))
    assert len(loggers) == 1 and isinstance(loggers[0], CSVHistory)
    t = tracking.Tracker(off, job_type="sweep", group=None, name="x", config={"a": 1}, dir=str(tmp_path / "cell"))
    t.log({"fid": 3.5}, step=4)
    t.table("t", ["a"], [[1]])
    t.image("img", np.zeros((2, 2, 3), dtype=np.uint8))
    t.summary({"fid": 3.5})
    t.finish()
    assert t.run_dir is None and wandb.run is None
    assert _read_csv(tmp_path / "cell" / "scalars.csv") == [{"step": "4", "fid": "3.5"}]
    assert not (tmp_path / "cell" / "wandb").exists()
    assert tracking.Tracker(None, "sweep", None, "n", {}, str(tmp_path / "none")).run_dir is None


def test_bogus_mode_is_one_line_user_error(tmp_path):
    with pytest.raises(UserError) as e:
        tracking.validate_mode("bogus")
    msg = str(e.value)
    assert "\n" not in msg and "logger.wandb.mode=bogus" in msg and "online, offline, disabled" in msg
    bad = {"wandb": dict(OFFLINE["wandb"], mode="bogus")}
    with pytest.raises(UserError, match=r"logger\.wandb\.mode"):
        tracking.Tracker(bad, "sweep", None, "n", {}, str(tmp_path))
    with pytest.raises(UserError, match=r"logger\.wandb\.mode"):
        tracking.lightning_logger(bad, {}, save_dir=str(tmp_path))
    for mode in tracking.MODES:
        tracking.validate_mode(mode)


def test_scalars_csv_header_union(tmp_path):
    t = tracking.Tracker({"wandb": {"mode": "disabled"}}, "x", None, "n", {}, str(tmp_path))
    t.log({"a": 1})
    t.log({"b": np.float32(0.5), "a": True, "skip": "text", "arr": np.zeros(3)}, step=7)
    t.log({"a": 3})
    assert _read_csv(tmp_path / "scalars.csv") == [
        {"step": "", "a": "1", "b": ""}, {"step": "7", "a": "1", "b": "0.5"}, {"step": "", "a": "3", "b": ""}]


def test_scrub_config():
    cfg = {"wandb_api_key": "x", "nested": {"hf_token": "y", "Password": "z", "keep": [1, {"secret_x": 2}]},
           "ok": 1}
    assert tracking.scrub(cfg, secrets=["s3cr3t"]) == {"nested": {"keep": [1, {}]}, "ok": 1}
    assert tracking.scrub({"url": "https://h/?k=s3cr3t"}, secrets=["s3cr3t"]) == {"url": "<redacted>"}


def test_api_key_never_written(tmp_path, monkeypatch, capfd):
    key = secrets.token_hex(20)
    monkeypatch.setenv("WANDB_API_KEY", key)
    # a secret on the command line would otherwise land in the run metadata (its args)
    monkeypatch.setattr(sys, "argv", [sys.argv[0], f"+remote.password={secrets.token_hex(8)}x", "seed=1"])
    argv_secret = sys.argv[1].split("=", 1)[1]
    config = {"wandb": {"api_key": key}, "env_copy": key, "endpoint": f"https://x/?key={key}",
              "nested": {"list": [key, 1]}, "plain": 1}

    t = tracking.Tracker(OFFLINE, job_type="sweep", group="g", name="secret-test", config=config,
                         dir=str(tmp_path / "tracker"))
    t.log({"v": 1.0})
    t.summary({"token_count": 5, "echo": key})
    t.table("t", ["c"], [[1]])
    t.finish()

    loggers = tracking.lightning_logger(OFFLINE, config, save_dir=str(tmp_path / "train"), name="secret-train")
    _fit(loggers, tmp_path / "train")
    tracking.finish_active_run()

    needle = key.encode()
    checked = 0
    for root, _, names in os.walk(tmp_path):
        for nm in names:
            p = os.path.join(root, nm)
            if os.path.islink(p):
                continue
            with open(p, "rb") as f:
                blob = f.read()
            assert needle not in blob, f"API key written to {os.path.relpath(p, tmp_path)}"
            assert argv_secret.encode() not in blob, f"argv secret written to {os.path.relpath(p, tmp_path)}"
            checked += 1
    assert checked > 10
    out, err = capfd.readouterr()
    assert key not in out and key not in err

    runs = find_runs(tmp_path)
    assert len(runs) == 2
    for r in map(read_run, runs):
        assert r["config"]["plain"] == 1 and r["config"]["wandb"] == {}
        assert r["config"]["env_copy"] == "<redacted>"


def test_reader_rejects_other_files(tmp_path):
    bad = tmp_path / "run-x.wandb"
    bad.write_bytes(b"not a wandb file at all")
    with pytest.raises(WandbFormatError, match="wandb 0.31.0"):
        read_run(str(bad))
    with pytest.raises(FileNotFoundError):
        read_run(str(tmp_path / "missing"))


def test_reader_multi_block_records_and_backward_step(tmp_path):
    # a 100 kB config value spans several 32 KiB blocks (FIRST/MIDDLE/LAST chunks)
    t = tracking.Tracker(OFFLINE, "sweep", None, "big", {"blob": "y" * 100_000}, str(tmp_path))
    for s in range(300):
        t.log({"v": s * 0.5}, step=s)
    t.log({"late": 1.0}, step=10)  # W&B steps only go forward: kept at the current step, with step=10
    t.run.log({"direct": 1})  # direct run.log calls (no step) advance W&B's step too
    t.log({"after": 2.0}, step=250)
    t.finish()
    run = read_run(t.run_dir)
    assert os.path.getsize(run["wandb_file"]) > 2 * 32768
    assert run["config"]["blob"] == "y" * 100_000
    assert [h["v"] for h in run["history"][:300]] == [s * 0.5 for s in range(300)]
    assert [h["_step"] for h in run["history"][:300]] == list(range(300))
    late, direct, after = run["history"][299:]
    assert late["late"] == 1.0 and late["step"] == 10 and late["v"] == 149.5 and late["_step"] == 299
    assert direct["direct"] == 1 and direct["_step"] == 300
    assert after["after"] == 2.0 and after["step"] == 250 and after["_step"] == 301


def test_logger_configs():
    from omegaconf import OmegaConf

    conf = os.path.join(os.path.dirname(__file__), os.pardir, "ddim_bench", "conf", "logger")
    modes = {}
    for name in ("wandb", "csv", "none"):
        cfg = OmegaConf.load(os.path.join(conf, f"{name}.yaml"))
        assert set(cfg.wandb) >= {"project", "entity", "mode", "group", "tags", "dir"}
        tracking.validate_mode(cfg.wandb.mode)
        modes[name] = cfg.wandb.mode
    assert modes == {"wandb": "offline", "csv": "disabled", "none": "disabled"}
