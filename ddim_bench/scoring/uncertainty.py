"""Uncertainty of FID / KID / IS / precision / recall: percentile bootstrap intervals, paired differences, blocks.

*What is resampled.*  Only the generated samples: a replicate draws N of the N generated samples with replacement
(:func:`resample_indices`) and recomputes the metric against the *fixed* reference features.  The reference set
is shared by every cell being compared, so its sampling variability is common to all of them: it shifts every
cell's number alike and cancels from comparisons, which are what the intervals are for.  An interval here is
therefore "how much would this cell's number move with another draw of its N samples", not the uncertainty about
the metric's population value.

*Replicate r of a metric* is exactly what torch-fidelity 0.4.0 gives on the resampled generated set (same KID
subset draws, IS shuffle and splits, precision/recall neighbourhood), computed in batches
(:mod:`ddim_bench.scoring.draws`, :mod:`ddim_bench.scoring.prc`); the point value is the same computation
on the original set, equal to torch-fidelity's (and to ``Scorer.score``) up to float64 rounding.

*Interval.*  Percentile bootstrap: [q_{(1−level)/2}, q_{(1+level)/2}] of the replicates (linear interpolation),
by default of the *centred* replicates θ*_r − b̂, where b̂ = mean_r θ*_r − θ̂ is the bootstrap estimate of the
metric's bias (``centered=True``).  Why: FID, KID and recall are biased at finite N, and a resampled set (≈ 63 %
distinct samples, duplicated pairs) is biased again by about as much, so the plain percentile interval sits
beside the point value instead of around it.  On Gaussian features with d/N = 64/2000 (Inception at N = 50,000 has
d/N = 0.04) the replicates of FID average θ̂ + 0.57 with a spread (sd) of 0.05, KID θ̂ + 0.004 (sd 0.001), recall
θ̂ − 0.08 (sd 0.01), so the plain interval excludes θ̂ every time; a paired FID difference between cells of
different covariance moved by about 2 sd.  Centring keeps the bootstrap's spread and puts it around θ̂, so the
interval describes where this cell's number would fall with another draw of N samples (the quantity compared
between cells of equal N); it is not an interval for the N → ∞ metric.  ``centered=False`` gives the plain
percentile interval.  Precision is a mean of per-sample indicators, unbiased: centring hardly moves it.

*Paired differences.*  Cells of one seed block start sample i from the same x_T, so sample i of cell a and of cell
b are paired: :func:`paired_difference` resamples both with the *same* indices, which keeps the pairing and
removes the x_T-to-x_T variability from Δ.  Independent seed blocks are then combined with
:func:`combine_blocks` (mean of the block Δs, replicate r = mean of the blocks' replicates r).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from ddim_bench.metric_table import FAMILY, FAMILY_KEYS, SUPPORT
from ddim_bench.scoring.draws import fid_draws, isc_draws, kid_draws
from ddim_bench.scoring.prc import prc_draws

__all__ = ["Interval", "METRIC_KEYS", "SUPPORT", "clip_to_support", "resample_indices", "percentile_interval", "bootstrap_metrics",
           "paired_difference", "unpaired_difference", "combine_blocks", "aggregate_blocks", "verdict"]

METRIC_KEYS = FAMILY_KEYS  # metric family (as in ``metrics=``) → the keys it produces (see metric_table)


def clip_to_support(metric: str, lo: float, hi: float) -> tuple[float, float]:
    """Interval ends moved into the metric's support: centring (or a normal approximation) can put an end of a
    small-N interval where the metric cannot be, e.g. FID 2.5 [-0.45, 7.3]; the estimator never goes there."""
    low, high = SUPPORT.get(metric, (-math.inf, math.inf))
    return min(max(lo, low), high), max(min(hi, high), low)


@dataclass
class Interval:
    """A point value with a ``level`` percentile-bootstrap interval [lo, hi] from ``replicates`` replicates.

    ``draws`` holds the replicate values as computed (before any centring; [replicates] float64) where a caller
    needs them; it is left out of :meth:`to_dict`, equality and repr.
    """
    value: float
    lo: float
    hi: float
    level: float
    replicates: int
    draws: torch.Tensor | None = field(default=None, repr=False, compare=False)
    se: float | None = None  # the standard error, where the interval is value ± t·se (:mod:`.subsets`)
    df: float | None = None  # the degrees of freedom of that t (None: the normal)

    def to_dict(self) -> dict:
        return {"value": self.value, "lo": self.lo, "hi": self.hi, "level": self.level,
                "replicates": self.replicates, "se": self.se, "df": self.df}


def check_level(level: float) -> None:
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")


def resample_indices(n: int, replicates: int, seed: int = 0) -> torch.Tensor:
    """[replicates, n] int64: row r = n draws with replacement from range(n) (CPU generator seeded ``seed``)."""
    if n < 1 or replicates < 1:
        raise ValueError(f"need n >= 1 and replicates >= 1, got n={n}, replicates={replicates}")
    g = torch.Generator().manual_seed(int(seed))
    return torch.randint(0, n, (replicates, n), generator=g)


def percentile_interval(value: float, draws: torch.Tensor, level: float = 0.95, centered: bool = True) -> Interval:
    """Interval(value, q_{(1−level)/2}, q_{(1+level)/2}) of ``draws``, or with ``centered`` of
    ``draws − (mean(draws) − value)``; NaN bounds when a draw is NaN.  ``Interval.draws`` keeps the raw draws."""
    check_level(level)
    d = draws.detach().double().cpu().reshape(-1)
    if d.numel() == 0:
        raise ValueError("percentile_interval needs at least one draw")
    shifted = d - (d.mean() - float(value)) if centered else d
    q = torch.quantile(shifted, torch.tensor([(1 - level) / 2, (1 + level) / 2], dtype=torch.float64))
    return Interval(float(value), float(q[0]), float(q[1]), float(level), d.numel(), d)


def layer_of(layers: dict, family: str) -> str:
    if family in layers:
        return layers[family]
    if family == "prc" and "fid" in layers:  # both registered extractors use their FID layer for prc
        return layers["fid"]
    raise ValueError(f"layers has no entry for metric {family!r} (got {sorted(layers)})")


def sample_count(feats: dict, layer: str, what: str) -> int:
    """Sample count of ``feats[layer]``, checked to be an [N, d] tensor."""
    if layer not in feats:
        raise ValueError(f"{what} features have no layer {layer!r} (got {sorted(feats)})")
    t = feats[layer]
    if not torch.is_tensor(t) or t.dim() != 2:
        raise ValueError(f"{what} features {layer!r} must be an [N, d] tensor, got {tuple(getattr(t, 'shape', ()))}")
    return int(t.shape[0])


def _features(feats: dict, layer: str, device, what: str) -> torch.Tensor:
    sample_count(feats, layer, what)
    return feats[layer].to(device=device, dtype=torch.float64)


def metric_draws(gen: dict, ref: dict, layers: dict, family: str, idx: torch.Tensor, device, *,
           kid_subset_size: int, kid_subsets: int, isc_splits: int, rng_seed: int) -> dict[str, torch.Tensor]:
    """{key: [R] values} of one metric family for the resamplings ``idx`` ([R, N], row 0 may be the identity)."""
    layer = layer_of(layers, family)
    x = _features(gen, layer, device, "generated")
    n = x.shape[0]
    if n < 2:
        raise ValueError(f"need at least 2 generated samples, got {n}")
    idx = idx.to(device)
    k = idx.shape[1]  # the resampled set's size (< n for the disjoint subsets of :mod:`.subsets`)
    if family == "isc":
        return {"is_mean": isc_draws(x, idx, min(isc_splits, k), True, rng_seed)}
    y = _features(ref, layer, device, "reference")
    if y.shape[1] != x.shape[1] or y.shape[0] < 2:
        raise ValueError(f"reference features {layer!r} must be [M >= 2, {x.shape[1]}], got {tuple(y.shape)}")
    if family == "fid":
        return {"fid": fid_draws(x, y, idx)}
    if family == "kid":
        size = min(kid_subset_size, k, y.shape[0])
        return {"kid_mean": kid_draws(x, y, idx, size, kid_subsets, rng_seed)}
    if family == "prc":
        if min(k, y.shape[0]) < 4:
            raise ValueError("precision/recall need at least 4 generated and 4 reference samples")
        precision, recall = prc_draws(x, y, idx)
        return {"precision": precision, "recall": recall}
    raise ValueError(f"unknown metric {family!r}; use one of {sorted(METRIC_KEYS)}")


def _check_common(replicates: int, level: float) -> None:
    check_level(level)
    if int(replicates) < 1:
        raise ValueError(f"replicates must be >= 1, got {replicates}")


def bootstrap_metrics(gen: dict[str, torch.Tensor], ref: dict[str, torch.Tensor], layers: dict[str, str],
                      metrics=("fid", "kid", "isc", "prc"), replicates: int = 200, level: float = 0.95,
                      seed: int = 0, device="cpu", kid_subset_size: int = 1000, kid_subsets: int = 100,
                      isc_splits: int = 10, rng_seed: int = 2020, centered: bool = True) -> dict[str, Interval]:
    """Percentile-bootstrap intervals over the generated samples, the reference held fixed (see the module doc).

    ``gen``/``ref``: featuresdicts {layer: [N, d]}; ``layers``: metric family → layer (``Scorer.layers``;
    ``prc`` falls back to the FID layer).  ``metrics``: families among fid, kid, isc, prc.  KID/IS settings as
    torch-fidelity's (and ``Scorer``'s: the KID subset size and the IS split count shrink to fit small sets).
    Returns {"fid", "kid_mean", "is_mean", "precision", "recall"} (those asked for) → :class:`Interval` whose
    ``value`` is the metric on the full sets and whose ends lie in the metric's :data:`SUPPORT`.
    """
    _check_common(replicates, level)
    metrics = (metrics,) if isinstance(metrics, str) else tuple(metrics)
    unknown = set(metrics) - set(METRIC_KEYS)
    if unknown:
        raise ValueError(f"unknown metrics {sorted(unknown)}; use some of {sorted(METRIC_KEYS)}")
    out = {}
    for family in [f for f in METRIC_KEYS if f in metrics]:
        n = sample_count(gen, layer_of(layers, family), "generated")
        idx = torch.cat([torch.arange(n)[None], resample_indices(n, replicates, seed)])
        for key, d in metric_draws(gen, ref, layers, family, idx, device, kid_subset_size=kid_subset_size,
                             kid_subsets=kid_subsets, isc_splits=isc_splits, rng_seed=rng_seed).items():
            iv = percentile_interval(float(d[0]), d[1:], level, centered)
            iv.lo, iv.hi = clip_to_support(key, iv.lo, iv.hi)
            out[key] = iv
    return out


def _difference(gen_a, gen_b, ref, metric, layers, replicates, level, seed, device, paired, centered, kw):
    _check_common(replicates, level)
    if metric not in FAMILY:
        raise ValueError(f"unknown metric {metric!r}; use one of {sorted(FAMILY)}")
    family = FAMILY[metric]
    layer = layer_of(layers, family)
    na, nb = sample_count(gen_a, layer, "generated (a)"), sample_count(gen_b, layer, "generated (b)")
    if paired and na != nb:
        raise ValueError(f"paired sets must have the same sample count, got {na} and {nb}")
    ida = resample_indices(na, replicates, seed)
    idb = ida if paired else resample_indices(nb, replicates, seed + 1)
    da = metric_draws(gen_a, ref, layers, family, torch.cat([torch.arange(na)[None], ida]), device, **kw)[metric]
    db = metric_draws(gen_b, ref, layers, family, torch.cat([torch.arange(nb)[None], idb]), device, **kw)[metric]
    delta = (da - db).cpu()
    iv = percentile_interval(float(delta[0]), delta[1:], level, centered)
    return iv, iv.draws


def paired_difference(gen_a: dict, gen_b: dict, ref: dict, metric: str = "fid", *, layers: dict[str, str],
                      replicates: int = 200, level: float = 0.95, seed: int = 0, device="cpu",
                      kid_subset_size: int = 1000, kid_subsets: int = 100, isc_splits: int = 10,
                      rng_seed: int = 2020, centered: bool = True) -> tuple[Interval, torch.Tensor]:
    """Δ = metric(a) − metric(b), both sets resampled with the SAME indices (sample i of a and b share x_T).

    ``metric``: a key of :func:`bootstrap_metrics`' result (fid, kid_mean, is_mean, precision, recall).
    Returns (interval of Δ, its [replicates] replicate values) for :func:`combine_blocks`.
    """
    kw = dict(kid_subset_size=kid_subset_size, kid_subsets=kid_subsets, isc_splits=isc_splits, rng_seed=rng_seed)
    return _difference(gen_a, gen_b, ref, metric, layers, replicates, level, seed, device, True, centered, kw)


def unpaired_difference(gen_a: dict, gen_b: dict, ref: dict, metric: str = "fid", *, layers: dict[str, str],
                        replicates: int = 200, level: float = 0.95, seed: int = 0, device="cpu",
                        kid_subset_size: int = 1000, kid_subsets: int = 100, isc_splits: int = 10,
                        rng_seed: int = 2020, centered: bool = True) -> tuple[Interval, torch.Tensor]:
    """As :func:`paired_difference`, but a and b are resampled independently (for sets that share no x_T)."""
    kw = dict(kid_subset_size=kid_subset_size, kid_subsets=kid_subsets, isc_splits=isc_splits, rng_seed=rng_seed)
    return _difference(gen_a, gen_b, ref, metric, layers, replicates, level, seed, device, False, centered, kw)


def combine_blocks(deltas: list[tuple[float, torch.Tensor]], level: float = 0.95, centered: bool = True) -> Interval:
    """Combine independent seed blocks' paired differences: Δ = mean_b Δ_b, replicate r = mean_b Δ*_{b,r}.

    Each block's replicates must come from its own resampling (independent across blocks) and all blocks need
    the same replicate count.
    """
    if not deltas:
        raise ValueError("combine_blocks needs at least one block")
    sizes = {int(d.numel()) for _, d in deltas}
    if len(sizes) != 1:
        raise ValueError(f"blocks have different replicate counts: {sorted(sizes)}")
    value = sum(float(v) for v, _ in deltas) / len(deltas)
    draws = torch.stack([d.detach().double().cpu().reshape(-1) for _, d in deltas]).mean(0)
    return percentile_interval(value, draws, level, centered)


def aggregate_blocks(values: list[float]) -> dict:
    """{mean, sd (sample sd, n − 1; NaN for one block), min (EDM reports the best of its runs), n}."""
    if not values:
        raise ValueError("aggregate_blocks needs at least one value")
    v = [float(x) for x in values]
    n = len(v)
    mean = sum(v) / n
    sd = math.sqrt(sum((x - mean) ** 2 for x in v) / (n - 1)) if n > 1 else math.nan
    return {"mean": mean, "sd": sd, "min": min(v), "n": n}


def verdict(lo: float, hi: float, expect: str) -> str:
    """"holds" when all of [lo, hi] is on the ``expect``ed side of 0 (strictly), "reversed" when all of it is on
    the other side, else "not significant" (an interval that touches or covers 0, or NaN bounds)."""
    if expect not in ("negative", "positive"):
        raise ValueError(f"expect must be 'negative' or 'positive', got {expect!r}")
    lo, hi = float(lo), float(hi)
    if math.isnan(lo) or math.isnan(hi):
        return "not significant"
    below, above = hi < 0, lo > 0
    if expect == "negative":
        return "holds" if below else "reversed" if above else "not significant"
    return "holds" if above else "reversed" if below else "not significant"
