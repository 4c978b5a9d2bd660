"""``ddim-bench-interpolate``: slerp between pairs of seeded x_T, decoded with η = 0 at each S (paper §5.3, Fig. 6).

Writes ``<results_dir>/interpolation/S{S}.png`` (one row per pair) and ``side_by_side.png`` (each pair's path
at every S, one row per S), and one W&B run holding them.  Cheap, so it is rewritten on every run."""
from __future__ import annotations

import os
import sys

import torch
from omegaconf import DictConfig

from ddim_bench.images import image_grid, save_png, to_uint8_rgb
from ddim_bench.models import checkpoint
from ddim_bench.sampling import ddim, inversion
from ddim_bench.tasks.loading import load_checked


def run(cfg: DictConfig) -> dict[str, str]:
    c = load_checked(cfg, "steps")
    folder = os.path.join(cfg.paths.results_dir, "interpolation")
    os.makedirs(folder, exist_ok=True)
    model = checkpoint.build_model(c["loaded"], c["device"])
    pairs, points, shape = cfg.pairs, cfg.points, c["shape"]
    z = inversion.interpolation_latents(cfg.seed, pairs, points, shape, c["device"]).flatten(0, 1)
    grids, paths = {}, {}
    for S in cfg.steps:
        taus = ddim.timesteps(c["alphas"].numel(), S, cfg.sampler.skip)
        imgs, secs = inversion.timed(lambda: inversion.decode(model, z, c["alphas"], taus, cfg.sampler.batch_size),
                                     c["device"])
        grids[S] = imgs.view(pairs, points, *shape)
        paths[f"S{S}"] = save_png(image_grid(to_uint8_rgb(imgs), nrow=points), os.path.join(folder, f"S{S}.png"))
        print(f"interpolation S={S}: {pairs} pairs x {points} points in {secs:.2f} s -> {paths[f'S{S}']}",
              file=sys.stderr, flush=True)
    rows = torch.stack([grids[S][p] for p in range(pairs) for S in cfg.steps])  # pair-major, one row per S
    paths["side_by_side"] = save_png(image_grid(to_uint8_rgb(rows.flatten(0, 1)), nrow=points),
                                     os.path.join(folder, "side_by_side.png"))
    log(cfg, folder, paths)
    return paths


def log(cfg, folder: str, paths: dict[str, str]) -> None:
    from ddim_bench.tracking import Tracker
    with Tracker(cfg.logger, job_type="interpolation", group=cfg.sweep_name, name=f"interpolation-{cfg.sweep_name}",
                 config={"steps": list(cfg.steps), "pairs": cfg.pairs, "points": cfg.points, "seed": cfg.seed},
                 dir=os.path.join(folder, "run")) as tr:
        for name, path in paths.items():
            caption = (f"{name}: {cfg.pairs} pairs x {cfg.points} slerp points" if name != "side_by_side"
                       else f"each pair at S = {list(cfg.steps)} (one row per S)")
            tr.image(f"interpolation/{name}", path, caption=caption)
