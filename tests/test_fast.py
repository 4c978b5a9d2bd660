"""The fast-path switches give the plain model's samples (within each switch's precision) on the CPU."""
import copy
import os

import pytest
import torch

from ddim_bench.sampling import ddim as D
from ddim_bench.models import fast
from ddim_bench.errors import UserError
from ddim_bench.models.unet import UNet

TINY = dict(in_channels=1, out_ch=1, ch=32, ch_mult=[1, 2], num_res_blocks=1, attn_resolutions=[4], dropout=0.0,
            resolution=8)
STEPS = 5


def tiny_unet(device="cpu") -> UNet:
    torch.manual_seed(0)
    return UNet(**TINY).to(device).eval().requires_grad_(False)


def run_ddim(model, eta=0.0, x_T=None):
    x_T = torch.randn(8, 1, 8, 8, generator=torch.Generator().manual_seed(1)) if x_T is None else x_T
    gens = [torch.Generator().manual_seed(i) for i in range(len(x_T))] if eta else None
    taus = D.timesteps(1000, STEPS)
    return D.sample(model, x_T, D.alphas_cumprod(1000), taus, eta=eta, generator=gens)


def relative_error(out, ref) -> float:
    return ((out - ref).abs().max() / ref.abs().max()).item()


@pytest.mark.parametrize("eta", [0.0, 1.0])
def test_all_switches_off_returns_the_same_model_and_numbers(eta):
    model = tiny_unet()
    assert fast.wrap(model, {}, "cpu") is model
    assert fast.wrap(model, None, "cpu") is model
    assert fast.wrap(model, dict(fast.DEFAULTS), "cpu") is model
    assert torch.equal(run_ddim(model, eta), run_ddim(tiny_unet(), eta))


@pytest.mark.parametrize("eta", [0.0, 1.0])
def test_bf16_autocast_is_close_and_returns_float32(eta):
    model = tiny_unet()
    wrapped = fast.wrap(model, {"bf16": True}, "cpu")
    assert isinstance(wrapped, fast.AutocastModel)
    x, t = torch.randn(4, 1, 8, 8), torch.full((4,), 500)
    assert wrapped(x, t).dtype == torch.float32
    assert relative_error(run_ddim(wrapped, eta), run_ddim(model, eta)) < 5e-2


def test_channels_last_is_layout_only():
    model = tiny_unet()
    wrapped = fast.wrap(copy.deepcopy(model), {"channels_last": True}, "cpu")
    assert wrapped.conv_in.weight.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(run_ddim(wrapped), run_ddim(model), rtol=1e-4, atol=1e-4 * run_ddim(model).abs().max().item())


def test_unknown_switch_and_bad_compile_mode_are_one_line_config_errors(compose):
    with pytest.raises(UserError, match="sampler.fast.fp8"):
        compose("sweep", "checkpoint=x", "+sampler.fast.fp8=true")
    with pytest.raises(UserError, match="sampler.fast.compile_mode=fastest must be one of"):
        compose("sweep", "checkpoint=x", "sampler.fast.compile_mode=fastest")
    with pytest.raises(UserError, match="compile_mode"):  # the programmatic API checks it too
        fast.prepare_model(tiny_unet(), compile=True, compile_mode="fastest")


def test_graph_step_returns_a_copy_of_each_output():
    class Fixed(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.out = torch.zeros(2, 1, 8, 8)

        def forward(self, x, t):
            return self.out

    inner = Fixed()
    step = fast.GraphStep(inner)
    eps = step(torch.zeros(2, 1, 8, 8), torch.zeros(2, dtype=torch.long))
    inner.out.fill_(1.0)  # what the next CUDA-graph replay would do to its output buffer
    assert eps.abs().sum() == 0


@pytest.mark.parametrize("eta,variance", [(0.0, "eta"), (1.0, "eta"), (1.0, "hat")])
def test_sampler_loop_never_reads_device_values(eta, variance):
    """On the meta device any host read of a tensor value (.item(), float(), if tensor) raises, so a loop that
    runs there has no host-device synchronisation: α's and σ's are Python floats."""
    model = tiny_unet("meta")
    x_T = torch.empty(4, 1, 8, 8, device="meta")
    out = D.sample(model, x_T, D.alphas_cumprod(1000), D.timesteps(1000, 4), eta=eta,
                           variance=variance)
    assert out.device.type == "meta" and out.shape == x_T.shape


@pytest.mark.slow
@pytest.mark.skipif(os.environ.get("DDIM_BENCH_SLOW") != "1",
                    reason="torch.compile on the CPU takes minutes here; set DDIM_BENCH_SLOW=1")
def test_compiled_model_is_close():
    model = tiny_unet()
    wrapped = fast.wrap(copy.deepcopy(model), {"compile": True}, "cpu")
    assert relative_error(run_ddim(wrapped), run_ddim(model)) < 1e-4
