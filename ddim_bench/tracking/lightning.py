"""The training loop's loggers: a W&B run (``job_type="train"``) and Lightning's CSV file, always written.

A restarted run (a rerun in the same folder, a SLURM requeue) continues both, from the step of the checkpoint it
resumes from:

* ``csv/metrics.csv`` keeps the rows logged before that step and gets the new ones appended, so the file holds
  the whole history once, in step order (:class:`~ddim_bench.tracking.csv_history.CSVHistory`).
* the W&B run id is kept in ``<run dir>/wandb_run_id``; a resumed start passes ``id=..., resume="allow"``, so
  online it is one run.  Offline (wandb cannot resume offline runs) each start writes its own
  ``offline-run-*-<id>`` folder with that id, its ``_step`` counting from 0 again (plot against
  ``trainer/global_step``); give all of a run's folders to one ``wandb sync``, which uploads the folders of one
  run id in order of start time (wandb 0.31 has no ``--append``; wandb/wandb#3841, #5865).
"""
from __future__ import annotations

import os
import secrets
import string
import sys
import time
from collections.abc import Mapping

from ddim_bench.tracking.csv_history import CSVHistory
from ddim_bench.tracking.settings import finish_active_run, init_kwargs, scrub, wandb_section

RUN_ID_FILE = "wandb_run_id"


def lightning_logger(logger_cfg, run_config: dict, save_dir: str, name: str | None = None,
                     resume_step: float | None = None) -> list:
    """``[WandbLogger, CSVHistory]`` for ``Trainer(logger=...)``; only the CSVHistory when W&B is disabled.

    ``run_config`` (the full resolved Hydra config) becomes the W&B run config, secrets scrubbed.
    ``resume_step``: the ``global_step`` of the checkpoint this start resumes from (None: a fresh start, which
    begins a new W&B run and a new CSV file).  The W&B run stays open after ``fit``; call ``finish_active_run()``
    (a later ``lightning_logger`` or ``Tracker`` finishes it too).
    """
    from pytorch_lightning.utilities import rank_zero_only

    section = wandb_section(logger_cfg)
    os.makedirs(save_dir, exist_ok=True)
    loggers: list = []
    if section["mode"] != "disabled":
        loggers.append(wandb_logger(section, run_config, save_dir, name, resume_step, rank_zero_only.rank == 0))
    loggers.append(CSVHistory(save_dir, keep_before_step=resume_step))
    return loggers


def wandb_logger(section: dict, run_config: dict, save_dir: str, name: str | None, resume_step: float | None,
                 rank0: bool):
    """Lightning's ``WandbLogger`` around a run that rank 0 starts here with ``wandb.init`` (other ranks log
    nothing): the run id is ours (stored in the run folder) and a resumed start waits for it to be free."""
    from pytorch_lightning.loggers import WandbLogger

    class ScrubbingWandbLogger(WandbLogger):
        def log_hyperparams(self, params) -> None:  # model hparams go through the same scrub
            if isinstance(params, Mapping):
                params = scrub(params)
            super().log_hyperparams(params)

    run_id = stored_run_id(save_dir, resume_step is not None, rank0)
    # log_model needs an upload, so it only makes sense online.
    log_model = bool(section.get("log_model", False)) and section["mode"] == "online"
    if not rank0:
        return ScrubbingWandbLogger(name=name, save_dir=str(save_dir), id=run_id, log_model=log_model)
    finish_active_run()  # a run left open by an earlier job of this process is not reused
    kwargs = init_kwargs(section, job_type="train", group=None, name=name, config=run_config, dir=save_dir)
    run = start_run(dict(kwargs, id=run_id, resume="allow"), wait_s=60.0 if resume_step is not None else 0.0)
    run.define_metric("trainer/global_step")  # what WandbLogger does for a run it starts itself
    run.define_metric("*", step_metric="trainer/global_step", step_sync=True)
    return ScrubbingWandbLogger(experiment=run, name=name, save_dir=str(save_dir), log_model=log_model)


def start_run(kwargs: dict, wait_s: float):
    """``wandb.init(**kwargs)``.  After a kill, the killed start's wandb service (its own process session) can
    hold the run id ("run ID ... is in use") until it exits: wait for it; if it outlives ``wait_s``, log this
    start as a new run of the same group rather than lose the training, and say so in one line."""
    import wandb
    deadline = time.monotonic() + wait_s
    while True:
        try:
            return wandb.init(**kwargs)
        except Exception as err:  # noqa: BLE001 - only the "in use" error is waited out
            if "in use" not in str(err):
                raise
            if time.monotonic() > deadline:
                old, kwargs = kwargs["id"], dict(kwargs, id=new_run_id())
                print(f"warning: W&B run {old} is still held by an earlier start's wandb service; logging this "
                      f"start as run {kwargs['id']}", file=sys.stderr, flush=True)
                return wandb.init(**kwargs)
            time.sleep(2.0)


def new_run_id() -> str:
    return "".join(secrets.choice(string.ascii_lowercase + string.digits) for _ in range(8))  # W&B's id style


def stored_run_id(save_dir: str, resuming: bool, rank0: bool) -> str | None:
    """The W&B run id stored in the run folder when resuming, else a new one (stored by rank 0)."""
    path = os.path.join(save_dir, RUN_ID_FILE)
    if resuming or not rank0:
        try:
            with open(path) as f:
                stored = f.read().strip()
            if stored:
                return stored
        except FileNotFoundError:
            pass
    if not rank0:
        return None  # other ranks never start the run
    from ddim_bench.io import atomic_write
    new = new_run_id()
    atomic_write(path, new + "\n")
    return new
