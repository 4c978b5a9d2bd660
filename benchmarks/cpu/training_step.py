"""The Lightning training step beside a plain PyTorch loop: same model, batch, optimizer; steady state."""
from __future__ import annotations

import copy
import tempfile
import time

import torch

from benchmarks.common import SCHEDULE, TINY, Opts, Row, main_for, quiet_lightning
from benchmarks.timing import median, median_ratio

SIZES = {"full": dict(batch=128, steps=40, skip=5), "quick": dict(batch=32, steps=10, skip=3)}


def digits_loader(batch: int):
    from torch.utils.data import DataLoader
    from ddim_bench.data.modules import DigitsDataModule
    ds = DigitsDataModule().dataset("train")
    return DataLoader(ds, batch_size=batch, shuffle=True, drop_last=True, num_workers=0)


def steady_seconds_per_step(ends: list[float], skip: int) -> float:
    """Wall time per step from the end of step ``skip`` to the end of the last: startup excluded."""
    return (ends[-1] - ends[skip - 1]) / (len(ends) - skip)


def lightning_fit(module, loader, steps: int, root: str) -> list[float]:
    import pytorch_lightning as pl

    class Clock(pl.Callback):
        def __init__(self):
            self.ends = []

        def on_train_batch_end(self, *args):
            self.ends.append(time.perf_counter())

    clock = Clock()
    trainer = pl.Trainer(accelerator="cpu", devices=1, max_steps=steps, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                         default_root_dir=root, callbacks=[clock])
    trainer.fit(module, train_dataloaders=loader)
    return clock.ends


def plain_fit(module, loader, steps: int) -> list[float]:
    """The same step by hand: diffusion loss, zero_grad, backward, Adam step, LR-schedule step."""
    conf = module.configure_optimizers()
    opt, sched = conf["optimizer"], conf["lr_scheduler"]["scheduler"]
    module.train()
    ends, batches = [], iter(loader)
    while len(ends) < steps:
        batch = next(batches, None)
        if batch is None:
            batches = iter(loader)
            continue
        loss = module.diffusion_loss(batch[0])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        ends.append(time.perf_counter())
    return ends


def rows(opts: Opts) -> list[Row]:
    from ddim_bench.training.module import DiffusionModule
    size = SIZES["quick" if opts.quick else "full"]
    repeats, warmup = opts.reps(5, 3), 1
    quiet_lightning()
    torch.manual_seed(0)
    base = DiffusionModule(TINY, SCHEDULE, lr=2e-4)
    loader = digits_loader(size["batch"])
    per_step = {"lightning": [], "plain": []}
    with tempfile.TemporaryDirectory() as root:
        for r in range(repeats + warmup):  # Lightning, plain, Lightning, plain …
            lt = steady_seconds_per_step(lightning_fit(copy.deepcopy(base), loader, size["steps"], root), size["skip"])
            torch.set_num_threads(opts.threads)  # the Trainer may have changed it
            pt = steady_seconds_per_step(plain_fit(copy.deepcopy(base), loader, size["steps"]), size["skip"])
            if r >= warmup:
                per_step["lightning"].append(lt)
                per_step["plain"].append(pt)
    return [Row("3", f"Lightning training step / plain PyTorch step, B={size['batch']}, steady state",
                median_ratio(per_step["lightning"], per_step["plain"]), 1.05,
                detail=f"{median(per_step['lightning']) * 1e3:.1f} vs {median(per_step['plain']) * 1e3:.1f} ms/step, "
                       f"steps {size['skip'] + 1}..{size['steps']} of each fit", extra={"seconds_per_step": per_step})]


def main(argv=None):
    return main_for(rows, __doc__.splitlines()[0], "perf-training.json", argv)


if __name__ == "__main__":
    main()
