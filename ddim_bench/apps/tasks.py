"""``ddim-bench-tasks``: reconstruction from the η = 0 latent and latent interpolation (paper §5.3–5.4).

* Reconstruction: the first N held-out images are encoded with the deterministic ODE over S steps and
  decoded with η = 0 over the same S steps.  One JSON record per S goes to
  ``<results_dir>/reconstruction/<key>.json`` (the key hashes everything that determines the numbers);
  a rerun skips finished records.  Next to each record, ``<key>.png`` shows originals over reconstructions.
* Interpolation: pairs of x_T seeded as the sweep seeds its samples, joined by slerp and decoded with
  η = 0 at each S: ``<results_dir>/interpolation/S{S}.png`` (one row per pair) and
  ``side_by_side.png`` (each pair's path at every S, one row per S).

``report_reconstruction`` turns the records into a Table-2-style Markdown table, a CSV and a figure.
"""
from __future__ import annotations

import json
import os
import sys
import time

import hydra
import torch
from omegaconf import DictConfig

from ddim_bench.models import checkpoint
from ddim_bench import cli
from ddim_bench import config
from ddim_bench.sampling import ddim
from ddim_bench.evaluation import store
from ddim_bench.errors import UserError
from ddim_bench.reporting.reconstruction import RECORD_COLUMNS, reconstruction_records, report_reconstruction  # noqa: F401
from ddim_bench.io import atomic_write

STRIP_IMAGES = 8
# --------------------------------------------------------------------------- validation
def _check_steps(name: str, steps, num_timesteps: int) -> list[int]:
    """``steps`` as a non-empty list of integers in [1, T], or a one-line error naming ``name``."""
    steps = [steps] if isinstance(steps, (int, str)) else list(steps)
    if not steps:
        raise UserError(f"{name}=[] is empty; give at least one number of steps S")
    for s in steps:
        if isinstance(s, bool) or not isinstance(s, int) or not 1 <= s <= num_timesteps:
            raise UserError(f"{name} entry {s} must be an integer in [1, diffusion.num_timesteps={num_timesteps}]")
    return steps


def check_config(cfg: DictConfig) -> None:
    """Checks that need neither the checkpoint nor the data."""
    rec, interp = cfg.reconstruction, cfg.interpolation
    if not rec.enabled and not interp.enabled:
        raise UserError("reconstruction.enabled and interpolation.enabled are both false; nothing to do")
    if cfg.sampler.skip not in ddim.SKIPS:
        raise UserError(f"sampler.skip={cfg.sampler.skip} must be one of {', '.join(ddim.SKIPS)}")
    if rec.enabled:
        if not isinstance(rec.n_images, int) or rec.n_images < 1:
            raise UserError(f"reconstruction.n_images={rec.n_images} must be an integer >= 1")
        if not isinstance(rec.batch_size, int) or rec.batch_size < 1:
            raise UserError(f"reconstruction.batch_size={rec.batch_size} must be an integer >= 1")
    if interp.enabled:
        if not isinstance(interp.pairs, int) or interp.pairs < 1:
            raise UserError(f"interpolation.pairs={interp.pairs} must be an integer >= 1")
        if not isinstance(interp.points, int) or interp.points < 2:
            raise UserError(f"interpolation.points={interp.points} must be an integer >= 2 (the two ends)")
        if int(cfg.sampler.batch_size) < 1:
            raise UserError(f"sampler.batch_size={cfg.sampler.batch_size} must be >= 1")


def pick_device(name: str) -> torch.device:
    """``cpu``, ``cuda[:N]`` or ``auto`` (CUDA when available)."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UserError(f"device={name} must be cpu, cuda, cuda:N or auto") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"device={name} but CUDA is not available; use device=cpu")
    return device


# --------------------------------------------------------------------------- small helpers
def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _to_unit(x: torch.Tensor) -> torch.Tensor:
    """[−1, 1] → [0, 1] (no clamping)."""
    return (x.double() + 1) / 2


def _rgb(x: torch.Tensor) -> torch.Tensor:
    from ddim_bench.images import to_uint8_rgb
    return to_uint8_rgb(x.float()).cpu()


def _save_grid(images: torch.Tensor, nrow: int, path: str) -> str:
    """Save [−1, 1] images as one PNG grid of ``nrow`` images per row."""
    from ddim_bench.images import save_png
    from ddim_bench.images import image_grid
    save_png(image_grid(_rgb(images), nrow=nrow), path)
    return path


def _timed(fn, device: torch.device):
    """``fn()`` and the wall seconds it took (CUDA synchronised)."""
    _sync(device)
    t0 = time.perf_counter()
    out = fn()
    _sync(device)
    return out, time.perf_counter() - t0


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- reconstruction
def reconstruction_fields(steps: int, skip: str, n_images: int, split: str, data_key: str, info: dict,
                          schedule: dict) -> dict:
    """Everything that determines a reconstruction record's numbers (not batch size or device)."""
    return {"task": "reconstruction", "steps": steps, "skip": skip, "n_images": n_images, "split": split,
            "data": data_key, "checkpoint_sha256": info["sha256"], "weights": info["weights"],
            "schedule": schedule}


def reconstruct(model, images: torch.Tensor, alphas: torch.Tensor, taus: list[int], batch_size: int,
                device: torch.device) -> tuple[torch.Tensor, float, float]:
    """Encode then decode ``images`` along ``taus`` in batches: (reconstructions, encode s, decode s)."""
    outs, enc_s, dec_s = [], 0.0, 0.0
    for b in range(0, len(images), batch_size):
        x0 = images[b:b + batch_size].to(device)
        x_T, t_enc = _timed(lambda: ddim.encode(model, x0, alphas, taus), device)
        rec, t_dec = _timed(lambda: ddim.sample(model, x_T, alphas, taus, eta=0.0), device)
        outs.append(rec.cpu())
        enc_s, dec_s = enc_s + t_enc, dec_s + t_dec
    return torch.cat(outs), enc_s, dec_s


def reconstruction_errors(images: torch.Tensor, recs: torch.Tensor) -> dict:
    """Per-dimension squared error on the [0, 1] scale: the mean (as in Table 2) and its spread over images.

    ``mse`` compares the reconstruction clamped to the image range (what an image file holds);
    ``mse_unclamped`` is the raw ODE output's error.
    """
    ref = _to_unit(images)
    per_image = (_to_unit(recs.clamp(-1, 1)) - ref).pow(2).flatten(1).mean(1)
    raw = (_to_unit(recs) - ref).pow(2).flatten(1).mean(1)
    return {"mse": per_image.mean().item(),
            "mse_std": per_image.std().item() if len(per_image) > 1 else 0.0,
            "mse_min": per_image.min().item(), "mse_max": per_image.max().item(),
            "mse_unclamped": raw.mean().item()}


def run_reconstruction(cfg, model, alphas, steps: list[int], images, loaded, schedule: dict, data_key: str,
                       device) -> list[dict]:
    """One record per S in ``steps``; finished ones are read back, not recomputed."""
    rc, skip = cfg.reconstruction, cfg.sampler.skip
    folder = os.path.join(cfg.paths.results_dir, "reconstruction")
    out, new = [], []
    for S in steps:
        fields = reconstruction_fields(S, skip, len(images), rc.split, data_key, loaded.info, schedule)
        key = store.cell_key(fields)
        path = os.path.join(folder, f"{key}.json")
        if os.path.isfile(path):
            with open(path) as f:
                out.append(json.load(f))
            _log(f"reconstruction S={S}: already done ({path})")
            continue
        taus = ddim.timesteps(alphas.numel(), S, skip)
        recs, enc_s, dec_s = reconstruct(model, images, alphas, taus, int(rc.batch_size), device)
        k = min(STRIP_IMAGES, len(images))
        _save_grid(torch.cat([images[:k], recs[:k].clamp(-1, 1)]), k, os.path.join(folder, f"{key}.png"))
        record = {**fields, **reconstruction_errors(images, recs), "key": key, "strip": f"{key}.png",
                  "nfe": ddim.model_calls(taus), "encode_seconds": enc_s, "decode_seconds": dec_s,
                  "device": str(device), "sweep": cfg.sweep_name, "checkpoint": loaded.info,
                  "dataset": data_key.split("|")[0], "created": time.strftime("%Y-%m-%dT%H:%M:%S")}
        atomic_write(path, json.dumps(record, indent=1, sort_keys=True).encode())  # record last
        _log(f"reconstruction S={S}: MSE {record['mse']:.3g} ± {record['mse_std']:.2g} over {len(images)} "
             f"images, encode {enc_s:.2f} s, decode {dec_s:.2f} s")
        out.append(record)
        new.append(record)
    if new:
        log_reconstruction(cfg, folder, new)
    return out


def log_reconstruction(cfg, folder: str, records: list[dict]) -> None:
    """One W&B run (job_type ``reconstruction``): MSE against S, the strips and a table of the new records."""
    from ddim_bench.tracking.tracker import Tracker
    cols = [c for c in RECORD_COLUMNS if c != "paper_cifar10_mse"]
    with Tracker(cfg.logger, job_type="reconstruction", group=cfg.sweep_name,
                 name=f"reconstruction-{cfg.sweep_name}", config=config.plain(cfg.reconstruction),
                 dir=os.path.join(folder, "run")) as tr:
        if tr.run is not None:
            tr.run.define_metric("S")
            tr.run.define_metric("reconstruction/*", step_metric="S")
        for r in sorted(records, key=lambda r: r["steps"]):
            tr.log({"S": r["steps"], **{f"reconstruction/{k}": r[k] for k in
                                        ("mse", "mse_std", "encode_seconds", "decode_seconds", "nfe")}})
            tr.image(f"strips/S{r['steps']}", os.path.join(folder, r["strip"]),
                     caption=f"S={r['steps']}: originals (top), reconstructions (bottom)")
        tr.table("reconstruction", cols, [[r.get(c) for c in cols] for r in records])


# --------------------------------------------------------------------------- interpolation
def interpolation_latents(seed: int, pairs: int, points: int, shape, device) -> torch.Tensor:
    """[pairs, points, C, H, W]: slerp from x_T of sample 2p to that of sample 2p+1 (sweep seeding)."""
    from ddim_bench.sampling.generate import generators, initial_noise
    ends = initial_noise(generators(seed, range(2 * pairs), device), shape, device)
    z0, z1 = ends[0::2], ends[1::2]
    path = [ddim.slerp(z0, z1, a) for a in torch.linspace(0, 1, points, dtype=torch.float64).tolist()]
    return torch.stack(path, dim=1)


def decode(model, x_T: torch.Tensor, alphas, taus, batch_size: int) -> torch.Tensor:
    """η = 0 decoding of ``x_T`` in batches; returns CPU images in [−1, 1]."""
    return torch.cat([ddim.sample(model, x_T[b:b + batch_size], alphas, taus, eta=0.0).clamp(-1, 1).cpu()
                      for b in range(0, len(x_T), batch_size)])


def run_interpolation(cfg, model, alphas, steps: list[int], shape, device) -> dict[str, str]:
    """Write ``S{S}.png`` per S in ``steps`` and ``side_by_side.png``; returns {name: path}."""
    ic = cfg.interpolation
    folder = os.path.join(cfg.paths.results_dir, "interpolation")
    pairs, points = int(ic.pairs), int(ic.points)
    z = interpolation_latents(int(ic.seed), pairs, points, shape, device).flatten(0, 1)
    grids, paths = {}, {}
    for S in steps:
        taus = ddim.timesteps(alphas.numel(), S, cfg.sampler.skip)
        imgs, secs = _timed(lambda: decode(model, z, alphas, taus, int(cfg.sampler.batch_size)), device)
        grids[S] = imgs.view(pairs, points, *shape)
        paths[f"S{S}"] = _save_grid(imgs, points, os.path.join(folder, f"S{S}.png"))
        _log(f"interpolation S={S}: {pairs} pairs x {points} points in {secs:.2f} s -> {paths[f'S{S}']}")
    rows = torch.stack([grids[S][p] for p in range(pairs) for S in steps])  # pair-major, one row per S
    paths["side_by_side"] = _save_grid(rows.flatten(0, 1), points, os.path.join(folder, "side_by_side.png"))
    log_interpolation(cfg, folder, steps, paths)
    return paths


def log_interpolation(cfg, folder: str, steps: list[int], paths: dict[str, str]) -> None:
    """One W&B run (job_type ``interpolation``) holding the grids."""
    from ddim_bench.tracking.tracker import Tracker
    ic = cfg.interpolation
    with Tracker(cfg.logger, job_type="interpolation", group=cfg.sweep_name,
                 name=f"interpolation-{cfg.sweep_name}", config=config.plain(ic),
                 dir=os.path.join(folder, "run")) as tr:
        for name, path in paths.items():
            caption = (f"{name}: {ic.pairs} pairs x {ic.points} slerp points" if name != "side_by_side"
                       else f"each pair at S = {steps} (one row per S)")
            tr.image(f"interpolation/{name}", path, caption=caption)


# --------------------------------------------------------------------------- the app
def run_tasks(cfg: DictConfig) -> dict:
    """Validate everything, then run the enabled tasks. Returns {"reconstruction": [...], "interpolation": {...}}."""
    from ddim_bench import tracking
    tracking.validate_mode(cfg.logger.wandb.mode)
    check_config(cfg)
    device = pick_device(str(cfg.device))
    loaded = checkpoint.load(cfg.checkpoint, cfg.weights)
    schedule = loaded.schedule or config.plain(cfg.diffusion)
    alphas = config.build_alphas(schedule)
    T = alphas.numel()
    rc, ic = cfg.reconstruction, cfg.interpolation
    rec_steps = _check_steps("reconstruction.steps", rc.steps, T) if rc.enabled else []
    interp_steps = _check_steps("interpolation.steps", ic.steps, T) if ic.enabled else []
    shape = (loaded.model["in_channels"], loaded.model["resolution"], loaded.model["resolution"])
    images, data_key = None, None
    if rc.enabled:
        dm = config.build_datamodule(cfg.data)
        images = dm.images(rc.split, int(rc.n_images))  # empty split / too few images: one-line error
        if tuple(images.shape[1:]) != shape:
            raise UserError(f"data={dm.name} gives images of shape {tuple(images.shape[1:])} but the checkpoint's "
                            f"model takes {shape}; set data.resolution/data to match the checkpoint")
        data_key = dm.key(rc.split)
    model = checkpoint.build_model(loaded, device)
    out = {}
    if rc.enabled:
        out["reconstruction"] = run_reconstruction(cfg, model, alphas, rec_steps, images, loaded, schedule, data_key,
                                                   device)
    if ic.enabled:
        out["interpolation"] = run_interpolation(cfg, model, alphas, interp_steps, shape, device)
    return out


@hydra.main(version_base="1.3", config_path=str(cli.CONF_DIR), config_name="tasks")
@cli.user_errors
def _main(cfg: DictConfig) -> None:
    out = run_tasks(cfg)
    for r in sorted(out.get("reconstruction", []), key=lambda r: r["steps"]):
        print(f"S={r['steps']}: reconstruction MSE {r['mse']:.4g} (std over images {r['mse_std']:.2g})")
    for name, path in out.get("interpolation", {}).items():
        print(f"interpolation {name}: {path}")
    sys.stdout.flush()


def main() -> None:
    cli.run_hydra(_main)


if __name__ == "__main__":
    main()
