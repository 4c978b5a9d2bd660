"""Smoke tests of the local single-node SLURM cluster itself (slurm/local/start.sh)."""

from __future__ import annotations

import subprocess
import textwrap
from pathlib import Path

import pytest
from slurm_cluster import job_state, slurm_cluster, wait_for  # noqa: F401

pytestmark = pytest.mark.slurm

SUBMIT_TIMEOUT_S = 120


def _sbatch(cluster: dict, script: Path, *args: str, timeout: float = SUBMIT_TIMEOUT_S) -> str:
    proc = subprocess.run(
        ["sbatch", "--parsable", *args, str(script)],
        env=cluster["env"],
        cwd=script.parent,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert proc.returncode == 0, f"sbatch failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout.strip().split(";")[0]


def _script(path: Path, body: str) -> Path:
    path.write_text("#!/bin/bash\n" + textwrap.dedent(body).lstrip())
    return path


def test_cluster_is_up(slurm_cluster):
    out = subprocess.run(
        ["sinfo", "-h", "-o", "%P %a %T %D"],
        env=slurm_cluster["env"],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    ).stdout.split()
    assert out[:2] == ["debug*", "up"]
    assert out[2] in {"idle", "mixed", "allocated"}
    assert (slurm_cluster["state_dir"] / "env.sh").read_text().strip() == (
        f"export SLURM_CONF={slurm_cluster['slurm_conf']}"
    )


def test_two_task_job_runs_both_ranks(slurm_cluster, tmp_path):
    script = _script(
        tmp_path / "two_tasks.sh",
        """
        #SBATCH --job-name=smoke-2tasks
        #SBATCH --ntasks=2
        #SBATCH --cpus-per-task=1
        #SBATCH --time=2
        #SBATCH --output=two_tasks.out
        srun --kill-on-bad-exit=1 bash -c 'echo "rank=$SLURM_PROCID of $SLURM_NTASKS"'
        """,
    )
    _sbatch(slurm_cluster, script, "--wait")
    lines = sorted(line for line in (tmp_path / "two_tasks.out").read_text().splitlines() if line.startswith("rank="))
    assert lines == ["rank=0 of 2", "rank=1 of 2"]


def test_job_array_runs_each_element(slurm_cluster, tmp_path):
    script = _script(
        tmp_path / "array.sh",
        """
        #SBATCH --job-name=smoke-array
        #SBATCH --array=0-1
        #SBATCH --ntasks=1
        #SBATCH --time=2
        #SBATCH --output=array_%A_%a.out
        echo "task=$SLURM_ARRAY_TASK_ID of $SLURM_ARRAY_TASK_COUNT"
        """,
    )
    job_id = _sbatch(slurm_cluster, script, "--wait")
    outputs = {p.name: p.read_text().strip() for p in tmp_path.glob(f"array_{job_id}_*.out")}
    assert outputs == {
        f"array_{job_id}_0.out": "task=0 of 2",
        f"array_{job_id}_1.out": "task=1 of 2",
    }


def test_requeue_restarts_a_running_job(slurm_cluster, tmp_path):
    starts = tmp_path / "starts.txt"
    done = tmp_path / "done.txt"
    script = _script(
        tmp_path / "requeue.sh",
        f"""
        #SBATCH --job-name=smoke-requeue
        #SBATCH --ntasks=1
        #SBATCH --time=5
        #SBATCH --requeue
        #SBATCH --output=requeue.out
        #SBATCH --open-mode=append
        echo "start restart_count=${{SLURM_RESTART_COUNT:-0}}" >> {starts}
        if [ "$(wc -l < {starts})" -lt 2 ]; then
            sleep 240   # first run: wait here to be requeued
        fi
        echo ok > {done}
        """,
    )
    job_id = _sbatch(slurm_cluster, script)
    wait_for(lambda: starts.exists() and starts.read_text().strip(), 60, what="the first start of the job")
    assert job_state(slurm_cluster, job_id) == "RUNNING"

    subprocess.run(["scontrol", "requeue", job_id], env=slurm_cluster["env"], check=True, timeout=30)

    # A requeued job may start again only after the credential lifetime (cred_expire=10 s here).
    wait_for(done.exists, 90, what="the requeued job to run again and finish")
    assert starts.read_text().splitlines() == ["start restart_count=0", "start restart_count=1"]
    wait_for(lambda: job_state(slurm_cluster, job_id) in {"COMPLETED", ""}, 30, what="the job to complete")
