"""Public diffusion models in diffusers' format as checkpoints: a local ``save_pretrained`` folder or a Hub repo id.

A folder is a pipeline (``unet/`` + ``scheduler/``), a flat repo (``config.json`` + ``scheduler_config.json``) or
a bare UNet folder (its ᾱ then comes from the ``diffusion`` config, as for our checkpoints without a schedule).
The ε-network is diffusers' ``UNet2DModel``; ᾱ comes from the scheduler config (β range, schedule, T).
A Hub id ``owner/name[@revision]`` is fetched into ``<cache_dir>/huggingface`` with ``snapshot_download``:
safetensors where the repo has them, else the pickle file, which diffusers reads with ``weights_only=True``.
"""
from __future__ import annotations

import json
import os
import re

import safetensors.torch  # noqa: F401  (diffusers before 0.3x uses safetensors.torch without importing it)
import torch
from torch import nn

from ddim_bench.errors import UserError

HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+(@[\w./-]+)?$")
WEIGHTS = ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin")
SCHEDULER_CONFIGS = ("scheduler/scheduler_config.json", "scheduler_config.json")
BETA_SCHEDULES = {"linear": "linear", "squaredcos_cap_v2": "cosine"}  # diffusers' name → ours
FILE_SUFFIXES = (".ckpt", ".pt", ".pth", ".safetensors", ".bin")


class DiffusersEps(nn.Module):
    """``UNet2DModel`` called as ``model(x, t) → ε̂``, like every network the samplers take."""

    def __init__(self, unet: nn.Module):
        super().__init__()
        self.unet = unet

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.unet(x, t, return_dict=False)[0]


def _read_json(path: str) -> dict | None:
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def unet_folder(folder: str) -> str | None:
    """The folder holding the UNet's ``config.json`` (``unet/`` of a pipeline, else the folder itself)."""
    for sub in ("unet", ""):
        path = os.path.join(folder, sub)
        cfg = _read_json(os.path.join(path, "config.json"))
        if cfg and cfg.get("_class_name", "").startswith(("UNet", "Unet")):
            return os.path.normpath(path)
    return None


def is_hub_id(checkpoint: str) -> bool:
    """``owner/name`` or ``owner/name@revision`` that is not a local path nor a file name."""
    return (bool(HUB_ID.match(checkpoint)) and not os.path.exists(checkpoint)
            and not checkpoint.split("@")[0].endswith(FILE_SUFFIXES))


def weights_file(ufolder: str) -> str | None:
    return next((os.path.join(ufolder, w) for w in WEIGHTS if os.path.isfile(os.path.join(ufolder, w))), None)


def hub_cache(cache_dir: str) -> str:
    return os.path.join(cache_dir, "huggingface")


def fetch(repo: str, cache_dir: str, download: bool = True) -> tuple[str, str]:
    """(snapshot folder, commit) of Hub repo ``owner/name[@revision]``: the UNet and scheduler files only,
    safetensors first; from the cache alone when ``download`` is off or the Hub cannot be reached."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.utils import HfHubHTTPError, LocalEntryNotFoundError  # both old and new hubs
    repo_id, _, revision = repo.partition("@")
    configs = ["model_index.json", "config.json", "unet/config.json", *SCHEDULER_CONFIGS]
    kw = dict(revision=revision or None, cache_dir=hub_cache(cache_dir), local_files_only=not download)
    try:
        for weights in WEIGHTS:  # a second call only when the repo has no safetensors
            folder = snapshot_download(repo_id, allow_patterns=[*configs, weights, f"unet/{weights}"], **kw)
            ufolder = unet_folder(folder)
            if ufolder is None or weights_file(ufolder):
                break
    except LocalEntryNotFoundError:
        raise UserError(offline_message(repo, cache_dir, download)) from None
    except (HfHubHTTPError, OSError, ValueError) as err:
        first = str(err).strip().splitlines()[0][:160] if str(err).strip() else type(err).__name__
        raise UserError(f"checkpoint={repo} is no local path, and the Hugging Face Hub refused it as a repo id "
                        f"({first}); check the path, or the repo id and revision (owner/name@revision)") from None
    return folder, os.path.basename(os.path.normpath(folder))


def offline_message(repo: str, cache_dir: str, download: bool) -> str:
    repo_id, _, revision = repo.partition("@")
    why = "download=false" if not download else "the Hugging Face Hub cannot be reached"
    hub = hub_cache(cache_dir)
    cmd = f"hf download {repo_id}" + (f" --revision {revision}" if revision else "") + f" --cache-dir {hub}"
    return (f"checkpoint={repo} is no local path, and as a Hub model it is not in the cache ({hub}) "
            f"and {why}: run once with internet and download=true, or fetch it with `{cmd}`, or pass a local "
            f"folder saved with save_pretrained")


def read_schedule(folder: str, ufolder: str, name: str) -> dict | None:
    """ᾱ's settings from the scheduler config (our ``diffusion`` keys), or None when the folder has none."""
    path = next((p for p in [os.path.join(folder, s) for s in SCHEDULER_CONFIGS]
                 + [os.path.join(ufolder, "scheduler_config.json")] if os.path.isfile(p)), None)
    if path is None:
        return None
    sc = _read_json(path) or {}
    if sc.get("trained_betas") is not None or sc.get("beta_schedule", "linear") not in BETA_SCHEDULES:
        raise UserError(f"checkpoint={name}: its scheduler's beta_schedule={sc.get('beta_schedule')} "
                        f"(trained_betas: {sc.get('trained_betas') is not None}) is not supported; "
                        f"use a model with a linear or squaredcos_cap_v2 schedule")
    if sc.get("prediction_type", "epsilon") != "epsilon":
        raise UserError(f"checkpoint={name} predicts {sc['prediction_type']}, not ε; only ε-prediction "
                        f"models are supported")
    return {"num_timesteps": int(sc.get("num_train_timesteps", 1000)),
            "schedule": BETA_SCHEDULES[sc.get("beta_schedule", "linear")],
            "beta_start": float(sc.get("beta_start", 1e-4)), "beta_end": float(sc.get("beta_end", 0.02))}


def describe(folder: str, name: str, weights: str) -> tuple[dict, dict | None, dict]:
    """(the UNet's config, the schedule or None, info) of a diffusers folder; loads no weights."""
    from ddim_bench.models.checkpoint import file_digest
    ufolder = unet_folder(folder)
    if ufolder is None:
        raise UserError(f"checkpoint={name} holds no diffusers UNet (unet/config.json or config.json); "
                        f"save one with UNet2DModel.save_pretrained or a pipeline's save_pretrained")
    config = _read_json(os.path.join(ufolder, "config.json"))
    if config.get("_class_name") != "UNet2DModel":
        raise UserError(f"checkpoint={name} holds a {config.get('_class_name')}; only diffusers' UNet2DModel "
                        f"(pixel space, unconditional) is supported")
    if config.get("out_channels", 3) != config.get("in_channels", 3):
        raise UserError(f"checkpoint={name}: its UNet has {config.get('in_channels')} input and "
                        f"{config.get('out_channels')} output channels; only ε-prediction with one output per "
                        f"input channel is supported")
    if weights != "ema":
        raise UserError(f"weights={weights}: checkpoint={name} is a diffusers folder holding one set of weights "
                        f"(the published EMA weights); use weights=ema")
    wfile = weights_file(ufolder)
    if wfile is None:
        raise UserError(f"checkpoint={name} has no {' or '.join(WEIGHTS)} in {ufolder}; save the model with "
                        f"save_pretrained")
    info = {"path": os.path.abspath(folder), "unet_folder": os.path.abspath(ufolder), "weights_file":
            os.path.basename(wfile), "sha256": file_digest(wfile), "kind": "diffusers", "weights": "ema",
            "class": config["_class_name"]}
    return config, read_schedule(folder, ufolder, name), info


def image_shape(config: dict) -> tuple[int, int, int]:
    size = config.get("sample_size", 32)
    h, w = (size, size) if isinstance(size, int) else tuple(size)
    return (int(config.get("in_channels", 3)), int(h), int(w))


def build(info: dict, name: str) -> nn.Module:
    """The UNet2DModel of a described folder (diffusers' own loading; pickle only with ``weights_only=True``),
    wrapped as ``model(x, t) → ε̂``."""
    from diffusers import UNet2DModel
    from diffusers.utils import logging as dlog
    dlog.set_verbosity_error()
    try:
        unet = UNet2DModel.from_pretrained(info["unet_folder"], local_files_only=True,
                                           use_safetensors=info["weights_file"].endswith(".safetensors"))
    except Exception as err:  # noqa: BLE001 - an unreadable or mismatched folder is the user's to fix
        first = str(err).strip().splitlines()[0][:200] if str(err).strip() else type(err).__name__
        raise UserError(f"checkpoint={name}: diffusers cannot load its UNet2DModel: {first}") from None
    return DiffusersEps(unet)
