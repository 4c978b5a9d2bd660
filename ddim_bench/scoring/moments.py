"""FID's statistics as float64 sums, so that the score does not depend on how the samples were split.

Every process adds its batches' features f into n, Σf and Σffᵀ (float64, whatever the extractor's dtype); the
sums of all processes are added with one ``all_reduce``; then μ = Σf / n and
Σ = (Σffᵀ − n μμᵀ) / (n − 1), ``np.cov``'s normalisation, as torch-fidelity computes it from the features.
Batch size and process count only change the order of float64 additions (relative changes ~1e-15), and ``n``
counts every sample scored, so a partial last batch can never be dropped unnoticed.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class Moments:
    """n, Σf [d] and Σffᵀ [d, d] of the features added so far (float64, on the features' device)."""
    n: int
    s: torch.Tensor
    ss: torch.Tensor

    @classmethod
    def zeros(cls, d: int, device="cpu") -> "Moments":
        return cls(0, torch.zeros(d, dtype=torch.float64, device=device),
                   torch.zeros(d, d, dtype=torch.float64, device=device))

    @classmethod
    def of(cls, features: torch.Tensor, device=None, chunk: int = 4096) -> "Moments":
        """The moments of a whole feature set [n, d], added ``chunk`` rows at a time on ``device``."""
        m = cls.zeros(features.shape[1], features.device if device is None else device)
        for part in features.split(chunk):
            m.add(part)
        return m

    def add(self, features: torch.Tensor) -> "Moments":
        """Add a batch of features [B, d] (any float dtype; summed in float64)."""
        f = features.to(device=self.s.device, dtype=torch.float64)
        self.n += f.shape[0]
        self.s += f.sum(0)
        self.ss.addmm_(f.T, f)
        return self

    def __add__(self, other: "Moments") -> "Moments":
        return Moments(self.n + other.n, self.s + other.s, self.ss + other.ss)

    def mean_cov(self) -> tuple[torch.Tensor, torch.Tensor]:
        """μ and the unbiased covariance (1/(n − 1), as ``np.cov``); needs n ≥ 2."""
        if self.n < 2:
            raise ValueError(f"need at least 2 samples for a covariance, got {self.n}")
        mu = self.s / self.n
        cov = torch.addr(self.ss, mu, mu, alpha=-self.n).div_(self.n - 1)
        return mu, cov.add_(cov.T.clone()).div_(2)

    def all_reduce(self, reduce_sum) -> "Moments":
        """The sums over all processes: ``reduce_sum(t)`` sums a float64 tensor in place across them (one call)."""
        flat = torch.cat([torch.tensor([float(self.n)], dtype=torch.float64, device=self.s.device), self.s,
                          self.ss.flatten()])
        reduce_sum(flat)
        d = self.s.numel()
        return Moments(int(round(flat[0].item())), flat[1:1 + d], flat[1 + d:].view(d, d))


def fid(gen: Moments, ref: Moments) -> float:
    """FID between the two sets' statistics, by torch-fidelity's own formula (``fid_statistics_to_metric``)."""
    from torch_fidelity.metric_fid import fid_statistics_to_metric
    (mu_g, cov_g), (mu_r, cov_r) = gen.mean_cov(), ref.mean_cov()
    stats = [{"mu": mu.cpu().numpy(), "sigma": cov.cpu().numpy()} for mu, cov in ((mu_g, cov_g), (mu_r, cov_r))]
    return float(fid_statistics_to_metric(*stats, verbose=False)["frechet_inception_distance"])
