"""The reference-feature cache with the real digits extractor: damaged files are named, moved aside, recomputed."""
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf
from sklearn.datasets import load_digits

from ddim_bench.errors import UserError
from ddim_bench.scoring import metrics as M

CONF = Path(__file__).resolve().parents[1] / "ddim_bench" / "conf" / "metrics"
KEY = "digits|train|n=200"


@pytest.fixture(scope="module")
def scorer(tmp_path_factory, one_thread):
    cfg = OmegaConf.merge(OmegaConf.load(CONF / "digits.yaml"), {"kid_subsets": 20, "batch_size": 512})
    return M.Scorer(cfg, str(tmp_path_factory.mktemp("cache")))


@pytest.fixture(scope="module")
def digits():
    x = torch.tensor(load_digits().images[:200], dtype=torch.float32) * (255 / 16)
    return torch.utils.data.TensorDataset(x.round().to(torch.uint8)[:, None].expand(-1, 3, -1, -1).contiguous())


def cache_files(scorer):
    return sorted(p for p in (Path(scorer.cache_dir) / "references").glob("*.pt"))


def fresh(scorer, digits):
    """The cache emptied, then the reference computed once; returns (features, cache file)."""
    for p in cache_files(scorer):
        p.unlink()
    feats = scorer.reference(digits, KEY)
    (path,) = cache_files(scorer)
    return feats, path


def same(a, b):
    return sorted(a) == sorted(b) and all(torch.equal(a[k], b[k]) for k in a)


def test_cached_then_loaded(scorer, digits):
    feats, _ = fresh(scorer, digits)
    before = M.REFERENCE_COMPUTATIONS
    assert same(scorer.reference(digits, KEY), feats) and M.REFERENCE_COMPUTATIONS == before
    assert feats["64"].shape == (200, 64)


@pytest.mark.parametrize("damage,reason", [
    ("truncate", "unreadable"),
    ("edit", "checksum mismatch"),
    ("layers", "layers"),
    ("old format", "not a reference-features file"),
])
def test_damaged_cache_file_is_named_moved_aside_and_recomputed(scorer, digits, capfd, damage, reason):
    feats, path = fresh(scorer, digits)
    data = path.read_bytes()
    if damage == "truncate":
        path.write_bytes(data[: len(data) // 2])
    elif damage == "edit":  # one feature value changed: still loads (torch.load checks no CRC), checksum differs
        obj = torch.load(path, weights_only=True)
        obj["features"]["64"][7, 3] += 1.0
        torch.save(obj, path)
    elif damage == "layers":
        obj = torch.load(path, weights_only=True)
        del obj["features"]["64"]
        torch.save(obj, path)
    else:
        torch.save(feats, path)  # the bare featuresdict torch-fidelity's cache used to write
    capfd.readouterr()
    before = M.REFERENCE_COMPUTATIONS
    again = scorer.reference(digits, KEY)
    err = [ln for ln in capfd.readouterr().err.splitlines() if ln.strip()]
    assert len(err) == 1 and str(path) in err[0] and reason in err[0], err
    assert M.REFERENCE_COMPUTATIONS == before + 1 and same(again, feats)
    moved = list((path.parent / "corrupt").glob(f"*{path.name}"))
    assert any(str(m) in err[0] for m in moved)  # the folder also holds earlier cases' files
    # The recomputed file verifies: the next call loads it silently.
    assert same(scorer.reference(digits, KEY), feats) and M.REFERENCE_COMPUTATIONS == before + 1
    assert capfd.readouterr().err.strip() == ""


@pytest.mark.parametrize("n", [0, 1])
def test_too_small_reference_is_refused_before_the_cache(scorer, digits, n):
    for p in cache_files(scorer):
        p.unlink()
    with pytest.raises(UserError, match=f"reference.n={n} must be >= 2"):
        scorer.reference(torch.utils.data.Subset(digits, range(n)), f"digits|train|n={n}")
    assert cache_files(scorer) == []
