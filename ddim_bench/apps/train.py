"""``ddim-bench-train``: train a diffusion UNet with Lightning, every knob composed by Hydra."""
from __future__ import annotations

import glob
import os

import hydra
import pytorch_lightning as pl
from omegaconf import DictConfig
from pytorch_lightning.callbacks import EMAWeightAveraging, LearningRateMonitor, ModelCheckpoint
from pytorch_lightning.loggers import WandbLogger

from ddim_bench import cli
from ddim_bench import config
from ddim_bench.training.callbacks import SampleGrid
from ddim_bench.training.module import DiffusionModule


def build_callbacks(cfg: DictConfig, out: str, dm) -> list[pl.Callback]:
    cbs = [
        ModelCheckpoint(dirpath=os.path.join(out, "checkpoints"), filename="step_{step:07d}",
                        auto_insert_metric_name=False, every_n_train_steps=cfg.callbacks.checkpoint_every_n_steps,
                        save_last=True, save_top_k=-1),
        EMAWeightAveraging(decay=cfg.ema.decay),
        SampleGrid(os.path.join(out, "samples"), **cfg.callbacks.sample_grid),
        LearningRateMonitor(logging_interval="step"),
    ]
    fid = cfg.callbacks.fid
    if fid.every_n_steps:
        from ddim_bench.training.fid_callback import FIDCallback
        cbs.append(FIDCallback(cfg.metrics, cfg.paths.cache_dir, dm, fid.every_n_steps, fid.n_samples, fid.steps,
                               seed=cfg.seed, batch_size=cfg.sampler.batch_size))
        cbs.append(ModelCheckpoint(dirpath=os.path.join(out, "checkpoints"), filename="best-fid", monitor="val/fid",
                                   mode="min", save_top_k=1, every_n_train_steps=fid.every_n_steps,
                                   auto_insert_metric_name=False))
    return cbs


def resume_path(cfg: DictConfig, out: str) -> str | None:
    """An explicit ``ckpt_path``, else the run folder's newest checkpoint (SLURM requeue lands here)."""
    if cfg.ckpt_path:
        if not os.path.isfile(cfg.ckpt_path):
            raise FileNotFoundError(f"ckpt_path={cfg.ckpt_path} does not exist; pass an existing checkpoint or null")
        return cfg.ckpt_path
    ckpts = os.path.join(out, "checkpoints")
    # Lightning's SLURM requeue saves hpc_ckpt_N.ckpt in the run folder; "last" only looks at last*.ckpt
    hpc = sorted(glob.glob(os.path.join(out, "hpc_ckpt_*.ckpt")), key=os.path.getmtime)
    last = os.path.join(ckpts, "last.ckpt")
    if hpc and (not os.path.isfile(last) or os.path.getmtime(hpc[-1]) >= os.path.getmtime(last)):
        return hpc[-1]
    has_any = os.path.isdir(ckpts) and any(f.endswith(".ckpt") for f in os.listdir(ckpts))
    return "last" if has_any else None


def train(cfg: DictConfig) -> DiffusionModule:
    from ddim_bench import tracking
    config.check_training(cfg)
    tracking.validate_mode(cfg.logger.wandb.mode)
    config.build_alphas(cfg.diffusion)
    dm = config.build_datamodule(cfg.data)
    dm.dataset("train")  # a missing dataset root stops here, before anything is written
    if cfg.callbacks.fid.every_n_steps:
        from ddim_bench.evaluation.metrics import check_extractor
        check_extractor(cfg.metrics)
    pl.seed_everything(cfg.seed, workers=True)
    out = cfg.paths.output_dir
    model_cfg = config.plain(cfg.model)
    module = DiffusionModule(model_cfg, config.plain(cfg.diffusion), lr=cfg.optim.lr,
                             warmup_steps=cfg.optim.warmup_steps)
    loggers = tracking.lightning_logger(cfg.logger, config.plain(cfg), save_dir=out)
    trainer = pl.Trainer(**config.plain(cfg.trainer), default_root_dir=out, logger=loggers,
                         callbacks=build_callbacks(cfg, out, dm))
    trainer.fit(module, datamodule=dm, ckpt_path=resume_path(cfg, out))
    if trainer.is_global_zero:
        last = os.path.join(out, "checkpoints", "last.ckpt")
        for lg in loggers:
            if isinstance(lg, WandbLogger):
                lg.experiment.summary["checkpoint"] = last
        tracking.finish_active_run()
        print(f"checkpoint: {last}", flush=True)
    return module


@hydra.main(version_base="1.3", config_path=str(cli.CONF_DIR), config_name="train")
@cli.user_errors
def _main(cfg: DictConfig) -> None:
    train(cfg)


def main() -> None:
    cli.run_hydra(_main)


if __name__ == "__main__":
    main()
