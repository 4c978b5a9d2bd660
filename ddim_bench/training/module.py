"""The Lightning wiring for training: ε-prediction MSE on the UNet, Adam, EMA through Lightning."""
from __future__ import annotations

from contextlib import contextmanager

import pytorch_lightning as pl
import torch
import torch.nn.functional as F

from ddim_bench.sampling import ddim
from ddim_bench.models.unet import UNet


class DiffusionModule(pl.LightningModule):
    """``model`` is the UNet's keyword config, ``schedule`` the diffusion's (T, schedule, betas)."""

    def __init__(self, model: dict, schedule: dict, lr: float = 2e-4, warmup_steps: int = 0):
        super().__init__()
        self.save_hyperparameters()
        self.model = UNet(**model)
        self.register_buffer("alphas", ddim.alphas_cumprod(**schedule).float(), persistent=False)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.model(x, t)

    def diffusion_loss(self, x0: torch.Tensor) -> torch.Tensor:
        """DDPM's L_simple: ‖ε − ε_θ(√α_t x0 + √(1−α_t) ε, t)‖²."""
        t = torch.randint(0, self.alphas.numel(), (x0.shape[0],), device=x0.device)
        eps = torch.randn_like(x0)
        a = self.alphas[t].view(-1, 1, 1, 1)
        return F.mse_loss(self.model(a.sqrt() * x0 + (1 - a).sqrt() * eps, t), eps)

    def training_step(self, batch, batch_idx):
        x0 = batch[0] if isinstance(batch, (tuple, list)) else batch
        loss = self.diffusion_loss(x0)
        self.log("train/loss", loss, prog_bar=True, sync_dist=True, batch_size=x0.shape[0])
        return loss

    def configure_optimizers(self):
        opt = torch.optim.Adam(self.model.parameters(), lr=self.hparams.lr)
        warm = max(int(self.hparams.warmup_steps), 0)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / warm) if warm else 1.0)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


@contextmanager
def ema_weights(trainer: pl.Trainer, pl_module: DiffusionModule):
    """The UNet with the EMA weights of Lightning's ``EMAWeightAveraging`` in it while inside, its raw weights again
    after (the raw ones throughout where there is none).  The weights are swapped in and back by the callback's
    own public hooks, the ones Lightning calls around a validation epoch for the same purpose."""
    from pytorch_lightning.callbacks import WeightAveraging
    averaging = [cb for cb in trainer.callbacks if isinstance(cb, WeightAveraging)]
    for cb in averaging:
        cb.on_validation_epoch_start(trainer, pl_module)
    try:
        yield pl_module.model
    finally:
        for cb in reversed(averaging):
            cb.on_validation_epoch_end(trainer, pl_module)
