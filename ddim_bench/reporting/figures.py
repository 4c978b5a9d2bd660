"""The report's figures: FID against S, seconds and NFE with error bars, and the labelled consistency grid."""
from __future__ import annotations

import os

import numpy as np
import torch

from ddim_bench.images import image_grid, save_png
from ddim_bench.reporting.aggregate import spread

CURVES = (("fid_vs_steps", "steps", "steps S"), ("fid_vs_time", "sec_per_image", "seconds per image"),
          ("fid_vs_nfe", "nfe", "network calls (NFE)"))


def curves(rows: list[dict], out: str, front: list[dict] | None = None) -> dict[str, str]:
    """One line per row (η, σ̂, sampler); bars are ±sd over seed blocks, or the bootstrap interval of one block.
    ``front``: the Pareto front of FID against NFE (``samplers.front_steps``), drawn as a step line on FID vs NFE."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    paths = {}
    names = list(dict.fromkeys(r["row"] for r in rows))
    for fname, x, xlabel in CURVES:
        fig, ax = plt.subplots(figsize=(5.5, 3.8))
        for name in names:
            pts = sorted((r[x], r["fid"], spread(r)) for r in rows if r["row"] == name and r.get(x) is not None)
            if not pts:
                continue
            xs, ys = [p[0] for p in pts], [p[1] for p in pts]
            err = [[y - (s[0] if s else y) for y, s in zip(ys, (p[2] for p in pts))],
                   [(s[1] if s else y) - y for y, s in zip(ys, (p[2] for p in pts))]]
            ax.errorbar(xs, ys, yerr=err, marker="o", capsize=3, label=name)
        if front and x == "nfe":
            ax.step([p["nfe"] for p in front], [p["fid"] for p in front], where="post", color="black",
                    linestyle="--", linewidth=1, label="best at ≤ k calls", zorder=0)
        ax.set_xscale("log"), ax.set_xlabel(xlabel), ax.set_ylabel("FID (lower is better)")
        ax.legend(fontsize=7), ax.grid(alpha=0.3)
        paths[fname] = os.path.join(out, f"{fname}.png")
        fig.tight_layout(), fig.savefig(paths[fname] + ".tmp.png", dpi=120), plt.close(fig)
        os.replace(paths[fname] + ".tmp.png", paths[fname])
    return paths


def consistency_grid(rows: list[dict], samples, path: str, per_tile: int = 4) -> str | None:
    """Rows η (σ̂, samplers), columns S: the first seed block's first ``per_tile`` kept images of each cell, the
    same x_T in every tile, with the row and column labels drawn in the margins."""
    steps = sorted({r["steps"] for r in rows})
    names = list(dict.fromkeys(r["row"] for r in rows))
    first = {(r["row"], r["steps"]): r for r in rows}
    tiles = []
    for name in names:
        for s in steps:
            r = first.get((name, s))
            imgs = samples(r["keys"][0]) if r is not None else None
            ok = imgs is not None and len(imgs) >= per_tile
            tiles.append(image_grid(imgs[:per_tile], nrow=2) if ok else None)
    if all(t is None for t in tiles):
        return None
    shape = next(t.shape for t in tiles if t is not None)
    tiles = [t if t is not None else torch.full(shape, 255, dtype=torch.uint8) for t in tiles]
    grid = image_grid(torch.stack(tiles), nrow=len(steps))
    return save_png(labelled(grid, [f"S={s}" for s in steps], names, shape[1:]), path)


def label_font(size: int = 11):
    """DejaVu Sans (shipped with matplotlib): it has η, σ and the combining hat, which PIL's default font lacks."""
    from matplotlib import font_manager
    from PIL import ImageFont
    return ImageFont.truetype(font_manager.findfont("DejaVu Sans", fallback_to_default=False), size)


def labelled(grid: torch.Tensor, cols: list[str], rows: list[str], tile_hw) -> torch.Tensor:
    """A white margin on the left (row labels) and on top (column labels) of a uint8 [3, H, W] grid."""
    from PIL import Image, ImageDraw
    left, top, font = 64, 18, label_font()
    img = Image.new("RGB", (grid.shape[2] + left, grid.shape[1] + top), "white")
    img.paste(Image.fromarray(grid.permute(1, 2, 0).numpy()), (left, top))
    draw = ImageDraw.Draw(img)
    th, tw = tile_hw[0] + 1, tile_hw[1] + 1
    for j, c in enumerate(cols):
        draw.text((left + 2 + j * tw + tw // 3, 3), c, fill="black", font=font)
    for i, r in enumerate(rows):
        draw.text((4, top + 2 + i * th + th // 2 - 6), r, fill="black", font=font)
    return torch.from_numpy(np.array(img)).permute(2, 0, 1).contiguous()
