"""Images as the harness shows them: [−1, 1] floats → uint8 RGB, grids a person can see, PNG files."""
from __future__ import annotations

import math

import torch

from ddim_bench.io import atomic_path

MIN_TILE = 32  # smaller images are upscaled (nearest neighbour) to at least this many pixels in a grid


def to_uint8_rgb(x: torch.Tensor) -> torch.Tensor:
    """[−1, 1] float images [B, C, H, W] → uint8 [B, 3, H, W] (grey repeated to three channels)."""
    x = ((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x


def upscale(images: torch.Tensor, min_size: int = MIN_TILE) -> torch.Tensor:
    """uint8 [B, 3, H, W] enlarged by an integer factor (nearest neighbour) so that H ≥ ``min_size``."""
    factor = max(1, math.ceil(min_size / images.shape[-2]))
    return images if factor == 1 else images.repeat_interleave(factor, -2).repeat_interleave(factor, -1)


def image_grid(images: torch.Tensor, nrow: int | None = None, min_size: int = MIN_TILE) -> torch.Tensor:
    """uint8 [B, 3, H, W] → one uint8 [3, H', W'] grid, small images upscaled, 1-pixel white border."""
    from torchvision.utils import make_grid
    nrow = nrow or max(1, int(math.sqrt(images.shape[0])))
    return make_grid(upscale(images, min_size), nrow=nrow, padding=1, pad_value=255)


def save_png(grid: torch.Tensor, path: str) -> str:
    """Write a uint8 [3, H, W] image atomically; returns ``path``."""
    from PIL import Image
    with atomic_path(path) as tmp:
        Image.fromarray(grid.permute(1, 2, 0).cpu().numpy()).save(tmp, format="PNG")
    return path
