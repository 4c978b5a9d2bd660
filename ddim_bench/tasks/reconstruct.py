"""``ddim-bench-reconstruct``: the paper's Table 2 — encode held-out images with the η = 0 ODE over S steps, decode
over the same S, record the per-dimension MSE on [0, 1].  One checksummed record per S in
``<results_dir>/reconstruction/`` (keyed by everything that determines it); a rerun skips finished records.
Next to each record, ``<key>.png`` shows originals over reconstructions."""
from __future__ import annotations

import os
import sys

import torch
from omegaconf import DictConfig

from ddim_bench import config, validation
from ddim_bench.results.record import (RECONSTRUCTION_COLUMNS, cell_key, reconstruction_fields,
                                       reconstruction_record)
from ddim_bench.images import image_grid, save_png, to_uint8_rgb
from ddim_bench.models import checkpoint
from ddim_bench.sampling import ddim, inversion
from ddim_bench.tasks.loading import load_checked

STRIP_IMAGES = 8


def record_fields(cfg, S: int, n: int, data_key: str, info: dict, schedule: dict) -> dict:
    return reconstruction_fields(steps=S, skip=cfg.sampler.skip, n_images=n, split=cfg.split, data=data_key,
                                 checkpoint_sha256=info["sha256"], weights=info["weights"], schedule=schedule)


def run(cfg: DictConfig) -> list[dict]:
    from ddim_bench.results.store import ResultStore
    c = load_checked(cfg, "steps")
    dm = config.build_datamodule(cfg.data)
    images = dm.images(cfg.split, int(cfg.n_images))  # empty split / too few images: one-line error
    validation.check_resolution(tuple(images.shape[1:]), c["shape"], dm.name)
    store = ResultStore(os.path.join(cfg.paths.results_dir, "reconstruction"))
    store.check_writable()
    model = checkpoint.build_model(c["loaded"], c["device"])
    out, new = [], []
    for S in cfg.steps:
        fields = record_fields(cfg, S, len(images), dm.key(cfg.split), c["loaded"].info, c["schedule"])
        key = cell_key(fields)
        if store.has(key):
            out.append(store.record(key))
            say(f"reconstruction S={S}: MSE {store.record(key)['mse']:.3g} (already done)")
            continue
        taus = ddim.timesteps(c["alphas"].numel(), S, cfg.sampler.skip)
        recs, enc_s, dec_s = inversion.reconstruct(model, images, c["alphas"], taus, cfg.sampler.batch_size,
                                                   c["device"])
        strip = save_strip(images, recs, S, os.path.join(store.root, strip_name(S, cfg.sampler.skip, key)))
        record = reconstruction_record(fields, key, inversion.reconstruction_errors(images, recs),
                                       strip=os.path.basename(strip), nfe=ddim.model_calls(taus),
                                       encode_seconds=enc_s, decode_seconds=dec_s, device=str(c["device"]),
                                       sweep=cfg.sweep_name, checkpoint=c["loaded"].info, dataset=dm.name)
        store.put(key, record)
        say(f"reconstruction S={S}: MSE {record['mse']:.3g} ± {record['mse_std']:.2g} over {len(images)} images, "
            f"encode {enc_s:.2f} s, decode {dec_s:.2f} s")
        out.append(record)
        new.append(record)
    if new:
        log(cfg, store.root, new)
    say(f"reconstruction: {store.root}/ (records and strips; ddim-bench-report "
        f"paths.results_dir={cfg.paths.results_dir} adds Table 2)")
    return out


def strip_name(S: int, skip: str, key: str) -> str:
    """``S10-uniform-<key prefix>.png``: the step count first, the key keeps setups apart."""
    return f"S{S}-{skip}-{key[:10]}.png"


def save_strip(images, recs, S: int, path: str) -> str:
    """The first images over their reconstructions, rows labelled "original" and "S=<S>"."""
    from ddim_bench.reporting.figures import labelled
    k = min(STRIP_IMAGES, len(images))
    strip = to_uint8_rgb(torch.cat([images[:k], recs[:k].clamp(-1, 1)]).float())
    grid = image_grid(strip, nrow=k)
    tile = ((grid.shape[1] - 1) // 2 - 1, (grid.shape[2] - 1) // k - 1)
    return save_png(labelled(grid, [], ["original", f"S={S}"], tile), path)


def log(cfg, folder: str, records: list[dict]) -> None:
    """One W&B run (job_type ``reconstruction``): MSE against S, the strips and a table of the new records."""
    from ddim_bench.tracking import Tracker
    cols = list(RECONSTRUCTION_COLUMNS)
    with Tracker(cfg.logger, job_type="reconstruction", group=cfg.sweep_name, name=f"reconstruction-{cfg.sweep_name}",
                 config={"steps": list(cfg.steps), "n_images": cfg.n_images, "split": cfg.split,
                         "skip": cfg.sampler.skip}, dir=os.path.join(folder, "run")) as tr:
        if tr.run is not None:
            tr.run.define_metric("S")
            tr.run.define_metric("reconstruction/*", step_metric="S")
        for r in sorted(records, key=lambda r: r["steps"]):
            tr.log({"S": r["steps"], **{f"reconstruction/{k}": r[k] for k in
                                        ("mse", "mse_std", "encode_seconds", "decode_seconds", "nfe")}})
            tr.image(f"strips/S{r['steps']}", os.path.join(folder, r["strip"]),
                     caption=f"S={r['steps']}: originals (top), reconstructions (bottom)")
        tr.table("reconstruction", cols, [[r.get(c) for c in cols] for r in records])


def say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)
