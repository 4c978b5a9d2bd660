"""Bootstrap replicates of improved precision and recall (Kynkäänniemi et al. 2019), as torch-fidelity 0.4.0 has them.

torch-fidelity (``metric_prc``, generated = input1, real = input2, neighbourhood k = 3, on the extractor's
``prc`` layer — the 2048-d pool features for Inception, the FID layer for the digits CNN):

* the *ball* of a sample is centred on it with radius its distance to its k-th nearest neighbour in its own set,
  i.e. the (k + 1)-th smallest distance from it to the rows of its set, itself included (``kthvalue(k + 1)``);
* precision = the fraction of generated samples inside at least one real ball;
* recall = the fraction of real samples inside at least one generated ball.

What a replicate resamples: the generated set (positions ``idx[r]``, as in :mod:`ddim_bench.scoring.draws`);
the real set, and hence the real balls, stay fixed.  Value r is torch-fidelity's precision/recall of
``x[idx[r]]`` against ``y``:

* precision only depends on which generated samples are inside a real ball, so it is w·inside / N with w the
  counts of the resampled set;
* recall needs the generated balls *of the resampled set*: a sample's radius is the (k + 1)-th smallest
  distance counted with multiplicity (a sample drawn twice has a copy of itself at distance 0, so its radius
  shrinks; a neighbour left out makes it grow), and samples not drawn have no ball.

All pairwise distances are computed once, in blocks, and little of them is kept: of the generated×generated
distances each row's L = 8(k + 1) nearest neighbours — enough to find the (k + 1)-th smallest with multiplicity
unless those L carry fewer than k + 1 copies (about the chance of Poisson(L) < k + 1, ~1e-10 for k = 3; such a
row is redone from its full row) — so no generated ball is larger than ``reach_i`` = distance to the L-th
neighbour; of the real×generated distances only the pairs within ``reach_i`` (≈ L·M/N per generated sample),
the only pairs a replicate's ball can cover; the real×real distances only for the real radii.
"""
from __future__ import annotations

import torch

from ddim_bench.scoring.draws import CHUNK_BYTES, _rows_per_chunk, counts

NEIGHBOURHOOD = 3  # torch-fidelity's default prc_neighborhood


def kth_radii(a: torch.Tensor, k: int = NEIGHBOURHOOD, chunk_bytes: int = CHUNK_BYTES) -> torch.Tensor:
    """[n] radius of each row's ball: the (k + 1)-th smallest distance to the rows of ``a`` (itself included)."""
    step = _rows_per_chunk(8 * a.shape[0], chunk_bytes)
    return torch.cat([torch.cdist(b, a).kthvalue(k + 1, dim=1).values for b in a.split(step)])


def _radius_from_row(dist_row: torch.Tensor, w: torch.Tensor, k: int) -> torch.Tensor:
    """(k + 1)-th smallest of ``dist_row`` counting entry j ``w[j]`` times."""
    order = dist_row.argsort()
    j = int((w[order].cumsum(0) < k + 1).sum())
    return dist_row[order[j]]


def prc_draws(x: torch.Tensor, y: torch.Tensor, idx: torch.Tensor, k: int = NEIGHBOURHOOD,
              chunk_bytes: int = CHUNK_BYTES, kept_neighbours: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(precision [R], recall [R]) of each resampled generated set ``x[idx[r]]`` against the reference ``y``.

    ``kept_neighbours``: L (default 8(k + 1)); smaller values only make the exact fallback run more often.
    """
    n, m = x.shape[0], y.shape[0]
    big_l = min(n, kept_neighbours or 8 * (k + 1))
    if big_l < min(n, k + 1):
        raise ValueError(f"kept_neighbours must be at least k + 1 = {k + 1}, got {kept_neighbours}")
    step = _rows_per_chunk(8 * max(n, m), chunk_bytes)
    near = [torch.cdist(b, x).topk(big_l, dim=1, largest=False) for b in x.split(step)]
    nd, nb = torch.cat([t.values for t in near]), torch.cat([t.indices for t in near])   # [N, L] ascending
    reach = nd[:, -1]                                     # no generated ball is larger, bar the fallback rows
    rho = kth_radii(y, k, chunk_bytes)                    # real radii, fixed
    inside = torch.zeros(n, dtype=torch.bool, device=x.device)
    pj, pi, pd = [], [], []                               # candidate (real j, generated i, distance) pairs
    for j0 in range(0, m, step):
        dist = torch.cdist(y[j0:j0 + step], x)
        inside |= (dist <= rho[j0:j0 + step, None]).any(0)
        jj, ii = (dist <= reach).nonzero(as_tuple=True)
        pj.append(jj + j0), pi.append(ii), pd.append(dist[jj, ii])
    pj, pi, pd = torch.cat(pj), torch.cat(pi), torch.cat(pd)

    w_all = counts(idx, n)
    precision = w_all @ inside.double() / idx.shape[1]
    recall = torch.empty(idx.shape[0], dtype=torch.float64, device=x.device)
    r_step = _rows_per_chunk(8 * (3 * n * big_l + 2 * len(pd) + m), chunk_bytes)
    for r0 in range(0, idx.shape[0], r_step):
        w = w_all[r0:r0 + r_step]
        pos = (w[:, nb].cumsum(-1) < k + 1).sum(-1)      # index of the (k + 1)-th copy among the L nearest
        rad = nd.expand(w.shape[0], -1, -1).gather(2, pos.clamp(max=big_l - 1)[..., None])[..., 0]
        fallback = ((pos >= big_l) & (w > 0)).nonzero().tolist()
        for r, i in fallback:
            rad[r, i] = _radius_from_row(torch.cdist(x[i:i + 1], x)[0], w[r], k)
        rad = rad.masked_fill(w == 0, -torch.inf)         # not drawn: no ball
        hit = torch.zeros(w.shape[0], m, dtype=torch.float64, device=x.device)
        hit.index_add_(1, pj, (pd <= rad[:, pi]).double())
        covered = hit > 0
        for r, i in fallback:                             # a ball beyond ``reach``: check every real sample
            covered[r] |= torch.cdist(y, x[i:i + 1])[:, 0] <= rad[r, i]
        recall[r0:r0 + r_step] = covered.double().mean(1)
    return precision, recall
