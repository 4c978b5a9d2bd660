"""The samplers' report on crafted cells whose features have known FID differences: the table by counted NFE, each
sampler against DDIM η = 0 at the same NFE (paired), the best cell at each budget, and user claims."""
import zlib

import pytest
import torch
from torch_fidelity.metric_fid import fid_features_to_statistics, fid_statistics_to_metric

from ddim_bench.errors import UserError
from ddim_bench.reporting import samplers, user_claims
from ddim_bench.reporting.aggregate import aggregate, by_cell
from ddim_bench.reporting.claims import options

D, N, SEEDS = 8, 200, (0, 1, 2)
LAYERS = {"fid": "f"}
# (sampler, S) -> (counted NFE, seconds per image, mean shift of the features; FID ≈ D · shift²)
CELLS = {("ddim", 5): (5, 0.05, 0.6), ("ddim", 9): (9, 0.09, 0.5), ("ddim", 10): (10, 0.10, 0.45),
         ("heun", 5): (9, 0.20, 0.3), ("pndm", 5): (14, 0.14, 0.5), ("dpmpp_2m", 5): (5, 0.06, 0.62)}
SKIP = {"ddim": "uniform", "heun": "trailing", "pndm": "uniform", "dpmpp_2m": "trailing"}


@pytest.fixture(scope="module", autouse=True)
def _single_thread(one_thread):
    """This module's torch work runs single-threaded (the shared ``one_thread`` fixture)."""


def normal(shape, seed):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def fid(x, ref):
    return fid_statistics_to_metric(fid_features_to_statistics(x), fid_features_to_statistics(ref["f"]),
                                    False)["frechet_inception_distance"]


@pytest.fixture(scope="module")
def sweep():
    """Records (as the store holds them, FID from torch-fidelity) and per-sample features: the cells of a seed
    block share z (their x_T); each cell adds its shift and a little noise of its own."""
    ref = {"f": normal((1000, D), 7)}
    records, feats = [], {}
    for (name, S), (nfe, sec, shift) in CELLS.items():
        for seed in SEEDS:
            key = f"{name}-{S}-{seed}"
            feats[key] = {"f": normal((N, D), 100 + seed) + shift + 0.01 * normal((N, D), zlib.crc32(key.encode()))}
            records.append({"sampler": name, "steps": S, "eta": 0.0, "variance": "eta", "skip": SKIP[name],
                            "clip_x0": False, "seed": seed, "key": key, "n_samples": N, "nfe": nfe,
                            "sec_per_image": sec, "fid": fid(feats[key]["f"], ref)})
    return records, feats, ref


def table(md: str) -> dict[str, dict[str, str]]:
    """The first Markdown table in ``md`` as {first cell: {column title: cell}}."""
    start = 0 if md.startswith("|") else md.index("\n|") + 1
    lines = [ln for ln in md[start:].split("\n\n")[0].splitlines() if not ln.startswith("|---")]
    head = [c.strip() for c in lines[0].strip("|").split("|")]
    rows = [[c.strip() for c in ln.strip("|").split("|")] for ln in lines[1:]]
    return {r[0]: dict(zip(head, r)) for r in rows}


def mean_fid(records, name, S):
    return sum(r["fid"] for r in records if r["sampler"] == name and r["steps"] == S) / len(SEEDS)


def test_table_is_indexed_by_counted_nfe_with_s_where_it_differs(sweep):
    records, _, _ = sweep
    t = table(samplers.by_nfe_markdown(aggregate(records)))
    assert list(t) == ["5", "9", "10", "14"]
    assert t["9"]["heun"].endswith("(S=5)") and t["14"]["pndm"].endswith("(S=5)")
    assert t["9"]["η = 0"].startswith(f"{mean_fid(records, 'ddim', 9):.3g} ± ") and "(S=" not in t["9"]["η = 0"]
    assert t["5"]["heun"] == "" and t["10"]["dpmpp_2m"] == ""


def test_each_sampler_against_ddim_at_the_same_nfe_is_paired(sweep):
    records, feats, ref = sweep
    rows, unmatched = samplers.vs_ddim(records, feats.get, ref, LAYERS, options(100))
    by = {r["sampler"]: r for r in rows}
    assert set(by) == {"heun", "dpmpp_2m"} and unmatched == ["S=5 pndm uniform (NFE 14)"]
    heun = by["heun"]  # 9 calls against DDIM at S = 9; Δ ≈ D (0.3² − 0.5²) = −1.28
    assert heun["nfe"] == 9 and heun["comparison"] == "FID(S=5 heun trailing) − FID(S=9 η = 0 uniform)"
    assert heun["delta"] == pytest.approx(mean_fid(records, "heun", 5) - mean_fid(records, "ddim", 9), rel=1e-6)
    assert heun["delta"] == pytest.approx(-1.28, abs=0.2) and heun["hi"] < 0 and heun["verdict"] == "better"
    assert heun["blocks"] == 3
    worse = by["dpmpp_2m"]  # Δ ≈ D (0.62² − 0.6²) = 0.196 at 5 calls, paired: its noise is tiny
    assert worse["delta"] == pytest.approx(0.196, abs=0.05) and worse["lo"] > 0 and worse["verdict"] == "worse"
    md = samplers.vs_ddim_markdown(rows, unmatched)
    assert "| heun | 9 | 5 |" in md and "| better |" in md and "grid.ddim_at_nfe=true" in md


def test_front_is_the_best_cell_at_each_budget(sweep):
    records, feats, ref = sweep
    rows = aggregate(records)
    by_nfe = samplers.front_steps(records, rows, "nfe", feats.get, ref, LAYERS, options(100))
    assert [(s["sampler"], s["budget"]) for s in by_nfe] == [("ddim", 5), ("heun", 9)]
    assert by_nfe[0]["delta"] is None and by_nfe[1]["verdict"] == "better"
    assert by_nfe[1]["delta"] == pytest.approx(mean_fid(records, "heun", 5) - mean_fid(records, "ddim", 5), rel=1e-6)
    by_sec = samplers.front_steps(records, rows, "sec_per_image", feats.get, ref, LAYERS, options(100))
    assert [(s["sampler"], s["steps"]) for s in by_sec] == [("ddim", 5), ("ddim", 9), ("ddim", 10), ("heun", 5)]
    t = table(samplers.front_markdown(by_nfe))
    assert t["9"]["best cell"] == "S=5 heun trailing" and t["9"]["Verdict"] == "better"


def cell_ref(**settings):
    """A claim's cell as the config gives it (``schema.CellRef``, defaults filled in)."""
    return {"sampler": "ddim", "eta": 0.0, "variance": "eta", "skip": None, "clip_x0": None, **settings}


def claim(a, b, direction="lower", metric="fid"):
    return {"a": a, "b": b, "metric": metric, "direction": direction, "name": None}


def test_a_user_claim_is_evaluated_as_the_built_in_comparisons_are(sweep):
    records, feats, ref = sweep
    groups = by_cell(records)
    a, b = cell_ref(sampler="heun", steps=5), cell_ref(steps=9)
    mine = [claim(a, b), claim(a, b, "higher")]
    pairs = user_claims.check(mine, list(groups))
    rows = user_claims.evaluate(mine, pairs, groups, feats.get, ref, LAYERS, options(100))
    vs, _ = samplers.vs_ddim(records, feats.get, ref, LAYERS, options(100))
    heun = next(r for r in vs if r["sampler"] == "heun")
    assert [(r["delta"], r["lo"], r["hi"]) for r in rows] == [(heun["delta"], heun["lo"], heun["hi"])] * 2
    assert [r["verdict"] for r in rows] == ["holds", "reversed"]
    assert rows[0]["claim"] == "(user) fid of S=5 heun trailing is lower than of S=9 η = 0 uniform"


def test_a_comparison_that_cannot_be_paired_is_a_row_not_checked(sweep):
    """The heun cell's records are of other seed blocks than DDIM's: the user's claim and the comparison with DDIM
    at the same NFE are shown "not checked", not left out."""
    from ddim_bench.reporting.claims import NOT_CHECKED
    records, feats, ref = sweep
    moved = [{**r, "seed": r["seed"] + 10} if r["sampler"] == "heun" else r for r in records]
    groups = by_cell(moved)
    mine = [claim(cell_ref(sampler="heun", steps=5), cell_ref(steps=9))]
    [row] = user_claims.evaluate(mine, user_claims.check(mine, list(groups)), groups, feats.get, ref, LAYERS,
                                 options(100))
    assert row["delta"] is None and row["blocks"] == 0
    assert row["verdict"] == f"{NOT_CHECKED}: the cells share no seed block (seeds 10, 11, 12 and 0, 1, 2): run both on the same seeds"
    vs, _ = samplers.vs_ddim(moved, feats.get, ref, LAYERS, options(100))
    heun = next(r for r in vs if r["sampler"] == "heun")
    assert heun["verdict"] == row["verdict"] and heun["nfe"] == 9
    line = next(ln for ln in samplers.vs_ddim_markdown(vs, []).splitlines() if ln.startswith("| heun"))
    assert NOT_CHECKED in line and "None" not in line, line


@pytest.mark.parametrize("ref,words", [
    ({"sampler": "heun", "steps": 7}, ["claims[0].a=", "steps: 7", "is not a cell of this sweep", "heun trailing S=5"]),
    ({"sampler": "euler", "steps": 5}, ["claims[0].a=", "sampler: euler", "is not a cell"]),
    ({"sampler": "ddim", "steps": 5, "eta": 1.0}, ["eta: 1.0", "is not a cell"]),
])
def test_a_claim_naming_a_cell_the_sweep_lacks_is_one_line(sweep, ref, words):
    cells = list(by_cell(sweep[0]))
    with pytest.raises(UserError) as err:
        user_claims.check([claim(cell_ref(**ref), cell_ref(steps=9))], cells)
    msg = str(err.value)
    assert "\n" not in msg and all(w in msg for w in words), msg


def test_a_claim_matching_two_cells_asks_for_the_skip(sweep):
    from ddim_bench.sampling.cell import Cell
    cells = list(by_cell(sweep[0])) + [Cell(9, skip="trailing")]
    a = cell_ref(steps=9)
    with pytest.raises(UserError, match=r"claims\[0\]\.a=.* matches 2 cells .*set claims\[0\]\.a\.skip"):
        user_claims.check([claim(a, {**a, "steps": 5})], cells)
    assert user_claims.check([claim({**a, "skip": "trailing"}, {**a, "steps": 5})], cells)[0][0] == cells[-1]


def test_sampler_sweep_report_and_wandb_show_nfe_verdicts_front_and_a_user_claim(trained, tmp_path, cli, compose):
    """A real sweep (DDIM, Heun, DPM-Solver++(3M) at S = 3, DDIM also at Heun's 5 calls) and its report through the
    console script: records carry each scheduler's configuration in their key, the report has the NFE table, the
    paired verdicts against DDIM, the front and the user's claim, and the W&B report run holds them as tables."""
    from wandb_records import find_runs, read_run

    from ddim_bench.sweep import run as sweep_app
    from ddim_bench.results import store
    from ddim_bench.results.record import cell_key, key_fields
    from ddim_bench.sampling.cell import Cell
    mine = "claims=[{a: {sampler: heun, steps: 3}, b: {sampler: dpmpp_3m, steps: 3}, direction: lower}]"
    done = sweep_app.run_sweep(compose(
        "sweep", f"checkpoint={trained / 'checkpoints' / 'last.ckpt'}", f"paths.results_dir={tmp_path}",
        "n_samples=40", f"hydra.run.dir={tmp_path}/run", "grid.samplers=[ddim,heun,dpmpp_3m]", "grid.steps=[3]",
        "grid.eta=[0.0]", "grid.hat=false", "grid.ddim_at_nfe=true", "seeds=[0,1]", "logger.wandb.mode=disabled",
        "metrics.bootstrap.replicates=10", "sweep_name=mixed", mine))  # the report's sweep_name= selects it
    assert sorted((r["sampler"], r["steps"], r["nfe"]) for r in done if r["seed"] == 0) == [
        ("ddim", 3, 3), ("ddim", 5, 5), ("dpmpp_3m", 3, 3), ("heun", 3, 5)]
    for r in done:
        s = r["scheduler"]
        assert len(s["timesteps"]) == r["nfe"]  # the timesteps it called the model at, one call each
        if r["sampler"] == "ddim":
            assert s["class"] == "ddim (ours)" and "scheduler" not in key_fields(Cell.from_record(r), 0, **{
                k: r[k] for k in ("n_samples", "checkpoint_sha256", "weights", "schedule", "extractor", "reference",
                                  "keep_images", "fast", "noise_version")})
            continue
        fields = {k: r[k] for k in ("n_samples", "checkpoint_sha256", "weights", "schedule", "extractor",
                                    "reference", "keep_images", "fast", "noise_version")}
        assert r["key"] == cell_key(key_fields(Cell.from_record(r), r["seed"], **fields, scheduler=s))
        changed = {**s, "lower_order_final": not s.get("lower_order_final")}
        assert r["key"] != cell_key(key_fields(Cell.from_record(r), r["seed"], **fields, scheduler=changed))
    dpm = next(r["scheduler"] for r in done if r["sampler"] == "dpmpp_3m")
    assert dpm["orders"] == [1, 2, 1] and dpm["final_sigmas_type"] == "zero" and dpm["euler_at_final"] is False
    proc = cli("ddim-bench-report", f"results_dir={tmp_path}", "sweep_name=mixed", "logger.wandb.mode=offline",
               f"hydra.run.dir={tmp_path / 'report-run'}", "bootstrap.replicates=20")
    t = table(proc.stdout)  # the NFE table comes first
    assert list(t) == ["3", "5"] and t["5"]["heun"].endswith("(S=3)") and t["5"]["η = 0"] != ""
    assert "| heun | 5 | 3 |" in proc.stdout and "| dpmpp_3m | 3 | 3 |" in proc.stdout
    assert "Best at ≤ k calls" in proc.stdout and "Best at ≤ k s/image" in proc.stdout
    claims_md = (tmp_path / "report" / "claims.md").read_text()
    assert "(user) fid of S=3 heun uniform is lower than of S=3 dpmpp_3m uniform" in claims_md
    rep = next(read_run(p) for p in find_runs(str(tmp_path)) if read_run(p)["job_type"] == "report")
    vs = rep["tables"]["vs_ddim"]
    assert sorted(row[vs["columns"].index("sampler")] for row in vs["data"]) == ["dpmpp_3m", "heun"]
    assert {row[vs["columns"].index("verdict")] for row in vs["data"]} <= {"better", "worse", "not significant"}
    front = rep["tables"]["best_at_nfe"]
    fids = [row[front["columns"].index("fid")] for row in front["data"]]
    assert fids == sorted(fids, reverse=True) and len(rep["tables"]["best_at_seconds"]["data"]) >= 1
    claims = rep["tables"]["claims"]
    assert any(str(row[claims["columns"].index("claim")]).startswith("(user)") for row in claims["data"])
    bad = cli("ddim-bench-report", f"results_dir={tmp_path}", "logger.wandb.mode=disabled",
              f"hydra.run.dir={tmp_path / 'bad-run'}", "claims=[{a: {sampler: heun, steps: 20}, b: {steps: 3}, "
              "direction: lower}]", check=False)
    assert bad.returncode == 2 and bad.stderr.strip().startswith("error: claims[0].a={sampler: heun, steps: 20")
