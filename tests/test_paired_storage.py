"""Paired differences from what each record stores (its metrics on the intervals' disjoint subsets), without
per-sample features: the same interval as from the features, to the last bit, for every metric a claim can use;
the record stays small; KID's subset values are torch-fidelity's whichever way they are computed."""
import json

import pytest
import torch
from torch_fidelity.metric_kid import kid_featuresdict_to_metric

from ddim_bench.reporting import claims
from ddim_bench.results import record
from ddim_bench.scoring import draws as D
from ddim_bench.scoring import subsets as S

LAYERS = {"fid": "f", "kid": "f", "isc": "logits", "prc": "f"}
KEYS = ("fid", "kid_mean", "is_mean", "precision", "recall")
SETTINGS = dict(partitions=8, seed=3)  # KID: torch-fidelity's 100 subsets of min(1 000, subset) samples


@pytest.fixture(scope="module", autouse=True)
def _single_thread(one_thread):
    """This module's torch work runs single-threaded (the shared ``one_thread`` fixture)."""


def cells(n=200, d=12):
    """Two cells of one seed block (sample i of both from the same latent draw) and a reference."""
    g = torch.Generator().manual_seed(0)
    z = torch.randn(n, d, generator=g, dtype=torch.float64)
    a = {"f": z * 1.1 + 0.05, "logits": z[:, :10] * 2}
    b = {"f": z * 1.1 + 0.15 + 0.1 * torch.randn(n, d, generator=g, dtype=torch.float64),
         "logits": z[:, :10] * 2 + 0.3}
    ref = {"f": torch.randn(300, d, generator=g, dtype=torch.float64)}
    return a, b, ref


def stored_record(key: str, gen: dict, ref: dict) -> dict:
    """A record as a sweep writes it (through the record builder), read back from its JSON."""
    values: dict = {}
    S.subset_metrics(gen, ref, LAYERS, ("fid", "kid", "isc", "prc"), values=values, **SETTINGS)
    sub = record.subset_fields(values, n=len(gen["f"]), partitions=SETTINGS["partitions"], seed=SETTINGS["seed"])
    rec = {"key": key, "seed": 0, **record.measured_fields({}, {}, n_samples=len(gen["f"]), n_scored=len(gen["f"]),
           seconds=1.0, nfe=1, nfe_predicted=1, flops_per_call=None, peak_mem_mb=0.0, world_size=1, device="cpu",
           device_name="cpu", timings={}, subsets=sub)}
    return json.loads(json.dumps(rec))


def test_stored_subset_values_give_the_features_interval_exactly():
    a, b, ref = cells()
    ra, rb = stored_record("a", a, ref), stored_record("b", b, ref)
    opts = claims.options(partitions=SETTINGS["partitions"], seed=SETTINGS["seed"])
    feats = {"a": a, "b": b}
    for key in KEYS:
        from_values = claims.paired_delta({0: ra}, {0: rb}, key, lambda k: None, {}, LAYERS, opts)[0]
        iv = S.paired_subset_difference(a, b, ref, key, layers=LAYERS, partitions=SETTINGS["partitions"],
                                        seed=SETTINGS["seed"])
        assert from_values.value == pytest.approx(iv.value, rel=1e-12, abs=1e-15), key
        assert from_values.se == pytest.approx(iv.se, rel=1e-12, abs=1e-15) and iv.se > 0, key
        # an older record without stored values: the same number from the features
        old = [{k: v for k, v in r.items() if k != "subsets"} for r in (ra, rb)]
        from_features = claims.paired_delta({0: old[0]}, {0: old[1]}, key, feats.get, ref, LAYERS, opts)[0]
        assert (from_features.lo, from_features.hi) == pytest.approx((from_values.lo, from_values.hi), rel=1e-12), \
            key


def test_a_pair_without_values_or_features_is_left_out():
    a, b, ref = cells()
    ra = stored_record("a", a, ref)
    rb = {k: v for k, v in stored_record("b", b, ref).items() if k != "subsets"}
    opts = claims.options(partitions=SETTINGS["partitions"], seed=SETTINGS["seed"])
    assert claims.paired_delta({0: ra}, {0: rb}, "fid", lambda k: None, {}, LAYERS, opts) is None


def test_the_record_keeps_every_float_and_stays_small():
    a, _, ref = cells()
    rec = stored_record("a", a, ref)
    values: dict = {}
    S.subset_metrics(a, ref, LAYERS, ("fid", "kid", "isc", "prc"), values=values, **SETTINGS)
    for key, (full, levels) in values.items():
        assert rec["subsets"]["values"][key][0] == full                    # bit for bit, through JSON
        assert rec["subsets"]["values"][key][1] == levels
        assert len(levels) == (3 if key == "fid" else 2)                   # FD∞ needs FID's eighths only
        assert [len(v) for v in levels[:2]] == [2 * SETTINGS["partitions"], 4 * SETTINGS["partitions"]]
    # P partitions: 14 P FID values and 6 P of each other metric, whatever N; ≤ 20 bytes each in JSON
    count = 14 * SETTINGS["partitions"] + 4 * 6 * SETTINGS["partitions"] + 5
    assert len(json.dumps(rec["subsets"])) < 20 * count


def test_kid_of_subsets_is_torch_fidelity_either_way():
    """The sub-subset-by-sub-subset path (bounded in N) and the kernel path give torch-fidelity's KID of each
    subset."""
    a, _, ref = cells()
    x, y = a["f"], ref["f"]
    idx = S.subset_indices(len(x), 4, 3, 0)[1]                              # 16 quarters of 50
    p, q = D.kid_subsets(idx.shape[1], len(y), 40, 5, 2020)
    direct, kernel = (f(x, y, idx, p, q, D.CHUNK_BYTES) for f in (D._kid_direct, D._kid_kernel))
    assert torch.allclose(direct, kernel, rtol=1e-10, atol=1e-13)
    got = D.kid_draws(x, y, idx, 40, 5, 2020)                             # either, with the reference term
    for r in range(len(idx)):
        tf = kid_featuresdict_to_metric({"f": x[idx[r]]}, ref, "f", kid_subset_size=40, kid_subsets=5,
                                        rng_seed=2020, verbose=False)["kernel_inception_distance_mean"]
        assert float(got[r]) == pytest.approx(tf, rel=1e-9)


@pytest.mark.slow
def test_a_sweep_without_features_gives_the_claims_of_one_with_them(untrained_ckpt, tmp_path, compose):
    """Two sweeps of the same cells: one keeps no per-sample features (its records hold their subset values),
    the other keeps them and stored its values on another partition (interval seed 1), so that the report
    recomputes its pairs from the features on the report's partition (seed 0).  The claims are the same but for
    the features' float16 rounding, which the stored values (from the features as extracted) do not have."""
    from ddim_bench.reporting import report
    from ddim_bench.results.store import ResultStore
    from ddim_bench.sweep import run as sweep
    common = [f"checkpoint={untrained_ckpt}", "n_samples=64", "grid.steps=[2,4]", "grid.eta=[0.0,1.0]",
              "grid.hat=false", "seeds=[0,1]", "logger.wandb.mode=disabled", "keep_images=4",
              "metrics.isc=false", "metrics.kid=false", "metrics.prc=false"]
    lean, full = tmp_path / "lean", tmp_path / "full"
    sweep.run_sweep(compose("sweep", *common, f"paths.results_dir={lean}", f"hydra.run.dir={lean}/run",
                            "metrics.keep_features=false"))
    sweep.run_sweep(compose("sweep", *common, f"paths.results_dir={full}", f"hydra.run.dir={full}/run",
                            "metrics.bootstrap.seed=1"))
    assert not list((lean / "cells").glob("*.features.pt")) and not (lean / "reference").exists()
    assert all(r["subsets"]["seed"] == 0 and len(r["subsets"]["values"]["fid"][1]) == 2   # halves, quarters:
               for r in ResultStore(str(lean)).records())                                # N/8 <= d, no eighths
    boot = {"replicates": 20, "level": 0.95, "seed": 0, "partitions": 16}
    a, b = (report.make_report(str(f), bootstrap=boot)["claims"] for f in (lean, full))
    fid = [c for c in a if c["claim"].startswith(("η = 0 beats", "at η = 0, FID"))]
    assert len(fid) == 2 and all(c["blocks"] == 2 for c in fid)
    assert [c["claim"] for c in a] == [c["claim"] for c in b]
    for x, y in zip(a, b):  # measured: Δ within 0.2 %, the ends within 1.1 % of the interval's width
        width = y["hi"] - y["lo"]
        assert x["delta"] == pytest.approx(y["delta"], rel=0.01), x["claim"]
        assert abs(x["lo"] - y["lo"]) < 0.03 * width and abs(x["hi"] - y["hi"]) < 0.03 * width, x["claim"]
