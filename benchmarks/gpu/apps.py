"""GPU check, part 4: end to end through the apps on the device — a short training of the MNIST preset, a small
sweep of it and the report (trainer.accelerator / eval.accelerator = gpu), with wall times and the FID table.

The console scripts (ddim-bench-train, -sweep, -report) are used where installed, else ``python -m
ddim_bench.apps.<app>``; each runs in its own process group, stopped when the part's budget runs out.
"""
from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from benchmarks.gpu.common import Budget, Ctx, num, table

ROOT = Path(__file__).resolve().parents[2]
# the sweep's line per finished cell, e.g. "  S=10 η = 0 uniform: FID 12.3 [11.9, 12.8] (1 block), 950 img/s, NFE 10"
FID_LINE = re.compile(r"^\s*(\S.*?): FID ([\d.eE+-]+)(?: ± [\d.eE+-]+| \[[^\]]*\])?(?: \(\d+ blocks?\))?, ([\d.]+) img/s", re.M)
SWEEP_NAME = "gpu-check"


def app_command(name: str) -> list[str]:
    script = f"ddim-bench-{name}"
    beside = Path(sys.executable).parent / script
    found = str(beside) if beside.is_file() else shutil.which(script)
    return [found] if found else [sys.executable, "-m", f"ddim_bench.apps.{name}"]


def run_app(name: str, overrides: list[str], log: Path, timeout: float) -> dict:
    """Run one app; its output goes to ``log``.  Returns wall seconds, exit status and the command."""
    cmd = app_command(name) + overrides
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "HYDRA_FULL_ERROR": "1"}
    t0 = time.perf_counter()
    with open(log, "w") as f:
        f.write(" ".join(cmd) + "\n")
        f.flush()
        proc = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, cwd=ROOT, env=env, start_new_session=True)
        try:
            rc = proc.wait(timeout=max(timeout, 1))
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)  # the app and whatever it started (its own session)
            proc.wait()
            rc = "stopped at the budget"
    return {"app": name, "wall": time.perf_counter() - t0, "rc": rc, "cmd": cmd}


def tail(log: Path, n: int = 3) -> str:
    lines = [ln.strip() for ln in log.read_text(errors="replace").splitlines() if ln.strip()]
    return " | ".join(lines[-n:])[-300:]


def overrides(ctx: Ctx, work: Path) -> dict[str, list[str]]:
    a, acc = ctx.args, ("gpu" if ctx.cuda else "cpu")
    logger = [f"logger={a.logger}"] if a.logger else []
    n = a.train_steps
    ckpt = work / "train" / "checkpoints" / "last.ckpt"
    return {
        "train": [f"experiment={a.experiment}", f"hydra.run.dir={work}/train", f"trainer.max_steps={n}",
                  f"trainer.accelerator={acc}", f"callbacks.checkpoint_every_n_steps={n}",
                  f"callbacks.sample_grid.every_n_steps={n}", "trainer.enable_progress_bar=false", *logger,
                  *a.train_extra],
        "sweep": [f"experiment={a.experiment}", f"sweep_name={SWEEP_NAME}", f"checkpoint={ckpt}",
                  f"paths.results_dir={work}/results", f"hydra.run.dir={work}/sweep", f"eval.accelerator={acc}",
                  f"n_samples={a.sweep_n}", f"grid.steps=[{','.join(map(str, a.sweep_steps))}]",
                  f"grid.eta=[{','.join(map(str, a.sweep_eta))}]", "grid.hat=false", *logger],
        "report": [f"sweep_name={SWEEP_NAME}", f"results_dir={work}/results", f"hydra.run.dir={work}/report", *logger],
    }


def run(ctx: Ctx, budget: Budget) -> dict:
    preset = ROOT / "ddim_bench" / "conf" / "experiment" / f"{ctx.args.experiment}.yaml"
    if not preset.is_file():
        return {"tables": [], "lines": [f"skipped: conf/experiment/{ctx.args.experiment}.yaml does not exist "
                                        f"(the preset is not in this tree yet): no app was run"]}
    work = Path(ctx.args.work).resolve() / time.strftime("run-%Y%m%d-%H%M%S")
    logs = Path(ctx.out) / "apps"
    for folder in (work, logs):
        folder.mkdir(parents=True, exist_ok=True)
    runs, lines, cmds, estimate = [], [], overrides(ctx, work), None
    for name in ("train", "sweep", "report"):
        if estimate is not None and not budget.fits(estimate):
            budget.skip(f"ddim-bench-{name}", estimate)
            break
        r = run_app(name, cmds[name], logs / f"{name}.log", budget.left())
        runs.append(r)
        if r["rc"] != 0:
            lines.append(f"ddim-bench-{name} failed ({r['rc']}): {tail(logs / f'{name}.log')}")
            break
        estimate = runs[0]["wall"] if name == "train" else runs[0]["wall"] / 2  # from the first measurement
    rows = [[f"ddim-bench-{r['app']}", num(r["wall"]), str(r["rc"]), " ".join(Path(c).name if i == 0 else c
            for i, c in enumerate(r["cmd"]))[:160]] for r in runs]
    sweep_log = logs / "sweep.log"
    fids = FID_LINE.findall(sweep_log.read_text(errors="replace")) if sweep_log.is_file() else []
    out = {"tables": [table(f"Apps on {ctx.device.type} (experiment={ctx.args.experiment})",
                            ["app", "wall s", "exit", "command"], rows),
                      table("Sweep cells", ["cell", "FID", "img/s"], [list(f) for f in fids])],
           "lines": lines, "failed": [r["app"] for r in runs if r["rc"] != 0]}
    md = work / "results" / "report" / "table1.md"
    if md.is_file():
        shutil.copy(md, logs / "table1.md")
        out["markdown"] = md.read_text()
    return out
