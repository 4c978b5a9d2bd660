"""Training callbacks: a grid of EMA samples written as a PNG (and logged) every N steps; SLURM's warning signal
received during start-up handed to Lightning's requeue."""
from __future__ import annotations

import os

import pytorch_lightning as pl
import torch
from pytorch_lightning.utilities import rank_zero_only

from ddim_bench import signals
from ddim_bench.sampling import ddim
from ddim_bench.images import image_grid, save_png, to_uint8_rgb
from ddim_bench.training.module import ema_weights


class SampleGrid(pl.Callback):
    """Every ``every_n_steps`` optimizer steps, sample ``n`` fixed seeds with the EMA UNet (DDIM, η = 0)."""

    def __init__(self, dirpath: str, every_n_steps: int = 500, n: int = 64, steps: int = 50, seed: int = 0):
        self.dirpath, self.every, self.n, self.steps, self.seed = dirpath, every_n_steps, n, steps, seed

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        step = trainer.global_step
        if self.every > 0 and step % self.every == 0 and step > 0:
            self.write(trainer, pl_module, step)

    def on_train_end(self, trainer, pl_module):
        if self.every > 0:
            self.write(trainer, pl_module, trainer.global_step)

    @rank_zero_only
    def write(self, trainer, pl_module, step: int) -> None:
        res, ch = pl_module.hparams.model["resolution"], pl_module.hparams.model["in_channels"]
        g = torch.Generator().manual_seed(self.seed)
        x_T = torch.randn(self.n, ch, res, res, generator=g).to(pl_module.device)
        taus = ddim.timesteps(pl_module.alphas.numel(), min(self.steps, pl_module.alphas.numel()))
        with ema_weights(trainer, pl_module) as model:
            was_training = model.training
            model.eval()
            x0 = ddim.sample(model, x_T, pl_module.alphas, taus)
            model.train(was_training)
        path = os.path.join(self.dirpath, f"step_{step:07d}.png")
        save_png(image_grid(to_uint8_rgb(x0)), path)
        for logger in trainer.loggers:
            if hasattr(logger, "log_image"):
                logger.log_image(key="samples/ema", images=[path], step=step)


class EarlySignal(pl.Callback):
    """SLURM's warning signal noted during start-up (:func:`ddim_bench.signals.hold`) is sent again once Lightning's
    SLURM handler (checkpoint, ``scontrol requeue``) is installed: the hold is let go when the fit starts, since
    Lightning installs its handler only where none is set, and the noted signal is sent when training starts."""

    pending: int | None = None

    def on_fit_start(self, trainer, pl_module):
        self.pending = signals.release()

    def on_train_start(self, trainer, pl_module):
        if self.pending:
            os.kill(os.getpid(), self.pending)
