"""FID of the EMA model during training, through torchmetrics on the sweep's feature extractor.

Every ``every_n_steps`` steps each rank samples its share of ``n_samples`` seeded images (DDIM, η = 0),
torchmetrics syncs the states across DDP ranks, and ``val/fid`` is logged; a ModelCheckpoint keeps the best.
"""
from __future__ import annotations

import pytorch_lightning as pl
import torch

from ddim_bench.sampling.cell import Cell
from ddim_bench.sampling.generate import generate, rank_indices
from ddim_bench.training.module import ema_weights


class FIDCallback(pl.Callback):
    def __init__(self, metrics_cfg, cache_dir: str, datamodule, every_n_steps: int, n_samples: int,
                 steps: int, seed: int = 0, batch_size: int = 256):
        self.metrics_cfg, self.cache_dir, self.dm = metrics_cfg, cache_dir, datamodule
        self.every, self.n, self.steps, self.seed, self.batch_size = every_n_steps, n_samples, steps, seed, batch_size
        self.fid = None

    def setup(self, trainer, pl_module, stage):
        from ddim_bench.scoring.metrics import Scorer, torchmetrics_fid
        if stage != "fit" or self.fid is not None:
            return
        scorer = Scorer(self.metrics_cfg, self.cache_dir, device=pl_module.device)
        data = self.dm.reference("train")
        ref = scorer.reference(data, f"{self.dm.key('train')}|n={len(data)}")  # the sweep's key: shared cache
        # real statistics live on rank 0 only, so the cross-rank sum counts them once
        self.fid = torchmetrics_fid(scorer, ref if trainer.global_rank == 0 else None).to(pl_module.device)
        if trainer.global_rank != 0:
            self.fid.real_features_num_samples.zero_()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        step = trainer.global_step
        if self.every > 0 and step > 0 and step % self.every == 0:
            self.evaluate(trainer, pl_module, step)

    @torch.no_grad()
    def evaluate(self, trainer, pl_module, step: int) -> float:
        hp = pl_module.hparams.model
        shape = (hp["in_channels"], hp["resolution"], hp["resolution"])
        idx = rank_indices(self.n, trainer.global_rank, trainer.world_size)
        with ema_weights(trainer, pl_module) as model:
            was_training = model.training
            model.eval()
            generate(model, pl_module.alphas, Cell(self.steps, 0.0), idx, shape, self.seed, self.batch_size,
                     pl_module.device,
                     on_batch=lambda images, _: self.fid.update(images.to(pl_module.device), real=False))
            model.train(was_training)
        value = float(self.fid.compute())  # torchmetrics gathers the states of all ranks
        self.fid.reset()                   # generated side only: reset_real_features=False
        pl_module.log("val/fid", value, logger=False)  # for ModelCheckpoint(monitor="val/fid")
        if trainer.is_global_zero:  # straight to the loggers: not lost between log_every_n_steps
            for lg in trainer.loggers:
                lg.log_metrics({"val/fid": value}, step=step)
        return value
