"""Training a diffusion UNet with Lightning: the checks, the loggers and callbacks, resuming, ``fit``
(``ddim-bench-train`` is the console script around :func:`train`)."""
from __future__ import annotations

import os
import sys

import pytorch_lightning as pl
from omegaconf import DictConfig
from pytorch_lightning.callbacks import EMAWeightAveraging, LearningRateMonitor, ModelCheckpoint
from pytorch_lightning.loggers import WandbLogger

from ddim_bench import cli, config, validation
from ddim_bench.training.callbacks import EarlySignal, SampleGrid
from ddim_bench.training.resume import find_resume
from ddim_bench.training.module import DiffusionModule


class FinalLast(pl.Callback):
    """``last.ckpt`` holds the final step: Lightning's ModelCheckpoint keeps the last one it saved at a multiple of
    ``every_n`` (a 1200-step run with every 500 would end with step 1000). Runs before EMAWeightAveraging's
    ``on_train_end`` (which copies the average into the model), so the file is laid out as the periodic ones."""

    def __init__(self, path: str, every_n: int):
        self.path, self.every_n = path, every_n

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        step = trainer.global_step
        if self.every_n and step > self.every_n and step % self.every_n:
            trainer.save_checkpoint(self.path)


def build_callbacks(cfg: DictConfig, out: str, dm) -> list[pl.Callback]:
    ckpts, every_n = os.path.join(out, "checkpoints"), cfg.callbacks.checkpoint_every_n_steps
    cbs = [
        # no version counter: a training folder copied elsewhere and resumed keeps writing last.ckpt, not last-v1
        ModelCheckpoint(dirpath=ckpts, filename="step_{step:07d}", auto_insert_metric_name=False,
                        every_n_train_steps=every_n, save_last=True, save_top_k=-1, enable_version_counter=False),
        FinalLast(os.path.join(ckpts, "last.ckpt"), every_n),
        EMAWeightAveraging(decay=cfg.ema.decay),
        SampleGrid(os.path.join(out, "samples"), **cfg.callbacks.sample_grid),
        LearningRateMonitor(logging_interval="step"),
        EarlySignal(),
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


def train(cfg: DictConfig) -> DiffusionModule:
    from ddim_bench import tracking
    validation.check_accelerator("trainer.accelerator", cfg.trainer.accelerator)
    validation.check_trainer(config.plain(cfg.trainer))
    T = cfg.diffusion.num_timesteps
    validation.check_steps([cfg.callbacks.sample_grid.steps], T, "callbacks.sample_grid.steps")
    validation.check_steps([cfg.callbacks.fid.steps], T, "callbacks.fid.steps")
    validation.check_steps([cfg.sampler.steps], T, "sampler.steps")
    dm = config.build_datamodule(cfg.data)
    model_shape = (cfg.model.in_channels, cfg.model.resolution, cfg.model.resolution)
    # a missing dataset root or a model that does not fit the images stops here, before anything is written
    validation.check_resolution(config.image_shape(dm.reference("train"), dm), model_shape, dm.name)
    if cfg.callbacks.fid.every_n_steps:
        from ddim_bench.scoring.metrics import check_extractor, data_mismatch
        check_extractor(cfg.metrics, cfg.download)
        warning = data_mismatch(cfg.metrics, dm.name)
        if warning and cli.launcher_rank() == 0:
            print(warning, file=sys.stderr, flush=True)
    # a bad ckpt_path stops here; a truncated last.ckpt falls back to an older checkpoint
    resume = find_resume(cfg.ckpt_path, cfg.paths.output_dir, say=cli.launcher_rank() == 0)
    if resume.path and cli.launcher_rank() == 0:
        print(f"resuming from {resume.path}", flush=True)
    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    out = cfg.paths.output_dir
    module = DiffusionModule(config.unet_kwargs(cfg.model), config.plain(cfg.diffusion), lr=cfg.optim.lr,
                             warmup_steps=cfg.optim.warmup_steps)
    loggers = tracking.lightning_logger(cfg.logger, config.plain(cfg), save_dir=out, resume_step=resume.history_step)
    trainer = pl.Trainer(**config.plain(cfg.trainer), default_root_dir=out, logger=loggers,
                         callbacks=build_callbacks(cfg, out, dm))
    try:
        trainer.fit(module, datamodule=dm, ckpt_path=resume.path)
    except SystemExit:
        if trainer.interrupted:  # Lightning's Ctrl-C handling exits; say it as the other apps do
            bar = getattr(trainer.progress_bar_callback, "train_progress_bar", None)
            if bar is not None:  # the line is said below the bar, not glued to it (nor the bar redrawn after it)
                bar.close()
            raise KeyboardInterrupt from None
        raise
    if trainer.is_global_zero:
        last = os.path.join(out, "checkpoints", "last.ckpt")
        for lg in loggers:
            if isinstance(lg, WandbLogger):
                lg.experiment.summary["checkpoint"] = last
        tracking.finish_active_run()
        print(f"checkpoint: {last}", flush=True)
    return module
