"""Measured coverage of the intervals on Gaussian features whose answer is known.

A configuration fixes a reference set (M samples of N(0, I_d), drawn once and held fixed, as in a sweep) and a
generated distribution N(shift·1, scale²·I_d); ``blocks`` independent generated sets of N samples each get an
interval; the answer is E[metric at N] given the reference, by Monte Carlo over ``mc`` further sets.  Reported:
the fraction of intervals that contain the answer (the goal: 93–97 % for 95 % intervals) and the median interval
SE (half-width / z) over the standard deviation of the point values across blocks (the goal: 0.85–1.15).

A paired configuration draws cell a as above and cell b from the same latent draws (b_i = a_i + ``pair_shift``
+ ``pair_noise``·ε_i), so that sample i of a and b are paired as cells of one seed block are; its rows cover
Δ = FID(a) − FID(b) per block and the mean over ``combine`` blocks (``combine_se``).
"""
from __future__ import annotations

import math
import statistics
from dataclasses import dataclass

import torch

from ddim_bench.scoring import subsets as S
from ddim_bench.scoring import uncertainty as U

LAYERS = {"fid": "f", "kid": "f", "prc": "f"}
KEYS = {f: U.METRIC_KEYS[f] for f in LAYERS}  # the families simulated here (IS needs class logits)


@dataclass
class Config:
    d: int
    n: int
    blocks: int = 200
    mc: int = 200
    m_ref: int = 5000
    shift: float = 0.05
    scale: float = 1.1
    pair_shift: float = 0.02
    pair_noise: float = 0.1
    combine: int = 3
    seed: int = 0


def draw(cfg: Config, g: torch.Generator) -> dict:
    return {"f": torch.randn(cfg.n, cfg.d, generator=g, dtype=torch.float64) * cfg.scale + cfg.shift}


def _pair(cfg: Config, g: torch.Generator) -> tuple[dict, dict]:
    a = draw(cfg, g)["f"]
    b = a + cfg.pair_shift + cfg.pair_noise * torch.randn(a.shape, generator=g, dtype=torch.float64)
    return {"f": a}, {"f": b}


def reference(cfg: Config) -> dict:
    g = torch.Generator().manual_seed(10_000 + cfg.seed)
    return {"f": torch.randn(cfg.m_ref, cfg.d, generator=g, dtype=torch.float64)}


def limit(cfg: Config, ref: dict) -> float:
    """FID's N → ∞ limit: the Fréchet distance of N(shift·1, scale²·I) to the reference set's mean and covariance."""
    y = ref["f"]
    mu, cov = y.mean(0), torch.cov(y.T)
    lam = torch.linalg.eigvalsh(cov).clamp(min=0)
    return float((cfg.shift - mu).square().sum() + cfg.d * cfg.scale ** 2 + cov.trace()
                 - 2 * cfg.scale * lam.sqrt().sum())


def point(gen: dict, ref: dict, family: str, kw: dict | None = None) -> dict[str, float]:
    kw = kw or dict(kid_subset_size=1000, kid_subsets=100, isc_splits=10, rng_seed=2020)
    n = gen["f"].shape[0]
    return {k: float(v[0]) for k, v in U.metric_draws(gen, ref, LAYERS, family, torch.arange(n)[None], "cpu",
                                                  **kw).items()}


def ratio(a: float, b: float) -> float:
    """a / b, NaN where b is 0 (a metric that saturates, e.g. precision 1 in every block, has no spread)."""
    return a / b if b else float("nan")


def _summary(values: list[float], truth: float, ivs: list[U.Interval], z: float) -> dict:
    sd = statistics.stdev(values)
    covered = sum(iv.lo <= truth <= iv.hi for iv in ivs) / len(ivs)
    ses = [iv.se if iv.se is not None else (iv.hi - iv.lo) / (2 * z) for iv in ivs]
    return {"coverage": covered, "se_ratio": ratio(statistics.median(ses), sd),
            "se_cv": ratio(statistics.stdev(ses), statistics.fmean(ses)), "truth": truth, "sd": sd,
            "mean": statistics.fmean(values), "blocks": len(ivs)}


def interval_of(method: str, gen: dict, ref: dict, family: str, kw: dict, seed: int, partitions: int,
                replicates: int) -> dict[str, U.Interval]:
    if method == "subsets":
        return S.subset_metrics(gen, ref, LAYERS, (family,), partitions=partitions, seed=seed, **kw)
    return U.bootstrap_metrics(gen, ref, LAYERS, (family,), replicates=replicates, seed=seed, **kw)


def per_record(cfg: Config, family: str, method: str = "subsets", partitions: int = 16, replicates: int = 200,
               kid: dict | None = None) -> dict[str, dict]:
    """{key: summary} of one metric family's per-record intervals (and FD∞ for FID by ``subsets``)."""
    kw = {**dict(kid_subset_size=1000, kid_subsets=100, isc_splits=10, rng_seed=2020), **(kid or {})}
    ref, g = reference(cfg), torch.Generator().manual_seed(cfg.seed)
    ivs: dict[str, list] = {}
    pts: dict[str, list] = {}
    for b in range(cfg.blocks):
        for k, iv in interval_of(method, draw(cfg, g), ref, family, kw, b, partitions, replicates).items():
            ivs.setdefault(k, []).append(iv)
            pts.setdefault(k, []).append(iv.value)
    mc: dict[str, list] = {k: [] for k in pts}
    for _ in range(cfg.mc):
        for k, v in point(draw(cfg, g), ref, family, kw).items():
            mc[k].append(v)
    z = statistics.NormalDist().inv_cdf(0.975)
    out = {k: _summary(pts[k], statistics.fmean(pts[k] + mc[k]), ivs[k], z) for k in KEYS[family]}
    if "fid_inf" in ivs:  # FD∞ against its N → ∞ limit: the analytic Fréchet distance to the reference's moments
        out["fid_inf"] = _summary(pts["fid_inf"], limit(cfg, ref), ivs["fid_inf"], z)
    return out


def paired(cfg: Config, method: str = "subsets", partitions: int = 16, replicates: int = 200) -> dict[str, dict]:
    """{"delta": per-block summary, "combined": over ``combine`` consecutive blocks (cyclic)} of paired Δ FID."""
    ref, g = reference(cfg), torch.Generator().manual_seed(cfg.seed)
    kw = dict(layers=LAYERS, level=0.95)
    ivs, pts = [], []
    for b in range(cfg.blocks):
        a, c = _pair(cfg, g)
        if method == "subsets":
            iv = S.paired_subset_difference(a, c, ref, "fid", partitions=partitions, seed=b, **kw)
        else:
            iv, draws = U.paired_difference(a, c, ref, "fid", replicates=replicates, seed=b, **kw)
            iv.se = float(draws.std())
        ivs.append(iv)
        pts.append(iv.value)
    mc = []
    for _ in range(cfg.mc):
        a, c = _pair(cfg, g)
        mc.append(point(a, ref, "fid")["fid"] - point(c, ref, "fid")["fid"])
    truth = statistics.fmean(pts + mc)
    z = statistics.NormalDist().inv_cdf(0.975)
    k = cfg.combine
    comb = [S.combine_se([(ivs[(i + j) % len(ivs)].value, ivs[(i + j) % len(ivs)].se, ivs[(i + j) % len(ivs)].df)
                          for j in range(k)]) for i in range(len(ivs))]
    comb_sd = statistics.stdev(pts) / math.sqrt(k)
    comb_sum = _summary(pts, truth, comb, z)
    comb_sum.update(sd=comb_sd, se_ratio=ratio(statistics.median(c.se for c in comb), comb_sd))
    return {"delta": _summary(pts, truth, ivs, z), "combined": comb_sum}


def over_blocks(records: list[dict]) -> dict[str, dict]:
    """Seed blocks of one cell (its records): per metric, the fraction of the blocks' intervals that contain the
    mean over blocks, and the median interval SE over the sd across blocks (the row on a real model, where no
    answer is known; the mean is itself estimated, sd / √blocks)."""
    from ddim_bench.metric_table import METRICS
    out = {}
    for m in METRICS:
        rows = [r for r in records if r.get(m.key) is not None and r.get(m.se) is not None]
        if len(rows) < 3:
            continue
        vals = [float(r[m.key]) for r in rows]
        mean, sd = statistics.fmean(vals), statistics.stdev(vals)
        out[m.key] = {"coverage": sum(r[m.lo] <= mean <= r[m.hi] for r in rows) / len(rows), "mean": mean,
                      "sd": sd, "se_ratio": ratio(statistics.median(float(r[m.se]) for r in rows), sd),
                      "blocks": len(rows)}
    return out

