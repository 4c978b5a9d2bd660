"""Intervals from disjoint subsets: the standard error of a metric at N, and FD∞, from the metric on subsets.

*Why not the bootstrap.*  A bootstrap resample repeats samples (≈ 63 % distinct), which raises FID, KID and the
precision/recall neighbourhoods by an amount that itself varies from resample to resample; at d/N = 64/1000 the
bootstrap's spread of FID is 2 × the spread of FID over independent draws of N samples, and a jackknife's
(delete a group) 1.5 × (``benchmarks/cpu/interval_coverage.py``, ``docs/intervals.md``).

*The method.*  A random permutation of the N generated samples is cut into 2^L equal groups (L = ``levels``, the
N mod 2^L left-over samples are left out of that partition); level j's subsets are the unions of 2^(L − j)
consecutive groups, so each level is a partition into 2^j disjoint subsets of m_j = N'/2^j samples, nested in the
level above.  Disjoint subsets of an i.i.d. sample are independent i.i.d. samples of size m_j, so the sample
variance of the metric over one level's subsets is an unbiased estimate of Var(metric at m_j) — with no
duplicate and no model of the metric; ``partitions`` random partitions are averaged.  A smooth statistic of m
samples has Var = A/m + B/m² + o(1/m²) (B: the second-order part, which dominates FID when the two distributions
are close); fitted through the halves and the quarters it gives

    Var(N) = v_half · r,   r = (6 − v_quarter / v_half) / 8   clamped to [1/4, 1/2]

(r = 1/2 for a statistic linear in the samples, 1/4 for a purely second-order one; the clamp keeps A, B ≥ 0).
*Recall* (the fraction of the fixed reference samples inside a generated k-NN ball) has a variance floor
instead: its balls shrink as N grows, so each reference sample's coverage stays a coin flip however large N
is; its Var(m) = F + A/m, F, A ≥ 0, gives r = (3 − v_quarter / v_half) / 2 clamped to [1/2, 1]
(:data:`FLOOR_KEYS`; measured in ``docs/intervals.md``).
The SE is itself an estimate, with ≈ 0.4 degrees of freedom per partition (:func:`degrees_of_freedom`), so the
interval is value ± t·SE with Student's t (2.41 at 95 % and 16 partitions), its ends kept in the metric's support.

*Paired differences* use the same subsets for both cells (sample i of a and b share x_T), so Δ on a subset is
paired; *seed blocks* are independent: SE(mean of B blocks) = √(Σ SE_b²) / B (:func:`combine_se`).

*FD∞* (Chong & Forsyth, CVPR 2020): FID's bias is ≈ β/m, so FID against 1/m is close to a line whose intercept
is the FID of infinitely many samples.  The points are (1/N, FID) and (1/m_j, mean FID over level j's subsets);
FD∞ is the intercept of their least-squares fit.  Only FD∞ uses the eighths, and only their mean, so they are
computed for FID alone and of ``FD_PARTITIONS`` partitions (the sd of FD∞ over blocks moved by < 1 %).
Chong & Forsyth fit a line over N = 5 000 … 50 000; over N/8 … N the curvature of the bias in 1/m shows where
m/d is small (d = 64, N = 1 000: a line gives −19 % of the analytic limit, a quadratic −0.2 %), so the fit here
is quadratic in 1/m, over the subsets of more than d samples (at least N/4 > d: below that a subset's
covariance is singular; d = 64, N = 250 gives +36 %, so no FD∞ is given).  Its SE is FID's: the fit removes
the bias, a function of N, and keeps FID's draw-to-draw fluctuation (measured: sd of FD∞ over blocks = 1.00 ×
FID's at d = 64, N = 1 000; a per-half estimate was 1.5 × too wide).
"""
from __future__ import annotations

import math
from statistics import NormalDist

import torch

from ddim_bench.scoring import uncertainty as U

__all__ = ["subset_indices", "level_variances", "extrapolated_se", "fd_infinity", "normal_interval",
           "subset_metrics", "paired_subset_difference", "paired_from_values", "combine_se", "power"]

LEVELS = 3  # halves, quarters, eighths (the eighths only for FD∞: every SE needs the halves and quarters only)


def subset_indices(n: int, partitions: int, levels: int = 3, seed: int = 0) -> list[torch.Tensor]:
    """[level 1, …, level L] index tensors; level j is [partitions · 2^j, ⌊n / 2^L⌋ · 2^(L − j)], row
    p·2^j + g = subset g of partition p (nested: rows 2g and 2g + 1 of level j + 1 make row g of level j)."""
    if n < 2 ** (levels + 1) or partitions < 2 or levels < 1:
        raise ValueError(f"need n >= 2^(levels + 1) = {2 ** (levels + 1)}, partitions >= 2 and levels >= 1, "
                         f"got n={n}, partitions={partitions}, levels={levels}")
    g = torch.Generator().manual_seed(int(seed))
    used = n // 2 ** levels * 2 ** levels
    perms = torch.stack([torch.randperm(n, generator=g)[:used] for _ in range(partitions)])   # [P, N']
    return [perms.reshape(partitions * 2 ** j, used // 2 ** j) for j in range(1, levels + 1)]


def level_variances(values: list[torch.Tensor], partitions: int) -> list[float]:
    """Per level: the mean over partitions of the sample variance over its subsets (values [P · 2^j])."""
    return [float(v.reshape(partitions, -1).var(dim=1).mean()) for v in values]


FLOOR_KEYS = ("recall",)  # metrics whose variance has a floor that does not fall with N (the module doc)


def extrapolated_se(v_half: float, v_quarter: float, floor: bool = False) -> float:
    """SE at N from Var at N/2 and N/4 under Var(m) = A/m + B/m², A, B ≥ 0, or with ``floor`` under
    Var(m) = F + A/m, F, A ≥ 0 (see the module doc)."""
    if not (v_half > 0 and math.isfinite(v_half)):
        return 0.0 if v_half == 0 else math.nan
    ratio = v_quarter / v_half
    r = min(max((3 - ratio) / 2, 0.5), 1.0) if floor else min(max((6 - ratio) / 8, 0.25), 0.5)
    return math.sqrt(v_half * r)


def _intercept(u: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    """Least-squares quadratic f ≈ a + b·u + c·u² per row of f ([..., K] against u [K], K ≥ 3): the
    intercepts a."""
    x = torch.stack([torch.ones_like(u), u, u * u], 1)                # [K, 3]
    return (torch.linalg.pinv(x)[0] * f).sum(-1)


def fd_infinity(value: float, n: int, values: list[torch.Tensor], sizes: list[int], d: int) -> float | None:
    """FD∞ from the full set's FID and the mean FID over each level of the nested subsets in ``values`` (of
    ``sizes`` samples) whose subsets hold more samples than the ``d`` feature dimensions (below that a subset's
    covariance is singular and its FID leaves the 1/m regime); None when fewer than 2 such levels are left (the
    quadratic needs 3 points)."""
    kept = [(m, v) for m, v in zip(sizes, values) if m > d]
    if len(kept) < 2:
        return None
    means = torch.stack([torch.tensor(float(value), dtype=torch.float64)] + [v.double().mean() for _, v in kept])
    u = torch.tensor([1 / n] + [1 / m for m, _ in kept], dtype=torch.float64)
    return float(_intercept(u, means))


def degrees_of_freedom(partitions: int) -> float:
    """The SE's effective degrees of freedom: 1 / (2 CV²) of the SE over blocks, measured on Gaussian FID
    (CV 0.37 / 0.28 / 0.22 at 8 / 16 / 32 partitions, ``docs/intervals.md``) ≈ 0.4 per partition."""
    return DF_PER_PARTITION * partitions


def normal_interval(metric: str, value: float, se: float, level: float, df: float | None = None) -> U.Interval:
    """value ± t·se (t the (1 + level)/2 quantile of Student's t with ``df`` degrees of freedom, or of the normal
    when ``df`` is None), ends kept in the metric's support."""
    from scipy.stats import t as student_t
    q = (1 + level) / 2
    z = NormalDist().inv_cdf(q) if df is None or not math.isfinite(df) else float(student_t.ppf(q, df))
    lo, hi = U.clip_to_support(metric, value - z * se, value + z * se)
    return U.Interval(float(value), lo, hi, float(level), 0, se=float(se), df=df)


def _family_values(gen, ref, layers, family, idx_levels, device, kw):
    """({key: full-set value}, {key: [values per level]}) of one metric family (on the levels of ``idx_levels``)."""
    n = U.sample_count(gen, U.layer_of(layers, family), "generated")
    full = {k: float(v[0]) for k, v in U.metric_draws(gen, ref, layers, family, torch.arange(n)[None], device,
                                                  **kw).items()}
    per_level: dict[str, list] = {k: [] for k in full}
    for idx in idx_levels:
        for k, v in U.metric_draws(gen, ref, layers, family, idx, device, **kw).items():
            per_level[k].append(v.double().cpu())
    return full, per_level


DF_PER_PARTITION = 0.4
FD_PARTITIONS = 4  # partitions whose eighths feed FD∞'s mean at N/8 (the SE only uses halves and quarters)
MIN_SAMPLES = 32  # the smallest N given subset intervals (eighths of 4 samples); below it the bootstrap


def _bootstrap(gen, ref, layers, family, level, seed, device, kw) -> dict[str, U.Interval]:
    res = U.bootstrap_metrics(gen, ref, layers, (family,), replicates=200, level=level, seed=seed, device=device,
                              **kw)
    for iv in res.values():
        iv.se = float(iv.draws.std())
    return res


def _levels_needed(idx: list[torch.Tensor], family: str, d: int) -> list[torch.Tensor]:
    """The halves and quarters (the SE); the eighths only for FID when they hold more than d samples (FD∞'s
    third point), and of the first :data:`FD_PARTITIONS` partitions only: FD∞ uses their mean, not their
    variance, and each eighth costs an eigen-decomposition of min(N/8, d)."""
    if family != "fid" or idx[2].shape[1] <= d:
        return idx[:2]
    return idx[:2] + [idx[2][:FD_PARTITIONS * 8]]


def subset_metrics(gen: dict, ref: dict, layers: dict[str, str], metrics=("fid", "kid", "isc", "prc"),
                   partitions: int = 16, level: float = 0.95, seed: int = 0, device="cpu",
                   kid_subset_size: int = 1000, kid_subsets: int = 100, isc_splits: int = 10,
                   rng_seed: int = 2020, values: dict | None = None) -> dict[str, U.Interval]:
    """Intervals of :func:`ddim_bench.scoring.uncertainty.bootstrap_metrics`' keys by this module's method,
    plus "fid_inf" (FD∞ and its interval) when FID is asked for.  Each ``Interval.se`` is the standard error.

    ``values``, when given, receives each key's ``(full-set value, [[values of level 1's subsets], …])`` (the
    halves and quarters; FID also the eighths of :func:`_levels_needed`, when FD∞ uses them), the subsets of
    ``subset_indices(N, partitions, 3, seed)``: what a paired difference with another cell on the same subsets
    needs (:func:`paired_from_values`)."""
    U.check_level(level)
    metrics = (metrics,) if isinstance(metrics, str) else tuple(metrics)
    unknown = set(metrics) - set(U.METRIC_KEYS)
    if unknown:
        raise ValueError(f"unknown metrics {sorted(unknown)}; use some of {sorted(U.METRIC_KEYS)}")
    kw = dict(kid_subset_size=kid_subset_size, kid_subsets=kid_subsets, isc_splits=isc_splits, rng_seed=rng_seed)
    out = {}
    for family in [f for f in U.METRIC_KEYS if f in metrics]:
        n = U.sample_count(gen, U.layer_of(layers, family), "generated")
        if n < MIN_SAMPLES:  # eighths of fewer than 4 samples: the centred bootstrap, no FD∞
            out.update(_bootstrap(gen, ref, layers, family, level, seed, device, kw))
            continue
        d = gen[U.layer_of(layers, family)].shape[1]
        idx = _levels_needed(subset_indices(n, partitions, LEVELS, seed), family, d)
        full, per_level = _family_values(gen, ref, layers, family, idx, device, kw)
        for key, value in full.items():
            if values is not None:
                values[key] = (value, [v.tolist() for v in per_level[key]])
            v = level_variances(per_level[key][:2], partitions)
            df = degrees_of_freedom(partitions)
            out[key] = normal_interval(key, value, extrapolated_se(v[0], v[1], key in FLOOR_KEYS), level, df)
            fd = fd_infinity(value, n, per_level[key], [t.shape[1] for t in idx], d) if key == "fid" else None
            if fd is not None:
                out["fid_inf"] = normal_interval("fid", fd, out[key].se, level, df)
    return out


def paired_subset_difference(gen_a: dict, gen_b: dict, ref: dict, metric: str = "fid", *, layers: dict[str, str],
                             partitions: int = 16, level: float = 0.95, seed: int = 0, device="cpu",
                             kid_subset_size: int = 1000, kid_subsets: int = 100, isc_splits: int = 10,
                             rng_seed: int = 2020) -> U.Interval:
    """Δ = metric(a) − metric(b) with its interval, both cells on the SAME subsets (paired on sample index)."""
    U.check_level(level)
    if metric not in U.FAMILY:
        raise ValueError(f"unknown metric {metric!r}; use one of {sorted(U.FAMILY)}")
    family = U.FAMILY[metric]
    layer = U.layer_of(layers, family)
    na, nb = U.sample_count(gen_a, layer, "generated (a)"), U.sample_count(gen_b, layer, "generated (b)")
    if na != nb:
        raise ValueError(f"paired sets must have the same sample count, got {na} and {nb}")
    kw = dict(kid_subset_size=kid_subset_size, kid_subsets=kid_subsets, isc_splits=isc_splits, rng_seed=rng_seed)
    if na < MIN_SAMPLES // 2:  # quarters of fewer than 4 samples: the paired bootstrap
        iv, draws = U.paired_difference(gen_a, gen_b, ref, metric, layers=layers, replicates=200, level=level,
                                        seed=seed, device=device, **kw)
        iv.se = float(draws.std())
        return iv
    idx = subset_indices(na, partitions, LEVELS, seed)[:2]  # the halves and quarters of the cells' own intervals
    fa, la = _family_values(gen_a, ref, layers, family, idx, device, kw)
    fb, lb = _family_values(gen_b, ref, layers, family, idx, device, kw)
    return paired_from_values((fa[metric], la[metric]), (fb[metric], lb[metric]), partitions, level, metric)


def paired_from_values(a: tuple, b: tuple, partitions: int, level: float = 0.95, metric: str = "") -> U.Interval:
    """Δ = value(a) − value(b) with its interval from each cell's (full-set value, [per-subset values of the halves,
    of the quarters, …]) on the same subsets: the variance over subsets of the per-subset differences, extrapolated
    to N as a single cell's is (``metric`` in :data:`FLOOR_KEYS`: with a floor).  Exactly what
    :func:`paired_subset_difference` gives from the features."""
    va, vb = (torch.as_tensor(v, dtype=torch.float64) for v in (a[1][0], b[1][0]))
    qa, qb = (torch.as_tensor(v, dtype=torch.float64) for v in (a[1][1], b[1][1]))
    v = level_variances([va - vb, qa - qb], partitions)
    return normal_interval("", float(a[0]) - float(b[0]), extrapolated_se(v[0], v[1], metric in FLOOR_KEYS),
                           level, degrees_of_freedom(partitions))


def combine_se(blocks: list[tuple[float, float, float | None]], level: float = 0.95) -> U.Interval:
    """Independent seed blocks' (value, SE, df) → the mean's interval: mean ± t·√(Σ SE_b²) / B, t with the
    Welch–Satterthwaite degrees of freedom (Σ SE_b²)² / Σ (SE_b⁴ / df_b) (normal when a df is None)."""
    if not blocks:
        raise ValueError("combine_se needs at least one block")
    value = sum(float(b[0]) for b in blocks) / len(blocks)
    var = [float(b[1]) ** 2 for b in blocks]
    se = math.sqrt(sum(var)) / len(blocks)
    dfs = [b[2] for b in blocks]
    df = None if any(d is None for d in dfs) or sum(var) == 0 else \
        sum(var) ** 2 / sum(v * v / d for v, d in zip(var, dfs))
    return normal_interval("", value, se, level, df)


def power(delta: float, se: float, blocks: int, n: int, level: float = 0.95, power_: float = 0.8) -> dict:
    """What a comparison could detect: ``detectable`` = (z_{(1+level)/2} + z_power) · SE, the smallest |Δ| found
    with probability ``power_``; and, at the observed |Δ|, the blocks (of ``n`` samples) or the samples per
    block (at ``blocks`` blocks) that would give it that power (SE ∝ 1/√(blocks · n), the first-order rate:
    a rough guide, as FID's SE falls faster than that when its second-order part dominates)."""
    k = NormalDist().inv_cdf((1 + level) / 2) + NormalDist().inv_cdf(power_)
    detectable = k * se
    if not (abs(delta) > 0 and math.isfinite(se)):
        return {"detectable": detectable, "blocks_needed": None, "n_needed": None}
    factor = (detectable / abs(delta)) ** 2
    return {"detectable": detectable, "blocks_needed": math.ceil(blocks * factor), "n_needed": math.ceil(n * factor)}
