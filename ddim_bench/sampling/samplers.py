"""The sampler axis: DDIM (ours, the reference) against the samplers that followed it.

One registry, ``SAMPLERS``, and one entry call, ``run_sampler``.  Every sampler is a flat function
``(model, x_T, alphas_cumprod, steps, generator, **options) -> x_0`` (k-diffusion's style); ``model(x, t)``
is our ε-model with integer t ∈ [0, T), x_T is N(0, I), and x_0 is returned in the same (VP) variable, so
all samplers in a seed block start from the same x_T.

``SamplerSpec.nfe(S)`` is the formula's count of network calls for S steps on S distinct τ ("quad" repeats
τ at S ≥ 30 for T = 1000; a repeated τ costs nothing, see ``ddim.model_calls``).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from ddim_bench.sampling import ddim as _ddim
from ddim_bench.sampling import diffusers_adapters as _d
from ddim_bench.sampling.noise import SampleNoise

ALL_SPACINGS = _ddim.SKIPS  # uniform (diffusers' "leading"), quad, trailing, linspace
DDIM_OPTIONS = ("eta", "variance", "clip_x0")  # run_sampler's options; their defaults are η = 0, "eta", False
_DEFAULTS = {"eta": 0.0, "variance": "eta", "clip_x0": False}


@dataclass(frozen=True)
class SamplerSpec:
    name: str
    fn: Callable  # (model, x_T, alphas_cumprod, steps, generator, **options) -> x_0
    nfe: Callable[[int], int]  # predicted network calls for S steps
    skips: tuple[str, ...]  # the skips it runs exactly on (names from ddim.SKIPS)
    default_skip: str
    stochastic: bool  # draws noise with its default options
    order: int  # nominal order of the ODE solver (global error ~ NFE^-order); 0 for a stochastic one
    options: tuple[str, ...] = ()  # which of DDIM_OPTIONS it honours; others must stay at their defaults
    min_steps: int = 1
    final_alpha_one: bool = True  # False: x is returned at the noise level of t = 0 (ᾱ_0), not at ᾱ = 1

    def __post_init__(self):
        if self.default_skip not in self.skips:
            raise ValueError(f"{self.name}: default skip {self.default_skip!r} not in {self.skips}")


def ddim(model, x_T, alphas_cumprod, steps, generator, *, skip="uniform", eta=0.0, variance="eta",
         clip_x0=False):
    """Our DDIM (``ddim.sample``) on ``ddim.timesteps(T, S, skip)``: η and σ̂ as in the paper."""
    taus = _ddim.timesteps(len(alphas_cumprod), steps, skip)
    return _ddim.sample(model, x_T, alphas_cumprod, taus, eta=eta, variance=variance, clip_x0=clip_x0,
                        generator=generator)


def _one_per_step(S: int) -> int:
    return S


def _pndm_calls(S: int) -> int:
    return S + 9  # 3 Runge-Kutta warm-up steps at 4 calls each, then 1 call per step


def _plms_calls(S: int) -> int:
    return S + 1 if S > 1 else 1  # the 2nd-order warm-up step calls twice


def _heun_calls(S: int) -> int:
    return 2 * S - 1  # 2 calls per step, but the last step (to σ = 0) is an Euler step


def _spec(name, fn, *, skips, default, order, nfe=_one_per_step, stochastic=False, **extra) -> SamplerSpec:
    return SamplerSpec(name=name, fn=fn, nfe=nfe, skips=tuple(skips), default_skip=default,
                       stochastic=stochastic, order=order, **extra)


SAMPLERS: dict[str, SamplerSpec] = {s.name: s for s in (
    _spec("ddim", ddim, skips=ALL_SPACINGS, default="uniform", order=1, options=DDIM_OPTIONS),
    _spec("ddim_diffusers", _d.ddim_diffusers, skips=("uniform", "trailing", "linspace"), default="uniform",
          order=1, options=("eta", "clip_x0")),  # right on "uniform" only: see diffusers_adapters.ddim_diffusers
    _spec("pndm", _d.pndm, skips=("uniform",), default="uniform", order=4, nfe=_pndm_calls, min_steps=4),
    _spec("plms", _d.plms, skips=("uniform",), default="uniform", order=4, nfe=_plms_calls),
    _spec("dpmpp_2m", _d.dpmpp_2m, skips=ALL_SPACINGS, default="trailing", order=2),
    _spec("dpmpp_3m", _d.dpmpp_3m, skips=ALL_SPACINGS, default="trailing", order=3),
    _spec("unipc", _d.unipc, skips=ALL_SPACINGS, default="trailing", order=3),  # UniPC-2: the corrector adds 1
    _spec("deis", _d.deis, skips=("trailing",), default="trailing", order=2, final_alpha_one=False),
    _spec("euler", _d.euler, skips=ALL_SPACINGS, default="trailing", order=1),
    _spec("heun", _d.heun, skips=ALL_SPACINGS, default="trailing", order=2, nfe=_heun_calls),
    _spec("euler_a", _d.euler_a, skips=ALL_SPACINGS, default="trailing", order=0, stochastic=True),
)}


def get_spec(name: str) -> SamplerSpec:
    if name not in SAMPLERS:
        raise ValueError(f"unknown sampler {name!r}; choose one of {', '.join(SAMPLERS)}")
    return SAMPLERS[name]


def check_args(name: str, num_timesteps: int, steps, skip: str | None = None, **options) -> SamplerSpec:
    """Validate a sampler call; returns its spec.  One ValueError line naming the bad value and the choices."""
    spec = get_spec(name)
    skip = spec.default_skip if skip is None else skip
    if skip not in spec.skips:
        raise ValueError(f"sampler {name!r} does not support skip {skip!r}; choose one of {spec.skips}")
    if isinstance(steps, bool) or not isinstance(steps, int) or not spec.min_steps <= steps <= num_timesteps:
        raise ValueError(f"steps for sampler {name!r} must be an integer in [{spec.min_steps}, {num_timesteps}], "
                         f"got {steps!r}")
    for key, value in options.items():
        if key not in _DEFAULTS:
            raise ValueError(f"unknown sampler option {key!r}; choose one of {DDIM_OPTIONS}")
        if key not in spec.options and value != _DEFAULTS[key]:
            raise ValueError(f"sampler {name!r} has no option {key}={value!r}; it honours {spec.options or 'none'}")
    return spec


def effective_config(name: str, alphas_cumprod: torch.Tensor, steps: int, skip: str | None = None,
                     clip_x0: bool = False) -> dict:
    """What sampler ``name`` runs for S = ``steps`` (see ``diffusers_adapters.effective_config``): for a diffusers
    scheduler its class and full config, the timesteps it calls the model at and its per-step orders; for ours
    the τ it calls the model at (descending, a repeated τ once)."""
    spec = get_spec(name)
    skip = spec.default_skip if skip is None else skip
    if name == "ddim":
        taus = _ddim.timesteps(len(alphas_cumprod), steps, skip)[::-1]
        return {"class": "ddim (ours)", "skip": skip, "order": 1,
                "timesteps": [int(t) for i, t in enumerate(taus) if i == 0 or t != taus[i - 1]]}
    extra = {"clip_x0": clip_x0} if "clip_x0" in spec.options else {}
    return {"order": spec.order, **_d.effective_config(name, alphas_cumprod, steps, skip, **extra)}


def run_sampler(name: str, model, x_T: torch.Tensor, alphas_cumprod: torch.Tensor, steps: int, *,
                skip: str | None = None, eta: float = 0.0, variance: str = "eta", clip_x0: bool = False,
                generator=None) -> torch.Tensor:
    """x_0 from ``x_T`` ~ N(0, I) with sampler ``name`` in ``steps`` steps on ``skip`` (None: its default).

    ``generator``: None, one ``torch.Generator``, a list with one per batch row, or a ``noise.SampleNoise``
    (the noise of row i then depends on its own generator or stream only).  Deterministic samplers ignore it.
    """
    options = {"eta": eta, "variance": variance, "clip_x0": clip_x0}
    spec = check_args(name, len(alphas_cumprod), steps, skip, **options)
    if not 0 <= eta <= 1:
        raise ValueError(f"eta must be in [0, 1] (the paper's η), got {eta}")
    if isinstance(generator, (list, tuple, SampleNoise)) and len(generator) != x_T.shape[0]:
        raise ValueError(f"generator has {len(generator)} samples for a batch of {x_T.shape[0]}")
    kwargs = {k: options[k] for k in spec.options}
    return spec.fn(model, x_T, alphas_cumprod, steps, generator,
                   skip=spec.default_skip if skip is None else skip, **kwargs)
