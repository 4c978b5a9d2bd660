"""A tiny sweep and its report with W&B offline, read back from the .wandb files."""
import os
import secrets

import pytest

from wandb_records import find_runs, read_run

from ddim_bench.sweep import run as sweep
from ddim_bench.results import store


def test_sweep_cells_and_report_land_in_wandb_offline(trained, tmp_path, monkeypatch, cli, compose):
    key = secrets.token_hex(20)
    monkeypatch.setenv("WANDB_API_KEY", key)
    ckpt = trained / "checkpoints" / "last.ckpt"
    sweep.run_sweep(compose("sweep", f"checkpoint={ckpt}", f"paths.results_dir={tmp_path}", "n_samples=40",
                            f"hydra.run.dir={tmp_path}/run", "grid.steps=[3,5]", "grid.eta=[0.0]", "grid.hat=false",
                            "logger.wandb.mode=offline", "sweep_name=wb", "metrics.bootstrap.replicates=10"))
    proc = cli("ddim-bench-report", f"results_dir={tmp_path}", "sweep_name=wb", "logger.wandb.mode=offline",
               f"hydra.run.dir={tmp_path / 'report-run'}", env={"WANDB_API_KEY": key})
    recs = {r["key"]: r for r in store.ResultStore(str(tmp_path)).records()}
    runs = [read_run(p) for p in find_runs(str(tmp_path))]
    evals = [r for r in runs if r["job_type"] == "eval"]
    reports = [r for r in runs if r["job_type"] == "report"]
    assert len(evals) == 2 and len(reports) == 1
    for run in evals:
        rec = recs[run["config"]["key"]]
        assert run["group"] == "wb" and run["summary"]["fid"] == pytest.approx(rec["fid"], rel=1e-12)
        assert run["config"]["steps"] == rec["steps"] and run["config"]["n_samples"] == rec["n_samples"]
        assert run["summary"]["sec_per_image"] == pytest.approx(rec["sec_per_image"])
    rep = reports[0]
    assert rep["group"] == "wb"
    table = rep["tables"]["records"]
    assert len(table["data"]) == 2
    fid_col = table["columns"].index("fid")
    assert sorted(row[fid_col] for row in table["data"]) == pytest.approx(sorted(r["fid"] for r in recs.values()))
    s_points = [h for h in rep["history"] if "S" in h]
    assert sorted(h["S"] for h in s_points) == [3, 5]
    for root, _, files in os.walk(tmp_path):
        for name in files:
            with open(os.path.join(root, name), "rb") as f:
                assert key.encode() not in f.read(), os.path.join(root, name)
    assert key not in proc.stdout + proc.stderr
