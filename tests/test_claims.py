"""The paper's claims as paired comparisons, on crafted cells whose features have known FID differences."""
import zlib

import pytest
import torch
from torch_fidelity.metric_fid import fid_features_to_statistics, fid_statistics_to_metric

from ddim_bench.reporting.claims import NOT_CHECKED, claims_markdown, evaluate_claims

D, N = 8, 200
LAYERS = {"fid": "f"}
SEEDS = (0, 1, 2)
# Mean shift of each cell's features (all coordinates), reference N(0, I): FID ≈ D · shift² + small terms.
HOLDS = {("eta", 0.0, 10): 0.3, ("eta", 1.0, 10): 0.6, ("hat", 1.0, 10): 1.5,
         ("eta", 0.0, 1000): 0.15, ("eta", 1.0, 1000): 0.2, ("hat", 1.0, 1000): 0.0}


@pytest.fixture(scope="module", autouse=True)
def _single_thread(one_thread):
    """This module's torch work runs single-threaded (the shared ``one_thread`` fixture)."""


def normal(shape, seed):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def grid(shifts, cell_noise=0.01):
    """Records and features: cells of a seed block share z (their x_T); each cell adds its shift and own noise."""
    records, feats = [], {}
    for (variance, eta, steps), shift in shifts.items():
        for seed in SEEDS:
            key = f"{variance}-{eta}-{steps}-{seed}"
            records.append({"steps": steps, "eta": eta, "variance": variance, "skip": "quad", "seed": seed,
                            "fid": None, "key": key})
            noise = normal((N, D), zlib.crc32(key.encode()))
            feats[key] = {"f": normal((N, D), 100 + seed) + shift + cell_noise * noise}
    return records, feats


@pytest.fixture(scope="module")
def ref():
    return {"f": normal((1000, D), 7)}


def tf_delta(feats, ref, a, b):
    """Mean over seed blocks of torch-fidelity's FID(a) − FID(b); a, b = (variance, eta, steps)."""
    def fid(x):
        return fid_statistics_to_metric(fid_features_to_statistics(x), fid_features_to_statistics(ref["f"]),
                                        False)["frechet_inception_distance"]
    return sum(fid(feats[f"{a[0]}-{a[1]}-{a[2]}-{s}"]["f"]) - fid(feats[f"{b[0]}-{b[1]}-{b[2]}-{s}"]["f"])
               for s in SEEDS) / len(SEEDS)


def by_claim(rows):
    return {r["claim"]: r for r in rows}


def test_claims_hold_on_a_grid_built_to_satisfy_them(ref):
    records, feats = grid(HOLDS)
    recon = {10: 0.01 + 0.002 * normal(64, 1).abs(), 100: 0.001 + 0.0002 * normal(64, 2).abs(),
             1000: 0.0001 + 0.00002 * normal(64, 3).abs()}
    base = {s: torch.randint(0, 256, (6, 3, 8, 8), generator=torch.Generator().manual_seed(s)) for s in SEEDS}
    kept = {}
    for seed in SEEDS:
        kept[f"eta-0.0-1000-{seed}"] = base[seed].to(torch.uint8)
        kept[f"eta-0.0-10-{seed}"] = (base[seed] + torch.randint(-10, 11, base[seed].shape)).clamp(0, 255).to(
            torch.uint8)
    rows = evaluate_claims(records, feats.get, ref, layers=LAYERS, reconstruction=recon, kept=kept, replicates=100)
    got = by_claim(rows)
    assert list(got) == ["η = 0 beats η = 1 at the fewest steps",
                         "at η = 0, FID falls from the fewest to the most steps",
                         "σ̂ is the worst row at the fewest steps", "σ̂ is the best row at S = 1000",
                         "reconstruction error falls with S", "η = 0 samples are consistent across S"]
    assert all(r["verdict"] == "holds" and r["hi"] < 0 and r["level"] == 0.95 for r in rows)
    assert all(r["blocks"] == 3 for r in rows if r["claim"] != "reconstruction error falls with S")
    # Δ = the blocks' mean of torch-fidelity's FID differences, ≈ D · (shift_a² − shift_b²) (−2.16, −0.54, …).
    expected = {"η = 0 beats η = 1 at the fewest steps": (("eta", 0.0, 10), ("eta", 1.0, 10), -2.16),
                "at η = 0, FID falls from the fewest to the most steps": (("eta", 0.0, 1000), ("eta", 0.0, 10), -0.54),
                "σ̂ is the worst row at the fewest steps": (("eta", 1.0, 10), ("hat", 1.0, 10), -15.12),
                "σ̂ is the best row at S = 1000": (("hat", 1.0, 1000), ("eta", 0.0, 1000), -0.18)}
    for claim, (a, b, approx) in expected.items():
        assert got[claim]["delta"] == pytest.approx(tf_delta(feats, ref, a, b), rel=1e-6), claim
        assert got[claim]["delta"] == pytest.approx(approx, abs=0.15 + 0.05 * abs(approx)), claim
    assert got["σ̂ is the worst row at the fewest steps"]["comparison"] == "FID(η=1) − FID(σ̂) at S=10 (weakest of 2)"
    assert got["σ̂ is the best row at S = 1000"]["comparison"] == "FID(σ̂) − FID(η=0) at S=1000 (weakest of 2)"
    recon_row = got["reconstruction error falls with S"]
    assert recon_row["delta"] == pytest.approx(float((recon[1000] - recon[10]).mean()), rel=1e-12)
    md = claims_markdown(rows)
    assert md.count("| holds |") == 6 and md.startswith("| Claim | Comparison | Δ | Interval | Blocks | Verdict |")


def test_cells_that_cannot_be_paired_are_shown_not_checked(ref):
    """Cells that are there but share no seed block with what pairing needs (records without subset values or
    features; blocks of other seeds) give a row "not checked", not a silently shorter table."""
    records, feats = grid(HOLDS)
    for r in records:
        if (r["variance"], r["eta"], r["steps"]) == ("eta", 1.0, 10):
            feats[r["key"]] = None                      # an old record: no subset values, no features
        if (r["variance"], r["steps"]) == ("hat", 1000):
            r["seed"] += 10                              # other seed blocks than the rest of S = 1000
    rows = by_claim(evaluate_claims(records, feats.get, ref, layers=LAYERS, replicates=50))
    assert list(rows) == ["η = 0 beats η = 1 at the fewest steps",
                          "at η = 0, FID falls from the fewest to the most steps",
                          "σ̂ is the worst row at the fewest steps", "σ̂ is the best row at S = 1000"]
    unchecked = {c: r for c, r in rows.items() if r["verdict"].startswith(NOT_CHECKED + ": ")}
    assert sorted(unchecked) == ["η = 0 beats η = 1 at the fewest steps", "σ̂ is the best row at S = 1000",
                                 "σ̂ is the worst row at the fewest steps"]
    assert all(r["delta"] is None and r["blocks"] == 0 for r in unchecked.values())
    # the weakest of several comparisons is unknown while one of them cannot be made: it names that one
    assert unchecked["σ̂ is the worst row at the fewest steps"]["comparison"] == "FID(η=1) − FID(σ̂) at S=10"
    # with why: nothing to pair in the common blocks, or no common block
    assert "subset values or features (old records" in unchecked["η = 0 beats η = 1 at the fewest steps"]["verdict"]
    assert "share no seed block (seeds 10, 11, 12 and 0, 1, 2)" in unchecked["σ̂ is the best row at S = 1000"]["verdict"]
    assert rows["at η = 0, FID falls from the fewest to the most steps"]["verdict"] == "holds"
    md = claims_markdown(list(rows.values()))
    line = next(ln for ln in md.splitlines() if ln.startswith("| η = 0 beats η = 1"))
    assert f"| {NOT_CHECKED}: no common seed block" in line and "None" not in line and "[" not in line, line


def test_reversed_and_not_significant(ref):
    reversed_grid = {**HOLDS, ("eta", 0.0, 10): 0.6, ("eta", 1.0, 10): 0.3}
    rows = by_claim(evaluate_claims(*grid(reversed_grid), ref, layers=LAYERS, replicates=100))
    first = rows["η = 0 beats η = 1 at the fewest steps"]
    assert first["verdict"] == "reversed" and first["lo"] > 0
    # Same shift for η = 0 and η = 1 at S = 10, each cell with its own sizeable noise: no real difference.
    tie = {**HOLDS, ("eta", 1.0, 10): 0.3}
    rows = by_claim(evaluate_claims(*grid(tie, cell_noise=0.3), ref, layers=LAYERS, replicates=100))
    first = rows["η = 0 beats η = 1 at the fewest steps"]
    assert first["verdict"] == "not significant" and first["lo"] < 0 < first["hi"]


def test_missing_cells_are_omitted_not_faked(ref):
    records, feats = grid({k: v for k, v in HOLDS.items() if k != ("eta", 1.0, 10)})
    feats[records[0]["key"]] = None  # one block of η = 0, S = 10 has no stored features
    rows = by_claim(evaluate_claims(records, feats.get, ref, layers=LAYERS, replicates=50))
    assert "η = 0 beats η = 1 at the fewest steps" not in rows
    assert rows["σ̂ is the worst row at the fewest steps"]["comparison"].endswith("(weakest of 1)")
    assert rows["σ̂ is the worst row at the fewest steps"]["blocks"] == 2
    assert "reconstruction error falls with S" not in rows and "η = 0 samples are consistent across S" not in rows
    no_1000 = [r for r in records if r["steps"] != 1000]
    rows = by_claim(evaluate_claims(no_1000, feats, ref, layers=LAYERS, replicates=50))
    assert list(rows) == ["σ̂ is the worst row at the fewest steps"]
    assert evaluate_claims([], feats, ref, layers=LAYERS) == []
    assert claims_markdown([]).startswith("No claim")
