"""The paper-scale benchmark (benchmarks/cpu/paper_scale.py) in a small version (N = 1 000 and 2 000), end to end
through the real apps with the stand-in network and extractor, so that its table never rots: every row has
numbers, the disk figures are the files' sizes, the memory readings are real, the report's memory does not grow
with the number of records."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.cpu import paper_scale
from ddim_bench.scoring.subsets import FD_PARTITIONS

ROOT = Path(__file__).resolve().parent.parent
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": "",
       "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
SIZES = (1000, 2000)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("paper-scale")
    proc = subprocess.run([sys.executable, "-m", "benchmarks.cpu.paper_scale", "--quick", "--sizes", *map(str, SIZES),
                           "--work", str(tmp / "work"), "--json", str(tmp / "scale.json"), "--timeout", "600"],
                          cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=1500)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return tmp, json.loads((tmp / "scale.json").read_text()), proc.stdout


@pytest.mark.slow
def test_every_row_has_numbers(run):
    _, blob, table = run
    assert blob["sizes"] == list(SIZES)
    lines = [ln for ln in table.splitlines() if ln.startswith("| ") and "---" not in ln][1:]
    assert len(lines) == len(paper_scale.ROWS)
    for line, (key, *_rest) in zip(lines, paper_scale.ROWS):
        cells = [c.strip() for c in line.strip("|").split("|")]
        assert cells[2] != "–", f"{key}: {line}"
        assert cells[3] != "–" or key == "report_records_ratio", f"{key}: {line}"  # measured at the first N
    for n in SIZES:
        f = blob["figures"][str(n)]
        assert f["records"] == 6
        # the network ran 10 steps a record (the stand-in is called once per batch of 500 a step)
        assert f["network"] > 0 and f["extract"] > 0 and f["harness"] > f["store"] > 0
        assert f["gpu_cell"] == pytest.approx(n * 10 * 12.4e9 / (0.4 * 989e12))
    assert "KID interval" in table and all(v > 0 for v in blob["kid_intervals"].values())


@pytest.mark.slow
def test_disk_figures_are_the_files(run):
    tmp, blob, _ = run
    for n in SIZES:
        f = blob["figures"][str(n)]
        cells = tmp / "work" / f"results-{n}" / "cells"
        files = [p for p in cells.iterdir() if p.is_file() and not p.name.endswith(".lock")
                 and not p.name.startswith(".")]
        assert f["disk_record"] * f["records"] == pytest.approx(sum(p.stat().st_size for p in files))
        # no per-sample features (before: 2 × 3 056 bytes a sample): each record holds what the paired claims read,
        # its metrics on the interval's subsets (FID and IS on 96 here), at full precision, in under 16 KB
        assert f["disk_features"] == 0 and not [p for p in files if p.name.endswith(".features.pt")]
        docs = [json.loads(p.read_text()) for p in files if p.name.endswith(".json")]
        assert len(docs) == 6 and f["disk_json"] * 6 == pytest.approx(sum(p.stat().st_size for p in files
                                                                           if p.name.endswith(".json")))
        for doc in docs:
            sub = doc["record"]["subsets"]
            assert (sub["n"], sub["partitions"]) == (n, 16)
            # FID's eighths (FD∞'s third point) only where an eighth holds more than d = 2048 samples
            eighths = [FD_PARTITIONS * 8] if n // 8 > 2048 else []
            assert [len(v) for v in sub["values"]["fid"][1]] == [32, 64, *eighths]
            assert [len(v) for v in sub["values"]["is_mean"][1]] == [32, 64]
        assert f["disk_json"] < 16 * 1024
        claims = (tmp / "work" / f"results-{n}" / "report" / "claims.md").read_text()  # from those values alone
        assert "| FID(η=0) − FID(η=1) at S=10 |" in claims and " | 3 | " in claims, claims


@pytest.mark.slow
def test_memory_readings(run):
    _, blob, _ = run
    for n in SIZES:
        f = blob["figures"][str(n)]
        stages = [f[k] for k in ("peak_setup", "peak_sample", "peak_score", "peak_intervals", "peak_store")]
        assert all(100 < p <= f["sweep_peak"] for p in stages), stages
        assert 100 < f["report_peak_claims"] <= f["report_peak"]
    # the report on 6 records holds no more than on 2 (it reads each record's subset values, no features)
    first = blob["figures"][str(SIZES[0])]
    assert first["report_peak"] / first["report_peak_few"] < 1.15
