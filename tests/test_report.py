"""The report on a real small sweep with two seed blocks: CSVs equal the records, blocks aggregate as computed by
hand, Table 1 shows mean ± sd, the claims table has verdicts, the figures exist; a corrupt record is left out."""
import csv
import statistics

import pytest
from PIL import Image

from ddim_bench.reporting import report
from ddim_bench.sweep import run as sweep
from ddim_bench.results import store

N = 40


@pytest.fixture(scope="module")
def swept(trained, tmp_path_factory, compose):
    results = tmp_path_factory.mktemp("report")
    cfg = compose("sweep", f"checkpoint={trained / 'checkpoints' / 'last.ckpt'}", f"paths.results_dir={results}",
                      f"n_samples={N}", f"hydra.run.dir={results}/run", "logger.wandb.mode=disabled",
                      "grid.steps=[3,6]", "grid.eta=[0.0,1.0]", "grid.hat=true", "seeds=[0,1]",
                      "metrics.bootstrap.replicates=20")
    sweep.run_sweep(cfg)
    return results


def test_csvs_hold_the_records_and_blocks_aggregate_by_hand(swept):
    rep = report.make_report(str(swept), bootstrap={"replicates": 20, "level": 0.95, "seed": 0})
    recs = store.ResultStore(str(swept)).records()
    assert len(recs) == 12
    with open(rep["paths"]["records_csv"]) as f:
        rows = {r["key"]: r for r in csv.DictReader(f)}
    for r in recs:
        assert float(rows[r["key"]]["fid"]) == pytest.approx(r["fid"])
        assert float(rows[r["key"]]["fid_lo"]) == pytest.approx(r["fid_lo"])
    with open(rep["paths"]["cells_csv"]) as f:
        cells = list(csv.DictReader(f))
    assert len(cells) == 6
    for c in cells:
        fids = [r["fid"] for r in recs if r["steps"] == int(c["steps"]) and r["variance"] == c["variance"]
                and r["eta"] == float(c["eta"])]
        assert len(fids) == 2 == int(c["blocks"])
        assert float(c["fid"]) == pytest.approx(statistics.fmean(fids))
        assert float(c["fid_sd"]) == pytest.approx(statistics.stdev(fids))
        assert float(c["fid_min"]) == pytest.approx(min(fids))
    det6 = [c for c in cells if c["variance"] == "eta" and float(c["eta"]) == 0 and c["steps"] == "6"][0]
    assert float(det6["consistency_mse"]) == 0.0  # the largest S is its own reference
    table = open(rep["paths"]["table"]).read()
    assert "| σ̂ |" in table and "| η = 0 |" in table and " ± " in table and "digits classifier" in table


def test_claims_table_and_figures(swept):
    rep = report.make_report(str(swept), bootstrap={"replicates": 20, "level": 0.95, "seed": 0})
    verdicts = {c["claim"]: c["verdict"] for c in rep["claims"]}
    assert len(verdicts) >= 3
    assert set(verdicts.values()) <= {"holds", "reversed", "not significant"}
    for c in rep["claims"]:
        assert c["lo"] <= c["delta"] <= c["hi"] or c["verdict"] != "holds"
        if c["lo"] <= 0 <= c["hi"]:
            assert c["verdict"] == "not significant"
        # every claim says what it could detect (2.8 SE); one that is not significant, what would settle it
        assert c["detectable"] == pytest.approx(2.8016 * c["se"], rel=1e-4) and c["se"] > 0
        assert (c["blocks_needed"] is None) == (c["verdict"] != "not significant")
    assert "| Detectable | To settle |" in rep["claims_markdown"]
    grid = Image.open(rep["paths"]["consistency_grid"])
    tile = 2 * 33 + 1  # 2x2 images of 8 px upscaled to 32, 1 px borders
    assert grid.size == (64 + 2 * (tile + 1) + 1, 18 + 3 * (tile + 1) + 1)  # labelled margins: left, top
    for name in ("fid_vs_steps", "fid_vs_time", "fid_vs_nfe"):
        assert Image.open(rep["paths"][name]).size[0] > 100


def test_a_corrupt_record_is_named_and_left_out(swept, tmp_path, capsys):
    import shutil
    copy = tmp_path / "copy"
    shutil.copytree(swept, copy)
    victim = sorted((copy / "cells").glob("*.json"))[0]
    victim.write_text(victim.read_text()[:40])
    rep = report.make_report(str(copy))
    assert len(rep["records"]) == 11
    assert victim.name in capsys.readouterr().err


def test_grid_labels_draw_greek_letters_not_empty_boxes():
    """Row labels such as "η = 0" and "σ̂" are drawn with real glyphs: η differs from the font's missing-glyph box
    (an unassigned code point) and from σ, and the label margin of a labelled grid gets ink."""
    import numpy as np
    import torch
    from ddim_bench.reporting.figures import label_font, labelled
    font = label_font()

    def ink(text):
        mask = font.getmask(text)
        return np.array(mask, dtype=np.uint8).reshape(mask.size[1], mask.size[0])

    eta, sigma, missing = ink("η"), ink("σ"), ink("\u0378")
    assert eta.sum() > 0 and not (eta.shape == missing.shape and np.array_equal(eta, missing))
    assert not np.array_equal(eta, sigma)
    grid = torch.full((3, 20, 40), 255, dtype=torch.uint8)
    out = labelled(grid, ["S=10", "S=20"], ["η = 0"], (19, 19)).numpy()
    assert out.shape == (3, 38, 104)
    assert (out[:, 18:, :64] < 128).any() and (out[:, :18, 64:] < 128).any()


@pytest.fixture(scope="module")
def two_sizes(swept, trained, tmp_path_factory, compose):
    """The N = 40 sweep plus a sweep "small" of N = 16 in the same folder."""
    import shutil
    folder = tmp_path_factory.mktemp("mixed") / "results"
    shutil.copytree(swept, folder)
    sweep.run_sweep(compose("sweep", f"checkpoint={trained / 'checkpoints' / 'last.ckpt'}",
                            f"paths.results_dir={folder}", "n_samples=16", f"hydra.run.dir={folder}/run",
                            "logger.wandb.mode=disabled", "grid.steps=[3,6]", "grid.eta=[0.0,1.0]", "grid.hat=false",
                            "sweep_name=small", "metrics.bootstrap.replicates=20"))
    return folder


def test_a_folder_with_two_sample_counts_is_reported_per_n(two_sizes):
    """Before, the claims stopped with "paired sets must have the same sample count" and cells of N = 16 and 40
    were averaged into one row."""
    rep = report.make_report(str(two_sizes), bootstrap={"replicates": 20, "level": 0.95, "seed": 0})
    assert rep["setups"] == ["N = 40", "N = 16"]
    with open(rep["paths"]["cells_csv"]) as f:
        cells = list(csv.DictReader(f))
    assert sorted(int(c["n_samples"]) for c in cells) == [16] * 4 + [40] * 6
    for c in cells:
        assert int(c["blocks"]) == (2 if c["n_samples"] == "40" else 1)
    table = open(rep["paths"]["table"]).read()
    assert "### N = 40" in table and "### N = 16" in table and "N = 16 samples per block" in table
    assert {c["setup"] for c in rep["claims"]} == {"N = 40", "N = 16"}
    assert "fid_vs_nfe-n16" in rep["paths"] and "fid_vs_nfe-n40" in rep["paths"]


def test_sweep_name_selects_the_records_of_one_sweep(two_sizes):
    rep = report.make_report(str(two_sizes), sweep="small")
    assert len(rep["records"]) == 4 and rep["setups"] == [""]
    with pytest.raises(report.UserError, match="sweep_name=nonexistent: .* its sweeps: digits, small"):
        report.make_report(str(two_sizes), sweep="nonexistent")


def test_report_app_filters_by_sweep_name_and_keeps_one_report_run_to_sync(two_sizes, cli, tmp_path):
    args = [f"paths.results_dir={two_sizes}", f"hydra.run.dir={tmp_path / 'run'}", "logger.wandb.mode=offline",
            "bootstrap.replicates=5"]
    proc = cli("ddim-bench-report", *args, "sweep_name=nonexistent", check=False)
    assert proc.returncode == 2 and proc.stderr.strip().splitlines() == [
        f"error: sweep_name=nonexistent: results_dir={two_sizes} holds no records of that sweep; its sweeps: digits, "
        f"small"]
    runs = two_sizes / "report" / "run" / "wandb"
    for _ in range(2):
        proc = cli("ddim-bench-report", *args, "sweep_name=small")
        left = sorted(runs.glob("offline-run-*"))
        assert len(left) == 1, left
        assert f"W&B report run: {left[0]} (replaces the previous report run" in proc.stdout
        assert "N = 16 samples per block" in proc.stdout and "N = 40" not in proc.stdout


def test_curves_dodge_samplers_at_one_nfe_and_label_steps_plainly():
    from ddim_bench.reporting.figures import curve_figure
    rows = [{"row": name, "nfe": s, "steps": s, "fid": f, "fid_lo": f - 1, "fid_hi": f + 1}
            for name, f in (("ddim", 5.0), ("euler", 5.0)) for s in (10, 20)]
    fig = curve_figure(rows, "nfe", "NFE")
    ax = fig.axes[0]
    xs = sorted({tuple(line.get_xdata()) for line in ax.get_lines() if len(line.get_xdata()) == 2})
    assert len(xs) == 2 and xs[0][0] < 10 < xs[1][0] and xs[0][1] < 20 < xs[1][1]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["10", "20"]


def test_seconds_axis_labels_plain_values_and_no_minor_labels():
    """fid_vs_time: over 6e-4 … 7e-3 s the labels are 0.001, 0.002, 0.005 (not 3×10⁻³4×10⁻³ run together)."""
    from ddim_bench.reporting.figures import curve_figure
    rows = [{"row": "η = 0", "sec_per_image": s, "fid": 1.0, "fid_lo": 0.9, "fid_hi": 1.1} for s in (6e-4, 7e-3)]
    fig = curve_figure(rows, "sec_per_image", "seconds per image")
    ax = fig.axes[0]
    fig.canvas.draw()
    lo, hi = ax.get_xlim()
    major = [t.get_text() for t, v in zip(ax.get_xticklabels(), ax.get_xticks()) if lo <= v <= hi]
    assert major == ["0.001", "0.002", "0.005"], major
    assert all(t.get_text() == "" for t in ax.get_xticklabels(minor=True))
