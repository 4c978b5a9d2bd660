"""The share of a one-cell sweep's wall time spent outside sampling (checkpoint, scorer, features, writing)."""
from __future__ import annotations

import contextlib
import os
import tempfile
import time

import torch

from benchmarks.common import SCHEDULE, TINY, Opts, Row, main_for, quiet_lightning

SIZES = {"full": dict(n=1000, steps=50, repeats=3), "quick": dict(n=100, steps=5, repeats=1)}


@contextlib.contextmanager
def stopwatch(targets: dict[str, tuple[object, str]]):
    """Patch ``owner.name`` for each label with a wrapper adding its wall time to ``spent[label]``."""
    spent, saved = {k: 0.0 for k in targets}, []

    def timed_call(fn, label):
        def wrapper(*args, **kwargs):
            t0 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                spent[label] += time.perf_counter() - t0
        return wrapper

    for label, (owner, name) in targets.items():
        saved.append((owner, name, getattr(owner, name)))
        setattr(owner, name, timed_call(getattr(owner, name), label))
    try:
        yield spent
    finally:
        for owner, name, fn in reversed(saved):
            setattr(owner, name, fn)


def write_checkpoint(folder: str) -> str:
    """An untrained tiny UNet as a ddim-bench checkpoint (timing does not depend on the weights' quality)."""
    from ddim_bench.training.module import DiffusionModule
    torch.manual_seed(0)
    module = DiffusionModule(TINY, SCHEDULE)
    path = os.path.join(folder, "untrained.ckpt")
    torch.save({"state_dict": module.state_dict(), "hyper_parameters": dict(module.hparams), "global_step": 0}, path)
    return path


def compose_sweep(overrides: list[str]):
    from hydra import compose, initialize_config_dir
    from hydra.core.hydra_config import HydraConfig
    from ddim_bench import cli
    with initialize_config_dir(config_dir=str(cli.CONF_DIR), version_base="1.3"):
        cfg = compose("sweep", overrides=overrides, return_hydra_config=True)
    HydraConfig.instance().set_config(cfg)
    return cfg


# What is timed inside the sweep: label -> places (module, attribute) it may live, the first that exists is patched.
PARTS = {"load checkpoint": [("ddim_bench.models.checkpoint", "load")],
         "build model": [("ddim_bench.models.checkpoint", "build_model")],
         "build scorer": [("ddim_bench.scoring.metrics", "Scorer.__init__")],
         "reference features (cache)": [("ddim_bench.scoring.metrics", "Scorer.reference")],
         "generate": [("ddim_bench.sweep.cell_run", "generate")],
         "features": [("ddim_bench.scoring.metrics", "Scorer.features")],
         "score": [("ddim_bench.scoring.metrics", "Scorer.score")],
         "write record": [("ddim_bench.results.store", "ResultStore.put")],
         "write samples.png / tracker": [("ddim_bench.tracking.runs", "log_cell")]}


def locate(places: list[tuple[str, str]]) -> tuple[object, str] | None:
    """(owner, name) of the first place that exists: a module attribute, or a class attribute 'Class.name'."""
    import importlib
    for module, attr in places:
        try:
            owner = importlib.import_module(module)
        except ImportError:
            continue
        *path, name = attr.split(".")
        for part in path:
            owner = getattr(owner, part, None)
        if owner is not None and hasattr(owner, name):
            return owner, name
    return None


def timed_sweep(folder: str, ckpt: str, n: int, steps: int) -> tuple[dict, float, dict, list[str]]:
    """Run a one-cell sweep; returns its record, its wall seconds, the seconds spent in each part found, and the
    parts not found (moved in the code: not timed)."""
    from ddim_bench.sweep import run as sweep
    cfg = compose_sweep([f"checkpoint={ckpt}", f"paths.results_dir={folder}/results", f"hydra.run.dir={folder}/run",
                         f"n_samples={n}", f"sampler.steps={steps}", "sampler.eta=0.0", "grid=none",
                         "logger.wandb.mode=disabled"])
    found = {label: locate(places) for label, places in PARTS.items()}
    with stopwatch({label: where for label, where in found.items() if where}) as spent:
        t0 = time.perf_counter()
        records = sweep.run_sweep(cfg)
        total = time.perf_counter() - t0
    return records[0], total, spent, [label for label, where in found.items() if where is None]


def rows(opts: Opts) -> list[Row]:
    """The sweep whose share outside sampling is the median is reported, with its breakdown."""
    size = SIZES["quick" if opts.quick else "full"]
    quiet_lightning()
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = write_checkpoint(tmp)
        with open(os.devnull, "w") as devnull, contextlib.redirect_stderr(devnull):  # progress lines
            timed_sweep(os.path.join(tmp, "warm"), ckpt, 20, 2)  # fills the classifier and reference caches
            for r in range(opts.repeats or size["repeats"]):
                record, total, spent, lost = timed_sweep(os.path.join(tmp, f"timed{r}"), ckpt, size["n"],
                                                         size["steps"])
                runs.append((100 * (total - record["seconds"]) / total, record, total, spent))
    share, record, total, spent = sorted(runs, key=lambda run: run[0])[len(runs) // 2]
    sampling = record["seconds"]
    in_cell = record["cell_seconds"] + spent.get("write record", 0.0) + spent.get("write samples.png / tracker", 0.0)
    breakdown = {"sampling (timed batches)": sampling, **spent, "whole sweep": total}
    shown = ", ".join(f"{k} {v:.2f}" for k, v in breakdown.items() if k not in ("generate", "whole sweep"))
    shown += f"; not timed (moved in the code): {', '.join(lost)}" if lost else ""
    return [Row("4a", f"evaluation: share outside sampling, one-cell sweep, N={size['n']}, S={size['steps']}, digits",
                share, 10.0, unit="%", detail=f"whole sweep {total:.1f} s; {shown} s",
                extra={"seconds": breakdown, "shares": [run[0] for run in runs]}),
            Row("4b", "  same, per cell of a grid (setup shared by the cells left out)",
                100 * (in_cell - sampling) / in_cell, unit="%",
                detail=f"cell {in_cell:.1f} s, of which warm-up batch and features "
                       f"{spent.get('generate', sampling) - sampling:.2f} s")]


def main(argv=None):
    return main_for(rows, __doc__.splitlines()[0], "perf-evaluation.json", argv)


if __name__ == "__main__":
    main()
