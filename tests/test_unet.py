"""The UNet: shapes, and the official DDPM CIFAR-10 parameter naming (strict load)."""
import pytest
import torch

from ddim_bench.models.unet import UNet

CIFAR = dict(ch=128, ch_mult=[1, 2, 2, 2], num_res_blocks=2, attn_resolutions=[16], dropout=0.1)


def official_cifar10_shapes() -> dict:
    """Key → shape of the DDPM CIFAR-10 checkpoint as the DDIM paper's code names it, listed by hand
    from the architecture description (not from our module)."""
    shapes = {}

    def conv(name, cin, cout, k):
        shapes[f"{name}.weight"], shapes[f"{name}.bias"] = (cout, cin, k, k), (cout,)

    def lin(name, cin, cout):
        shapes[f"{name}.weight"], shapes[f"{name}.bias"] = (cout, cin), (cout,)

    def gn(name, c):
        shapes[f"{name}.weight"], shapes[f"{name}.bias"] = (c,), (c,)

    def res(name, cin, cout):
        gn(f"{name}.norm1", cin), conv(f"{name}.conv1", cin, cout, 3), lin(f"{name}.temb_proj", 512, cout)
        gn(f"{name}.norm2", cout), conv(f"{name}.conv2", cout, cout, 3)
        if cin != cout:
            conv(f"{name}.nin_shortcut", cin, cout, 1)

    def attn(name, c):
        gn(f"{name}.norm", c)
        for p in ("q", "k", "v", "proj_out"):
            conv(f"{name}.{p}", c, c, 1)

    lin("temb.dense.0", 128, 512), lin("temb.dense.1", 512, 512), conv("conv_in", 3, 128, 3)
    # down: levels at 32, 16, 8, 4 px with 128, 256, 256, 256 channels; attention at 16 px
    res("down.0.block.0", 128, 128), res("down.0.block.1", 128, 128), conv("down.0.downsample.conv", 128, 128, 3)
    res("down.1.block.0", 128, 256), attn("down.1.attn.0", 256), res("down.1.block.1", 256, 256)
    attn("down.1.attn.1", 256), conv("down.1.downsample.conv", 256, 256, 3)
    res("down.2.block.0", 256, 256), res("down.2.block.1", 256, 256), conv("down.2.downsample.conv", 256, 256, 3)
    res("down.3.block.0", 256, 256), res("down.3.block.1", 256, 256)
    res("mid.block_1", 256, 256), attn("mid.attn_1", 256), res("mid.block_2", 256, 256)
    # up (stored in resolution order 0..3): skip inputs concatenated
    res("up.3.block.0", 512, 256), res("up.3.block.1", 512, 256), res("up.3.block.2", 512, 256)
    conv("up.3.upsample.conv", 256, 256, 3)
    res("up.2.block.0", 512, 256), res("up.2.block.1", 512, 256), res("up.2.block.2", 512, 256)
    conv("up.2.upsample.conv", 256, 256, 3)
    for i, cin in enumerate((512, 512, 384)):
        res(f"up.1.block.{i}", cin, 256), attn(f"up.1.attn.{i}", 256)
    conv("up.1.upsample.conv", 256, 256, 3)
    res("up.0.block.0", 384, 128), res("up.0.block.1", 256, 128), res("up.0.block.2", 256, 128)
    gn("norm_out", 128), conv("conv_out", 128, 3, 3)
    return shapes


def test_official_naming_state_dict_loads_strictly():
    shapes = official_cifar10_shapes()
    g = torch.Generator().manual_seed(0)
    sd = {k: torch.randn(s, generator=g) * 0.02 for k, s in shapes.items()}
    model = UNet(**CIFAR)
    model.load_state_dict(sd, strict=True)  # raises on any missing, unexpected or mis-shaped key
    assert sum(p.numel() for p in model.parameters()) == sum(v.numel() for v in sd.values()) == 35_746_307
    torch.testing.assert_close(model.state_dict()["up.1.attn.2.q.weight"], sd["up.1.attn.2.q.weight"])


def test_forward_shapes_and_time_dependence():
    model = UNet(in_channels=1, out_ch=1, ch=32, ch_mult=[1, 2], num_res_blocks=1, attn_resolutions=[4],
                 dropout=0.0, resolution=8).eval()
    x = torch.randn(3, 1, 8, 8)
    out = model(x, torch.tensor([0, 10, 999]))
    assert out.shape == x.shape
    assert not torch.allclose(model(x, torch.tensor([5, 5, 5])), model(x, torch.tensor([900, 900, 900])))


def test_batch_elements_are_independent():
    model = UNet(in_channels=1, out_ch=1, ch=32, ch_mult=[1, 2], num_res_blocks=1, attn_resolutions=[4],
                 resolution=8, dropout=0.0).eval()
    x, t = torch.randn(4, 1, 8, 8), torch.tensor([1, 2, 3, 4])
    with torch.no_grad():
        torch.testing.assert_close(model(x, t)[1:3], model(x[1:3], t[1:3]), rtol=1e-5, atol=1e-5)
