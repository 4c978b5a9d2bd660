"""The sampler math, checked on numbers against the paper's formulas and the reference code's conventions."""
import math

import numpy as np
import pytest
import torch

from ddim_bench.sampling import ddim as D


def test_alphas_cumprod_linear_is_cumprod_of_one_minus_linspace_betas():
    a = D.alphas_cumprod(1000)
    assert a.dtype == torch.float64 and a.shape == (1000,)
    betas = np.linspace(1e-4, 0.02, 1000, dtype=np.float64)
    np.testing.assert_allclose(a.numpy(), np.cumprod(1 - betas), rtol=1e-12)
    assert a[0].item() == pytest.approx(1 - 1e-4) and a[-1].item() == pytest.approx(4.0358e-5, rel=1e-3)


def test_cosine_schedule_is_decreasing_and_in_unit_interval():
    a = D.alphas_cumprod(1000, "cosine")
    assert (a[1:] < a[:-1]).all() and 0 < a[-1] < 1e-3 and a[0] > 0.999


@pytest.mark.parametrize("T,S", [(1000, 10), (1000, 20), (1000, 30), (1000, 100), (1000, 1000), (100, 7)])
def test_uniform_is_the_official_range_cut_to_S(T, S):
    taus = D.timesteps(T, S, "uniform")
    assert len(taus) == S and taus == list(range(0, T, T // S))[:S]


@pytest.mark.parametrize("T,S", [(1000, 10), (1000, 50), (1000, 100), (1000, 1000), (500, 37)])
def test_quad_is_the_official_int_of_squared_linspace_with_duplicates(T, S):
    expect = [int(v) for v in np.linspace(0, np.sqrt(T * 0.8), S) ** 2]
    assert D.timesteps(T, S, "quad") == expect


def test_quad_known_values_and_duplicates():
    assert D.timesteps(1000, 10, "quad") == [0, 9, 39, 88, 158, 246, 355, 483, 632, 800]
    q = D.timesteps(1000, 1000, "quad")
    assert len(q) == 1000 and len(set(q)) < 1000 and q[-1] == 800 and D.model_calls(q) == len(set(q))


@pytest.mark.parametrize("timestep_spacing,skip", [("leading", "uniform"), ("trailing", "trailing"),
                                                   ("linspace", "linspace")])
@pytest.mark.parametrize("S", [10, 20, 50, 999])
def test_skips_match_diffusers_timestep_spacings(timestep_spacing, skip, S):
    diffusers = pytest.importorskip("diffusers")
    sched = diffusers.DDIMScheduler(num_train_timesteps=1000, timestep_spacing=timestep_spacing)
    sched.set_timesteps(S)
    assert D.timesteps(1000, S, skip) == sorted(sched.timesteps.tolist())


@pytest.mark.parametrize("steps,skip,match", [(0, "uniform", "steps"), (1001, "uniform", "steps"),
                                              (10, "cubic", "skip")])
def test_bad_timestep_arguments_name_the_argument(steps, skip, match):
    with pytest.raises(ValueError, match=match):
        D.timesteps(1000, steps, skip)


def test_sigma_is_paper_eq16_and_eta1_is_ddpm_posterior_std():
    a_t, a_prev = 0.5, 0.9
    assert D.sigma(a_t, a_prev, 0.0) == 0.0
    ddpm_std = math.sqrt((1 - a_prev) / (1 - a_t) * (1 - a_t / a_prev))  # β̃ of DDPM
    assert D.sigma(a_t, a_prev, 1.0) == pytest.approx(ddpm_std)
    assert D.sigma(a_t, a_prev, 0.5) == pytest.approx(0.5 * ddpm_std)


class ConstEps:
    """ε̂(x, t) = table[t] for every pixel; counts calls."""

    def __init__(self, table):
        self.table, self.calls = table, 0

    def __call__(self, x, t):
        self.calls += 1
        return torch.stack([torch.full(x.shape[1:], self.table[int(s)], dtype=x.dtype) for s in t])


ALPHAS = torch.tensor([0.9, 0.5], dtype=torch.float64)  # T = 2: α_0 = 0.9, α_1 = 0.5, α_{-1} = 1


def test_two_step_example_eta0_by_hand():
    x = torch.full((1, 1, 1, 1), 1.0, dtype=torch.float64)
    out = D.sample(ConstEps({1: 0.2, 0: -0.1}), x, ALPHAS, [0, 1], eta=0.0)
    # step 1 -> 0
    x0 = (1.0 - math.sqrt(0.5) * 0.2) / math.sqrt(0.5)           # 1.2142135...
    x1 = math.sqrt(0.9) * x0 + math.sqrt(0.1) * 0.2              # 1.2151...
    # step 0 -> -1: α_prev = 1, so the result is x̂0
    x2 = (x1 - math.sqrt(0.1) * -0.1) / math.sqrt(0.9)
    assert out.item() == pytest.approx(x2, rel=1e-12)
    assert out.item() == pytest.approx(1.3142, abs=1e-3)


def test_two_step_example_eta1_by_hand():
    x = torch.full((1, 1, 1, 1), 1.0, dtype=torch.float64)
    out = D.sample(ConstEps({1: 0.2, 0: -0.1}), x, ALPHAS, [0, 1], eta=1.0,
                   generator=torch.Generator().manual_seed(7))
    z = torch.randn((1, 1, 1, 1), generator=torch.Generator().manual_seed(7), dtype=torch.float64).item()
    s = math.sqrt((1 - 0.9) / (1 - 0.5)) * math.sqrt(1 - 0.5 / 0.9)   # σ for 1 -> 0
    x0 = (1.0 - math.sqrt(0.5) * 0.2) / math.sqrt(0.5)
    x1 = math.sqrt(0.9) * x0 + math.sqrt(0.1 - s * s) * 0.2 + s * z
    x2 = (x1 + math.sqrt(0.1) * 0.1) / math.sqrt(0.9)                  # last step: σ = 0
    assert out.item() == pytest.approx(x2, rel=1e-12)


def test_two_step_example_sigma_hat_by_hand():
    x = torch.full((1, 1, 1, 1), 1.0, dtype=torch.float64)
    out = D.sample(ConstEps({1: -0.9, 0: 0.3}), x, ALPHAS, [0, 1], variance="hat",
                   generator=torch.Generator().manual_seed(3))
    z = torch.randn((1, 1, 1, 1), generator=torch.Generator().manual_seed(3), dtype=torch.float64).item()
    beta = 1 - 0.5 / 0.9
    x0 = min((1.0 + math.sqrt(0.5) * 0.9) / math.sqrt(0.5), 1.0)      # 2.31 clipped to 1
    mean = (math.sqrt(0.9) * beta * x0 + math.sqrt(1 - beta) * (1 - 0.9) * 1.0) / (1 - 0.5)
    x1 = mean + math.sqrt(beta) * z
    x0_last = max(min((x1 - math.sqrt(0.1) * 0.3) / math.sqrt(0.9), 1.0), -1.0)
    assert out.item() == pytest.approx(x0_last, rel=1e-12)             # no noise on the step to t = -1


def test_repeated_tau_costs_no_model_call_and_changes_nothing():
    alphas = D.alphas_cumprod(1000)
    taus = D.timesteps(1000, 200, "quad")
    assert len(set(taus)) < len(taus)
    x = torch.randn(2, 1, 4, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    model = GaussianEps(0.5)
    a = D.sample(model, x, alphas, taus)
    assert model.calls == len(set(taus)) == D.model_calls(taus)
    b = D.sample(GaussianEps(0.5), x, alphas, sorted(set(taus)))
    torch.testing.assert_close(a, b, rtol=0, atol=0)


class GaussianEps:
    """The exact ε-predictor for data x0 ~ N(0, s² I): E[ε | x_t] = √(1−α) x_t / (α s² + 1 − α)."""

    def __init__(self, s, alphas=None):
        self.s, self.alphas, self.calls = s, alphas if alphas is not None else D.alphas_cumprod(1000), 0

    def __call__(self, x, t):
        self.calls += 1
        a = self.alphas[t].to(x.dtype).view(-1, *[1] * (x.dim() - 1))
        return (1 - a).sqrt() * x / (a * self.s ** 2 + 1 - a)


def test_encode_then_sample_reconstruction_error_falls_with_steps():
    alphas = D.alphas_cumprod(1000)
    x0 = 0.5 * torch.randn(16, 1, 4, 4, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    errs = []
    for S in (10, 20, 50, 100):
        taus = D.timesteps(1000, S)
        rec = D.sample(GaussianEps(0.5), D.encode(GaussianEps(0.5), x0, alphas, taus), alphas, taus)
        errs.append((rec - x0).pow(2).mean().item())
    assert all(b < a for a, b in zip(errs, errs[1:])), errs
    assert errs[-1] < 1e-3


def test_per_sample_generators_make_results_independent_of_batch_size():
    alphas = D.alphas_cumprod(1000)
    taus = D.timesteps(1000, 20)

    def run(seeds):
        gens = [torch.Generator().manual_seed(s) for s in seeds]
        x = torch.stack([torch.randn(1, 4, 4, generator=g) for g in gens])
        return D.sample(GaussianEps(0.5), x, alphas, taus, eta=1.0, generator=gens)

    whole = run(range(6))
    parts = torch.cat([run(range(0, 2)), run(range(2, 5)), run(range(5, 6))])
    torch.testing.assert_close(whole, parts, rtol=0, atol=0)
    assert not torch.allclose(whole[0], whole[1])


def test_bad_sample_arguments():
    x = torch.zeros(1, 1, 2, 2)
    with pytest.raises(ValueError, match="eta"):
        D.sample(GaussianEps(0.5), x, D.alphas_cumprod(1000), [0, 10], eta=-0.1)
    with pytest.raises(ValueError, match="variance"):
        D.sample(GaussianEps(0.5), x, D.alphas_cumprod(1000), [0, 10], variance="big")
    with pytest.raises(ValueError, match="generator"):
        D.sample(GaussianEps(0.5), x, D.alphas_cumprod(1000), [0, 10], eta=1.0,
                 generator=[torch.Generator(), torch.Generator()])


def test_slerp_endpoints_and_norm():
    g = torch.Generator().manual_seed(0)
    z0, z1 = torch.randn(3, 1, 8, 8, generator=g), torch.randn(3, 1, 8, 8, generator=g)
    torch.testing.assert_close(D.slerp(z0, z1, 0.0), z0)
    torch.testing.assert_close(D.slerp(z0, z1, 1.0), z1)
    u0, u1 = z0 / z0.flatten(1).norm(dim=1).view(-1, 1, 1, 1), z1 / z1.flatten(1).norm(dim=1).view(-1, 1, 1, 1)
    mid = D.slerp(u0, u1, 0.3)
    torch.testing.assert_close(mid.flatten(1).norm(dim=1), torch.ones(3))
