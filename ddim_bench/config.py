"""Turning Hydra configs into objects, with one-line errors that name the bad key."""
from __future__ import annotations

import torch
from omegaconf import DictConfig, OmegaConf

from ddim_bench.sampling import ddim
from ddim_bench.errors import UserError


def plain(cfg) -> dict:
    return OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else dict(cfg)


def check_sampler(sampler, num_timesteps: int) -> None:
    """Validate ``sampler.*`` against the diffusion's T."""
    steps = sampler.steps
    if not isinstance(steps, int) or not 1 <= steps <= num_timesteps:
        raise UserError(f"sampler.steps={steps} must be an integer in [1, diffusion.num_timesteps={num_timesteps}]")
    if not isinstance(sampler.eta, (int, float)) or sampler.eta < 0:
        raise UserError(f"sampler.eta={sampler.eta} must be a number >= 0 (0 = DDIM, 1 = DDPM)")
    if sampler.skip not in ddim.SKIPS:
        raise UserError(f"sampler.skip={sampler.skip} must be one of {', '.join(ddim.SKIPS)}")
    if sampler.variance not in ddim.VARIANCES:
        raise UserError(f"sampler.variance={sampler.variance} must be one of {', '.join(ddim.VARIANCES)}")
    if int(sampler.batch_size) < 1:
        raise UserError(f"sampler.batch_size={sampler.batch_size} must be >= 1")


def build_alphas(cfg_diffusion) -> torch.Tensor:
    d = plain(cfg_diffusion)
    if d["schedule"] not in ddim.SCHEDULES:
        raise UserError(f"diffusion.schedule={d['schedule']} must be one of {', '.join(ddim.SCHEDULES)}")
    if not isinstance(d["num_timesteps"], int) or d["num_timesteps"] < 1:
        raise UserError(f"diffusion.num_timesteps={d['num_timesteps']} must be a positive integer")
    return ddim.alphas_cumprod(**d)


def build_datamodule(cfg_data):
    from ddim_bench.data import modules
    kinds = {"digits": modules.DigitsDataModule, "cifar10": modules.Cifar10DataModule,
             "image_folder": modules.ImageFolderDataModule}
    d = plain(cfg_data)
    name = d.pop("name")
    d.pop("channels", None)
    if d.get("root", "") == "???" or ("root" in d and d["root"] is None):
        raise UserError(f"data.root is not set; pass data.root=/path/to/{name}")
    if name not in kinds:
        raise UserError(f"data.name={name} must be one of {', '.join(kinds)}")
    return kinds[name](**d)


def check_training(cfg) -> None:
    if cfg.optim.lr <= 0:
        raise UserError(f"optim.lr={cfg.optim.lr} must be > 0")
    if not 0 <= cfg.ema.decay < 1:
        raise UserError(f"ema.decay={cfg.ema.decay} must be in [0, 1)")
    if cfg.trainer.max_steps is None or cfg.trainer.max_steps < 1:
        raise UserError(f"trainer.max_steps={cfg.trainer.max_steps} must be >= 1")
    check_sampler(cfg.sampler, cfg.diffusion.num_timesteps)
