"""DINOv2 ViT-S/B/L-14 feature extractors that load the official ``dinov2_vit{s,b,l}14_pretrain.pth`` files offline.

torch-fidelity 0.4.0's ``dinov2-vit-*-14`` extractors fetch the model through torch.hub (network) and refuse a
local weights path, so this module holds a plain-torch ViT whose ``state_dict`` keys and shapes equal the
official checkpoints, wrapped as torch-fidelity extractors ``dinov2-vit-{s,b,l}-14-local``.  Preprocessing and
the feature (the final-norm CLS token, named ``"dinov2"``) follow torch-fidelity's own DINOv2 extractor.

Only ViT-S/B/L are supported: ViT-g/14 uses a SwiGLU MLP, which is not implemented here.  DINOv2 has no class
logits, so there is no Inception Score layer (``metrics.isc`` must be false).
"""
from __future__ import annotations

import math
import os
import pickle

import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision
from torch_fidelity.interpolate_compat_tensorflow import interpolate_bilinear_2d_like_tensorflow1x

from ddim_bench.errors import UserError
from ddim_bench.scoring.extractors.base import NamedFeatures, register

# size letter → (embed dim, depth, heads)
VIT_SIZES = {"s": (384, 12, 6), "b": (768, 12, 12), "l": (1024, 24, 16)}
PATCH = 14
TRAIN_GRID = 37          # the checkpoints' pos_embed is for 518 px = 37×37 patches
INPUT_SIZE = 224         # torch-fidelity's DINOv2 input size (16×16 patches)
INTERP_OFFSET = 0.1      # DINOv2's pos-embed interpolation offset (scale factor (grid + 0.1) / 37)
FEATURE = "dinov2"
NAMES = {f"dinov2-vit-{s}-14-local": s for s in VIT_SIZES}  # registered name → size letter


def weights_file(size: str) -> str:
    return f"dinov2_vit{size}14_pretrain.pth"


def weights_url(size: str) -> str:
    return f"https://dl.fbaipublicfiles.com/dinov2/dinov2_vit{size}14/{weights_file(size)}"


class LayerScale(nn.Module):
    def __init__(self, dim: int, init: float = 1.0):
        super().__init__()
        self.gamma = nn.Parameter(torch.full((dim,), init))

    def forward(self, x):
        return x * self.gamma


class Attention(nn.Module):
    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x):
        b, n, d = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        x = F.scaled_dot_product_attention(q, k, v)
        return self.proj(x.transpose(1, 2).reshape(b, n, d))


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x):
        return self.fc2(F.gelu(self.fc1(x)))


class Block(nn.Module):
    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, heads)
        self.ls1 = LayerScale(dim)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, 4 * dim)
        self.ls2 = LayerScale(dim)

    def forward(self, x):
        x = x + self.ls1(self.attn(self.norm1(x)))
        return x + self.ls2(self.mlp(self.norm2(x)))


class PatchEmbed(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.proj = nn.Conv2d(3, dim, kernel_size=PATCH, stride=PATCH)

    def forward(self, x):
        return self.proj(x).flatten(2).transpose(1, 2)  # [B, N, D]


class DinoV2ViT(nn.Module):
    """DINOv2 ViT-{S,B,L}/14 backbone; ``forward`` gives the final-norm CLS token [B, D]."""

    def __init__(self, size: str = "s"):
        super().__init__()
        if size not in VIT_SIZES:
            raise ValueError(f"DINOv2 size {size!r} is not supported; use one of {sorted(VIT_SIZES)}")
        dim, depth, heads = VIT_SIZES[size]
        self.dim = dim
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + TRAIN_GRID * TRAIN_GRID, dim))
        self.mask_token = nn.Parameter(torch.zeros(1, dim))  # unused for features; kept for the checkpoint keys
        self.patch_embed = PatchEmbed(dim)
        self.blocks = nn.ModuleList(Block(dim, heads) for _ in range(depth))
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.normal_(self.cls_token, std=1e-6)

    def pos_embed_for(self, h: int, w: int) -> torch.Tensor:
        """pos_embed for an h×w patch grid: the 37×37 patch part resized bicubically as DINOv2 does."""
        pe = self.pos_embed
        n = pe.shape[1] - 1
        m = int(math.sqrt(n))
        if h == w == m:
            return pe
        grid = pe[:, 1:].float().reshape(1, m, m, -1).permute(0, 3, 1, 2)
        grid = F.interpolate(grid, scale_factor=((h + INTERP_OFFSET) / m, (w + INTERP_OFFSET) / m),
                             mode="bicubic", antialias=False)
        assert tuple(grid.shape[-2:]) == (h, w), grid.shape
        grid = grid.permute(0, 2, 3, 1).reshape(1, h * w, -1)
        return torch.cat([pe[:, :1].float(), grid], dim=1).to(pe.dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2] // PATCH, x.shape[-1] // PATCH
        t = self.patch_embed(x)
        t = torch.cat([self.cls_token.expand(len(t), -1, -1), t], dim=1) + self.pos_embed_for(h, w)
        for blk in self.blocks:
            t = blk(t)
        return self.norm(t)[:, 0]


def load_dinov2(path: str, size: str) -> DinoV2ViT:
    """DinoV2ViT of ``size`` with the official checkpoint at ``path`` (strict); one-line UserError otherwise."""
    model = DinoV2ViT(size)
    try:
        sd = torch.load(path, map_location="cpu", weights_only=True)
        if not isinstance(sd, dict):
            raise RuntimeError(f"expected a state dict, got {type(sd).__name__}")
        model.load_state_dict(sd, strict=True)
    except (RuntimeError, OSError, KeyError, EOFError, ValueError, pickle.UnpicklingError) as e:
        msg = " ".join(str(e).split())[:300] or type(e).__name__
        raise UserError(f"could not load DINOv2 ViT-{size.upper()}/14 weights from {path}: {msg}") from e
    return model


def weights_problem(path: str, size: str) -> str | None:
    """Why ``path`` is not the official ViT-``size``/14 state dict (None: it is): its names and shapes, read
    lazily (DINOv2 publishes no checksum for its files)."""
    import zipfile
    try:
        sd = torch.load(path, map_location="cpu", weights_only=True, mmap=zipfile.is_zipfile(path))
    except Exception as e:  # noqa: BLE001 - any unreadable file is simply not the one
        return f"it cannot be read ({type(e).__name__})"
    with torch.device("meta"):
        want = {k: tuple(v.shape) for k, v in DinoV2ViT(size).state_dict().items()}
    got = {k: tuple(v.shape) for k, v in sd.items() if torch.is_tensor(v)} if isinstance(sd, dict) else {}
    return None if got == want else f"its tensors are not those of the ViT-{size.upper()}/14 state dict"


class FeatureExtractorDinoV2Local(NamedFeatures):
    """torch-fidelity extractor over :class:`DinoV2ViT` loaded from ``feature_extractor_weights_path``."""
    FEATURES = (FEATURE,)
    LAYERS = {"fid": FEATURE, "kid": FEATURE, "prc": FEATURE}
    DUMMY_SIZE = 14

    def __init__(self, name, features_list, feature_extractor_weights_path=None, **kwargs):
        super().__init__(name, features_list)
        if name not in NAMES:
            raise UserError(f"unknown DINOv2 extractor {name}; use one of {sorted(NAMES)}")
        size = NAMES[name]
        if not feature_extractor_weights_path or not os.path.isfile(str(feature_extractor_weights_path)):
            raise UserError(f"feature extractor {name} needs the local weights file {weights_file(size)} "
                            f"(download: {weights_url(size)}); not found: {feature_extractor_weights_path}")
        self.model = load_dinov2(str(feature_extractor_weights_path), size)
        self.requires_grad_(False)
        self.eval()

    def features(self, x):
        """Resized and normalised as torch-fidelity's DINOv2 → {FEATURE: [B, D] float32}."""
        x = interpolate_bilinear_2d_like_tensorflow1x(x.float(), size=(INPUT_SIZE, INPUT_SIZE), align_corners=False)
        x = torchvision.transforms.functional.normalize(
            x, (255 * 0.485, 255 * 0.456, 255 * 0.406), (255 * 0.229, 255 * 0.224, 255 * 0.225), inplace=False)
        return {FEATURE: self.model(x).to(torch.float32)}

    @classmethod
    def get_default_feature_layer_for_metric(cls, metric):
        if metric == "isc":
            raise UserError("DINOv2 has no class logits, so the Inception Score is undefined; set metrics.isc: false")
        return super().get_default_feature_layer_for_metric(metric)


for _name in NAMES:
    register(_name, FeatureExtractorDinoV2Local)
