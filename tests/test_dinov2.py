"""FD-DINOv2 offline: our DINOv2 ViT loads a checkpoint in the official format through the harness's own path."""
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from ddim_bench.errors import UserError
from ddim_bench.scoring.extractors import dinov2 as D
from ddim_bench.scoring.extractors import features as F
from ddim_bench.scoring import metrics as M

CONF = Path(__file__).resolve().parents[1] / "ddim_bench" / "conf" / "metrics"
N_IMAGES = 6


def official_keys(depth: int, dim: int) -> dict:
    """Key → shape of the official dinov2_vit{s,b,l}14_pretrain.pth files."""
    keys = {"cls_token": (1, 1, dim), "pos_embed": (1, 1 + 37 * 37, dim), "mask_token": (1, dim),
            "patch_embed.proj.weight": (dim, 3, 14, 14), "patch_embed.proj.bias": (dim,),
            "norm.weight": (dim,), "norm.bias": (dim,)}
    for i in range(depth):
        b = f"blocks.{i}."
        keys.update({b + "norm1.weight": (dim,), b + "norm1.bias": (dim,),
                     b + "attn.qkv.weight": (3 * dim, dim), b + "attn.qkv.bias": (3 * dim,),
                     b + "attn.proj.weight": (dim, dim), b + "attn.proj.bias": (dim,), b + "ls1.gamma": (dim,),
                     b + "norm2.weight": (dim,), b + "norm2.bias": (dim,),
                     b + "mlp.fc1.weight": (4 * dim, dim), b + "mlp.fc1.bias": (4 * dim,),
                     b + "mlp.fc2.weight": (dim, 4 * dim), b + "mlp.fc2.bias": (dim,), b + "ls2.gamma": (dim,)})
    return keys


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    """A random ViT-S/14 saved as a plain state dict (the official file's format)."""
    torch.manual_seed(0)
    sd = D.DinoV2ViT("s").state_dict()
    assert {k: tuple(v.shape) for k, v in sd.items()} == official_keys(12, 384)
    path = tmp_path_factory.mktemp("w") / "dinov2_vits14_pretrain.pth"
    torch.save(sd, path)
    return path


def cfg_for(path, cache_dir, **over):
    cfg = OmegaConf.load(CONF / "dinov2.yaml")
    cfg.weights_path = str(path)
    cfg.bootstrap.replicates = 0
    for k, v in over.items():
        cfg[k] = v
    return cfg


def images(seed):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (N_IMAGES, 3, 32, 32), generator=g, dtype=torch.uint8)


@pytest.fixture(scope="module")
def scorer(weights, tmp_path_factory):
    return M.Scorer(cfg_for(weights, tmp_path_factory.mktemp("cache")), "unused")


def test_other_sizes_have_the_official_keys():
    for size, depth, dim in (("b", 12, 768), ("l", 24, 1024)):
        shapes = {k: tuple(v.shape) for k, v in D.DinoV2ViT(size).state_dict().items()}
        assert shapes == official_keys(depth, dim)


def test_strict_load_and_features(scorer, weights):
    assert scorer.name == "dinov2-vit-s-14-local" and M.check_extractor(scorer.cfg) == scorer.name
    assert scorer.layers == {"fid": "dinov2", "kid": "dinov2"}
    ref = torch.load(weights, weights_only=True)
    got = scorer.extractor.model.state_dict()
    assert got.keys() == ref.keys() and all(torch.equal(got[k], ref[k]) for k in ref)
    x = images(1)
    f1, f2 = scorer.features(x), scorer.features(x)
    assert f1["dinov2"].shape == (N_IMAGES, 384) and torch.isfinite(f1["dinov2"]).all()
    assert torch.equal(f1["dinov2"], f2["dinov2"])
    assert f1["dinov2"].std(dim=0).mean() > 1e-3  # depends on the image


def test_pos_embed_is_resized_to_the_224px_grid():
    m = D.DinoV2ViT("s")
    pe = m.pos_embed_for(16, 16)
    assert pe.shape == (1, 1 + 16 * 16, 384) and torch.equal(pe[:, 0], m.pos_embed[:, 0])
    assert m.pos_embed_for(37, 37) is m.pos_embed


def test_fid(scorer):
    a, b = scorer.features(images(1)), scorer.features(images(2))
    fid_ab = scorer.score(a, b)["fid"]
    assert fid_ab > 0 and fid_ab < float("inf")
    assert abs(scorer.score(a, a)["fid"]) < 1e-3 * max(fid_ab, 1.0)
    assert "is_mean" not in scorer.score(a, b)


def one_line_error(fn, *words):
    with pytest.raises(UserError) as e:
        fn()
    msg = str(e.value)
    assert "\n" not in msg and all(w in msg for w in words), msg
    return e.value


def test_missing_and_truncated_files(weights, tmp_path):
    missing = tmp_path / "nowhere" / "dinov2_vits14_pretrain.pth"
    cfg = cfg_for(missing, tmp_path)
    err = one_line_error(lambda: M.check_extractor(cfg), str(missing), "dl.fbaipublicfiles.com")
    assert isinstance(err, F.MissingWeightsError)
    one_line_error(lambda: M.Scorer(cfg, str(tmp_path)), str(missing))
    bad = tmp_path / "truncated.pth"
    bad.write_bytes(weights.read_bytes()[: weights.stat().st_size // 3])
    one_line_error(lambda: M.Scorer(cfg_for(bad, tmp_path), str(tmp_path)), str(bad))
    wrong = tmp_path / "wrong.pth"
    torch.save({"cls_token": torch.zeros(1, 1, 384)}, wrong)
    one_line_error(lambda: F.build_extractor(cfg_for(wrong, tmp_path), str(tmp_path), ["dinov2"]), str(wrong))


def test_isc_needs_to_be_off(weights, tmp_path):
    one_line_error(lambda: M.check_extractor(cfg_for(weights, tmp_path, isc=True)), "metrics.isc")
    one_line_error(lambda: M.Scorer(cfg_for(weights, tmp_path, isc=True), str(tmp_path)), "metrics.isc")
