"""One (cell, seed block) evaluated: every rank samples its share, rank 0 gathers features in sample order and
scores them — point values from torch-fidelity, percentile-bootstrap intervals from the same features."""
from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from ddim_bench.dist import Dist, peak_memory_mb, reset_peak_memory
from ddim_bench.sampling.cell import Cell
from ddim_bench.sampling.generate import generate, rank_indices


@dataclass
class Context:
    """What every cell of a sweep shares."""
    dist: Dist
    model: torch.nn.Module
    alphas: torch.Tensor
    shape: tuple
    scorer: object               # ddim_bench.evaluation.metrics.Scorer
    n_samples: int
    keep_images: int
    batch_size: int
    bootstrap: object            # schema.Bootstrap
    flops_per_call: float | None = None


@dataclass
class Outcome:
    """Rank 0's result: the record's measured fields, the kept images, the per-sample features."""
    fields: dict
    images: torch.Tensor
    features: dict


def evaluate(ctx: Context, cell: Cell, seed: int, progress=None) -> Outcome | None:
    """Sample, gather, score. Returns the outcome on rank 0 and None elsewhere."""
    dist, scorer = ctx.dist, ctx.scorer
    reset_peak_memory(dist.device)
    feats, kept = [], []

    def on_batch(images, idx):
        feats.append((idx, scorer.features(images)))
        kept.extend((i, im) for i, im in zip(idx, images) if i < ctx.keep_images)
        if progress is not None:
            progress.update(len(idx) * dist.world)

    t0 = time.perf_counter()
    timing = generate(ctx.model, ctx.alphas, cell, rank_indices(ctx.n_samples, dist.rank, dist.world), ctx.shape,
                      seed, ctx.batch_size, dist.device, on_batch)
    parts = dist.gather((feats, kept, timing, peak_memory_mb(dist.device)))
    if not dist.main:
        return None
    gen = _in_sample_order([b for p in parts for b in p[0]])
    t_score = time.perf_counter()
    scores = scorer.score(gen, scorer.reference_features)
    t_boot = time.perf_counter()
    intervals = _intervals(ctx, gen)
    images = torch.stack([im for _, im in sorted((kv for p in parts for kv in p[1]), key=lambda kv: kv[0])]) \
        if ctx.keep_images else torch.empty(0, dtype=torch.uint8)
    seconds = max(p[2]["seconds"] for p in parts)  # ranks run side by side: the slowest sets the wall time
    nfe = timing["nfe"]
    fields = {**scores, **intervals, "seconds": seconds, "sec_per_image": seconds / ctx.n_samples,
              "images_per_sec": ctx.n_samples / max(seconds, 1e-9), "nfe": nfe,
              "nfe_predicted": timing.get("nfe_predicted", nfe),
              "flops_per_image": None if ctx.flops_per_call is None else ctx.flops_per_call * nfe,
              "peak_mem_mb": max(p[3] for p in parts), "world_size": dist.world, "device": str(dist.device),
              "score_seconds": t_boot - t_score, "bootstrap_seconds": time.perf_counter() - t_boot,
              "cell_seconds": time.perf_counter() - t0}
    return Outcome(fields, images, gen)


def _in_sample_order(batches) -> dict:
    from ddim_bench.evaluation.metrics import concat_features
    batches = sorted(batches, key=lambda ib: ib[0][0])
    order = torch.tensor([i for idx, _ in batches for i in idx]).argsort()
    return {k: v[order] for k, v in concat_features([b for _, b in batches]).items()}


def _intervals(ctx: Context, gen: dict) -> dict:
    """``<metric>_lo`` / ``<metric>_hi`` from a percentile bootstrap over the generated samples."""
    b = ctx.bootstrap
    if int(b.replicates) < 1:
        return {}
    from ddim_bench.evaluation.uncertainty import bootstrap_metrics
    s = ctx.scorer
    wanted = [m for m, on in (("fid", s.enabled["fid"]), ("kid", s.enabled["kid"]), ("isc", s.enabled["isc"]),
                              ("prc", s.prc)) if on]
    res = bootstrap_metrics(gen, s.reference_features, s.layers, metrics=tuple(wanted), replicates=int(b.replicates),
                            level=float(b.level), seed=int(b.seed), device=ctx.dist.device,
                            kid_subset_size=s.kid_subset_size, kid_subsets=s.kid_subsets, isc_splits=s.isc_splits)
    out = {"ci_level": float(b.level), "ci_replicates": int(b.replicates)}
    for name, iv in res.items():
        short = {"kid_mean": "kid", "is_mean": "is"}.get(name, name)
        out[f"{short}_lo"], out[f"{short}_hi"] = iv.lo, iv.hi
        if name in ("precision", "recall"):  # torch-fidelity's own point value, computed with the replicates
            out[name] = iv.value
    return out
