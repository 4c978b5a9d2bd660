"""The sampler axis on numbers: NFE per formula, diffusers' DDIM against ours (and its fixed-stride caveat),
convergence on a model with a known answer, and per-sample noise for the stochastic sampler."""
import math

import pytest
import torch
from torch import nn

from ddim_bench.sampling import ddim as D
from ddim_bench.sampling.cost import CallCounter, flops_per_call
from ddim_bench.sampling.noise import SampleNoise
from ddim_bench.sampling.samplers import SAMPLERS, effective_config, run_sampler

T = 1000
ALPHAS = D.alphas_cumprod(T, "linear")
MU, SD = 0.3, 0.5  # Gaussian data x0 ~ N(MU, SD² I)


class GaussianEps(nn.Module):
    """The exact ε for Gaussian data: √(1−ᾱ)(x − √ᾱ μ)/(ᾱ s² + 1 − ᾱ)."""

    def __init__(self, alphas):
        super().__init__()
        self.register_buffer("a", alphas.double())

    def forward(self, x, t):
        a = self.a[t].to(x.dtype).view(-1, *([1] * (x.dim() - 1)))
        return (1 - a).sqrt() * (x - a.sqrt() * MU) / (a * SD ** 2 + 1 - a)


def _var(a):
    return a * SD ** 2 + 1 - a


def ode_state(x_start, a_start, a):
    """The probability-flow ODE from ᾱ = a_start to ᾱ = a: the standardised z is constant along it."""
    z = (x_start - math.sqrt(a_start) * MU) / math.sqrt(_var(a_start))
    return math.sqrt(a) * MU + math.sqrt(_var(a)) * z


def denoised(x, a):
    """x̂0 = (x − √(1−ᾱ) ε)/√ᾱ with the exact ε."""
    return MU + math.sqrt(a) * SD ** 2 * (x - math.sqrt(a) * MU) / _var(a)


class TinyNet(nn.Module):
    """A random small ε-network (conv, time embedding)."""

    def __init__(self, seed=0):
        super().__init__()
        torch.manual_seed(seed)
        self.c1, self.c2 = nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(8, 3, 3, padding=1)
        self.emb = nn.Embedding(T, 8)

    def forward(self, x, t):
        return self.c2(torch.tanh(self.c1(x) + self.emb(t)[:, :, None, None]))


def _x_T(n, shape=(3, 4, 4), seed=0, dtype=torch.float64):
    return torch.randn(n, *shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def _gens(indices, base=100):
    return [torch.Generator().manual_seed(base + i) for i in indices]


def _rel(a, b):
    return ((a - b).norm() / b.norm()).item()


# ---- cost -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", list(SAMPLERS))
def test_measured_nfe_is_the_formula(name):
    spec = SAMPLERS[name]
    model = CallCounter(GaussianEps(ALPHAS))
    x = _x_T(2)
    for skip in spec.skips:
        for S in (5, 10, 20):
            model.reset()
            run_sampler(name, model, x, ALPHAS, S, skip=skip, generator=_gens(range(2)))
            assert model.calls == spec.nfe(S), (skip, S)
            assert model.rows == 2 * model.calls
    assert {n: SAMPLERS[n].nfe(10) for n in ("ddim", "pndm", "plms", "heun", "dpmpp_3m")} == {
        "ddim": 10, "pndm": 19, "plms": 11, "heun": 19, "dpmpp_3m": 10}


@pytest.mark.parametrize("name", ["ddim", "dpmpp_2m", "unipc", "euler", "heun"])
def test_repeated_quad_timesteps_cost_nothing(name):
    taus = D.timesteps(T, 50, "quad")
    assert D.model_calls(taus) < 50  # quad repeats τ near 0 at S = 50
    model = CallCounter(GaussianEps(ALPHAS))
    run_sampler(name, model, _x_T(1), ALPHAS, 50, skip="quad")
    calls = D.model_calls(taus)
    assert model.calls == (2 * calls - 1 if name == "heun" else calls)


def test_flops_per_call_counts_the_convolutions_per_image():
    per_image = 2 * (3 * 9) * 8 * 64 + 2 * (8 * 9) * 3 * 64  # 2 FLOPs per multiply-add, two 3x3 convs on 8x8
    assert flops_per_call(TinyNet(), (4, 3, 8, 8), "cpu") == per_image == 55296
    assert flops_per_call(CallCounter(TinyNet()), (1, 3, 8, 8), "cpu") == per_image


# ---- diffusers' DDIM against ours -----------------------------------------------------------------

@pytest.mark.parametrize("schedule", ["linear", "cosine"])
@pytest.mark.parametrize("S", [10, 50])
@pytest.mark.parametrize("clip_x0", [False, True])
def test_diffusers_ddim_equals_ours_on_uniform_spacing(schedule, S, clip_x0):
    alphas = D.alphas_cumprod(T, schedule)
    model, x = TinyNet(), _x_T(4, (3, 8, 8), dtype=torch.float32)
    ours = run_sampler("ddim", model, x, alphas, S, skip="uniform", clip_x0=clip_x0)
    theirs = run_sampler("ddim_diffusers", model, x, alphas, S, skip="uniform", clip_x0=clip_x0)
    assert _rel(theirs, ours) < 1e-5


@pytest.mark.parametrize("noise", ["generators", "sample_noise"])
def test_diffusers_ddim_equals_ours_at_eta_one_with_the_same_noise(noise):
    model, x = TinyNet(), _x_T(3, (3, 8, 8), dtype=torch.float32)

    def gen():
        return _gens(range(3)) if noise == "generators" else SampleNoise(5, [0, 1, 2], (3, 8, 8))
    ours = run_sampler("ddim", model, x, ALPHAS, 20, eta=1.0, generator=gen())
    theirs = run_sampler("ddim_diffusers", model, x, ALPHAS, 20, eta=1.0, generator=gen())
    assert _rel(theirs, ours) < 1e-5


def _by_hand(model, x, taus, prev_of):
    """x_prev = √α_prev x̂0 + √(1 − α_prev) ε (η = 0), α_prev = ᾱ[prev_of(i)] or 1 below 0."""
    t_batch = torch.empty(x.shape[0], dtype=torch.long)
    for i in reversed(range(len(taus))):
        t, p = taus[i], prev_of(i)
        a, a_prev = float(ALPHAS[t]), (float(ALPHAS[p]) if p >= 0 else 1.0)
        eps = model(x, t_batch.fill_(t))
        x0 = (x - math.sqrt(1 - a) * eps) / math.sqrt(a)
        x = math.sqrt(a_prev) * x0 + math.sqrt(1 - a_prev) * eps
    return x


@pytest.mark.parametrize("skip,S,min_rel", [("linspace", 10, 1e-2), ("trailing", 6, 1e-3)])
def test_diffusers_ddim_reads_the_wrong_alpha_off_the_leading_grid(skip, S, min_rel):
    """diffusers' DDIMScheduler.step takes the previous timestep as t − T // S (issues #12633, #11347)."""
    model, x = TinyNet().double(), _x_T(4, (3, 8, 8))
    taus = D.timesteps(T, S, skip)
    assert sorted({b - a for a, b in zip(taus, taus[1:])}) != [T // S]  # not a fixed stride of T // S
    ours = run_sampler("ddim", model, x, ALPHAS, S, skip=skip)
    theirs = run_sampler("ddim_diffusers", model, x, ALPHAS, S, skip=skip)
    paper = _by_hand(model, x, taus, lambda i: taus[i - 1] if i > 0 else -1)
    stride = _by_hand(model, x, taus, lambda i: taus[i] - T // S)
    assert _rel(ours, paper) < 1e-12  # ours is the paper's update at the actual previous τ
    assert _rel(theirs, stride) < 1e-6  # theirs is the fixed-stride update
    assert _rel(theirs, ours) > min_rel  # and the two differ


# ---- convergence on Gaussian data ------------------------------------------------------------------

# sampler -> (skip that ends at τ = 0 or is the only one it has, lower bound on the fitted order)
CONVERGENCE = {
    "ddim": ("quad", 0.9), "ddim_diffusers": ("uniform", 0.9), "euler": ("quad", 0.9),
    # dpmpp_3m: its last two steps are of order 2 and 1 at every S (step_orders), and quad's final λ-steps
    # (τ = 2 → 1 → 0) do not shrink with S, so its fitted order flattens at large S (2.3 measured, 2.6 before).
    "heun": ("quad", 1.8), "dpmpp_2m": ("quad", 1.8), "unipc": ("quad", 2.3), "dpmpp_3m": ("quad", 2.2),
    "pndm": ("uniform", 1.1), "plms": ("uniform", 1.0), "deis": ("trailing", 1.1),
}


def test_every_deterministic_sampler_has_a_convergence_check():
    assert set(CONVERGENCE) == {n for n, s in SAMPLERS.items() if not s.stochastic}


def _fitted_order(nfes, errs):
    lx, ly = [math.log(n) for n in nfes], [math.log(e) for e in errs]
    mx, my = sum(lx) / len(lx), sum(ly) / len(ly)
    return -sum((a - mx) * (b - my) for a, b in zip(lx, ly)) / sum((a - mx) ** 2 for a in lx)


@pytest.mark.parametrize("name", list(CONVERGENCE))
def test_error_falls_with_nfe_at_the_solvers_order(name):
    """Error against the exact answer falls as NFE^-p with p at least the bound for the solver's order.

    All of these end with a denoising jump from the last τ to ᾱ = 1 (DEIS stops at ᾱ_0 instead), whose
    error stays as NFE grows; so the reference is the exact ODE state at the last τ, denoised with the
    exact ε (x̂0) — the limit of a sampler that solves the ODE on the grid exactly.  On grids ending at
    τ = 0 it is within 2e-4 of the true x_0, which is checked at the largest S.
    """
    spec, (skip, bound) = SAMPLERS[name], CONVERGENCE[name]
    model, x_T = CallCounter(GaussianEps(ALPHAS)), _x_T(16)
    nfes, errs = [], []
    for S in (16, 32, 64, 128):
        taus = D.timesteps(T, S, skip)
        model.reset()
        x = run_sampler(name, model, x_T, ALPHAS, S, skip=skip)
        a_start, a_last = float(ALPHAS[taus[-1]]), float(ALPHAS[taus[0]])
        if spec.final_alpha_one:
            ref = denoised(ode_state(x_T, a_start, a_last), a_last)
        else:
            ref = ode_state(x_T, a_start, float(ALPHAS[0]))
        nfes.append(model.calls)
        errs.append((x - ref).pow(2).mean().sqrt().item())
    order = _fitted_order(nfes, errs)
    assert order >= bound, (nfes, errs, order)
    assert errs[-1] < errs[0] / 4
    exact_x0 = ode_state(x_T, a_start, 1.0)  # the probability-flow ODE's own x_0
    assert (x - exact_x0).pow(2).mean().sqrt().item() < errs[-1] + 2e-4


@pytest.mark.parametrize("skip", ["uniform", "quad", "trailing", "linspace"])
def test_euler_is_our_ddim_at_eta_zero(skip):
    model, x = GaussianEps(ALPHAS), _x_T(4)
    ours = run_sampler("ddim", model, x, ALPHAS, 12, skip=skip)
    assert _rel(run_sampler("euler", model, x, ALPHAS, 12, skip=skip), ours) < 1e-6


# ---- the final steps: one rule at every S ---------------------------------------------------------

def _orders_at(name, S, skip="trailing"):
    """Run sampler ``name`` and read the order of each step off the diffusers update it called."""
    import diffusers as df
    calls = []
    spies = {df.DPMSolverMultistepScheduler: ("dpm_solver_first_order_update",
                                              "multistep_dpm_solver_second_order_update",
                                              "multistep_dpm_solver_third_order_update"),
             df.DEISMultistepScheduler: ("deis_first_order_update", "multistep_deis_second_order_update",
                                         "multistep_deis_third_order_update")}
    mp = pytest.MonkeyPatch()
    for cls, methods in spies.items():
        for order, m in enumerate(methods, 1):
            real = getattr(cls, m)
            mp.setattr(cls, m, lambda self, *a, _r=real, _o=order, **k: calls.append(_o) or _r(self, *a, **k))
    real_p = df.UniPCMultistepScheduler.multistep_uni_p_bh_update
    mp.setattr(df.UniPCMultistepScheduler, "multistep_uni_p_bh_update",
               lambda self, *a, **k: calls.append(k["order"]) or real_p(self, *a, **k))
    try:
        out = run_sampler(name, GaussianEps(ALPHAS), _x_T(2), ALPHAS, S, skip=skip)
    finally:
        mp.undo()
    return calls, out


# The documented orders: warm-up from 1, then the solver's order, then down to 1 over the last steps, at every S.
DOCUMENTED_ORDERS = {
    ("dpmpp_2m", 10): [1] + [2] * 8 + [1], ("dpmpp_2m", 20): [1] + [2] * 18 + [1],
    ("dpmpp_3m", 10): [1, 2] + [3] * 6 + [2, 1], ("dpmpp_3m", 20): [1, 2] + [3] * 16 + [2, 1],
    ("unipc", 10): [1] + [2] * 8 + [1], ("unipc", 20): [1] + [2] * 18 + [1],
    ("deis", 10): [1] + [2] * 8 + [1], ("deis", 20): [1] + [2] * 18 + [1],
}


@pytest.mark.parametrize("name,S", list(DOCUMENTED_ORDERS))
def test_each_step_runs_at_the_documented_order_at_10_and_20_steps(name, S):
    measured, _ = _orders_at(name, S)
    assert measured == DOCUMENTED_ORDERS[name, S]
    assert effective_config(name, ALPHAS, S, "trailing")["orders"] == measured  # what the record says


def test_diffusers_own_rule_switches_at_15_steps_and_ours_does_not():
    """diffusers lowers DPM-Solver++(3M)'s second-to-last step only below 15 steps: run as configured without the
    per-step cap, step 19 of 20 is third order; below 15 steps ours equals diffusers' own run bit for bit."""
    from ddim_bench.sampling import diffusers_adapters as A
    x = _x_T(2)
    for S, own_second_to_last in ((10, 2), (20, 3)):
        setup = A.SETUPS["dpmpp_3m"](ALPHAS, S, "uniform")
        orders = []
        real = type(setup.scheduler).multistep_dpm_solver_third_order_update
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(type(setup.scheduler), "multistep_dpm_solver_third_order_update",
                       lambda self, *a, **k: orders.append(self.step_index) or real(self, *a, **k))
            theirs = A._run(setup.scheduler, GaussianEps(ALPHAS), x)
        assert (S - 2 in orders) == (own_second_to_last == 3)
        ours = run_sampler("dpmpp_3m", GaussianEps(ALPHAS), x, ALPHAS, S, skip="uniform")
        assert torch.equal(ours, theirs) == (S < 15)


def test_effective_config_names_every_switch():
    cfg = effective_config("dpmpp_3m", ALPHAS, 20, "uniform")
    assert cfg["class"] == "DPMSolverMultistepScheduler" and cfg["solver_order"] == 3
    assert cfg["lower_order_final"] is True and cfg["euler_at_final"] is False
    assert cfg["final_sigmas_type"] == "zero" and cfg["final_sigma"] == 0.0 and cfg["skip"] == "uniform"
    assert cfg["timesteps"] == list(range(950, -1, -50)) and "trained_betas" not in cfg
    heun = effective_config("heun", ALPHAS, 5, "uniform")
    assert len(heun["timesteps"]) == SAMPLERS["heun"].nfe(5) and heun["timesteps"][-2:] == [0, 0]
    deis = effective_config("deis", ALPHAS, 10, "trailing")
    sigma_0 = math.sqrt((1 - ALPHAS[0].item()) / ALPHAS[0].item())
    assert deis["final_sigma"] == pytest.approx(sigma_0, rel=1e-3)  # DEIS stops at σ of t = 0 (float32)
    assert effective_config("ddim", ALPHAS, 4, "uniform")["timesteps"] == [750, 500, 250, 0]


# ---- the stochastic sampler ------------------------------------------------------------------------

@pytest.mark.parametrize("skip", ["uniform", "quad", "trailing", "linspace"])
def test_euler_ancestral_is_our_ddim_at_eta_one_with_the_same_noise(skip):
    model, x = TinyNet().double(), _x_T(3, (3, 8, 8))
    ours = run_sampler("ddim", model, x, ALPHAS, 15, skip=skip, eta=1.0, generator=_gens(range(3)))
    theirs = run_sampler("euler_a", model, x, ALPHAS, 15, skip=skip, generator=_gens(range(3)))
    assert _rel(theirs, ours) < 1e-5


@pytest.mark.parametrize("net", ["gaussian", "conv"])
@pytest.mark.parametrize("noise", ["generators", "sample_noise"])
def test_euler_ancestral_sample_does_not_depend_on_batch_size(net, noise):
    """Row i's noise comes from sample i's generator (or SampleNoise stream) alone: batch 4 and batch 1
    agree — bit for bit with an element-wise model, to float32 rounding with a conv net (whose kernels may
    change with batch size)."""
    if net == "gaussian":
        model, x = GaussianEps(ALPHAS), _x_T(4, (3, 8, 8))
    else:
        model, x = TinyNet(), _x_T(4, (3, 8, 8), dtype=torch.float32)

    def gen(indices, seed=3):
        return _gens(indices, base=seed) if noise == "generators" else SampleNoise(seed, indices, (3, 8, 8))
    batch = run_sampler("euler_a", model, x, ALPHAS, 10, generator=gen(range(4)))
    for i in range(4):
        alone = run_sampler("euler_a", model, x[i:i + 1], ALPHAS, 10, generator=gen([i]))
        if net == "gaussian":
            assert torch.equal(alone[0], batch[i])
        else:
            assert _rel(alone[0], batch[i]) < 1e-6
    other = run_sampler("euler_a", model, x, ALPHAS, 10, generator=gen(range(4), seed=7))
    assert _rel(other, batch) > 1e-3  # the generators do drive the noise


def test_euler_ancestral_moments_approach_the_data_moments():
    """Mean μ; std below s by a deficit that shrinks about as 1/S (first order in the weak sense)."""
    model, x = GaussianEps(ALPHAS), _x_T(4000, (4,))
    stds = {}
    for S in (25, 50, 100):
        out = run_sampler("euler_a", model, x, ALPHAS, S, generator=torch.Generator().manual_seed(S))
        assert out.mean().item() == pytest.approx(MU, abs=0.015)  # 4 standard errors of 16000 values
        stds[S] = out.std().item()
    deficits = [SD - stds[S] for S in (25, 50, 100)]
    assert all(d > 0 for d in deficits) and deficits[2] < 0.045
    assert deficits[0] / deficits[1] > 1.3 and deficits[1] / deficits[2] > 1.3


# ---- bad arguments ---------------------------------------------------------------------------------

@pytest.mark.parametrize("kwargs,words", [
    (dict(name="dpm"), ["dpm", "ddim", "euler_a"]),
    (dict(name="pndm", skip="trailing"), ["pndm", "trailing", "uniform"]),
    (dict(name="ddim", steps=0), ["steps", "0"]),
    (dict(name="pndm", steps=3), ["pndm", "4"]),
    (dict(name="deis", skip="uniform"), ["deis", "uniform", "trailing"]),
    (dict(name="heun", eta=0.5), ["heun", "eta"]),
    (dict(name="ddim", generator=_gens(range(3))), ["3", "2"]),
])
def test_bad_arguments_raise_one_clear_line(kwargs, words):
    args = dict(name="ddim", steps=10, skip=None, eta=0.0, generator=None) | kwargs
    with pytest.raises(ValueError) as err:
        run_sampler(args["name"], GaussianEps(ALPHAS), _x_T(2), ALPHAS, args["steps"], skip=args["skip"],
                    eta=args["eta"], generator=args["generator"])
    msg = str(err.value)
    assert "\n" not in msg and all(w in msg for w in words), msg


def test_a_sweep_cell_passes_the_options_its_sampler_uses():
    """``ddim_diffusers`` honours η: a cell with η = 1 is stochastic, reproducible per seed block and differs from
    η = 0; before, the sweep dropped η for every sampler but ours and stored identical samples under two keys."""
    from ddim_bench.sampling.cell import Cell
    from ddim_bench.sampling.generate import generate
    model = GaussianEps(ALPHAS).float()

    def images(eta, seed=0):
        out = []
        generate(model, ALPHAS, Cell(10, eta, sampler="ddim_diffusers"), [0, 1, 2], (3, 4, 4), seed, 3, "cpu",
                 lambda im, idx: out.append(im))
        return torch.cat(out).float()

    assert Cell(10, 1.0, sampler="ddim_diffusers").row != Cell(10, 0.0, sampler="ddim_diffusers").row
    assert not Cell(10, 1.0, sampler="ddim_diffusers").deterministic
    assert torch.equal(images(1.0), images(1.0)) and not torch.equal(images(1.0), images(0.0))
    assert not torch.equal(images(1.0), images(1.0, seed=1))
