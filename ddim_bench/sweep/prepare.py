"""Everything a sweep checks before the first sample, and what its records share.

The config against its schema comes first (the app); then, right after the checkpoint is loaded, the step counts
against the checkpoint's own T, the data's image size against its model, the reference split, the results folder.
"""
from __future__ import annotations

from omegaconf import DictConfig

from ddim_bench import cli, config, signals, validation
from ddim_bench.errors import UserError
from ddim_bench.models import checkpoint
from ddim_bench.sampling.cell import Cell, cells_from_config
from ddim_bench.sweep.console import say


def prepare(cfg: DictConfig, multirun: bool) -> dict:
    """All checks and cheap loading, in the order that needs no GPU and writes nothing."""
    from ddim_bench.scoring import metrics
    from ddim_bench.results.store import ResultStore
    from ddim_bench.reporting import user_claims
    cells = cells_from_config(cfg, multirun, cli.overridden("sampler"), cli.choice("grid"))
    claims = user_claims.plain(cfg.claims)
    if not multirun:  # a multirun job has one cell: its claims are checked by the report
        user_claims.check(claims, cells, cfg.metrics)
    spec = (cfg.get("slurm") or {}).get("signal")
    if spec and signals.from_spec(spec) is None:
        raise UserError(f"slurm.signal={spec} names no signal; use e.g. USR1@90 (sbatch --signal)")
    metrics.check_extractor(cfg.metrics, cfg.download)  # missing weights: stop before any sampling
    validation.check_accelerator("eval.accelerator", cfg.eval.accelerator)
    dm = config.build_datamodule(cfg.data)  # before a model is fetched
    loaded = checkpoint.load(cfg.checkpoint, cfg.weights, cfg.paths.cache_dir, cfg.download)
    schedule = loaded.schedule or config.plain(cfg.diffusion)
    validation.check_schedule(cfg.diffusion, schedule, cfg.checkpoint, cli.overridden("diffusion"))
    validation.check_steps([c.steps for c in cells], schedule["num_timesteps"],
                           "sampler.steps" if len(cells) == 1 else "grid.steps")
    warning = metrics.data_mismatch(cfg.metrics, dm.name)
    if warning:
        say(warning)
    ref = dm.reference(cfg.reference.split)
    validation.check_resolution(config.image_shape(ref, dm), loaded.shape, dm.name, cfg.checkpoint)
    ref_n = reference_n(cfg, len(ref), dm.name)
    results = ResultStore(cfg.paths.results_dir, lease_s=cfg.eval.lease_s)
    results.check_writable()
    return {"cells": cells, "claims": claims, "loaded": loaded, "schedule": schedule, "shape": loaded.shape,
            "dm": dm, "ref": ref, "ref_n": ref_n, "ref_key": f"{dm.key(cfg.reference.split)}|n={ref_n}",
            "results": results}


def reference_n(cfg: DictConfig, available: int, dataset: str) -> int:
    """``reference.n`` checked against the reference split's size (null: the whole split)."""
    ref_n = available if cfg.reference.n is None else int(cfg.reference.n)
    if ref_n > available or ref_n < 2:
        raise UserError(f"reference.n={cfg.reference.n} must be in [2, {available}] (the {cfg.reference.split} "
                        f"split of data={dataset}); use null for the whole split")
    return ref_n


def check_cells(cfg: DictConfig, multirun: bool) -> None:
    """The cheap per-job check run before Hydra starts: the job's cells (sampler settings, grid overrides)."""
    cells_from_config(cfg, multirun, cli.overridden("sampler"), cli.choice("grid"))


def scheduler_config(cell: Cell, alphas) -> dict:
    """The sampler's effective configuration for this cell (``samplers.effective_config``), kept in its record."""
    from ddim_bench.sampling.samplers import effective_config
    return effective_config(cell.sampler, alphas, cell.steps, cell.skip, clip_x0=cell.clip_x0)


def keyed(cell: Cell, schedulers: dict) -> dict | None:
    """A diffusers scheduler's configuration is part of the record's key; ours (``ddim``) is fixed by the cell."""
    return None if cell.sampler == "ddim" else schedulers[cell]


def protocol_setting(cfg, info: dict, dataset: str, extractor: str) -> dict:
    import torch_fidelity
    return {"n_samples": cfg.n_samples, "weights": info["weights"], "dataset": dataset,
            "reference_split": cfg.reference.split, "skip": cfg.grid.skip if cfg.grid.steps else cfg.sampler.skip,
            "table1": dataset == "cifar10", "extractor": extractor, "torch_fidelity": torch_fidelity.__version__,
            "seed_blocks": len(cfg.seeds)}


def noise_version() -> int:
    from ddim_bench.sampling.noise import NOISE_VERSION
    return NOISE_VERSION


def flops_per_call(loaded, shape) -> float | None:
    """FLOPs of one network call on one image (``torch.utils.flop_counter``), or None where it cannot count."""
    try:
        from ddim_bench.sampling.cost import flops_per_call as count
        return float(count(checkpoint.build_model(loaded, "cpu"), (1, *shape), "cpu"))
    except Exception:  # noqa: BLE001 - a cost figure is optional
        return None
