"""Batched bootstrap replicates of FID, KID and IS: each metric for many resamplings of the generated set at once.

Every function here takes the generated features ``x`` [N, d], (for FID/KID) the reference features ``y``
[M, d] and ``idx`` [R, K], a batch of resamplings of the generated set: row r lists, position by position, which
generated sample stands at that position (``idx[r] = arange(N)`` is the original set; K < N rows of distinct
indices are subsets, as the disjoint subsets of :mod:`ddim_bench.scoring.uncertainty` use).  It returns [R] values,
where value r is *the metric torch-fidelity 0.4.0 computes on the generated set* ``x[idx[r]]`` *against the fixed
reference* ``y``, with torch-fidelity's settings (KID subset draws, IS shuffle and splits) — up to float64
rounding.  Nothing is resampled on the reference side.

The work is arranged so that nothing is done per replicate that can be done once:

* a resampled set only enters through the *counts* ``w[r, i]`` = how many times sample i appears in it
  (``Σ_i w[r, i] = N``): means, covariances and kernel sums of a multiset are count-weighted sums;
* everything that depends on the reference only (√Σ_ref, reference kernel sums) is computed once.

All arithmetic is float64 on ``device``.
"""
from __future__ import annotations

import weakref

import numpy as np
import torch

CHUNK_BYTES = 1 << 28  # size of the largest temporary a function here builds (≈ 256 MiB)


def counts(idx: torch.Tensor, n: int) -> torch.Tensor:
    """[R, N] positions → [R, n] float64 counts: ``w[r, i] = #{a : idx[r, a] = i}``."""
    w = torch.zeros(idx.shape[0], n, dtype=torch.float64, device=idx.device)
    return w.scatter_add_(1, idx, torch.ones(idx.shape, dtype=torch.float64, device=idx.device))


def _rows_per_chunk(bytes_per_row: int, chunk_bytes: int = CHUNK_BYTES) -> int:
    return max(1, chunk_bytes // max(1, bytes_per_row))


# ---------------------------------------------------------------------------------------------------------------
# FID
# ---------------------------------------------------------------------------------------------------------------

def psd_sqrt(a: torch.Tensor) -> torch.Tensor:
    """Symmetric PSD square root V diag(√max(λ, 0)) Vᵀ of a symmetric matrix (eigenvalues below 0 are rounding)."""
    lam, v = torch.linalg.eigh(a)
    return (v * lam.clamp(min=0).sqrt()) @ v.T


_REFERENCE: list = [None, None, None]  # [weak reference to y, y's fingerprint, (μ_r, Σ_r, Σ_r^{1/2})]


def _fingerprint(y: torch.Tensor) -> tuple:
    return tuple(y.shape), y.dtype, y.device, float(y.sum()), float(y.square().sum())


def reference_moments(y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(μ_r, Σ_r, Σ_r^{1/2}) of the reference features, kept for the last ``y`` seen (the same tensor, its
    values unchanged: same sums): a sweep's records and a report's comparisons all use one reference, whose
    covariance (M·d² for M = 50 000) and square root would otherwise be computed again for every interval."""
    ref, seen, got = _REFERENCE
    if ref is None or ref() is not y or seen != _fingerprint(y):
        sigma = torch.cov(y.T, correction=1).reshape(y.shape[1], y.shape[1])
        got = (y.mean(0), sigma, psd_sqrt(sigma))
        _REFERENCE[:] = [weakref.ref(y), _fingerprint(y), got]
    return got


def fid_draws(x: torch.Tensor, y: torch.Tensor, idx: torch.Tensor, chunk_bytes: int = CHUNK_BYTES) -> torch.Tensor:
    """FID of each resampled generated set against the reference.

    FID = ‖μ_g − μ_r‖² + tr Σ_g + tr Σ_r − 2 tr √(Σ_g Σ_r), covariances with 1/(n − 1) as ``np.cov``.

    *The square-root term.*  With A = Σ_r^{1/2} (symmetric PSD), Σ_g Σ_r = Σ_g A A has the same eigenvalues as
    A Σ_g A (AB and BA share eigenvalues), which is symmetric PSD, so tr √(Σ_g Σ_r) = Σ_k √λ_k(A Σ_g A) and
    ``eigvalsh`` suffices — the same quantity torch-fidelity takes from the real parts of ``√eig(Σ_g Σ_r)``.
    A Σ_g A is the covariance of the rows z_i = (x_i − c) A (c = the full-set mean, for conditioning), so A is
    applied to the features once and never per replicate.

    *A resampled set with counts w* (Σ_i w_i = K, the row length): μ = c + Σ_i w_i (x_i − c)/K, and the ``np.cov``
    of the multiset is Σ_i w_i (z_i − z̄)(z_i − z̄)ᵀ/(K − 1) with z̄ = Σ_i w_i z_i / K; its trace is
    (Σ_i w_i ‖x_i − c‖² − K‖μ − c‖²)/(K − 1).
    Per chunk of replicates: the [R, d, d] covariances Σ_i w_i z_i z_iᵀ − K z̄ z̄ᵀ summed over blocks of rows (so no
    temporary grows with N: at N = 50 000, d = 2048 a replicate's centred copy of the rows alone would be 800 MB)
    and one batched ``eigvalsh``.
    """
    (n, d), k = x.shape, idx.shape[1]
    mu_r, sigma_r, a = reference_moments(y)
    c = x.mean(0)
    xc = x - c
    z = xc @ a
    sq = xc.square().sum(1)
    w_all = counts(idx, n)
    if bool((w_all <= 1).all()):
        return _fid_subsets(xc, z, sq, idx, c - mu_r, sigma_r.trace(), chunk_bytes)
    out = []
    step = _rows_per_chunk(8 * d * d, chunk_bytes)      # replicates whose [d, d] covariances fit a chunk
    for w in w_all.split(step):
        m = w @ xc / k                                   # [r, d] mean of x − c
        mean_term = (c + m - mu_r).square().sum(1)
        tr_g = (w @ sq - k * m.square().sum(1)) / (k - 1)
        zbar = w @ z / k                                 # [r, d] the replicate's mean of z (≈ 0: z is centred)
        cov = -k * zbar[:, :, None] * zbar[:, None, :]
        rows = _rows_per_chunk(8 * len(w) * d, chunk_bytes)
        for zb, wb in zip(z.split(rows), w.split(rows, dim=1)):
            cov += (zb * wb[:, :, None]).transpose(1, 2) @ zb   # Σ_i w_i z_i z_iᵀ over a block of rows
        lam = torch.linalg.eigvalsh(cov / (k - 1))       # Σ_i w_i (z_i − z̄)(z_i − z̄)ᵀ / (K − 1)
        out.append(mean_term + tr_g + sigma_r.trace() - 2 * lam.clamp(min=0).sqrt().sum(1))
    return torch.cat(out)


def _fid_subsets(xc, z, sq, idx, offset, tr_r, chunk_bytes):
    """FID of subsets without repeats (rows of ``idx`` distinct): the subset's rows are gathered, and the
    eigenvalues of A Σ_g A come from the smaller of its d × d covariance and its K × K Gram matrix (the same
    non-zero eigenvalues), so a subset of K < d samples costs K²d, not Nd²."""
    k, d = idx.shape[1], z.shape[1]
    out = []
    for rows in idx.split(_rows_per_chunk(8 * (k * d + min(k, d) ** 2))):
        m = xc[rows].mean(1)                                       # [r, d] mean of x − c
        tr_g = (sq[rows].sum(1) - k * m.square().sum(1)) / (k - 1)
        zs = z[rows]
        zs = zs - zs.mean(1, keepdim=True)
        gram = zs @ zs.transpose(1, 2) if k <= d else zs.transpose(1, 2) @ zs
        lam = torch.linalg.eigvalsh(gram / (k - 1))
        out.append((offset + m).square().sum(1) + tr_g + tr_r - 2 * lam.clamp(min=0).sqrt().sum(1))
    return torch.cat(out)


# ---------------------------------------------------------------------------------------------------------------
# KID
# ---------------------------------------------------------------------------------------------------------------

def poly_kernel(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """torch-fidelity's KID kernel with its defaults: k(a, b) = (a·b / d + 1)³."""
    return (a @ b.T / a.shape[1] + 1) ** 3


def kid_subsets(n_gen: int, n_ref: int, subset_size: int, subsets: int, rng_seed: int):
    """The positions torch-fidelity's KID draws: ([S, m] generated, [S, m] reference), in its RNG order."""
    rng = np.random.RandomState(rng_seed)
    gen, ref = [], []
    for _ in range(subsets):
        gen.append(rng.choice(n_gen, subset_size, replace=False))
        ref.append(rng.choice(n_ref, subset_size, replace=False))
    return torch.as_tensor(np.stack(gen)), torch.as_tensor(np.stack(ref))


def _quad_forms(a: torch.Tensor, rows, n_rows: int, chunk_bytes: int) -> torch.Tensor:
    """[T] values u_tᵀ K u_t, K = poly_kernel(a, a), for count vectors u_t = ``rows(t0, t1)`` ([t1 − t0, n]).

    K is built once, in row blocks (block I adds Σ_{i∈I} u_ti (K_I u_t)_i); the u's are built once when they all
    fit in ``chunk_bytes``, else rebuilt per block.
    """
    n = a.shape[0]
    block = min(n, _rows_per_chunk(8 * n, chunk_bytes))
    step = _rows_per_chunk(8 * (n + block), chunk_bytes)
    spans = [(t0, min(n_rows, t0 + step)) for t0 in range(0, n_rows, step)]
    kept = [rows(*sp) for sp in spans] if len(spans) == 1 else None
    acc = torch.zeros(n_rows, dtype=torch.float64, device=a.device)
    for i0 in range(0, n, block):
        k = poly_kernel(a[i0:i0 + block], a)                           # [b, n]
        for j, (t0, t1) in enumerate(spans):
            u = kept[j] if kept is not None else rows(t0, t1)
            acc[t0:t1] += ((u @ k.T) * u[:, i0:i0 + block]).sum(1)
    return acc


def kid_draws(x: torch.Tensor, y: torch.Tensor, idx: torch.Tensor, subset_size: int, subsets: int,
              rng_seed: int, chunk_bytes: int = CHUNK_BYTES) -> torch.Tensor:
    """KID (torch-fidelity's mean over ``subsets`` random subsets) of each resampled generated set.

    Subset s takes generated positions p_s and reference samples q_s (m each, without replacement, torch-fidelity's
    RNG); its unbiased MMD² is

        (Σ_{a≠b} k(g_a, g_b) + Σ_{a≠b} k(r_a, r_b)) / (m(m − 1)) − 2 Σ_{a,b} k(g_a, r_b) / m².

    On a resampled set the generated subset is x[idx[r, p_s]]; with c = its count vector over the original samples,
    Σ_{a≠b} k(g_a, g_b) = cᵀKc − Σ_i c_i k(x_i, x_i) (pairs of *positions*, so a duplicate pair counts, as it does in
    torch-fidelity), and Σ_{a,b} k(g_a, r_b) = Σ_a h_s(idx[r, p_s[a]]) with h_s(i) = Σ_b k(x_i, y[q_s[b]]) computed
    once (:func:`_kid_kernel`).  The reference term does not depend on r (:func:`_reference_term`).
    Cost: R·S·N² for the quadratic forms, N²·d for the kernel, N·M·d for h: quadratic in N.

    Rows without repeats (the disjoint subsets of :mod:`.subsets`) go to :func:`_kid_direct` when it costs less:
    each subset's m × m kernels, 2·R·S·m²·d, which does not grow with N (at d = 2048, m = 1 000, S = 100 and the
    reference's M = 50 000 it is the cheaper for the full set from N ≈ 3 000 on, for the halves and the quarters
    from N ≈ 40 000 and 50 000).
    """
    n, m, d = x.shape[0], subset_size, x.shape[1]
    p, q = (t.to(x.device) for t in kid_subsets(idx.shape[1], y.shape[0], m, subsets, rng_seed))
    rr = _reference_term(y, q, chunk_bytes)
    direct = 2 * idx.shape[0] * subsets * m * m * d                 # per sub-subset: bounded in N
    if direct < n * n * (d + idx.shape[0] * subsets) + n * y.shape[0] * d and bool((counts(idx, n) <= 1).all()):
        return (_kid_direct(x, y, idx, p, q, chunk_bytes) + rr).mean(1)
    return (_kid_kernel(x, y, idx, p, q, chunk_bytes) + rr).mean(1)


def _pair_sum(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Σ_{i,j} k(a_i, b_j) per batch entry of [B, m, d] tensors."""
    return ((a @ b.transpose(1, 2)) / a.shape[-1] + 1).pow(3).sum((1, 2))


def _diag_sum(a: torch.Tensor) -> torch.Tensor:
    """Σ_i k(a_i, a_i) per batch entry of a [B, m, d] tensor."""
    return ((a.square().sum(2) / a.shape[-1] + 1) ** 3).sum(1)


def _reference_term(y: torch.Tensor, q: torch.Tensor, chunk_bytes: int) -> torch.Tensor:
    """[S] Σ_{a≠b} k(r_a, r_b) / (m(m − 1)) of each reference subset q_s: from the M × M kernel's quadratic forms
    or from each subset's own m × m kernel, whichever costs less (M²(d + S) or S·m²·d)."""
    (subsets, m), (big_m, d) = q.shape, y.shape
    if big_m * big_m * (d + subsets) < subsets * m * m * d:
        ind = counts(q, big_m)
        diag = (y.square().sum(1) / d + 1) ** 3
        return (_quad_forms(y, lambda t0, t1: ind[t0:t1], subsets, chunk_bytes) - ind @ diag) / (m * (m - 1))
    step = _rows_per_chunk(8 * m * (m + 2 * d), chunk_bytes)
    return torch.cat([_pair_sum(yb, yb) - _diag_sum(yb) for yb in (y[qb] for qb in q.split(step))]) / (m * (m - 1))


def _kid_kernel(x, y, idx, p, q, chunk_bytes) -> torch.Tensor:
    """[R, S] generated and cross terms of each subset's MMD², from the N × N kernel (any rows)."""
    (n, d), (subsets, m) = x.shape, p.shape
    ind_r = counts(q, y.shape[0])
    # Cross term: h [N, S] = K(x, y) @ indicators(q)ᵀ.
    step = _rows_per_chunk(8 * y.shape[0], chunk_bytes)
    h = torch.cat([poly_kernel(xb, y) @ ind_r.T for xb in x.split(step)])
    gsub = idx[:, p]                                                  # [R, S, m] original indices
    gr = torch.stack([h[:, s][gsub[:, s]].sum(1) for s in range(subsets)], 1) / m ** 2   # [R, S]
    # Generated term: quadratic forms of the [R·S, N] count vectors.
    diag_g = (x.square().sum(1) / d + 1) ** 3
    flat = gsub.reshape(-1, m)

    def rows(t0, t1):
        return counts(flat[t0:t1], n)

    gg = (_quad_forms(x, rows, flat.shape[0], chunk_bytes) - diag_g[flat].sum(1)) / (m * (m - 1))
    return gg.view(-1, subsets) - 2 * gr


def _kid_direct(x, y, idx, p, q, chunk_bytes=CHUNK_BYTES) -> torch.Tensor:
    """[R, S] generated and cross terms of each subset's MMD² for rows without repeats, each from the subset's
    own m × m kernels (torch-fidelity's computation, on ``x[idx[r, p_s]]`` and ``y[q_s]``): 2·R·S·m²·d,
    whatever N."""
    (rows, _), (subsets, m), d = idx.shape, p.shape, x.shape[1]
    step = _rows_per_chunk(8 * m * (m + 2 * d), chunk_bytes)
    flat = idx[:, p].reshape(-1, m)                                   # [R·S, m]: row r's subset s, original indices
    which = torch.arange(subsets, device=x.device).repeat(rows)
    out = torch.empty(len(flat), dtype=torch.float64, device=x.device)
    for t0 in range(0, len(flat), step):
        xb, yb = x[flat[t0:t0 + step]], y[q[which[t0:t0 + step]]]
        out[t0:t0 + step] = (_pair_sum(xb, xb) - _diag_sum(xb)) / (m * (m - 1)) - 2 * _pair_sum(xb, yb) / m ** 2
    return out.view(rows, subsets)


# ---------------------------------------------------------------------------------------------------------------
# IS
# ---------------------------------------------------------------------------------------------------------------

def isc_draws(logits: torch.Tensor, idx: torch.Tensor, splits: int, shuffle: bool = True, rng_seed: int = 2020,
              chunk_bytes: int = CHUNK_BYTES) -> torch.Tensor:
    """Inception Score (torch-fidelity's mean over ``splits``) of each resampled generated set.

    torch-fidelity permutes the rows (``RandomState(rng_seed).permutation(N)``), cuts them into ``splits``
    consecutive chunks and averages exp(mean_i KL(p_i ‖ q)) over chunks, q = the chunk's mean of p_i = softmax.
    For a chunk, mean_i KL(p_i ‖ q) = mean_i Σ_c p_ic log p_ic − Σ_c q_c log q_c, so with the chunk's count
    vector w (n_j positions): q = wᵀP / n_j and mean_i Σ_c p_ic log p_ic = w·e / n_j, e_i = Σ_c p_ic log p_ic.
    """
    n, k = logits.shape[0], idx.shape[1]
    lg = logits.double()
    p = lg.softmax(1)
    e = (p * lg.log_softmax(1)).sum(1)
    perm = torch.as_tensor(np.random.RandomState(rng_seed).permutation(k) if shuffle else np.arange(k),
                           device=logits.device)
    scores = torch.zeros(idx.shape[0], dtype=torch.float64, device=logits.device)
    step = _rows_per_chunk(8 * n, chunk_bytes)
    for j in range(splits):
        pos = perm[j * k // splits:(j + 1) * k // splits]
        for r0 in range(0, idx.shape[0], step):
            w = counts(idx[r0:r0 + step][:, pos], n)
            q = w @ p / len(pos)
            kl = w @ e / len(pos) - torch.special.xlogy(q, q).sum(1)
            scores[r0:r0 + step] += kl.exp()
    return scores / splits
