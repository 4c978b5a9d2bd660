"""Loading checkpoints for sampling: ours (Lightning, raw + EMA weights), the official DDPM CIFAR-10 one, or a
diffusers model (a local ``save_pretrained`` folder or a Hub repo id; see ``diffusers_model.py``).

Every pickle-based file is read with ``torch.load(..., weights_only=True)``.
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field

import torch

from ddim_bench.downloads import Remote, ensure
from ddim_bench.errors import UserError

# ema_diffusion_cifar10_model/model-790000.ckpt: URL and MD5 as the DDIM paper's code (functions/ckpt_util.py) has them
OFFICIAL_CIFAR10_MD5 = "1fa350b952534ae442b1d5235cce5cd3"
OFFICIAL_CIFAR10_URL = "https://heibox.uni-heidelberg.de/f/2e4f01e2d9ee49bab1d5/?dl=1"
OFFICIAL_CIFAR10 = Remote("model-790000.ckpt", OFFICIAL_CIFAR10_URL, "the official DDPM CIFAR-10 EMA checkpoint",
                          md5=(OFFICIAL_CIFAR10_MD5,))
OFFICIAL_CIFAR10_MODEL = dict(in_channels=3, out_ch=3, ch=128, ch_mult=[1, 2, 2, 2], num_res_blocks=2,
                              attn_resolutions=[16], dropout=0.1, resolution=32, resamp_with_conv=True)
OFFICIAL_SCHEDULE = dict(num_timesteps=1000, schedule="linear", beta_start=0.0001, beta_end=0.02)


@dataclass
class Loaded:
    state_dict: dict
    model_kwargs: dict           # the network's keyword arguments (UNet; a diffusers UNet2DModel's config)
    schedule: dict | None        # diffusion config stored with the weights (None: take it from config)
    info: dict = field(default_factory=dict)  # kind, weights, sha256, path (+ repo, revision for a Hub model)
    arch: str = "ddpm-unet"      # ddpm-unet (ours, models/unet.py) | diffusers (UNet2DModel)
    #                              | stand-in (benchmarks only, models/stand_in.py)

    @property
    def shape(self) -> tuple[int, int, int]:
        """[C, H, W] of the images the model takes."""
        if self.arch == "diffusers":
            from ddim_bench.models.diffusers_model import image_shape
            return image_shape(self.model_kwargs)
        return (self.model_kwargs["in_channels"], self.model_kwargs["resolution"], self.model_kwargs["resolution"])


def file_digest(path: str, algo: str = "sha256") -> str:
    h = hashlib.new(algo)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _official_keys() -> set[str]:
    from ddim_bench.models.unet import UNet
    with torch.device("meta"):
        return set(UNet(**OFFICIAL_CIFAR10_MODEL).state_dict())


def load(path: str, weights: str = "ema", cache_dir: str = ".cache", download: bool = False) -> Loaded:
    """Read ``path``; ``weights`` is ``ema`` or ``raw`` (ours only: the official file holds EMA weights).

    ``path`` may also be a diffusers folder or a Hub repo id ``owner/name[@revision]`` (from ``cache_dir``;
    fetched into it when ``download``, which the apps' ``download`` setting turns on by default)."""
    from ddim_bench.models import diffusers_model as dm
    from ddim_bench.models import stand_in
    if weights not in ("ema", "raw"):
        raise UserError(f"weights={weights} must be ema or raw")
    if stand_in.is_stand_in(path):  # benchmarks only: a 1×1 convolution with the CIFAR-10 shapes
        return stand_in.loaded()
    if path and os.path.isdir(path):
        if dm.unet_folder(path) is None:
            found = checkpoint_in(path)
            raise UserError(f"checkpoint={path} is a folder but neither a diffusers model folder (unet/config.json "
                            f"or config.json) nor a checkpoint; " + (f"pass the file in it: checkpoint={found}"
                            if found else "it holds no checkpoint file (*.ckpt, *.pt, *.pth)"))
        return _diffusers(path, path, weights)
    if path and dm.is_hub_id(path):
        folder, revision = dm.fetch(path, cache_dir, download)
        loaded = _diffusers(folder, path, weights)
        loaded.info.update(repo=path.split("@")[0], revision=revision)
        return loaded
    if path and os.path.basename(path) == OFFICIAL_CIFAR10.name:  # fetched when missing, MD5-checked
        ensure(path, OFFICIAL_CIFAR10, download, f"checkpoint={path} is missing: it is {OFFICIAL_CIFAR10.what} "
                                                 f"(download: {OFFICIAL_CIFAR10.url}); put it at {path}")
    if not path or not os.path.isfile(path):
        raise UserError(f"checkpoint={path} does not exist; train one with ddim-bench-train or pass its path "
                        f"(or a diffusers folder, or a Hub id such as google/ddpm-cifar10-32)")
    return _load_file(path, weights)


def _diffusers(folder: str, name: str, weights: str) -> Loaded:
    from ddim_bench.models.diffusers_model import describe
    config, schedule, info = describe(folder, name, weights)
    return Loaded({}, config, schedule, {**info, "name": name}, arch="diffusers")


def _load_file(path: str, weights: str) -> Loaded:
    obj = read_safely(path)
    info = {"path": os.path.abspath(path), "sha256": file_digest(path)}
    if isinstance(obj, dict) and "state_dict" in obj and "hyper_parameters" in obj:
        hp = obj["hyper_parameters"]
        if weights == "raw" and "current_model_state" not in obj:
            raise UserError(f"checkpoint={path} holds no raw weights (trained without EMA); use weights=ema")
        sd = obj["current_model_state"] if weights == "raw" else obj["state_dict"]
        if "current_model_state" not in obj:
            weights = "raw"  # no EMA callback: state_dict is the raw model
        sd = {k[len("model."):]: v for k, v in sd.items() if k.startswith("model.")}
        model = {k: v for k, v in dict(hp["model"]).items() if k != "_target_"}
        return Loaded(sd, model, dict(hp["schedule"]),
                      {**info, "kind": "ddim-bench", "weights": weights, "step": obj.get("global_step")})
    if isinstance(obj, dict) and obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        sd = {k.removeprefix("module."): v for k, v in obj.items()}
        if set(sd) == _official_keys():
            if weights == "raw":
                raise UserError(f"checkpoint={path} is the official EMA checkpoint; it has no raw weights")
            md5 = file_digest(path, "md5")
            return Loaded(sd, dict(OFFICIAL_CIFAR10_MODEL), dict(OFFICIAL_SCHEDULE),
                          {**info, "kind": "ddpm-cifar10-official", "weights": "ema",
                           "md5_matches_official": md5 == OFFICIAL_CIFAR10_MD5})
    raise UserError(f"checkpoint={path} is neither a ddim-bench checkpoint nor the DDPM CIFAR-10 state dict")


def checkpoint_in(folder: str) -> str | None:
    """The checkpoint a user most likely meant in ``folder``: a training run's last.ckpt, else the newest file
    named *.ckpt / *.pt / *.pth in it or its ``checkpoints/``; None when there is none."""
    for sub in ("checkpoints", "."):
        last = os.path.normpath(os.path.join(folder, sub, "last.ckpt"))
        if os.path.isfile(last):
            return last
    files = [os.path.normpath(os.path.join(folder, sub, f)) for sub in ("checkpoints", ".")
             if os.path.isdir(os.path.join(folder, sub)) for f in os.listdir(os.path.join(folder, sub))
             if f.endswith((".ckpt", ".pt", ".pth"))]
    return max(files, key=os.path.getmtime) if files else None


def read_safely(path: str):
    """``torch.load(weights_only=True)``; a file that is no torch checkpoint, or one a safe load refuses, is one
    complete line (never the advice to load it unsafely)."""
    import pickle
    with open(path, "rb") as f:
        head = f.read(2)
    if head != b"PK" and head[:1] != b"\x80":  # a zip (torch.save) or a protocol-2+ pickle (legacy torch.save)
        raise UserError(f"checkpoint={path} is not a checkpoint file (torch checkpoints are zip or pickle files); "
                        f"pass a last.ckpt of ddim-bench-train or a saved state dict")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise UserError(f"checkpoint={path} holds objects other than tensors and plain values, which a safe load "
                        f"(weights_only=True) refuses; pass a last.ckpt of ddim-bench-train or a saved state dict"
                        ) from None
    except Exception as err:  # noqa: BLE001 - any unreadable file is the user's to fix
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise UserError(f"checkpoint={path} cannot be read (a truncated or damaged file?): {first[:120]}") from None


def build_model(loaded: Loaded, device="cpu") -> torch.nn.Module:
    """The ε-network ``model(x, t)`` in eval mode on ``device``, gradients off."""
    if loaded.arch == "diffusers":
        from ddim_bench.models.diffusers_model import build
        return build(loaded.info, loaded.info["name"]).to(device).eval().requires_grad_(False)
    if loaded.arch == "stand-in":
        from ddim_bench.models.stand_in import StandInEps
        return StandInEps(loaded.model_kwargs["in_channels"]).to(device).eval().requires_grad_(False)
    from ddim_bench.models.unet import UNet
    model = UNet(**loaded.model_kwargs)
    try:
        model.load_state_dict(loaded.state_dict, strict=True)
    except RuntimeError as err:
        raise UserError(f"checkpoint={loaded.info.get('path')} does not fit the UNet config: "
                        f"{str(err).splitlines()[0][:200]}") from None
    return model.to(device).eval().requires_grad_(False)
