"""``ddim-bench-sweep``: sample a checkpoint over a grid of cells and score each with torch-fidelity.

One process group evaluates the whole grid with the model loaded once; under a Hydra multirun each job
evaluates the single ``sampler.*`` cell.  Finished cells are found in the results store and skipped.
"""
from __future__ import annotations

import sys
import time

import hydra
import torch
from omegaconf import DictConfig

from ddim_bench.models import checkpoint
from ddim_bench import cli
from ddim_bench import config
from ddim_bench.models import fast
from ddim_bench.evaluation import store
from ddim_bench.errors import UserError
from ddim_bench.sampling.cell import Cell
from ddim_bench.sampling.generate import generate, rank_indices


def grid_cells(cfg: DictConfig) -> list[Cell]:
    """The grid's cells, or the ``sampler`` cell alone in a multirun job or with ``grid=none``."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode
    s = cfg.sampler
    multirun = HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN
    if multirun or not (cfg.grid.steps or cfg.grid.hat):
        return [Cell(s.steps, float(s.eta), s.variance, s.skip, bool(s.clip_x0))]
    cells = [Cell(S, float(e), "eta", cfg.grid.skip, bool(s.clip_x0)) for e in cfg.grid.eta for S in cfg.grid.steps]
    if cfg.grid.hat:
        cells += [Cell(S, 1.0, "hat", cfg.grid.skip, True) for S in cfg.grid.steps]
    return cells


def validate(cfg: DictConfig, cells: list[Cell]) -> None:
    T = cfg.diffusion.num_timesteps
    for c in cells:
        config.check_sampler(DictConfig({**vars(c), "batch_size": cfg.sampler.batch_size}), T)
    if int(cfg.n_samples) < 2:
        raise UserError(f"n_samples={cfg.n_samples} must be >= 2")


class Dist:
    """Ranks through Lightning Fabric (it also reads ranks from SLURM); rank 0 scores and writes."""

    def __init__(self, cfg_eval):
        from lightning_fabric import Fabric
        world = int(cfg_eval.devices) * int(cfg_eval.num_nodes)
        self.fabric = Fabric(accelerator=cfg_eval.accelerator, devices=cfg_eval.devices,
                             num_nodes=cfg_eval.num_nodes, strategy="ddp" if world > 1 else "auto")
        self.fabric.launch()
        self.rank, self.world, self.device = self.fabric.global_rank, self.fabric.world_size, self.fabric.device

    def gather(self, obj) -> list:
        if self.world == 1:
            return [obj]
        out = [None] * self.world
        torch.distributed.all_gather_object(out, obj)
        return out

    def broadcast(self, obj):
        return self.fabric.broadcast(obj, src=0) if self.world > 1 else obj

    def barrier(self):
        if self.world > 1:
            self.fabric.barrier()


def cell_fields(cfg, cell: Cell, ckpt_info: dict, extractor: str, ref_key: str) -> dict:
    """Everything that determines a cell's numbers (and nothing that does not, like batch size)."""
    return {"steps": cell.steps, "eta": cell.eta, "variance": cell.variance, "skip": cell.skip,
            "clip_x0": cell.clip_x0, "n_samples": int(cfg.n_samples), "seed": int(cfg.seed),
            "checkpoint_sha256": ckpt_info["sha256"], "weights": ckpt_info["weights"],
            "schedule": config.plain(cfg.diffusion), "extractor": extractor, "reference": ref_key,
            "keep_images": int(cfg.keep_images), "fast": fast.options(cfg.sampler.get("fast"))}


def peak_memory_mb(device) -> float:
    if torch.device(device).type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2 ** 20
    import resource
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # process peak RSS on Linux (KiB)


def evaluate_cell(cfg, dist: Dist, model, alphas, cell: Cell, scorer, shape) -> dict:
    """Sample this rank's share, gather features on rank 0 (sorted by sample index) and score there."""
    if torch.device(dist.device).type == "cuda":
        torch.cuda.reset_peak_memory_stats(dist.device)
    feats, kept, keep = [], [], int(cfg.keep_images)

    def on_batch(images, idx):
        feats.append((idx, scorer.features(images)))
        kept.extend((i, im) for i, im in zip(idx, images) if i < keep)

    t0 = time.perf_counter()
    timing = generate(model, alphas, cell, rank_indices(int(cfg.n_samples), dist.rank, dist.world), shape,
                      int(cfg.seed), int(cfg.sampler.batch_size), dist.device, on_batch,
                      log_prefix=f"[rank {dist.rank}] {cell.label()}: ")
    mem = peak_memory_mb(dist.device)
    parts = dist.gather((feats, kept, timing, mem))
    if dist.rank != 0:
        return {}
    from ddim_bench.evaluation.metrics import concat_features
    batches = sorted(((i, b) for p in parts for i, b in p[0]), key=lambda ib: ib[0][0])
    order = torch.tensor([i for idx, _ in batches for i in idx]).argsort()
    gen = {k: v[order] for k, v in concat_features([b for _, b in batches]).items()}
    t_score = time.perf_counter()
    scores = scorer.score(gen, scorer.reference_features)
    images = torch.stack([im for _, im in sorted((kv for p in parts for kv in p[1]), key=lambda kv: kv[0])])
    seconds = max(p[2]["seconds"] for p in parts)  # ranks run side by side: the slowest sets the wall time
    n = int(cfg.n_samples)
    return {**scores, "seconds": seconds, "sec_per_image": seconds / n, "images_per_sec": n / max(seconds, 1e-9),
            "nfe": timing["nfe"], "peak_mem_mb": max(p[3] for p in parts), "world_size": dist.world,
            "device": str(dist.device), "score_seconds": time.perf_counter() - t_score,
            "cell_seconds": time.perf_counter() - t0, "_images": images}


def run_sweep(cfg: DictConfig) -> list[dict]:
    from ddim_bench.evaluation import metrics
    from ddim_bench import tracking
    from ddim_bench.tracking import runs as tracking_runs
    cells = grid_cells(cfg)
    validate(cfg, cells)
    tracking.validate_mode(cfg.logger.wandb.mode)
    metrics.check_extractor(cfg.metrics)  # missing weights: stop before any sampling
    dist = Dist(cfg.eval)
    loaded = checkpoint.load(cfg.checkpoint, cfg.weights)
    model = fast.wrap(checkpoint.build_model(loaded, dist.device), cfg.sampler.get("fast"), dist.device)
    alphas = config.build_alphas(loaded.schedule or cfg.diffusion)
    if loaded.schedule:
        cfg.diffusion = DictConfig(loaded.schedule)
    shape = (loaded.model["in_channels"], loaded.model["resolution"], loaded.model["resolution"])
    dm = config.build_datamodule(cfg.data)
    scorer = metrics.Scorer(cfg.metrics, cfg.paths.cache_dir, device=dist.device)
    ref = dm.reference(cfg.reference.split)
    ref_n = len(ref) if cfg.reference.n is None else min(int(cfg.reference.n), len(ref))
    ref_key = f"{dm.key(cfg.reference.split)}|n={ref_n}"
    results = store.ResultStore(cfg.paths.results_dir)
    keys = [store.cell_key(cell_fields(cfg, c, loaded.info, scorer.extractor_id, ref_key)) for c in cells]
    pending = dist.broadcast([i for i, k in enumerate(keys) if not results.has(k)])
    if dist.rank == 0:
        print(f"sweep {cfg.sweep_name}: {len(cells)} cells, {len(cells) - len(pending)} already done, "
              f"results in {results.root}", file=sys.stderr, flush=True)
        if pending:
            scorer.reference_features = scorer.reference(torch.utils.data.Subset(ref, range(ref_n)), ref_key)
    records = []
    for done, i in enumerate(pending, 1):
        cell = cells[i]
        out = evaluate_cell(cfg, dist, model, alphas, cell, scorer, shape)
        if dist.rank == 0:
            images = out.pop("_images")
            record = {**cell_fields(cfg, cells[i], loaded.info, scorer.extractor_id, ref_key), **out, "key": keys[i],
                      "sweep": cfg.sweep_name, "checkpoint": loaded.info, "reference_split": cfg.reference.split,
                      "reference_n": ref_n, "created": time.strftime("%Y-%m-%dT%H:%M:%S")}
            results.put(keys[i], record, samples=images)
            tracking_runs.log_cell(cfg.logger, record, images, results.root)
            records.append(record)
            print(f"[{done}/{len(pending)}] {cell.label()}: FID {record['fid']:.3f}, "
                  f"{record['images_per_sec']:.1f} img/s", file=sys.stderr, flush=True)
        dist.barrier()
    return records


@hydra.main(version_base="1.3", config_path=str(cli.CONF_DIR), config_name="sweep")
@cli.user_errors
def _main(cfg: DictConfig) -> None:
    run_sweep(cfg)


def main() -> None:
    cli.run_hydra(_main)


if __name__ == "__main__":
    main()
