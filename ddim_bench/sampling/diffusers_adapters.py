"""The samplers that followed DDIM, run through diffusers' schedulers on our discrete ε-model.

Every adapter has one signature, ``(model, x_T, alphas_cumprod, steps, generator, **options) -> x_0``,
and one loop (``_run``): ask the scheduler for the model input, call ``model(x, t)`` at an integer t, step.
Each scheduler is built from the checkpoint's own ᾱ (``trained_betas``), T = len(ᾱ), ε-prediction.

Grids.  ``skip`` names our grids (``ddim.timesteps``).  An adapter accepts a skip only where the
model is evaluated exactly on ``timesteps(T, S, skip)`` (repeated τ dropped): DPM-Solver++, Euler and
Heun take the grid as custom ``timesteps``, UniPC and Euler-a get it the same way by hand (``_set_grid``);
DDIM, PNDM and DEIS build their own grid from ``timestep_spacing`` and we check it equals ours
(``_check_grid``).  PNDM's and diffusers-DDIM's steps assume the fixed stride T // S, and DEIS cannot end
at σ = 0, so those keep diffusers' own grids.

x_T.  Our x_T is N(0, I), the VP variable.  The σ-space schedulers (Euler, Heun, Euler-a) integrate
x/√ᾱ, so x_T is multiplied by √(1 + σ_max²) = 1/√ᾱ at the first τ.  That is diffusers' ``init_noise_sigma``
under "leading"; under "linspace"/"trailing" diffusers uses σ_max instead (relative error 1/(2σ_max²),
about 2e-5 at t = 999 for linear β), so we use the exact factor.

Final steps.  The multistep schedulers (DPM-Solver++, UniPC, DEIS) run step i of n at order min(p, i + 1, n − i)
at every n (``step_orders``), where diffusers' own rule changes below 15 steps.  ``effective_config`` says what a
run does (class, full config, visited timesteps, per-step orders); the sweep keeps it in each record and its key.

diffusers is imported inside each adapter: reading the registry does not pay for importing it.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from functools import partial

import torch

from ddim_bench.sampling.ddim import timesteps as ddim_timesteps
from ddim_bench.sampling.noise import SampleNoise, sample_key

# our skip name -> diffusers' timestep_spacing, where the two grids coincide ("uniform" is "leading")
DIFFUSERS_SPACING = {"uniform": "leading", "trailing": "trailing", "linspace": "linspace"}


def betas_from_alphas_cumprod(alphas_cumprod: torch.Tensor) -> list[float]:
    """β_t = 1 − ᾱ_t/ᾱ_{t−1} (ᾱ_{−1} = 1): the schedule that reproduces the given ᾱ, cosine included."""
    a = alphas_cumprod.detach().double().cpu()
    prev = torch.cat([a.new_ones(1), a[:-1]])
    return (1 - a / prev).tolist()


def _config(alphas_cumprod: torch.Tensor, **extra) -> dict:
    return dict(num_train_timesteps=len(alphas_cumprod), trained_betas=betas_from_alphas_cumprod(alphas_cumprod),
                prediction_type="epsilon", **extra)


def _grid(alphas_cumprod, steps: int, skip: str) -> list[int]:
    """Our τ for (T, S, skip), increasing, with repeated entries dropped (quad repeats τ at large S)."""
    return sorted(set(ddim_timesteps(len(alphas_cumprod), steps, skip)))


def _check_grid(scheduler_timesteps, expected: list[int], who: str) -> None:
    got = sorted({int(round(float(t))) for t in scheduler_timesteps})
    if got != expected:
        raise RuntimeError(f"{who}: diffusers' grid {got} is not our grid {expected}")


def _int_t(t) -> int:
    v = float(t)
    if v != round(v):
        raise RuntimeError(f"a scheduler asked for the non-integer timestep {v}; our model is discrete")
    return int(round(v))


def step_orders(n: int, order: int) -> list[int]:
    """The order of each of the n steps of a multistep solver of ``order``: min(order, i + 1, n − i).

    The first steps warm up (step i has only i earlier model outputs), and the last ones come down the same way, at
    every n.  diffusers lowers the final steps only below 15 steps (``lower_order_final`` in DPMSolverMultistep
    and DEISMultistep), so DPM-Solver++(3M) and DEIS would change method between S = 10 and S = 20; with this rule
    their final steps are the same at every S (and equal diffusers' own below 15 steps; UniPC's at every S).
    """
    return [min(order, i + 1, n - i) for i in range(n)]


@torch.no_grad()
def _run(scheduler, model, x_T: torch.Tensor, x_scale: float = 1.0, step_kwargs=None, orders=None) -> torch.Tensor:
    """The diffusers sampling loop for an ε-model called at integer t; ``x_scale`` maps our x_T in.
    ``step_kwargs(t)`` gives extra arguments for ``scheduler.step`` at timestep t (noise, generator).
    ``orders[i]`` caps the order of step i of a multistep scheduler through its warm-up counter
    (``lower_order_nums``: a step uses at most that many earlier outputs), which is how :func:`step_orders`
    is applied."""
    x = x_T * x_scale
    t_batch = torch.empty(x_T.shape[0], dtype=torch.long, device=x_T.device)
    for i, t in enumerate(scheduler.timesteps):
        t_int = _int_t(t)
        eps = model(scheduler.scale_model_input(x, t), t_batch.fill_(t_int))
        if orders is not None:
            scheduler.lower_order_nums = min(scheduler.lower_order_nums, orders[i] - 1)
        x = scheduler.step(eps, t, x, **(step_kwargs(t_int) if step_kwargs else {})).prev_sample
    return x


def _set_grid(sched, alphas_cumprod, grid: list[int]) -> None:
    """Put our τ on a scheduler whose ``set_timesteps`` has no ``timesteps`` argument (UniPC, Euler-a): what
    DPMSolverMultistepScheduler does with custom ``timesteps`` — t descending, σ(τ), then a final σ = 0."""
    a = alphas_cumprod.detach().double().cpu()[grid[::-1]]
    sched.set_timesteps(len(grid))  # resets the scheduler's state for a run of len(grid) steps
    sched.timesteps = torch.tensor(grid[::-1], dtype=sched.timesteps.dtype)
    sched.sigmas = torch.cat([((1 - a) / a).sqrt(), a.new_zeros(1)]).float()


def _row_generators(generator, x_T: torch.Tensor):
    """What diffusers' ``randn_tensor`` accepts: None, a generator, or a list with one per row.  A
    ``SampleNoise`` becomes one generator per sample, seeded by that sample's stream key, so sample i's noise
    still depends on (seed, i) alone."""
    if isinstance(generator, SampleNoise):
        return [torch.Generator(device=x_T.device).manual_seed(sample_key(generator.seed, i) & (2 ** 63 - 1))
                for i in generator.indices]
    return list(generator) if isinstance(generator, (list, tuple)) else generator


def _sigma_scale(alphas_cumprod, first_t: int) -> float:
    """1/√ᾱ at the first τ = √(1 + σ_max²): our N(0, I) x_T in the σ-space variable x/√ᾱ."""
    return 1.0 / math.sqrt(float(alphas_cumprod[first_t]))


@dataclass
class Setup:
    """A scheduler configured for one run: what ``_run`` needs, and what :func:`effective_config` records."""
    scheduler: object
    skip: str
    custom_grid: bool  # True: our τ were put on the scheduler (its ``timestep_spacing`` is unused)
    x_scale: float = 1.0
    orders: list[int] | None = None  # per-step orders of a multistep scheduler (``step_orders``)


# ---- VP-space schedulers -------------------------------------------------------------------------

def _ddim_setup(alphas_cumprod, steps, skip="uniform", clip_x0=False) -> Setup:
    from diffusers import DDIMScheduler

    sched = DDIMScheduler(**_config(alphas_cumprod, clip_sample=clip_x0, set_alpha_to_one=True,
                                    timestep_spacing=DIFFUSERS_SPACING[skip]))
    sched.set_timesteps(steps)
    _check_grid(sched.timesteps, _grid(alphas_cumprod, steps, skip), "ddim_diffusers")
    return Setup(sched, skip, custom_grid=False)


def ddim_diffusers(model, x_T, alphas_cumprod, steps, generator, *, skip="uniform", eta=0.0, clip_x0=False):
    """diffusers' DDIMScheduler; α at "t = −1" is 1 (``set_alpha_to_one``), as in ours.

    Its ``step`` takes the previous timestep as t − T // S, which is right only for "uniform" ("leading");
    on "linspace"/"trailing" grids it reads the wrong ᾱ (diffusers issues #12633, #11347).
    """
    sched = _ddim_setup(alphas_cumprod, steps, skip, clip_x0).scheduler
    if eta == 0:
        return _run(sched, model, x_T)
    if isinstance(generator, SampleNoise):  # the z ours draws: counter t at timestep t
        return _run(sched, model, x_T, step_kwargs=lambda t: {
            "eta": eta, "variance_noise": generator.step(t).to(device=x_T.device, dtype=x_T.dtype)})
    gen = _row_generators(generator, x_T)
    return _run(sched, model, x_T, step_kwargs=lambda t: {"eta": eta, "generator": gen})


def _pndm_setup(alphas_cumprod, steps, skip="uniform", *, skip_prk_steps: bool) -> Setup:
    from diffusers import PNDMScheduler

    sched = PNDMScheduler(**_config(alphas_cumprod, skip_prk_steps=skip_prk_steps, set_alpha_to_one=True,
                                    timestep_spacing="leading"))
    sched.set_timesteps(steps)
    # the grid it steps on: the distinct timesteps of its PLMS-only twin (PRK's half steps lie between them)
    twin = sched if skip_prk_steps else PNDMScheduler.from_config(sched.config, skip_prk_steps=True)
    twin.set_timesteps(steps)
    _check_grid(twin.timesteps, _grid(alphas_cumprod, steps, "uniform"), "pndm")
    return Setup(sched, "uniform", custom_grid=False)


def pndm(model, x_T, alphas_cumprod, steps, generator, *, skip="uniform"):
    """F-PNDM (Liu et al. 2022): 3 Runge-Kutta warm-up steps (4 calls each), then 4th-order linear multistep."""
    return _run(_pndm_setup(alphas_cumprod, steps, skip_prk_steps=False).scheduler, model, x_T)


def plms(model, x_T, alphas_cumprod, steps, generator, *, skip="uniform"):
    """PLMS as in latent diffusion: PNDM with the Runge-Kutta warm-up replaced by one 2nd-order step."""
    return _run(_pndm_setup(alphas_cumprod, steps, skip_prk_steps=True).scheduler, model, x_T)


def _dpmpp_setup(alphas_cumprod, steps, skip="trailing", *, order: int) -> Setup:
    from diffusers import DPMSolverMultistepScheduler

    sched = DPMSolverMultistepScheduler(**_config(alphas_cumprod, algorithm_type="dpmsolver++", solver_order=order,
                                                  final_sigmas_type="zero"))
    grid = _grid(alphas_cumprod, steps, skip)
    sched.set_timesteps(timesteps=grid[::-1])
    return Setup(sched, skip, custom_grid=True, orders=step_orders(len(grid), order))


def dpmpp_2m(model, x_T, alphas_cumprod, steps, generator, *, skip="trailing"):
    """DPM-Solver++(2M) (Lu et al. 2022), data prediction, ending at σ = 0; step orders ``step_orders``."""
    return _run_setup(_dpmpp_setup(alphas_cumprod, steps, skip, order=2), model, x_T)


def dpmpp_3m(model, x_T, alphas_cumprod, steps, generator, *, skip="trailing"):
    """DPM-Solver++(3M); the last two steps are of order 2 and 1 at every S (``step_orders``)."""
    return _run_setup(_dpmpp_setup(alphas_cumprod, steps, skip, order=3), model, x_T)


def _unipc_setup(alphas_cumprod, steps, skip="trailing") -> Setup:
    from diffusers import UniPCMultistepScheduler

    sched = UniPCMultistepScheduler(**_config(alphas_cumprod, solver_order=2, final_sigmas_type="zero"))
    grid = _grid(alphas_cumprod, steps, skip)
    _set_grid(sched, alphas_cumprod, grid)
    return Setup(sched, skip, custom_grid=True, orders=step_orders(len(grid), 2))


def unipc(model, x_T, alphas_cumprod, steps, generator, *, skip="trailing"):
    """UniPC (Zhao et al. 2023): B(h) = bh2, order 2, data prediction, ending at σ = 0."""
    return _run_setup(_unipc_setup(alphas_cumprod, steps, skip), model, x_T)


def _deis_setup(alphas_cumprod, steps, skip="trailing") -> Setup:
    from diffusers import DEISMultistepScheduler

    sched = DEISMultistepScheduler(**_config(alphas_cumprod, solver_order=2,
                                             timestep_spacing=DIFFUSERS_SPACING[skip]))
    sched.set_timesteps(steps)
    _check_grid(sched.timesteps, _grid(alphas_cumprod, steps, skip), "deis")
    return Setup(sched, skip, custom_grid=False, orders=step_orders(len(sched.timesteps), 2))


def deis(model, x_T, alphas_cumprod, steps, generator, *, skip="trailing"):
    """DEIS (Zhang & Chen 2023), log-ρ, order 2.  Ends at the noise level of t = 0 (ᾱ_0 < 1), not at σ = 0."""
    return _run_setup(_deis_setup(alphas_cumprod, steps, skip), model, x_T)


# ---- σ-space (Karras) schedulers -----------------------------------------------------------------

def _euler_setup(alphas_cumprod, steps, skip="trailing") -> Setup:
    from diffusers import EulerDiscreteScheduler

    grid = _grid(alphas_cumprod, steps, skip)
    sched = EulerDiscreteScheduler(**_config(alphas_cumprod, final_sigmas_type="zero"))
    sched.set_timesteps(timesteps=grid[::-1])
    return Setup(sched, skip, custom_grid=True, x_scale=_sigma_scale(alphas_cumprod, grid[-1]))


def euler(model, x_T, alphas_cumprod, steps, generator, *, skip="trailing"):
    """Euler on the probability-flow ODE in σ = √((1−ᾱ)/ᾱ) (Karras et al. 2022, Alg. 1 without churn).
    On the same grid this is our DDIM at η = 0: DDIM is Euler's method for x/√ᾱ against σ."""
    return _run_setup(_euler_setup(alphas_cumprod, steps, skip), model, x_T)


def _heun_setup(alphas_cumprod, steps, skip="trailing") -> Setup:
    from diffusers import HeunDiscreteScheduler

    grid = _grid(alphas_cumprod, steps, skip)
    sched = HeunDiscreteScheduler(**_config(alphas_cumprod))
    sched.set_timesteps(timesteps=grid[::-1])
    return Setup(sched, skip, custom_grid=True, x_scale=_sigma_scale(alphas_cumprod, grid[-1]))


def heun(model, x_T, alphas_cumprod, steps, generator, *, skip="trailing"):
    """Heun's 2nd-order method in σ; the last step (to σ = 0) is an Euler step, hence 2S − 1 calls."""
    return _run_setup(_heun_setup(alphas_cumprod, steps, skip), model, x_T)


def _euler_a_setup(alphas_cumprod, steps, skip="trailing") -> Setup:
    from diffusers import EulerAncestralDiscreteScheduler

    grid = _grid(alphas_cumprod, steps, skip)
    sched = EulerAncestralDiscreteScheduler(**_config(alphas_cumprod))
    _set_grid(sched, alphas_cumprod, grid)
    return Setup(sched, skip, custom_grid=True, x_scale=_sigma_scale(alphas_cumprod, grid[-1]))


def euler_a(model, x_T, alphas_cumprod, steps, generator, *, skip="trailing"):
    """Ancestral Euler (k-diffusion's euler_ancestral, η = 1); on the same grid and noise it is our DDIM at
    η = 1 (σ_up, σ_down give the same coefficients).  ``generator`` may be a list, one per row: diffusers'
    ``randn_tensor`` then draws row i from generator i alone, so a sample does not depend on batch size
    (a ``SampleNoise`` is turned into such a list, ``_row_generators``)."""
    gen = _row_generators(generator, x_T)
    if isinstance(gen, list) and len(gen) != x_T.shape[0]:
        raise ValueError(f"generator list has {len(gen)} entries for a batch of {x_T.shape[0]}")
    setup = _euler_a_setup(alphas_cumprod, steps, skip)
    return _run_setup(setup, model, x_T, step_kwargs=lambda t: {"generator": gen})


def _run_setup(setup: Setup, model, x_T, step_kwargs=None) -> torch.Tensor:
    return _run(setup.scheduler, model, x_T, setup.x_scale, step_kwargs, setup.orders)


SETUPS = {"ddim_diffusers": _ddim_setup, "pndm": partial(_pndm_setup, skip_prk_steps=False),
          "plms": partial(_pndm_setup, skip_prk_steps=True), "dpmpp_2m": partial(_dpmpp_setup, order=2),
          "dpmpp_3m": partial(_dpmpp_setup, order=3), "unipc": _unipc_setup, "deis": _deis_setup,
          "euler": _euler_setup, "heun": _heun_setup, "euler_a": _euler_a_setup}
# Settings that do not describe the run: the schedule (given as trained_betas, keyed by the record's own schedule)
# and diffusers' bookkeeping.
_NOT_RUN_SETTINGS = ("trained_betas", "num_train_timesteps", "beta_start", "beta_end", "beta_schedule",
                     "_use_default_values", "_class_name", "_diffusers_version")


def _plain(v):
    if isinstance(v, float) and not math.isfinite(v):
        return str(v)  # JSON has no infinity (lambda_min_clipped = -inf)
    return list(v) if isinstance(v, tuple) else v


def effective_config(name: str, alphas_cumprod, steps: int, skip: str, **options) -> dict:
    """What sampler ``name`` runs at S = ``steps`` on ``skip``: the scheduler's class and every setting of
    its config (order, ``lower_order_final``, ``final_sigmas_type``, ``euler_at_final``, …), our skip, the
    timesteps at which the model is called, in order (one call each: NFE = their number), the per-step orders of
    a multistep scheduler, the last σ it steps to, and diffusers' version.  Built by the same setup as the run."""
    import diffusers

    setup = SETUPS[name](alphas_cumprod, steps, skip, **options)
    sched = setup.scheduler
    drop = _NOT_RUN_SETTINGS + (("timestep_spacing", "steps_offset") if setup.custom_grid else ())
    out = {"class": type(sched).__name__, **{k: _plain(v) for k, v in sched.config.items() if k not in drop},
           "skip": setup.skip, "timesteps": [_int_t(t) for t in sched.timesteps], "orders": setup.orders}
    sigmas = getattr(sched, "sigmas", None)
    if sigmas is not None:
        out["final_sigma"] = float(sigmas[-1])
    if setup.x_scale != 1.0:
        out["x_T_scale"] = setup.x_scale
    out["diffusers"] = diffusers.__version__
    return out
