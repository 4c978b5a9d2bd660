"""The GPU check (benchmarks/gpu/check.py) in its small CPU version (--quick), end to end, so it never rots:
each part writes its rows with numbers, or the explicit line that says why it was skipped here."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # the whole GPU check in its CPU version, through the apps
ROOT = Path(__file__).resolve().parent.parent
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}


def gpu_check(out: Path, *args: str) -> tuple[subprocess.CompletedProcess, dict, str]:
    proc = subprocess.run([sys.executable, "-m", "benchmarks.gpu.check", "--quick", "--out", str(out),
                           "--work", str(out / "work"), *args], cwd=ROOT, env=ENV, capture_output=True, text=True,
                          timeout=300)
    assert (out / "gpu-check.json").is_file(), proc.stdout[-2000:] + proc.stderr[-3000:]
    return proc, json.loads((out / "gpu-check.json").read_text()), (out / "gpu-check.md").read_text()


def numbers(row: list, first: int = 1) -> list[float]:
    """The row's cells from ``first`` on that are numbers (raises if none is)."""
    out = []
    for cell in row[first:]:
        try:
            out.append(float(str(cell).rstrip(" %")))
        except ValueError:
            pass
    assert out, f"no number in {row}"
    return out


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    # the embedded digits preset: the apps' code path runs here in seconds (the GPU run trains experiment=mnist)
    return gpu_check(tmp_path_factory.mktemp("gpu-check"), "--experiment", "digits")


def test_runs_and_writes_every_part(quick):
    proc, result, md = quick
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert result["quick"] and result["device"] == "cpu"
    assert list(result["parts"]) == ["env", "correctness", "speed", "apps"]
    for part in result["parts"].values():
        assert part["status"] == "ok", part
        assert f"## {part['title']}" in md


def test_environment_and_correctness(quick):
    _, result, _ = quick
    env = dict(result["parts"]["env"]["tables"][0]["rows"])
    assert env["torch"] and env["gpu_name"].startswith("none") and "peak (dense, vendor)" in env
    checks = result["parts"]["correctness"]["tables"][0]["rows"]
    assert [r[4] for r in checks] == ["PASS"] * 3 and "batch 1 vs batch 8" in checks[2][0]
    assert all(numbers(r) for r in checks)


def test_throughput_ladder_with_numbers_and_skip_lines(quick):
    _, result, md = quick
    speed = result["parts"]["speed"]
    floors, rows, diffusers = (t["rows"] for t in speed["tables"])
    assert [r[0] for r in floors] == ["fp32", "bf16", "+ channels_last"]
    assert [(r[0], r[1]) for r in rows] == [(c, s) for c in ("fp32", "bf16", "+ channels_last") for s in (2, 4)]
    assert all(v > 0 for r in floors + rows for v in numbers(r, 1)[:3])
    assert all(numbers([r[-1]], 0) for r in rows if r[1] == 4)  # eta=1 / eta=0 beside it
    assert [r[0] for r in diffusers] == ["fp32", "+ channels_last"] and all(numbers(r, 2) for r in diffusers)
    skipped = [ln for ln in speed["lines"] if ln.startswith("skipped:")]
    assert any("+ compile" in ln for ln in skipped) and any("CUDA graphs" in ln for ln in skipped)
    assert "skipped: + compile" in md


def test_apps_end_to_end(quick):
    _, result, md = quick
    apps = result["parts"]["apps"]
    runs, cells = apps["tables"][0]["rows"], apps["tables"][1]["rows"]
    assert [r[0] for r in runs] == ["ddim-bench-train", "ddim-bench-sweep", "ddim-bench-report"]
    assert all(r[2] == "0" and numbers(r)[0] > 0 for r in runs)
    assert cells and all(numbers(r) for r in cells)
    assert "report/table1.md" in md and apps["markdown"].strip()


def test_missing_preset_is_a_skip_line(tmp_path):
    proc, result, md = gpu_check(tmp_path, "--parts", "apps", "--experiment", "no-such-preset")
    assert proc.returncode == 0, proc.stderr[-2000:]
    apps = result["parts"]["apps"]
    assert apps["status"] == "skipped" and apps["lines"][0].startswith("skipped: conf/experiment/no-such-preset.yaml")
    assert "skipped: conf/experiment/no-such-preset.yaml" in md
