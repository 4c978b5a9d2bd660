"""Per-sample Gaussian noise from a counter-based hash: a batch's noise in a few vectorised tensor ops.

Sample ``i`` of a run seeded ``seed`` owns one splitmix64 stream: output ``n`` of that stream is the 64-bit
word ``mix64(key + (n + 1)·γ mod 2⁶⁴)`` with ``key = sample_key(seed, i)``, γ = 0x9E3779B97F4A7C15 and
``mix64`` splitmix64's finaliser (xor-shift 30, × 0xBF58476D1CE4E5B9, xor-shift 27, × 0x94D049BB133111EB,
xor-shift 31).  The stream is cut into blocks of 2**BLOCK_BITS outputs: block 0 gives x_T, block ``k + 1`` the
noise of step counter ``k`` (``ddim.sample`` passes the timestep t).  Word ``j`` of a block gives the sample's
elements ``j`` and ``j + ⌈numel/2⌉`` by Box–Muller (``words_to_normals``).

So sample i's noise depends only on (seed, i, k) and the output dtype, never on batch size or composition,
the number of processes or which other counters are drawn with it.  The integer hash is exact on every
device (int64 tensor arithmetic wraps mod 2⁶⁴; a logical right shift is an arithmetic one with the
sign-filled bits masked off); the float transform may differ in the last bits between CPU and CUDA.

Bump NOISE_VERSION whenever the numbers change: results keyed by it are then not reused.
"""
from __future__ import annotations

import math
import sys
from typing import Sequence

import torch

NOISE_VERSION = 2

GAMMA = 0x9E3779B97F4A7C15
M1, M2 = 0xBF58476D1CE4E5B9, 0x94D049BB133111EB
MASK64 = (1 << 64) - 1
BLOCK_BITS = 30          # outputs per block: a sample's ⌈numel/2⌉ words must fit (≈ 2.1e9 elements)
MAX_COUNTER = (1 << 32) - 2  # step counters k ∈ [0, MAX_COUNTER]: blocks stay disjoint (k + 1 < 2**(64 − BLOCK_BITS))
TWO_PI = 2 * math.pi
_LO, _HI = (0, 1) if sys.byteorder == "little" else (1, 0)  # where a word's low and high 32 bits lie


def _signed(v: int) -> int:
    """The int64 with the same 64 bits as the unsigned ``v``."""
    v &= MASK64
    return v - (1 << 64) if v >= 1 << 63 else v


def mix64(z: int) -> int:
    """splitmix64's finaliser on a Python int (the reference the tensor version must match)."""
    z &= MASK64
    z = ((z ^ (z >> 30)) * M1) & MASK64
    z = ((z ^ (z >> 27)) * M2) & MASK64
    return z ^ (z >> 31)


def sample_key(seed: int, index: int) -> int:
    """Sample ``index``'s 64-bit stream key under ``seed``: mix64(mix64(seed) xor mix64(index·γ + 1)).

    For one seed, distinct indices give distinct keys (each step is a bijection of 64-bit words)."""
    if index < 0:
        raise ValueError(f"sample index must be >= 0, got {index}")
    return mix64(mix64(int(seed)) ^ mix64(int(index) * GAMMA + 1))


_M1, _M2 = _signed(M1), _signed(M2)


def _xorshift_(z: torch.Tensor, s: int, tmp: torch.Tensor) -> None:
    """z ^= z >>> s (logical shift: the arithmetic shift with its sign-filled top s bits masked off)."""
    torch.bitwise_right_shift(z, s, out=tmp)
    tmp.bitwise_and_((1 << (64 - s)) - 1)
    z.bitwise_xor_(tmp)


def mix64_(z: torch.Tensor) -> torch.Tensor:
    """splitmix64's finaliser in place on an int64 tensor (bit-exact with ``mix64``)."""
    tmp = torch.empty_like(z)
    _xorshift_(z, 30, tmp)
    z.mul_(_M1)
    _xorshift_(z, 27, tmp)
    z.mul_(_M2)
    _xorshift_(z, 31, tmp)
    return z


def words_to_normals(words: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """[..., n] 64-bit words → [..., 2n] N(0, 1) by Box–Muller (``words`` is left as it was).

    With hi, lo a word's top and bottom 32 bits read as signed integers: u₁ = (hi + 2³¹ + ½)/2³² ∈ (0, 1)
    and the radius √(−2 ln u₁) in float64 (exact to the last bits in the tail, r ≤ 6.77, and near r = 0,
    where float32 would be off by ~1e-3); the angle θ = 2π·lo/2³² ∈ [−π, π) in the output precision
    (float32 is ample for an angle).  Output [..., :n] is r·cos θ, [..., n:] is r·sin θ.
    """
    fdt = torch.float64 if dtype == torch.float64 else torch.float32
    n = words.shape[-1]
    halves = words.view(torch.int32)  # [..., 2n]: the two halves of each word, in memory order
    radius = halves[..., _HI::2].to(torch.float64)
    radius.add_(2.0 ** 31 + 0.5).mul_(2.0 ** -32).log_().mul_(-2.0).sqrt_()
    radius = radius.to(fdt)
    angle = halves[..., _LO::2].to(fdt).mul_(TWO_PI * 2.0 ** -32)
    out = torch.empty(*words.shape[:-1], 2, n, dtype=fdt, device=words.device)
    torch.cos(angle, out=out[..., 0, :])
    torch.sin(angle, out=out[..., 1, :])
    return out.mul_(radius.unsqueeze(-2)).flatten(-2)


class SampleNoise:
    """The noise of a batch of samples, each drawn from its own counter-based stream.

    ``indices`` are the samples' global indices (one per batch row); ``shape`` is one sample's shape, e.g.
    [C, H, W].  ``initial()`` is x_T, ``step(k)`` the z of step counter k, ``steps(ks)`` several counters at
    once ([len(ks), B, *shape], one vectorised pass).  Every call returns a fresh tensor of ``dtype`` on
    ``device``.  Row r of any of them equals row 0 of ``SampleNoise(seed, [indices[r]], ...)``'s.
    """

    def __init__(self, seed: int, indices: torch.Tensor | Sequence[int], shape: Sequence[int],
                 device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32):
        idx = indices.tolist() if isinstance(indices, torch.Tensor) else [int(i) for i in indices]
        if not idx:
            raise ValueError("SampleNoise needs at least one sample index")
        self.seed, self.indices, self.shape = int(seed), idx, tuple(int(s) for s in shape)
        self.device, self.dtype = torch.device(device), dtype
        self.numel = math.prod(self.shape)
        self.words = (self.numel + 1) // 2
        if self.words > 1 << BLOCK_BITS:
            raise ValueError(f"a sample of shape {self.shape} needs {self.words} words; at most {1 << BLOCK_BITS}")
        keys = torch.tensor([_signed(sample_key(self.seed, i)) for i in idx], dtype=torch.int64)
        positions = torch.arange(1, self.words + 1, dtype=torch.int64).mul_(_signed(GAMMA))  # (j + 1)·γ
        self._base = (keys[:, None] + positions[None, :]).to(self.device)   # [B, words]: block 0's inputs

    def __len__(self) -> int:
        return len(self.indices)

    def blocks(self, bs: Sequence[int]) -> torch.Tensor:
        """[len(bs), B, *shape] normals from blocks ``bs`` of every sample's stream."""
        offsets = torch.tensor([_signed((b << BLOCK_BITS) * GAMMA) for b in bs], dtype=torch.int64)
        words = self._base + offsets.to(self.device)[:, None, None]          # [m, B, words], a new tensor
        z = words_to_normals(mix64_(words), self.dtype)
        if z.shape[-1] != self.numel:
            z = z[..., :self.numel]
        return z.to(self.dtype).reshape(len(bs), len(self.indices), *self.shape)

    def initial(self) -> torch.Tensor:
        """x_T: block 0, [B, *shape]."""
        return self.blocks([0])[0]

    def step(self, k: int) -> torch.Tensor:
        """The noise z of step counter ``k`` (block k + 1), [B, *shape]."""
        return self.steps([k])[0]

    def steps(self, ks: Sequence[int]) -> torch.Tensor:
        """The z of several step counters, [len(ks), B, *shape]: cheaper than one ``step`` call each."""
        ks = [int(k) for k in ks]
        bad = [k for k in ks if not 0 <= k <= MAX_COUNTER]
        if bad:
            raise ValueError(f"step counters must be in [0, {MAX_COUNTER}], got {bad[0]}")
        return self.blocks([k + 1 for k in ks])
