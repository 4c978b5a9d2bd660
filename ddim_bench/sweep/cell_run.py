"""One (cell, seed block) evaluated: every rank samples its share and sums FID's float64 moments, the sums are
added over ranks, rank 0 gathers the per-sample features in sample order and scores — point values by
torch-fidelity's formulas, intervals from disjoint subsets of the same features (:mod:`ddim_bench.scoring.subsets`)."""
from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from ddim_bench.dist import Dist, device_name, peak_memory_mb, reset_peak_memory
from ddim_bench.metric_table import BY_KEY, FAMILIES
from ddim_bench.results import record
from ddim_bench.scoring.moments import Moments
from ddim_bench.sampling.cell import Cell
from ddim_bench.sampling.generate import generate, rank_indices


@dataclass
class Context:
    """What every cell of a sweep shares."""
    dist: Dist
    model: torch.nn.Module
    alphas: torch.Tensor
    shape: tuple
    scorer: object               # ddim_bench.scoring.metrics.Scorer
    n_samples: int
    keep_images: int
    batch_size: int
    bootstrap: object            # schema.Bootstrap
    flops_per_call: float | None = None
    keep_features: bool = True   # per-sample features stored beside each record
    ref_moments: Moments | None = None  # the reference's FID moments, taken on first use


@dataclass
class Outcome:
    """Rank 0's result: the record's measured fields, the kept images, the per-sample features."""
    fields: dict
    images: torch.Tensor
    features: dict


def evaluate(ctx: Context, cell: Cell, seed: int, progress=None) -> Outcome | None:
    """Sample, score. Returns the outcome on rank 0 and None elsewhere.

    FID's float64 moments are summed on every rank and over ranks (:mod:`moments`): the count scored is checked
    to be exactly ``n_samples``.  Per-sample features go to rank 0 only where something needs them (IS, KID,
    precision/recall, intervals, ``keep_features``)."""
    dist, scorer = ctx.dist, ctx.scorer
    reset_peak_memory(dist.device)
    layer, keep = scorer.layers["fid"], needs_features(ctx)
    moments, kept = Moments.zeros(scorer.widths[layer][0], scorer.device), []
    shard = Shard(scorer.widths, -(-ctx.n_samples // dist.world)) if keep else None

    def on_batch(images, idx):
        f = scorer.features(images, dtype=None, device=scorer.device)
        moments.add(f[layer])
        if keep:
            shard.add(f)
        kept.extend((i, im) for i, im in zip(idx, images) if i < ctx.keep_images)
        if progress is not None:
            progress.update(len(idx) * dist.world)

    t0 = time.perf_counter()
    timing = generate(ctx.model, ctx.alphas, cell, rank_indices(ctx.n_samples, dist.rank, dist.world), ctx.shape,
                      seed, ctx.batch_size, dist.device, on_batch)
    total = moments.all_reduce(dist.sum_)
    if total.n != ctx.n_samples:
        raise RuntimeError(f"{cell.label} seed {seed}: scored {total.n} samples, not n_samples={ctx.n_samples}")
    gen = shard.gathered(dist, ctx.n_samples) if keep else {}
    parts = dist.gather_to_main((kept, timing, peak_memory_mb(dist.device)))
    if not dist.main:
        return None
    t_score = time.perf_counter()
    if ctx.ref_moments is None:
        ctx.ref_moments = Moments.of(scorer.reference_features[layer], scorer.device)
    scores = scorer.score(gen, scorer.reference_features, total, ctx.ref_moments)
    t_boot = time.perf_counter()
    intervals, subsets = _intervals(ctx, gen)
    images = torch.stack([im for _, im in sorted((kv for p in parts for kv in p[0]), key=lambda kv: kv[0])]) \
        if ctx.keep_images else torch.empty(0, dtype=torch.uint8)
    nfe = timing["nfe"]
    fields = record.measured_fields(
        scores, intervals, n_samples=ctx.n_samples, n_scored=total.n,
        seconds=max(p[1]["seconds"] for p in parts),  # ranks run side by side: the slowest sets the wall time
        nfe=nfe, nfe_predicted=timing.get("nfe_predicted", nfe), flops_per_call=ctx.flops_per_call,
        peak_mem_mb=max(p[2] for p in parts), world_size=dist.world, device=str(dist.device),
        device_name=device_name(dist.device),
        timings={"score_seconds": t_boot - t_score, "bootstrap_seconds": time.perf_counter() - t_boot,
                 "cell_seconds": time.perf_counter() - t0}, subsets=subsets)
    return Outcome(fields, images, gen)


def needs_features(ctx: Context) -> bool:
    """Whether the per-sample features must be gathered (FID alone needs only the moments)."""
    s = ctx.scorer
    return bool(ctx.keep_features or s.enabled["isc"] or s.enabled["kid"] or s.prc
                or int(ctx.bootstrap.replicates) >= 1)


class Shard:
    """This rank's per-sample features, in its sample order (rank r of W holds samples r, r + W, …), written
    batch by batch into one buffer per layer of ``rows`` = ⌈N / W⌉ rows (the extractor's dtype, on the CPU)."""

    def __init__(self, widths: dict, rows: int):
        self.bufs = {k: torch.empty(rows, w, dtype=dtype) for k, (w, dtype) in widths.items()}
        self.filled = 0

    def add(self, features: dict) -> None:
        b = len(next(iter(features.values())))
        for k, v in features.items():
            self.bufs[k][self.filled:self.filled + b] = v
        self.filled += b

    def gathered(self, dist, n: int) -> dict:
        """All ranks' features in sample order [n, d] on rank 0 ({} elsewhere), one layer at a time."""
        if self.filled != len(range(dist.rank, n, dist.world)):
            raise RuntimeError(f"rank {dist.rank} holds features of {self.filled} samples, not its share of {n}")
        if dist.world == 1:
            return {k: v[:n] for k, v in self.bufs.items()}
        out = {}
        for k in sorted(self.bufs):
            parts = dist.gather_tensors(self.bufs.pop(k))
            if parts is not None:
                out[k] = torch.empty(n, parts[0].shape[1], dtype=parts[0].dtype)
                for r, part in enumerate(parts):
                    out[k][r::dist.world] = part[:len(range(r, n, dist.world))]
        return out


def _intervals(ctx: Context, gen: dict) -> tuple[dict, dict | None]:
    """``<metric>_lo`` / ``<metric>_hi`` / ``<metric>_se`` from disjoint subsets of the generated samples
    (:mod:`ddim_bench.scoring.subsets`), and FD∞ (``fid_inf``) with its interval beside FID; and the metrics'
    values on those subsets (:func:`record.subset_fields`: what the report's paired differences read)."""
    b = ctx.bootstrap
    if int(b.replicates) < 1:
        return {}, None
    from ddim_bench.scoring.subsets import subset_metrics
    s = ctx.scorer
    wanted = [f for f in FAMILIES if (s.prc if f == "prc" else s.enabled[f])]
    values: dict = {}
    partitions = int(b.get("partitions", 16))
    res = subset_metrics(gen, s.reference_features, s.layers, metrics=tuple(wanted), partitions=partitions,
                         level=float(b.level), seed=int(b.seed), device=ctx.dist.device,
                         kid_subset_size=s.kid_subset_size, kid_subsets=s.kid_subsets, isc_splits=s.isc_splits,
                         values=values)
    out = {"ci_level": float(b.level), "ci_method": "subsets", "ci_partitions": partitions}
    for name, iv in res.items():
        m = BY_KEY[name]
        out[m.lo], out[m.hi], out[m.se] = iv.lo, iv.hi, iv.se
        if name in ("precision", "recall", "fid_inf"):  # computed here with the intervals
            out[name] = iv.value
    subsets = record.subset_fields(values, n=ctx.n_samples, partitions=partitions, seed=int(b.seed)) \
        if values else None  # none below subsets.MIN_SAMPLES (the bootstrap)
    return out, subsets
