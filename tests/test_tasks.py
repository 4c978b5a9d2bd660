"""``ddim-bench-tasks`` on the session's digits model: reconstruction (Table 2), interpolation, report."""
import csv
import shutil

import numpy as np
import pytest
import torch
from conftest import cli
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from PIL import Image

from ddim_bench import cli as app_cli
from ddim_bench.models import checkpoint
from ddim_bench import config
from ddim_bench import paper
from ddim_bench.apps import tasks
from ddim_bench.sampling.cell import Cell
from ddim_bench.sampling.generate import generate
from wandb_records import find_runs, read_run

N, PAIRS, POINTS, PX = 32, 3, 11, 8
SHOWN = 32  # grids upscale 8-px images to 32 px (ddim_bench.images.MIN_TILE)
STEPS = [10, 20, 50, 100]
ONE_THREAD = {"OMP_NUM_THREADS": "1"}  # the tiny model runs fastest single-threaded on a shared CPU


def task_args(ckpt, results, run_dir):
    return [f"checkpoint={ckpt}", f"paths.results_dir={results}", f"hydra.run.dir={run_dir}",
            f"reconstruction.n_images={N}", f"reconstruction.steps=[{','.join(map(str, STEPS))}]",
            f"interpolation.pairs={PAIRS}", f"interpolation.points={POINTS}", "interpolation.steps=[10,50]"]


def compose_tasks(*overrides):
    with initialize_config_dir(config_dir=str(app_cli.CONF_DIR), version_base="1.3"):
        cfg = compose("tasks", overrides=["logger.wandb.mode=disabled", *overrides], return_hydra_config=True)
    HydraConfig.instance().set_config(cfg)
    return cfg


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """In-process sampling single-threaded too; restored afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def load_records(results):
    return {r["steps"]: r for r in tasks.reconstruction_records(str(results))}


@pytest.fixture(scope="module")
def done(trained, tmp_path_factory):
    """One real CLI run with W&B offline: the results folder."""
    out = tmp_path_factory.mktemp("tasks")
    ckpt = trained / "checkpoints" / "last.ckpt"
    cli("ddim-bench-tasks", *task_args(ckpt, out / "results", out / "run"), "logger.wandb.mode=offline",
        env=ONE_THREAD)
    return out / "results"


def test_reconstruction_error_falls_with_steps(done):
    recs = load_records(done)
    assert sorted(recs) == STEPS
    mse = [recs[s]["mse"] for s in STEPS]
    assert all(b < a for a, b in zip(mse, mse[1:])), mse  # the ODE's discretisation error shrinks with S
    assert mse[-1] < 1e-3
    for s, r in recs.items():
        assert r["nfe"] == s and r["n_images"] == N and r["split"] == "test" and r["skip"] == "uniform"
        assert r["mse_min"] <= r["mse"] <= r["mse_max"] and r["mse_std"] >= 0
        assert r["encode_seconds"] > 0 and r["decode_seconds"] > 0 and r["weights"] == "ema"
        strip = Image.open(done / "reconstruction" / r["strip"])
        assert strip.size == (8 * (SHOWN + 1) + 1, 2 * (SHOWN + 1) + 1)  # originals over reconstructions


def test_wandb_run_holds_the_records(done):
    runs = {read_run(d)["job_type"]: read_run(d) for d in find_runs(done)}
    assert set(runs) == {"reconstruction", "interpolation"}
    rec = runs["reconstruction"]
    logged = {row["S"]: row["reconstruction/mse"] for row in rec["history"] if "S" in row}
    recs = load_records(done)
    assert logged == pytest.approx({s: r["mse"] for s, r in recs.items()})
    assert len(rec["tables"]["reconstruction"]["data"]) == len(STEPS)
    assert any(f.startswith("media/images/interpolation/") for f in runs["interpolation"]["files"])


def test_report_holds_the_records_values(done):
    rep = tasks.report_reconstruction(str(done))
    recs = load_records(done)
    table = open(rep["paths"]["table2"]).read()
    assert table == rep["markdown"] and "CIFAR-10" in table
    for r in recs.values():
        assert f"{r['mse']:.4g}" in table and f"{r['mse_std']:.4g}" in table
    for v in paper.TABLE2.values():
        assert f"{v:.4g}" in table
    with open(rep["paths"]["reconstruction_csv"]) as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == len(STEPS)
    for row in rows:
        r = recs[int(row["steps"])]
        assert float(row["mse"]) == pytest.approx(r["mse"]) and float(row["mse_std"]) == pytest.approx(r["mse_std"])
        assert float(row["decode_seconds"]) == pytest.approx(r["decode_seconds"]) and row["key"] == r["key"]
        assert float(row["paper_cifar10_mse"]) == paper.TABLE2[r["steps"]]
    t = rep["tables"]["reconstruction"]
    assert [row[t["columns"].index("mse")] for row in t["rows"]] == [recs[s]["mse"] for s in STEPS]
    assert Image.open(rep["paths"]["reconstruction_mse"]).size[0] > 100
    for s in STEPS:
        assert rep["paths"][f"reconstruction_S{s}"].endswith(recs[s]["strip"])
    assert {"interpolation_S10", "interpolation_S50", "interpolation_side_by_side"} <= set(rep["paths"])


def test_interpolation_grids_use_the_sweeps_seeds(done, trained):
    tile = SHOWN + 1
    for s in (10, 50):
        assert Image.open(done / "interpolation" / f"S{s}.png").size == (POINTS * tile + 1, PAIRS * tile + 1)
    side = Image.open(done / "interpolation" / "side_by_side.png")
    assert side.size == (POINTS * tile + 1, 2 * PAIRS * tile + 1)  # one row per (pair, S)
    # the ends of pair 0 are the sweep's samples 0 and 1 at S=10, η=0
    loaded = checkpoint.load(str(trained / "checkpoints" / "last.ckpt"))
    images = []
    generate(checkpoint.build_model(loaded), config.build_alphas(loaded.schedule), Cell(10, 0.0), [0, 1],
             (1, PX, PX), 0, 2, "cpu", lambda im, idx: images.append(im))
    grid = torch.from_numpy(np.array(Image.open(done / "interpolation" / "S10.png"))).permute(2, 0, 1)
    ends = [grid[:, 1:tile, 1:tile], grid[:, 1:tile, 1 + (POINTS - 1) * tile:POINTS * tile]]
    from ddim_bench.images import upscale
    for got, want in zip(ends, upscale(images[0])):
        assert (got.int() - want.int()).abs().max() <= 1


def test_rerun_skips_finished_records(done, trained, tmp_path, monkeypatch):
    results = tmp_path / "results"
    shutil.copytree(done, results)
    before = {p.name: p.read_bytes() for p in (results / "reconstruction").glob("*.json")}
    calls = []
    real = tasks.reconstruct
    monkeypatch.setattr(tasks, "reconstruct", lambda model, images, alphas, taus, *a: calls.append(len(taus))
                        or real(model, images, alphas, taus, *a))
    cfg = compose_tasks(*task_args(trained / "checkpoints" / "last.ckpt", results, tmp_path / "run"),
                        "reconstruction.steps=[10,5,100]", "interpolation.enabled=false")
    out = tasks.run_tasks(cfg)
    assert calls == [5], "only the new S may be computed"
    assert [r["steps"] for r in out["reconstruction"]] == [10, 5, 100]
    assert all((results / "reconstruction" / n).read_bytes() == b for n, b in before.items())
    assert load_records(results)[5]["mse"] > load_records(results)[10]["mse"]


BAD = [
    ("reconstruction.steps=[10,1001]", "reconstruction.steps entry 1001"),
    ("data.test_size=0", "split of data=digits is empty"),
    ("reconstruction.n_images=1000", "asked for 1000 images"),
    ("interpolation.pairs=0", "interpolation.pairs=0"),
    ("interpolation.points=1", "interpolation.points=1"),
]


@pytest.mark.parametrize("override,message", BAD[1:])
def test_bad_input_is_one_line_and_writes_nothing(trained, tmp_path, capsys, override, message):
    cfg = compose_tasks(*task_args(trained / "checkpoints" / "last.ckpt", tmp_path / "results", tmp_path / "run"),
                        override)
    with pytest.raises(SystemExit) as exit_info:
        tasks._main(cfg)
    assert exit_info.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], lines
    assert not (tmp_path / "results").exists()


def test_bad_input_through_the_cli(trained, tmp_path):
    override, message = BAD[0]
    proc = cli("ddim-bench-tasks", *task_args(trained / "checkpoints" / "last.ckpt", tmp_path / "results",
                                              tmp_path / "run"), override, "logger.wandb.mode=disabled", check=False)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], proc.stderr
    assert not (tmp_path / "results").exists()
