"""The report on a real small sweep with two seed blocks: CSVs equal the records, blocks aggregate as computed by
hand, Table 1 shows mean ± sd, the claims table has verdicts, the figures exist; a corrupt record is left out."""
import csv
import statistics

import pytest
from PIL import Image

from ddim_bench.apps import report, sweep
from ddim_bench.evaluation import store

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
