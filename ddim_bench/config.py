"""Objects built from a validated config: the α schedule, the DataModule (``_target_``), the UNet's arguments."""
from __future__ import annotations

import torch
from omegaconf import DictConfig, ListConfig, OmegaConf

from ddim_bench.errors import UserError
from ddim_bench.sampling import ddim


def plain(cfg):
    """OmegaConf containers → plain dicts/lists (resolved); anything else unchanged."""
    if isinstance(cfg, (DictConfig, ListConfig)):
        return OmegaConf.to_container(cfg, resolve=True)
    return cfg if not isinstance(cfg, dict) else dict(cfg)


def build_alphas(schedule) -> torch.Tensor:
    """ᾱ_t of a ``diffusion`` config or a checkpoint's stored schedule (keys as in conf/diffusion/*.yaml)."""
    return ddim.alphas_cumprod(**plain(schedule))


def build_datamodule(cfg_data):
    """``hydra.utils.instantiate`` of ``data._target_`` with the group's other keys (``name``/``channels`` describe
    it and are checked against the class)."""
    from hydra.errors import InstantiationException
    from hydra.utils import instantiate
    for key in sorted(OmegaConf.missing_keys(cfg_data)) if isinstance(cfg_data, DictConfig) else ():
        key = key if key.startswith("data.") else f"data.{key}"  # full key when the group has a parent
        raise UserError(f"{key} is not set; pass {key}=...")
    d = plain(cfg_data)
    name, channels = d.pop("name", None), d.pop("channels", None)
    try:
        dm = instantiate(d)
    except InstantiationException as err:
        cause = err.__cause__ or err
        if isinstance(cause, UserError):
            raise cause from None
        raise UserError(f"data={name}: {str(cause).strip().splitlines()[0]}") from None
    if channels is not None and getattr(dm, "channels", channels) != channels:
        raise UserError(f"data.channels={channels} but data={name} has {dm.channels}-channel images; "
                        f"drop the override")
    return dm


def image_shape(reference, dm) -> tuple[int, int, int]:
    """[C, H, W] of the model-side images of a DataModule (its reference set holds uint8 RGB copies)."""
    if len(reference) == 0:
        raise UserError(f"data={dm.name} has no images in this split; choose another split or dataset")
    item = reference[0]
    _, h, w = (item[0] if isinstance(item, (tuple, list)) else item).shape
    return (dm.channels, h, w)


def unet_kwargs(cfg_model) -> dict:
    """The UNet's keyword arguments (the model group without its ``_target_``), as checkpoints store them."""
    d = plain(cfg_model)
    d.pop("_target_", None)
    return d
