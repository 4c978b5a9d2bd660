"""Run by tests/test_fid_scale.py: FID moments of N samples over WORLD real processes (Lightning Fabric DDP, gloo).

    python tests/dist_moments.py WORLD N BATCH D OUT

Each rank takes its share of the sample indices (``rank_indices``, as the sweep does), adds batch after batch of
per-sample features to its :class:`Moments`, and the sums are added over ranks (``Dist.sum_``).  Sample i's
features are a fixed function of i (non-negative, like Inception's pool features), so any two runs score the
same numbers in different orders.  Rank 0 saves n, Σf, Σffᵀ to OUT.
"""
import sys
from types import SimpleNamespace

import torch

from ddim_bench.dist import Dist
from ddim_bench.scoring.moments import Moments
from ddim_bench.sampling.generate import rank_indices


def features(indices, d: int) -> torch.Tensor:
    rows = [torch.rand(d, generator=torch.Generator().manual_seed(1000 + i)) * (1 + i % 5) for i in indices]
    return torch.stack(rows).float() if rows else torch.zeros(0, d)


def main(world: int, n: int, batch: int, d: int, out: str) -> None:
    torch.set_num_threads(1)
    dist = Dist(SimpleNamespace(accelerator="cpu", devices=world, num_nodes=1))
    mine = rank_indices(n, dist.rank, dist.world)
    m = Moments.zeros(d)
    for b in range(0, len(mine), batch):
        m.add(features(mine[b:b + batch], d))
    total = m.all_reduce(dist.sum_)
    if dist.main:
        torch.save({"n": total.n, "s": total.s, "ss": total.ss, "world": dist.world, "rank_n": m.n}, out)
    dist.close()


if __name__ == "__main__":
    w, n, b, d = (int(a) for a in sys.argv[1:5])
    main(w, n, b, d, sys.argv[5])
