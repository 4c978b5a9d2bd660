"""Bootstrap intervals against torch-fidelity's own metric code and against known Gaussian behaviour (no mocks)."""
import math

import pytest
import torch
import torch.nn as nn
import torch_fidelity
from ddim_bench.scoring.extractors.base import NamedFeatures
from torch_fidelity.metric_fid import fid_features_to_statistics, fid_statistics_to_metric
from torch_fidelity.metric_isc import isc_features_to_metric
from torch_fidelity.metric_kid import kid_features_to_metric
from torch_fidelity.metric_prc import prc_features_to_metric
from torch_fidelity.registry import FEATURE_EXTRACTORS_REGISTRY, register_feature_extractor

from ddim_bench.scoring import uncertainty as U
from ddim_bench.scoring.draws import fid_draws, isc_draws, kid_draws
from ddim_bench.scoring.prc import prc_draws

D = 16
LAYERS = {"fid": "f", "kid": "f", "isc": "logits", "prc": "f"}
KID = dict(kid_subset_size=100, kid_subsets=10)
# torch-fidelity returns precision / recall as a float32 mean of 0/1 flags; everything else agrees to rounding.
TOL = {"fid": dict(rel=1e-9), "kid_mean": dict(rel=1e-9), "is_mean": dict(rel=1e-9),
       "precision": dict(abs=1e-7), "recall": dict(abs=1e-7)}


@pytest.fixture(scope="module", autouse=True)
def _single_thread(one_thread):
    """This module's torch work runs single-threaded (the shared ``one_thread`` fixture)."""


def gaussian(n, seed, shift=0.3, scale=1.1):
    """Features N(shift, scale²·I) in d = 16 and 10 logits that are a linear function of them."""
    z = torch.randn(n, D, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return {"f": z * scale + shift, "logits": 2 * z[:, :10] + 0.5}


@pytest.fixture(scope="module")
def ref():
    return gaussian(1000, 99, shift=0.0, scale=1.0)


def tf_metrics(x, y, logits, splits=10):
    """torch-fidelity 0.4.0's own FID / KID / precision / recall / IS on feature tensors."""
    fid = fid_statistics_to_metric(fid_features_to_statistics(x), fid_features_to_statistics(y), False)
    kid = kid_features_to_metric(x, y, rng_seed=2020, verbose=False, **KID)
    prc = prc_features_to_metric(x, y, prc_neighborhood=3, prc_batch_size=10000, save_cpu_ram=False,
                                 verbose=False)
    isc = isc_features_to_metric(logits, splits, True, 2020)
    return {"fid": fid["frechet_inception_distance"], "kid_mean": kid["kernel_inception_distance_mean"],
            "precision": prc["precision"], "recall": prc["recall"], "is_mean": isc["inception_score_mean"]}


def test_points_and_replicates_equal_torch_fidelity(ref):
    gen = gaussian(300, 1)
    res = U.bootstrap_metrics(gen, ref, LAYERS, replicates=20, seed=3, **KID)
    want = tf_metrics(gen["f"], ref["f"], gen["logits"])
    assert set(res) == set(want)
    for key, v in want.items():
        assert res[key].value == pytest.approx(v, **TOL[key]), key
    # Replicate r is torch-fidelity's metric on the resampled generated set x[idx[r]], reference unchanged.
    idx = U.resample_indices(300, 20, seed=3)
    for r in (0, 11):
        rep = tf_metrics(gen["f"][idx[r]], ref["f"], gen["logits"][idx[r]])
        for key, v in rep.items():
            assert float(res[key].draws[r]) == pytest.approx(v, **TOL[key]), (key, r)


def test_recall_fallback_path_is_exact(ref):
    """Keeping only k + 1 neighbours forces the exact full-row fallback often; replicates stay torch-fidelity's."""
    gen = gaussian(120, 2)
    idx = U.resample_indices(120, 6, seed=5)
    precision, recall = prc_draws(gen["f"], ref["f"][:300], idx, kept_neighbours=4)
    for r in range(6):
        want = prc_features_to_metric(gen["f"][idx[r]], ref["f"][:300], prc_neighborhood=3, prc_batch_size=10000,
                                      save_cpu_ram=False, verbose=False)
        assert (float(precision[r]), float(recall[r])) == pytest.approx((want["precision"], want["recall"]),
                                                                        abs=1e-7)


def test_chunking_does_not_change_values(ref):
    """Tiny memory chunks (many blocks of replicates, kernel rows, distances) give the same replicates."""
    gen = gaussian(150, 3)
    x, y, idx = gen["f"], ref["f"][:200], U.resample_indices(150, 7, seed=1)
    small = 1 << 14
    assert torch.allclose(fid_draws(x, y, idx, chunk_bytes=small), fid_draws(x, y, idx), rtol=1e-10)
    assert torch.allclose(kid_draws(x, y, idx, 50, 4, 2020, chunk_bytes=small), kid_draws(x, y, idx, 50, 4, 2020),
                          rtol=1e-10)
    assert torch.allclose(isc_draws(gen["logits"], idx, 3, chunk_bytes=small), isc_draws(gen["logits"], idx, 3),
                          rtol=1e-12)
    for tiny, full in zip(prc_draws(x, y, idx, chunk_bytes=small), prc_draws(x, y, idx)):
        assert torch.equal(tiny, full)


def test_width_shrinks_as_one_over_sqrt_n(ref):
    """Quadrupling N halves the interval width (ratio within [1.5, 2.7] for every metric).

    KID's subsets take all N generated samples here (subset size N): with a fixed subset size its average over
    a fixed number of subsets keeps a subset-draw spread that does not shrink with N.
    """
    width = {}
    for n, seed in ((200, 4), (800, 5)):
        res = U.bootstrap_metrics(gaussian(n, seed), ref, LAYERS, replicates=200, seed=0, kid_subset_size=n,
                                  kid_subsets=2)
        width[n] = {k: iv.hi - iv.lo for k, iv in res.items()}
    for key in width[200]:
        ratio = width[200][key] / width[800][key]
        assert 1.5 < ratio < 2.7, (key, ratio)


def test_paired_difference_is_narrower_than_unpaired(ref):
    """Two cells from the same x_T (strongly correlated features): pairing removes the shared variability."""
    z = torch.randn(500, D, generator=torch.Generator().manual_seed(6), dtype=torch.float64)
    noise = torch.randn(500, D, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    a, b = {"f": z + 0.3}, {"f": z + 0.02 * noise + 0.2}
    paired, deltas = U.paired_difference(a, b, ref, "fid", layers=LAYERS, replicates=200)
    unpaired, _ = U.unpaired_difference(a, b, ref, "fid", layers=LAYERS, replicates=200)
    fid = {k: U.bootstrap_metrics(v, ref, LAYERS, metrics=("fid",), replicates=2)["fid"].value
           for k, v in (("a", a), ("b", b))}
    assert paired.value == pytest.approx(fid["a"] - fid["b"], rel=1e-12)
    assert unpaired.value == paired.value and deltas.shape == (200,) and paired.replicates == 200
    assert (paired.hi - paired.lo) < 0.3 * (unpaired.hi - unpaired.lo)  # 0.21 measured
    assert paired.hi < 0 or paired.lo > 0  # a real difference (shift 0.3 vs 0.2) is resolved when paired


def test_centering_puts_the_interval_around_the_point(ref):
    """FID is biased at finite N and the bootstrap doubles the bias: plain percentile misses θ̂, centred holds it."""
    gen = {"f": gaussian(150, 8)["f"]}
    plain = U.bootstrap_metrics(gen, ref, LAYERS, metrics=("fid",), replicates=200, centered=False)["fid"]
    centred = U.bootstrap_metrics(gen, ref, LAYERS, metrics=("fid",), replicates=200)["fid"]
    assert not plain.lo <= plain.value <= plain.hi
    assert centred.lo < centred.value < centred.hi
    assert centred.hi - centred.lo == pytest.approx(plain.hi - plain.lo, rel=1e-9)
    shift = float(plain.draws.mean()) - plain.value
    assert centred.lo == pytest.approx(plain.lo - shift, rel=1e-9)


def test_combine_blocks_and_aggregate_by_hand():
    blocks = [(1.0, torch.tensor([0.0, 1.0, 2.0, 3.0])), (3.0, torch.tensor([2.0, 4.0, 6.0, 8.0]))]
    iv = U.combine_blocks(blocks, level=0.5, centered=False)
    # Mean replicates: [1, 2.5, 4, 5.5]; 25 % / 75 % quantiles by linear interpolation: 2.125, 4.375.
    assert (iv.value, iv.lo, iv.hi, iv.replicates) == pytest.approx((2.0, 2.125, 4.375, 4))
    centred = U.combine_blocks(blocks, level=0.5)  # replicates shifted by their mean 3.25 − 2.0
    assert (centred.lo, centred.hi) == pytest.approx((0.875, 3.125))
    assert iv.to_dict() == {"value": 2.0, "lo": 2.125, "hi": 4.375, "level": 0.5, "replicates": 4,
                            "se": None, "df": None}
    agg = U.aggregate_blocks([3.0, 5.0, 4.0])
    assert agg == {"mean": 4.0, "sd": 1.0, "min": 3.0, "n": 3}
    one = U.aggregate_blocks([7.5])
    assert (one["mean"], one["min"], one["n"]) == (7.5, 7.5, 1) and math.isnan(one["sd"])


def test_verdicts():
    assert U.verdict(-3.0, -0.1, "negative") == "holds"
    assert U.verdict(0.2, 1.0, "negative") == "reversed"
    assert U.verdict(-1.0, 0.5, "negative") == "not significant"
    assert U.verdict(-1.0, 0.0, "negative") == "not significant"  # touching 0 is not enough
    assert U.verdict(0.1, 2.0, "positive") == "holds"
    assert U.verdict(-2.0, -0.1, "positive") == "reversed"
    assert U.verdict(math.nan, 1.0, "positive") == "not significant"


def test_bad_arguments_raise_value_error(ref):
    gen = gaussian(50, 9)
    with pytest.raises(ValueError, match="level"):
        U.bootstrap_metrics(gen, ref, LAYERS, level=1.5)
    with pytest.raises(ValueError, match="unknown metrics"):
        U.bootstrap_metrics(gen, ref, LAYERS, metrics=("fid", "lpips"))
    with pytest.raises(ValueError, match="same sample count"):
        U.paired_difference(gen, gaussian(60, 9), ref, layers=LAYERS)
    with pytest.raises(ValueError, match="no layer"):
        U.bootstrap_metrics({"g": gen["f"]}, ref, LAYERS, metrics=("fid",))
    with pytest.raises(ValueError, match="expect"):
        U.verdict(0, 1, "up")
    with pytest.raises(ValueError, match="replicate counts"):
        U.combine_blocks([(0.0, torch.zeros(3)), (0.0, torch.zeros(4))])


# ---------------------------------------------------------------------------------------------------------------
# End to end: torch_fidelity.calculate_metrics on images, with a tiny extractor registered for the test
# ---------------------------------------------------------------------------------------------------------------

class TinyRandomExtractor(NamedFeatures):
    """A fixed random conv net: uint8 [B, 3, 8, 8] → "16" (16-d features) and "logits" (10)."""
    FEATURES = ("16", "logits")
    LAYERS = {"isc": "logits", "fid": "16", "kid": "16", "prc": "16"}


    def __init__(self, name, features_list, **kwargs):
        super().__init__(name, features_list)
        g = torch.Generator().manual_seed(0)
        self.conv = nn.Conv2d(3, 8, 3, stride=2)
        self.fc = nn.Linear(8 * 3 * 3, 16)
        self.head = nn.Linear(16, 10)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=g) * 0.3)

    def features(self, x):
        h = torch.tanh(self.conv(x.float() / 127.5 - 1)).flatten(1)
        f = torch.tanh(self.fc(h))
        return {"16": f, "logits": self.head(f) * 3}


class Images(torch.utils.data.Dataset):
    def __init__(self, x):
        self.x = x

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return self.x[i]


def test_calculate_metrics_end_to_end():
    name = "ddim-bench-test-tiny-random"
    if name not in FEATURE_EXTRACTORS_REGISTRY:
        register_feature_extractor(name, TinyRandomExtractor)
    g = torch.Generator().manual_seed(10)
    real = torch.randint(0, 256, (200, 3, 8, 8), generator=g, dtype=torch.uint8)
    fake = (torch.randint(0, 256, (160, 3, 8, 8), generator=g) * 0.7 + 40).to(torch.uint8)
    tf = torch_fidelity.calculate_metrics(input1=Images(fake), input2=Images(real), cuda=False, fid=True, kid=True,
                                          isc=True, prc=True, feature_extractor=name, verbose=False, cache=False,
                                          save_cpu_ram=True, **KID)
    net = TinyRandomExtractor(name, ["16", "logits"]).eval()

    def features(x):  # in torch-fidelity's batches of 64, so the float32 features are the very same
        with torch.no_grad():
            parts = [net(b) for b in x.split(64)]
        return {"16": torch.cat([p[0] for p in parts]), "logits": torch.cat([p[1] for p in parts])}

    layers = {m: TinyRandomExtractor.get_default_feature_layer_for_metric(m) for m in ("fid", "kid", "isc", "prc")}
    res = U.bootstrap_metrics(features(fake), features(real), layers, replicates=10, **KID)
    # torch-fidelity takes FID's means and KID's kernels of float32 features in float32; here all is float64.
    assert res["fid"].value == pytest.approx(tf["frechet_inception_distance"], rel=1e-6)
    assert res["kid_mean"].value == pytest.approx(tf["kernel_inception_distance_mean"], rel=1e-4)
    assert res["is_mean"].value == pytest.approx(tf["inception_score_mean"], rel=1e-9)
    assert res["precision"].value == pytest.approx(tf["precision"], abs=1e-7)
    assert res["recall"].value == pytest.approx(tf["recall"], abs=1e-7)


def test_small_n_intervals_stay_in_each_metrics_support(ref):
    """At N = 16 on 1-d features (a small FID with a skewed bootstrap) the centred replicates of FID reach below 0
    and recall's above 1; the interval ends stay where the metric can be: FID >= 0, IS >= 1, precision and recall
    in [0, 1]."""
    gen, ref = gaussian(16, 3, shift=0.0, scale=1.0), gaussian(1000, 99, shift=0.0, scale=1.0)
    gen["f"], ref["f"] = gen["f"][:, :1], ref["f"][:, :1]
    res = U.bootstrap_metrics(gen, ref, LAYERS, replicates=200, seed=0, **KID)
    raw = {k: U.percentile_interval(iv.value, iv.draws) for k, iv in res.items()}
    assert raw["fid"].lo < 0 and raw["recall"].hi > 1, "the unclipped ends leave the support here"
    assert 0 <= res["fid"].lo <= res["fid"].value <= res["fid"].hi == raw["fid"].hi
    assert 0 <= res["recall"].lo <= res["recall"].value <= res["recall"].hi <= 1
    assert 0 <= res["precision"].lo <= res["precision"].hi <= 1 and res["is_mean"].lo >= 1
    assert res["kid_mean"].lo == raw["kid_mean"].lo, "KID's estimator can be negative: its ends are not moved"


def test_aggregated_intervals_stay_in_the_support():
    from ddim_bench.reporting.aggregate import combined_interval
    recs = [{"fid_lo": -0.4, "fid_hi": 2.0, "recall_lo": 0.8, "recall_hi": 1.14}]
    assert combined_interval(0.9, recs, "fid") == (0.0, 2.0)
    assert combined_interval(0.97, recs, "recall") == (0.8, 1.0)
    lo, hi = combined_interval(0.2, recs * 2, "fid")
    assert lo == 0.0 and hi > 0.2
