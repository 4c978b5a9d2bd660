"""The DDIM math (Song, Meng & Ermon, ICLR 2021), in the paper's notation.

Plain torch, no Lightning or Hydra.  ``alpha`` is always the *cumulative* product (DDPM's ᾱ_t);
timesteps are 0-indexed and the predecessor of the first one has α = 1 ("t = −1").
"""
from __future__ import annotations

import math
from typing import Callable, Sequence

import torch

from ddim_bench.choices import SCHEDULES, SKIPS, VARIANCES  # noqa: F401 - the names this module acts on
from ddim_bench.sampling.noise import SampleNoise

Model = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
PREFETCH_ELEMENTS = 1 << 18  # SampleNoise numbers drawn per vectorised call (several small steps at once)


def alphas_cumprod(num_timesteps: int = 1000, schedule: str = "linear",
                   beta_start: float = 1e-4, beta_end: float = 0.02) -> torch.Tensor:
    """α_t = ∏_{s≤t} (1 − β_s) in float64; ``linear`` is DDPM's, ``cosine`` is Nichol & Dhariwal's."""
    if num_timesteps < 1:
        raise ValueError(f"num_timesteps must be >= 1, got {num_timesteps}")
    if schedule == "linear":
        betas = torch.linspace(beta_start, beta_end, num_timesteps, dtype=torch.float64)
    elif schedule == "cosine":
        s = 0.008
        f = torch.cos((torch.arange(num_timesteps + 1, dtype=torch.float64) / num_timesteps + s)
                      / (1 + s) * math.pi / 2) ** 2
        betas = (1 - f[1:] / f[:-1]).clamp(max=0.999)
    else:
        raise ValueError(f"schedule must be one of {SCHEDULES}, got {schedule!r}")
    return torch.cumprod(1 - betas, dim=0)


def timesteps(num_timesteps: int, steps: int, skip: str = "uniform") -> list[int]:
    """The increasing sub-sequence τ of [0, T), exactly ``steps`` long (duplicates kept for ``quad``)."""
    T, S = num_timesteps, steps
    if not isinstance(S, int) or S < 1 or S > T:
        raise ValueError(f"steps must be an integer in [1, num_timesteps={T}], got {S!r}")
    if skip == "uniform":  # the paper code's range(0, T, T // S), cut to S; diffusers' "leading"
        return [i * (T // S) for i in range(S)]
    if skip == "quad":  # the paper code: int(v) for v in linspace(0, sqrt(0.8 T), S) ** 2
        grid = torch.linspace(0, math.sqrt(0.8 * T), S, dtype=torch.float64) ** 2
        return [int(v) for v in grid.tolist()]
    if skip == "trailing":  # diffusers: round(arange(T, 0, -T/S)) - 1
        return sorted(int(round(T - i * T / S)) - 1 for i in range(S))
    if skip == "linspace":  # diffusers: linspace(0, T - 1, S).round()
        return [int(round(v)) for v in torch.linspace(0, T - 1, S, dtype=torch.float64).tolist()]
    raise ValueError(f"skip must be one of {SKIPS}, got {skip!r}")


def model_calls(taus: Sequence[int]) -> int:
    """Network evaluations that ``sample``/``encode`` make for ``taus``: a repeated τ costs none."""
    return sum(1 for i, t in enumerate(taus) if i == 0 or t != taus[i - 1])


def sigma(alpha_t: float, alpha_prev: float, eta: float) -> float:
    """Paper Eq. 16: σ = η √((1 − α_prev)/(1 − α_t)) √(1 − α_t/α_prev)."""
    return eta * math.sqrt((1 - alpha_prev) / (1 - alpha_t)) * math.sqrt(1 - alpha_t / alpha_prev)


def predict_x0(x: torch.Tensor, eps: torch.Tensor, alpha_t: float) -> torch.Tensor:
    """x̂0 = (x − √(1−α_t) ε̂) / √α_t."""
    return (x - math.sqrt(1 - alpha_t) * eps) / math.sqrt(alpha_t)


def ddim_step(x, eps, alpha_t: float, alpha_prev: float, eta: float, noise, clip_x0: bool = False):
    """One step τ_i → τ_{i−1}: √α_prev x̂0 + √(1 − α_prev − σ²) ε̂ + σ z (paper Eq. 12); returns (x_prev, x̂0).

    Without clipping x_prev is computed as a·x + b·ε̂ (+ σz), a = √(α_prev/α_t), b = √(1 − α_prev − σ²) −
    a·√(1 − α_t): the same value in three passes over the batch.  ``noise()`` returns z.
    """
    x0 = predict_x0(x, eps, alpha_t)
    if clip_x0:
        s = sigma(alpha_t, alpha_prev, eta)
        out = math.sqrt(alpha_prev) * x0.clamp_(-1, 1) + math.sqrt(max(1 - alpha_prev - s * s, 0.0)) * eps
        return (out.add_(noise(), alpha=s) if s > 0 else out), x0
    return _eta_update(x, eps, alpha_t, alpha_prev, eta, noise), x0


def _eta_update(x, eps, alpha_t: float, alpha_prev: float, eta: float, noise) -> torch.Tensor:
    """x_prev of ``ddim_step`` without clipping and without forming x̂0 (x and ε̂ are left untouched)."""
    s = sigma(alpha_t, alpha_prev, eta)
    a = math.sqrt(alpha_prev / alpha_t)
    b = math.sqrt(max(1 - alpha_prev - s * s, 0.0)) - a * math.sqrt(1 - alpha_t)
    out = torch.mul(x, a).add_(eps, alpha=b)
    return out.add_(noise(), alpha=s) if s > 0 else out


def hat_step(x, eps, alpha_t: float, alpha_prev: float, noise, last: bool):
    """The σ̂ row: mean of q(x_prev | x_t, x̂0) with x̂0 clipped, noise std √(1 − α_t/α_prev)."""
    beta = 1 - alpha_t / alpha_prev
    x0 = predict_x0(x, eps, alpha_t).clamp(-1, 1)
    mean = (math.sqrt(alpha_prev) * beta * x0 + math.sqrt(1 - beta) * (1 - alpha_prev) * x) / (1 - alpha_t)
    return (mean if last or beta <= 0 else mean + math.sqrt(beta) * noise()), x0


def _noise_source(x: torch.Tensor, generator, counters: Sequence[int]) -> Callable[[int], torch.Tensor]:
    """``draw(k)`` → z ~ N(0, I) shaped like x for step counter k; ``counters`` lists the k's to come, in order.

    A ``SampleNoise`` gives each sample its own counter-keyed noise, drawn ahead in chunks of steps; a list of
    generators draws each sample's z from its own generator, in turn; a generator (or None) draws the batch.
    """
    if isinstance(generator, SampleNoise):
        if len(generator) != x.shape[0]:
            raise ValueError(f"generator (SampleNoise) has {len(generator)} samples for a batch of {x.shape[0]}")
        return _Prefetched(generator, list(counters), like=x)
    if isinstance(generator, (list, tuple)):
        if len(generator) != x.shape[0]:
            raise ValueError(f"generator list has {len(generator)} entries for a batch of {x.shape[0]}")
        buf = torch.empty_like(x)
        rows = buf.unbind(0)  # one view per sample, made once

        def draw(k):
            for row, g in zip(rows, generator):
                row.normal_(generator=g)  # the numbers torch.randn(..., generator=g) would give
            return buf
        return draw
    return lambda k: torch.randn(x.shape, generator=generator, dtype=x.dtype, device=x.device)


class _Prefetched:
    """Draws a ``SampleNoise``'s steps ``PREFETCH_ELEMENTS`` numbers at a time, in the order they are used."""

    def __init__(self, source: SampleNoise, counters: list[int], like: torch.Tensor):
        per = max(1, PREFETCH_ELEMENTS // max(1, len(source) * source.numel))
        self.source, self.like, self.chunks = source, like, [counters[i:i + per] for i in range(0, len(counters), per)]
        self.ready: list[tuple[int, torch.Tensor]] = []

    def __call__(self, k: int) -> torch.Tensor:
        if not self.ready and self.chunks:
            ks = self.chunks.pop(0)
            self.ready = list(zip(ks, self.source.steps(ks).to(device=self.like.device, dtype=self.like.dtype)))
        if not self.ready or self.ready[0][0] != k:
            raise RuntimeError(f"step counter {k} was not the next one announced to the noise prefetch")
        return self.ready.pop(0)[1]


def _alpha(alphas: torch.Tensor, t: int) -> float:
    return 1.0 if t < 0 else float(alphas[t])


@torch.no_grad()
def sample(model: Model, x_T: torch.Tensor, alphas_cumprod: torch.Tensor, timesteps: Sequence[int],
           eta: float = 0.0, variance: str = "eta", clip_x0: bool = False, generator=None,
           callback: Callable | None = None) -> torch.Tensor:
    """Generalised DDIM sampling from x_T along τ (last to first); returns x_0.

    ``variance="eta"`` uses σ(η) of Eq. 16; ``variance="hat"`` is the paper's σ̂ row.  A repeated τ
    leaves x unchanged and costs no model call.  ``callback(i, t, x, x0_hat)`` sees every step.
    ``generator``: None or a ``torch.Generator`` (the batch's z drawn together), a list of generators (one
    per sample, drawn in turn) or a ``noise.SampleNoise`` (sample i's z at step τ_i = t is its block for
    counter t: independent of the batch it is in).
    """
    if variance not in VARIANCES:
        raise ValueError(f"variance must be one of {VARIANCES}, got {variance!r}")
    if not 0 <= eta <= 1:
        raise ValueError(f"eta must be in [0, 1] (the paper's η), got {eta}")
    alphas = alphas_cumprod.detach().double().cpu()  # python floats: no device sync inside the loop
    taus = list(timesteps)
    plan = []  # (i, t, α_t, α_prev, draws noise?) per model call, last τ first
    for i in reversed(range(len(taus))):
        t, t_prev = taus[i], (taus[i - 1] if i > 0 else -1)
        if t == t_prev:
            continue
        a_t, a_prev = _alpha(alphas, t), _alpha(alphas, t_prev)
        noisy = (t_prev >= 0 and a_t < a_prev) if variance == "hat" else sigma(a_t, a_prev, eta) > 0
        plan.append((i, t, a_t, a_prev, noisy))
    draw = _noise_source(x_T, generator, [t for i, t, a_t, a_prev, noisy in plan if noisy])
    x, t_batch = x_T, torch.empty(x_T.shape[0], dtype=torch.long, device=x_T.device)
    for i, t, a_t, a_prev, noisy in plan:
        eps = model(x, t_batch.fill_(t))
        noise = (lambda: draw(t)) if noisy else None
        if variance == "hat":
            x, x0 = hat_step(x, eps, a_t, a_prev, noise, last=i == 0)
        elif clip_x0:
            x, x0 = ddim_step(x, eps, a_t, a_prev, eta, noise, clip_x0=True)
        else:
            x0 = predict_x0(x, eps, a_t) if callback is not None else None
            x = _eta_update(x, eps, a_t, a_prev, eta, noise)
        if callback is not None:
            callback(i, t, x, x0)
    return x


@torch.no_grad()
def encode(model: Model, x_0: torch.Tensor, alphas_cumprod: torch.Tensor,
           timesteps: Sequence[int]) -> torch.Tensor:
    """The η = 0 ODE run forwards (paper §5.4): x_0 → x_{τ_S}; ε̂ is taken at the current point."""
    alphas = alphas_cumprod.detach().double().cpu()
    taus = list(timesteps)
    x, t_batch = x_0, torch.empty(x_0.shape[0], dtype=torch.long, device=x_0.device)
    for i, t_next in enumerate(taus):
        t = taus[i - 1] if i > 0 else -1
        if t == t_next:
            continue
        a_t, a_next = _alpha(alphas, t), _alpha(alphas, t_next)
        eps = model(x, t_batch.fill_(max(t, 0)))
        x = math.sqrt(a_next) * predict_x0(x, eps, a_t) + math.sqrt(1 - a_next) * eps
    return x


def slerp(z0: torch.Tensor, z1: torch.Tensor, alpha: float) -> torch.Tensor:
    """Spherical interpolation between x_T's, per sample (paper App. D.5)."""
    a, b = z0.flatten(1).double(), z1.flatten(1).double()
    cos = (a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1))
    theta = torch.arccos(cos.clamp(-1, 1))[:, None]
    s = torch.sin(theta).clamp_min(1e-12)
    out = torch.sin((1 - alpha) * theta) / s * a + torch.sin(alpha * theta) / s * b
    return out.to(z0.dtype).view_as(z0)
