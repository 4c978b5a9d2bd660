"""Counter-based per-sample noise: the documented formula, batch independence, and normal-quality checks."""
import math
import random

import pytest
import torch

from ddim_bench.sampling import ddim as D
from ddim_bench.sampling import noise as N
from ddim_bench.sampling.noise import SampleNoise


def reference_normal(seed: int, index: int, block: int, element: int, numel: int) -> float:
    """The module docstring's recipe in plain Python integers and floats."""
    words = (numel + 1) // 2
    j, second = element % words, element >= words
    n = (block << N.BLOCK_BITS) + j
    w = N.mix64((N.sample_key(seed, index) + (n + 1) * N.GAMMA) & N.MASK64)
    hi, lo = [h - 2 ** 32 if h >= 2 ** 31 else h for h in (w >> 32, w & 0xFFFFFFFF)]  # as signed 32-bit
    r = math.sqrt(-2 * math.log((hi + 2 ** 31 + 0.5) / 2 ** 32))
    angle = 2 * math.pi * lo / 2 ** 32
    return r * (math.sin(angle) if second else math.cos(angle))


def test_tensor_hash_is_bit_exact_with_the_python_reference():
    rng = random.Random(0)
    values = [0, 1, 2 ** 63 - 1, 2 ** 63, 2 ** 64 - 1] + [rng.getrandbits(64) for _ in range(200)]
    got = N.mix64_(torch.tensor([N._signed(v) for v in values], dtype=torch.int64))
    assert got.tolist() == [N._signed(N.mix64(v)) for v in values]


def test_noise_follows_the_documented_formula():
    shape = (3, 3, 3)  # odd numel: the last word's second normal is dropped
    noise = SampleNoise(11, [0, 5, 123456], shape, dtype=torch.float64)
    x_T, z = noise.initial(), noise.step(999)
    lo_precision = SampleNoise(11, [5], shape).step(999)  # float32 output: the same numbers, rounded
    torch.testing.assert_close(lo_precision, z[1:2].float(), rtol=1e-6, atol=1e-6)
    for r, i in enumerate(noise.indices):
        for e in (0, 1, 13, 14, 26):
            assert x_T[r].flatten()[e].item() == pytest.approx(reference_normal(11, i, 0, e, 27), rel=1e-12)
            assert z[r].flatten()[e].item() == pytest.approx(reference_normal(11, i, 1000, e, 27), rel=1e-12)


def test_a_sample_does_not_depend_on_its_batch():
    shape = (2, 4, 4)
    big = SampleNoise(3, [7, 0, 42, 5], shape)
    steps = big.steps([0, 17, 999])
    for r, i in enumerate(big.indices):
        alone = SampleNoise(3, [i], shape)
        assert torch.equal(big.initial()[r], alone.initial()[0])
        assert torch.equal(steps[1, r], alone.step(17)[0])
        assert torch.equal(steps[:, r], alone.steps([0, 17, 999])[:, 0])
    assert big.initial().dtype == torch.float32 and big.initial().shape == (4, *shape)


def test_seeds_samples_and_counters_all_change_the_noise():
    base = SampleNoise(1, [0], (64,)).step(3)
    assert not torch.equal(base, SampleNoise(2, [0], (64,)).step(3))
    assert not torch.equal(base, SampleNoise(1, [1], (64,)).step(3))
    assert not torch.equal(base, SampleNoise(1, [0], (64,)).step(4))
    assert not torch.equal(base, SampleNoise(1, [0], (64,)).initial())
    assert N.NOISE_VERSION == 2


def test_bad_arguments():
    with pytest.raises(ValueError, match="step counter"):
        SampleNoise(0, [0], (4,)).step(N.MAX_COUNTER + 1)
    with pytest.raises(ValueError, match="step counter"):
        SampleNoise(0, [0], (4,)).step(-1)
    with pytest.raises(ValueError, match="index"):
        SampleNoise(0, [-1], (4,))
    with pytest.raises(ValueError, match="at least one"):
        SampleNoise(0, [], (4,))


@pytest.fixture(scope="module")
def draws():
    """[steps 4, samples 512, elements 512] float64: about 1e6 normals."""
    return SampleNoise(2024, range(512), (512,), dtype=torch.float64).steps([0, 1, 2, 500])


def test_moments_and_tails(draws):
    z = draws.flatten()
    n = z.numel()
    assert abs(z.mean().item()) < 5 / math.sqrt(n)
    assert abs(z.var().item() - 1) < 5 * math.sqrt(2 / n)
    assert abs((z ** 3).mean().item()) < 5 * math.sqrt(15 / n)                 # skewness
    assert abs((z ** 4).mean().item() - 3) < 5 * math.sqrt(96 / n)             # kurtosis
    for c in (1.0, 2.0, 3.0):
        p = math.erfc(c / math.sqrt(2))
        frac = (z.abs() > c).double().mean().item()
        assert abs(frac - p) < 5 * math.sqrt(p * (1 - p) / n), c
    ks = (torch.special.ndtr(z.sort().values) - (torch.arange(n, dtype=torch.float64) + 0.5) / n).abs().max()
    assert ks.item() < 1.63 / math.sqrt(n)                                     # KS test at 1 %


def _corr(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.flatten() - a.mean(), b.flatten() - b.mean()
    return ((a * b).mean() / (a.std() * b.std())).item()


def test_independence_across_samples_steps_and_elements(draws):
    half = draws.shape[-1] // 2
    pairs = {"neighbouring samples": (draws[:, :-1], draws[:, 1:]),
             "neighbouring step counters": (draws[0], draws[1]),
             "distant step counters": (draws[2], draws[3]),
             "neighbouring elements": (draws[..., :-1], draws[..., 1:]),
             "Box-Muller partners": (draws[..., :half], draws[..., half:])}
    for name, (a, b) in pairs.items():
        bound = 5 / math.sqrt(a.numel())
        assert abs(_corr(a, b)) < bound, name
        assert abs(_corr(a ** 2, b ** 2)) < bound, name + " (squares)"
        assert abs(_corr(a.abs(), b.sign())) < bound, name + " (|a| vs sign b)"


class GaussianEps:
    """E[ε | x_t] for data x0 ~ N(0, s² I) (as in test_diffusion)."""

    def __init__(self, s=0.5):
        self.s, self.alphas = s, D.alphas_cumprod(1000)

    def __call__(self, x, t):
        a = self.alphas[t].to(x.dtype).view(-1, *[1] * (x.dim() - 1))
        return (1 - a).sqrt() * x / (a * self.s ** 2 + 1 - a)


@pytest.mark.parametrize("variance", ["eta", "hat"])
def test_sample_with_sample_noise_is_batch_size_independent(variance, monkeypatch):
    alphas, taus = D.alphas_cumprod(1000), D.timesteps(1000, 20)

    def run(indices):
        noise = SampleNoise(9, indices, (1, 4, 4))
        return D.sample(GaussianEps(), noise.initial(), alphas, taus, eta=1.0, variance=variance, generator=noise)

    whole = run(range(6))
    parts = torch.cat([run(range(0, 2)), run(range(2, 5)), run(range(5, 6))])
    torch.testing.assert_close(whole, parts, rtol=0, atol=0)
    assert not torch.allclose(whole[0], whole[1])
    monkeypatch.setattr(D, "PREFETCH_ELEMENTS", 1)  # one step per draw: the same numbers
    torch.testing.assert_close(run(range(6)), whole, rtol=0, atol=0)


def test_sample_rejects_noise_for_another_batch_size():
    noise = SampleNoise(0, range(3), (1, 2, 2))
    with pytest.raises(ValueError, match="generator"):
        D.sample(GaussianEps(), torch.zeros(2, 1, 2, 2), D.alphas_cumprod(1000), [0, 10], eta=1.0, generator=noise)
