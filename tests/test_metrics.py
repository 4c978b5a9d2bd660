"""The metrics layer against real torch-fidelity / torchmetrics code (no mocks)."""
import math
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf
from sklearn.datasets import load_digits
from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

from ddim_bench.scoring.extractors import features as F
from ddim_bench.scoring import metrics as M
from ddim_bench.errors import UserError

CONF = Path(__file__).resolve().parents[1] / "ddim_bench" / "conf" / "metrics"
# The shipped config, with fewer KID subsets to keep the tests fast.
DIGITS_CFG = OmegaConf.merge(OmegaConf.load(CONF / "digits.yaml"), {"kid_subsets": 20, "batch_size": 512})


@pytest.fixture(scope="module", autouse=True)
def _single_thread(one_thread):
    """This module's torch work runs single-threaded (the shared ``one_thread`` fixture)."""


@pytest.fixture(scope="module")
def digits():
    """All 1797 sklearn digits as uint8 [N, 3, 8, 8]."""
    x = torch.tensor(load_digits().images, dtype=torch.float32) * (255 / 16)
    return x.round().to(torch.uint8)[:, None].expand(-1, 3, -1, -1).contiguous()


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="module")
def scorer(cache):
    return M.Scorer(DIGITS_CFG, str(cache))


def noisy(x, sigma=60.0, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (x.float() + sigma * torch.randn(x.shape, generator=g)).clamp(0, 255).round().to(torch.uint8)


def shuffled_pixels(x, seed=0):
    g = torch.Generator().manual_seed(seed)
    flat = x.flatten(2)
    perm = torch.stack([torch.randperm(flat.shape[-1], generator=g) for _ in range(len(x))])
    return flat.gather(2, perm[:, None].expand(-1, 3, -1)).view_as(x)


def test_classifier_trained_once_then_cached(cache, scorer):
    assert scorer.name == "digits-cnn"
    assert scorer.extractor.heldout_accuracy > 0.95
    trainings = F.CLASSIFIER_TRAININGS
    again = M.Scorer(DIGITS_CFG, str(cache))
    assert F.CLASSIFIER_TRAININGS == trainings  # loaded from disk, not retrained
    assert again.extractor_id == scorer.extractor_id
    # Changing a setting changes the cache key.
    assert F.settings_hash(F.classifier_recipe(seed=1)) != F.settings_hash(F.classifier_recipe())


def test_extractor_input_sizes(scorer, digits):
    up = torch.nn.functional.interpolate(digits[:16].float(), size=32, mode="nearest").to(torch.uint8)
    for imgs in (digits[:16], up):
        f = scorer.features(imgs)
        assert f["64"].shape == (16, 64) and f["logits_unbiased"].shape == (16, 10)
    same = scorer.features(digits[:16])["logits_unbiased"].argmax(1)
    assert (scorer.features(up)["logits_unbiased"].argmax(1) == same).all()


def test_fid_is_kid_behave(scorer, digits):
    real = scorer.features(digits)
    same = scorer.score(real, real)
    assert abs(same["fid"]) < 1e-6
    assert set(same) == {"fid", "is_mean", "is_std", "kid_mean", "kid_std"}
    # Two disjoint halves of the real data are close; corrupted digits are far, scrambled pixels farther.
    ref, held = scorer.features(digits[:900]), scorer.features(digits[900:])
    half = scorer.score(held, ref)
    bad = scorer.score(scorer.features(noisy(digits[900:])), ref)
    worse = scorer.score(scorer.features(shuffled_pixels(digits[900:])), ref)
    assert bad["fid"] > 5 * half["fid"] and worse["fid"] > bad["fid"]
    assert bad["kid_mean"] > 5 * abs(half["kid_mean"]) and worse["kid_mean"] > bad["kid_mean"]
    # Real digits are confidently spread over the 10 classes; noise is not.
    noise = torch.randint(0, 256, digits.shape, dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    is_noise = scorer.score(scorer.features(noise), real)["is_mean"]
    assert same["is_mean"] > 7 and same["is_mean"] > 2 * is_noise


def test_reference_cached_per_key(scorer, digits):
    before = M.REFERENCE_COMPUTATIONS
    a = scorer.reference(digits[:300], key="digits|train|res=8")
    b = scorer.reference(digits[:300], key="digits|train|res=8")
    assert M.REFERENCE_COMPUTATIONS == before + 1
    assert torch.equal(a["64"], b["64"]) and a["64"].shape == (300, 64)
    scorer.reference(torch.utils.data.TensorDataset(digits[300:400]), key="digits|test|res=8")
    assert M.REFERENCE_COMPUTATIONS == before + 2


@pytest.mark.parametrize("n", [1, 2, 20, 50])
def test_small_n_does_not_crash(scorer, digits, n):
    real = scorer.features(digits[:500])
    gen = M.concat_features([scorer.features(b) for b in noisy(digits[:n]).split(7)])
    out = scorer.score(gen, real)
    if n >= 2:
        assert all(math.isfinite(v) for v in out.values())
    else:
        assert math.isnan(out["fid"]) and math.isnan(out["kid_mean"]) and math.isfinite(out["is_mean"])


def test_missing_inception_weights(tmp_path):
    cfg = OmegaConf.merge(OmegaConf.load(CONF / "inception.yaml"), {"paths": {"cache_dir": str(tmp_path)}})
    missing = tmp_path / "weights" / F.INCEPTION_WEIGHTS_FILE
    assert cfg.weights_path == str(missing)
    with pytest.raises(M.MissingWeightsError) as e:
        M.check_extractor(cfg)
    msg = str(e.value)
    assert isinstance(e.value, UserError) and "\n" not in msg
    assert str(missing) in msg and "weights-inception-2015-12-05-6726825d.pth" in msg
    with pytest.raises(M.MissingWeightsError):
        M.Scorer(cfg, str(tmp_path))
    with pytest.raises(UserError):
        M.check_extractor({"extractor": "vgg"})
    with pytest.raises(UserError):
        M.check_extractor({"extractor": "digits", "classifier": {"resolution": 32}})
    missing.parent.mkdir()
    missing.write_bytes(b"not a checkpoint")  # the known file by name, checked against its sha256 prefix
    with pytest.raises(M.MissingWeightsError, match=r"the file there was not it: its sha256 starts [0-9a-f]{8}, "
                                                    r"not 6726825d; moved to .*corrupt"):
        M.Scorer(cfg, str(tmp_path))
    assert not missing.exists() and [p.read_bytes() for p in (missing.parent / "corrupt").iterdir()] == [
        b"not a checkpoint"]
    own = tmp_path / "own-inception.pth"  # another name: the user's own file, loaded as it is
    own.write_bytes(b"not a checkpoint")
    with pytest.raises(UserError, match="could not load"):
        M.Scorer({**cfg, "weights_path": str(own)}, str(tmp_path))


class _BlankInception(FeatureExtractorInceptionV3):
    """torch-fidelity's InceptionV3 architecture with its default random initialisation (no weights loaded)."""

    def load_state_dict(self, state_dict, strict=True, assign=False):
        return super().load_state_dict(state_dict, strict=False)


def _random_inception_weights(tmp_path, seed):
    empty = tmp_path / "empty.pt"
    torch.save({}, empty)
    torch.manual_seed(seed)
    net = _BlankInception("blank", ["2048", "logits_unbiased"], feature_extractor_weights_path=str(empty))
    path = tmp_path / f"inception-{seed}.pth"
    torch.save(net.state_dict(), path)
    return net, str(path)


def test_inception_loads_local_weights(tmp_path, digits):
    net_a, path_a = _random_inception_weights(tmp_path, 0)
    net_b, _ = _random_inception_weights(tmp_path, 1)
    cfg = {"extractor": "inception-v3-compat", "weights_path": path_a, "batch_size": 4}
    assert M.check_extractor(cfg) == "inception-v3-compat"
    scorer = M.Scorer(cfg, str(tmp_path))
    imgs = digits[:2]
    got = scorer.features(imgs)
    assert got["2048"].shape == (2, 2048) and got["logits_unbiased"].shape == (2, 1008)
    with torch.no_grad():
        want = net_a.convert_features_tuple_to_dict(net_a(imgs))
        other = net_b.convert_features_tuple_to_dict(net_b(imgs))
    for k in ("2048", "logits_unbiased"):  # random weights give tiny activations: compare relative to scale
        scale = want[k].abs().max()
        assert scale > 0
        assert (got[k].float() - want[k]).abs().max() <= 1e-4 * scale
        assert (other[k] - want[k]).abs().max() > 0.1 * scale


def test_torchmetrics_fid_matches_torch_fidelity(scorer, digits):
    real, fake = digits[:600], noisy(digits[600:1200], sigma=40)
    expected = scorer.score(scorer.features(fake), scorer.features(real))["fid"]
    tm = M.torchmetrics_fid(scorer)
    assert tm.reset_real_features is False
    tm.update(real, real=True)
    tm.update(fake, real=False)
    assert float(tm.compute()) == pytest.approx(expected, rel=1e-3)
    tm.reset()  # keeps the real statistics
    tm.update(fake, real=False)
    assert float(tm.compute()) == pytest.approx(expected, rel=1e-3)
    # Real side filled straight from cached reference features; extractor weights stay out of the state dict.
    tm2 = M.torchmetrics_fid(scorer, ref_features=scorer.features(real))
    tm2.update(fake, real=False)
    assert float(tm2.compute()) == pytest.approx(expected, rel=1e-3)
    assert not any("net." in k for k in tm2.state_dict())
