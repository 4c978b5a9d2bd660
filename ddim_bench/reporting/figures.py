"""The report's figures: FID against S, seconds and NFE with error bars, and the labelled consistency grid."""
from __future__ import annotations

import os

import numpy as np
import torch

from ddim_bench.images import image_grid, save_png
from ddim_bench.io import atomic_path
from ddim_bench.reporting.aggregate import spread

CURVES = (("fid_vs_steps", "steps", "steps S"), ("fid_vs_time", "sec_per_image", "seconds per image"),
          ("fid_vs_nfe", "nfe", "network calls (NFE)"))


DODGE = 0.035  # on a log axis, series k of m at the same x is drawn at x·exp((k − (m−1)/2)·DODGE)


def curves(rows: list[dict], out: str, front: list[dict] | None = None, suffix: str = "") -> dict[str, str]:
    """One line per row (η, σ̂, sampler); bars are ±sd over seed blocks, or the 95 % interval of one block.
    ``front``: the Pareto front of FID against NFE (``samplers.front_steps``), drawn as a step line on FID vs NFE.
    ``suffix`` goes into the file names (``fid_vs_steps-n16.png``: one set of figures per sample count)."""
    paths = {}
    for fname, x, xlabel in CURVES:
        paths[fname + suffix] = os.path.join(out, f"{fname}{suffix}.png")
        save_figure(curve_figure(rows, x, xlabel, front if x == "nfe" else None), paths[fname + suffix])
    return paths


def save_figure(fig, path: str) -> str:
    """Write a matplotlib figure as a PNG atomically and close it; returns ``path``."""
    import matplotlib.pyplot as plt
    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=120, format="png")
    finally:
        plt.close(fig)
    return path


def curve_figure(rows: list[dict], x: str, xlabel: str, front: list[dict] | None = None):
    """FID against ``x`` on a log axis; on the step and NFE axes the series are dodged sideways (points of two
    samplers at one NFE would hide each other) and the ticks are the values themselves (10, 20, not 10¹, 2×10¹)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    names = list(dict.fromkeys(r["row"] for r in rows))
    discrete = x in ("steps", "nfe")
    for k, name in enumerate(names):
        pts = sorted((r[x], r["fid"], spread(r)) for r in rows if r["row"] == name and r.get(x) is not None)
        if not pts:
            continue
        shift = float(np.exp((k - (len(names) - 1) / 2) * DODGE)) if discrete else 1.0
        xs, ys = [p[0] * shift for p in pts], [p[1] for p in pts]
        err = [[y - (p[2][0] if p[2] else y) for y, p in zip(ys, pts)],
               [(p[2][1] if p[2] else y) - y for y, p in zip(ys, pts)]]
        ax.errorbar(xs, ys, yerr=err, marker="o", capsize=3, label=name)
    if front:
        ax.step([p["nfe"] for p in front], [p["fid"] for p in front], where="post", color="black",
                linestyle="--", linewidth=1, label="best at ≤ k calls", zorder=0)
    ax.set_xscale("log"), ax.set_xlabel(xlabel + (" (series dodged sideways)" if discrete and len(names) > 1 else ""))
    if discrete:
        ticks = spaced_ticks({r[x] for r in rows if r.get(x) is not None})
        ax.set_xticks(ticks, [f"{t:g}" for t in ticks])
    else:  # seconds: ticks at 1, 2, 5 × 10^k written plainly; unlabelled minor ticks (their labels overlapped)
        ax.xaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_ylabel("FID (lower is better)"), ax.legend(fontsize=7), ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def spaced_ticks(values, gap: float = 0.04) -> list:
    """The values as log-axis ticks at least ``gap`` decades apart (19 and 20 NFE overlapped as "1920"): multiples
    of 10, then of 5, then the rest, each kept where it clears those already kept."""
    kept = []
    for v in sorted(values, key=lambda v: (v % 10 != 0, v % 5 != 0, v)):
        if v > 0 and all(abs(np.log10(v / k)) >= gap for k in kept):
            kept.append(v)
    return sorted(kept)


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
