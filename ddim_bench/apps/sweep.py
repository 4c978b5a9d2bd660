"""``ddim-bench-sweep``: sample a checkpoint over a grid of cells × seed blocks and score each with torch-fidelity.

Everything that can be checked is checked before the first sample: the config against its schema, then — right
after the checkpoint is loaded — the step counts against the checkpoint's own T, the data's image size against
its model, the reference split, the results folder.  Each (cell, seed) is one record, claimed with a lock before
it is computed and skipped when finished, so reruns and concurrent job-array tasks never compute it twice.
"""
from __future__ import annotations

import logging
import sys
import time

import hydra
from omegaconf import DictConfig

from ddim_bench import cli, config, schema, validation
from ddim_bench.errors import UserError
from ddim_bench.evaluation import protocol, record as rec
from ddim_bench.models import checkpoint, fast
from ddim_bench.sampling.cell import Cell, cells_from_config

log = logging.getLogger(__name__)


def prepare(cfg: DictConfig, multirun: bool) -> dict:
    """All checks and cheap loading, in the order that needs no GPU and writes nothing."""
    from ddim_bench.evaluation import metrics
    from ddim_bench.evaluation.store import ResultStore
    from ddim_bench.reporting import user_claims
    cells = cells_from_config(cfg, multirun)
    claims = user_claims.plain(cfg.claims)
    if not multirun:  # a multirun job has one cell: its claims are checked by the report
        user_claims.check(claims, cells, cfg.metrics)
    metrics.check_extractor(cfg.metrics, cfg.download)  # missing weights: stop before any sampling
    validation.check_accelerator("eval.accelerator", cfg.eval.accelerator)
    dm = config.build_datamodule(cfg.data)  # before a model is fetched
    loaded = checkpoint.load(cfg.checkpoint, cfg.weights, cfg.paths.cache_dir, cfg.download)
    schedule = loaded.schedule or config.plain(cfg.diffusion)
    validation.check_schedule(cfg.diffusion, schedule, cfg.checkpoint, cli.overridden("diffusion"))
    validation.check_steps([c.steps for c in cells], schedule["num_timesteps"],
                           "sampler.steps" if len(cells) == 1 else "grid.steps")
    shape = loaded.shape
    ref = dm.reference(cfg.reference.split)
    validation.check_resolution(config.image_shape(ref, dm), shape, dm.name, cfg.checkpoint)
    ref_n = len(ref) if cfg.reference.n is None else int(cfg.reference.n)
    if ref_n > len(ref) or ref_n < 2:
        raise UserError(f"reference.n={cfg.reference.n} must be in [2, {len(ref)}] (the {cfg.reference.split} split "
                        f"of data={dm.name}); use null for the whole split")
    results = ResultStore(cfg.paths.results_dir)
    results.check_writable()
    return {"cells": cells, "claims": claims, "loaded": loaded, "schedule": schedule, "shape": shape, "dm": dm,
            "ref": ref, "ref_n": ref_n, "ref_key": f"{dm.key(cfg.reference.split)}|n={ref_n}", "results": results}


def run_sweep(cfg: DictConfig) -> list[dict]:
    import torch
    from ddim_bench.dist import Dist
    from ddim_bench.evaluation import metrics
    from ddim_bench.evaluation.cell_run import Context, evaluate
    from ddim_bench.reporting import user_claims
    from ddim_bench.tracking import runs
    if cfg.plan:  # reached through Hydra or in-process (the console script plans before Hydra starts)
        from ddim_bench.apps import sweep_plan
        sweep_plan.show([cfg], cli.is_multirun())
        return []
    p = prepare(cfg, cli.is_multirun())
    loaded, results, cells = p["loaded"], p["results"], p["cells"]
    dist = Dist(cfg.eval)
    model = fast.wrap(checkpoint.build_model(loaded, dist.device), cfg.sampler.fast, dist.device)
    alphas = config.build_alphas(p["schedule"])
    scorer = metrics.Scorer(cfg.metrics, cfg.paths.cache_dir, device=dist.device)
    fields = dict(n_samples=cfg.n_samples, checkpoint_sha256=loaded.info["sha256"], weights=loaded.info["weights"],
                  schedule=p["schedule"], extractor=scorer.extractor_id, reference=p["ref_key"],
                  keep_images=cfg.keep_images, fast=config.plain(cfg.sampler.fast), noise_version=noise_version())
    schedulers = {c: scheduler_config(c, alphas) for c in cells}
    jobs = [(seed, c, rec.cell_key(rec.key_fields(c, seed, **fields, scheduler=keyed(c, schedulers))))
            for c in cells for seed in cfg.seeds]
    ref_file = f"reference/{rec.cell_key({'reference': p['ref_key'], 'extractor': scorer.extractor_id})}.pt"
    pending = dist.broadcast([j for j in jobs if not results.has(j[2])] if dist.main else None)
    departures = protocol.departures(protocol_setting(cfg, loaded.info, p["dm"].name, scorer.name))
    if dist.main:
        say(f"sweep {cfg.sweep_name}: {len(cells)} cells x {len(cfg.seeds)} seed blocks, "
            f"{len(jobs) - len(pending)} records already done; results in {results.root}")
        say(f"protocol: {protocol.protocol_line(departures)}")
        runs.catch_up(cfg.logger, results, [j[2] for j in jobs if j not in pending])
        user_claims.store(results.root, p["claims"])
        if pending:
            scorer.reference_features = scorer.reference(torch.utils.data.Subset(p["ref"], range(p["ref_n"])),
                                                         p["ref_key"])
            if cfg.metrics.keep_features:
                save_reference(results.root, ref_file, scorer.reference_features)
    ctx = Context(dist, model, alphas, p["shape"], scorer, cfg.n_samples, cfg.keep_images, cfg.sampler.batch_size,
                  cfg.metrics.bootstrap, flops_per_call(loaded, p["shape"]), cfg.metrics.keep_features)
    done = []
    for i, (seed, cell, key) in enumerate(pending, 1):
        claim = results.claim(key) if dist.main else None
        go = dist.broadcast(bool(claim) and not results.has(key) if dist.main else None)
        if not go:
            if dist.main:
                say(f"[{i}/{len(pending)}] {cell.label} seed {seed}: taken by another process, skipped")
                claim and claim.release()
            continue
        try:
            with progress_bar(dist, cfg.n_samples, f"[{i}/{len(pending)}] {cell.label} seed {seed}") as bar:
                out = evaluate(ctx, cell, seed, bar)
        except BaseException:
            claim and claim.release()  # a failed cell is not left claimed
            raise
        if dist.main:
            record = {**rec.key_fields(cell, seed, **fields, scheduler=keyed(cell, schedulers)), **out.fields,
                      "scheduler": schedulers[cell], "key": key, "sweep": cfg.sweep_name,
                      "sampler": cell.sampler, "checkpoint": loaded.info, "reference_split": cfg.reference.split,
                      "reference_n": p["ref_n"], "protocol": departures,
                      "reference_file": ref_file if cfg.metrics.keep_features else None,
                      "feature_layers": dict(scorer.layers),
                      "created": time.strftime("%Y-%m-%dT%H:%M:%S")}
            files = {".samples.pt": out.images}
            if cfg.metrics.keep_features:
                files[".features.pt"] = {k: v.half() for k, v in out.features.items()}
            results.put(key, record, files)
            claim.release()
            runs.log_cell(cfg.logger, record, out.images, results.root)
            log.info(record_line(record))
            done.append(record)
            if seed == cfg.seeds[-1]:  # the cell's last block: one console line for the cell
                say(cell_line(cell, [results.record(k) for s, c, k in jobs if c == cell]))
        dist.barrier()
    return done


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


def record_line(r: dict) -> str:
    ci = f" [{r['fid_lo']:.3g}, {r['fid_hi']:.3g}]" if r.get("fid_lo") is not None else ""
    return (f"{Cell.from_record(r).label} seed {r['seed']}: FID {r['fid']:.3g}{ci}, "
            f"{r['images_per_sec']:.0f} img/s, NFE {r['nfe']}")


def cell_line(cell: Cell, recs: list) -> str:
    """One line per cell: FID mean ± sd over its seed blocks (or its one block's interval), speed, NFE."""
    from ddim_bench.reporting.aggregate import aggregate
    from ddim_bench.reporting.table1 import fmt
    recs = [r for r in recs if r is not None]
    row = aggregate(recs)[0]
    return (f"  {cell.label}: FID {fmt(row)} ({len(recs)} block{'s' * (len(recs) > 1)}), "
            f"{row['images_per_sec']:.0f} img/s, NFE {row['nfe']:.0f}")


def say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def progress_bar(dist, total: int, desc: str):
    """tqdm on rank 0 only (a disabled bar elsewhere); leaves no line behind once the cell's line is printed."""
    from tqdm.auto import tqdm
    return tqdm(total=total, desc=desc, unit="img", leave=False, disable=not dist.main or not sys.stderr.isatty(),
                file=sys.stderr, dynamic_ncols=True)


def save_reference(root: str, rel: str, features: dict) -> None:
    """The reference features beside the records (float16), once: the report's paired differences need them."""
    import io
    import os
    import torch
    from ddim_bench.io import atomic_write
    path = os.path.join(root, rel)
    if not os.path.isfile(path):
        buf = io.BytesIO()
        torch.save({k: v.half() for k, v in features.items()}, buf)
        atomic_write(path, buf.getvalue())


def noise_version() -> int:
    try:
        from ddim_bench.sampling.noise import NOISE_VERSION
        return NOISE_VERSION
    except ImportError:
        return 1


def flops_per_call(loaded, shape) -> float | None:
    """FLOPs of one network call on one image (``torch.utils.flop_counter``), or None where it cannot count."""
    try:
        from ddim_bench.sampling.cost import flops_per_call as count
        return float(count(checkpoint.build_model(loaded, "cpu"), (1, *shape), "cpu"))
    except Exception:  # noqa: BLE001 - a cost figure is optional
        return None


@hydra.main(version_base="1.3", config_path=str(cli.CONF_DIR), config_name="sweep")
@cli.app(schema.SweepApp)
def _main(cfg: DictConfig) -> None:
    run_sweep(cfg)


def main() -> None:
    from ddim_bench.apps import sweep_plan
    if sweep_plan.requested(sys.argv[1:]):  # composed without Hydra's run: no output folder, nothing written
        return sweep_plan.main()
    cli.run_hydra(_main, "sweep")


if __name__ == "__main__":
    main()
