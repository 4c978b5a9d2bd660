"""The training loop's loggers: a W&B run (``job_type="train"``) and Lightning's CSV file, always written.

A restarted run (a rerun in the same folder, a SLURM requeue) continues both, from the step of the checkpoint it
resumes from:

* ``csv/metrics.csv`` keeps the rows logged before that step and gets the new ones appended, so the file holds
  the whole history once, in step order (rows logged after the checkpoint by the killed start are dropped: the
  resumed start logs those steps again).  Lightning writes each row as it is logged, so a kill loses none.
* the W&B run id is kept in ``<run dir>/wandb_run_id``; a resumed start passes ``id=..., resume="allow"``, so
  online it is one run.  Offline (wandb cannot resume offline runs) each start writes its own
  ``offline-run-*-<id>`` folder with that id, its ``_step`` counting from 0 again (plot against
  ``trainer/global_step``); give all of a run's folders to one ``wandb sync``, which uploads the folders of one
  run id in order of start time (wandb 0.31 has no ``--append``; wandb/wandb#3841, #5865).
"""
from __future__ import annotations

import csv
import io
import os
import secrets
import string
from collections.abc import Mapping

from ddim_bench.tracking.settings import finish_active_run, init_kwargs, scrub, wandb_section

RUN_ID_FILE = "wandb_run_id"


def lightning_logger(logger_cfg, run_config: dict, save_dir: str, name: str | None = None,
                     resume_step: float | None = None) -> list:
    """``[WandbLogger, CSVLogger]`` for ``Trainer(logger=...)``; only the CSVLogger when W&B is disabled.

    ``run_config`` (the full resolved Hydra config) becomes the W&B run config, secrets scrubbed.
    ``resume_step``: the ``global_step`` of the checkpoint this start resumes from (None: a fresh start, which
    begins a new W&B run and a new CSV file).  The W&B run stays open after ``fit``; call ``finish_active_run()``
    (a later ``lightning_logger`` or ``Tracker`` finishes it too).
    """
    from pytorch_lightning.loggers import CSVLogger
    from pytorch_lightning.utilities import rank_zero_only

    section = wandb_section(logger_cfg)
    os.makedirs(save_dir, exist_ok=True)
    rank0 = rank_zero_only.rank == 0
    loggers: list = []
    if section["mode"] != "disabled":
        from pytorch_lightning.loggers import WandbLogger

        class _ScrubbingWandbLogger(WandbLogger):
            def log_hyperparams(self, params) -> None:  # model hparams go through the same scrub
                if isinstance(params, Mapping):
                    params = scrub(params)
                super().log_hyperparams(params)

        if rank0:
            # WandbLogger would silently reuse a run left open by an earlier job of this process.
            finish_active_run()
        kwargs = init_kwargs(section, job_type="train", group=None, name=name, config=run_config, dir=save_dir)
        kwargs.pop("dir")
        kwargs.pop("name")
        # log_model needs an upload, so it only makes sense online.
        log_model = bool(section.get("log_model", False)) and section["mode"] == "online"
        wandb_logger = _ScrubbingWandbLogger(name=name, save_dir=str(save_dir), log_model=log_model,
                                             id=run_id(save_dir, resume_step is not None, rank0), resume="allow",
                                             **kwargs)
        wandb_logger._wandb_init.pop("anonymous", None)  # None still makes wandb warn that it is deprecated
        if resume_step is not None and rank0:
            start_when_free(wandb_logger)
        loggers.append(wandb_logger)
    csv_logger = CSVLogger(save_dir=str(save_dir), name="csv", version="")
    if resume_step is not None and rank0:
        csv_logger._experiment = _continuing_writer(csv_logger.log_dir, resume_step)
    loggers.append(csv_logger)
    return loggers


def start_when_free(wandb_logger, wait_s: float = 60.0) -> None:
    """Start the resumed run now.  After a kill, the killed start's wandb service (its own process session) can
    hold the run id ("run ID ... is in use") until it exits: wait for it; if it outlives ``wait_s``, log this
    start as a new run of the same group rather than lose the training, and say so in one line."""
    import sys
    import time
    deadline = time.monotonic() + wait_s
    while True:
        try:
            wandb_logger.experiment
            return
        except Exception as err:  # noqa: BLE001 - only the "in use" error is waited out
            if "in use" not in str(err):
                raise
            if time.monotonic() > deadline:
                old = wandb_logger._wandb_init.get("id")
                wandb_logger._wandb_init["id"] = new_run_id()
                print(f"warning: W&B run {old} is still held by an earlier start's wandb service; logging this "
                      f"start as run {wandb_logger._wandb_init['id']}", file=sys.stderr, flush=True)
                wandb_logger.experiment
                return
            time.sleep(2.0)


def new_run_id() -> str:
    return "".join(secrets.choice(string.ascii_lowercase + string.digits) for _ in range(8))  # W&B's id style


def run_id(save_dir: str, resuming: bool, rank0: bool) -> str | None:
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


def _step(row: dict) -> float | None:
    try:
        return float(row.get("step") or "")
    except ValueError:
        return None


def _continuing_writer(log_dir: str, keep_before_step: float):
    """Lightning's CSV writer, but the existing ``metrics.csv`` keeps its rows of steps before
    ``keep_before_step`` (Lightning's own writer deletes the file)."""
    from pytorch_lightning.loggers.csv_logs import ExperimentWriter

    class _ContinuingWriter(ExperimentWriter):
        def _check_log_dir_exists(self) -> None:
            if not os.path.isfile(self.metrics_file_path):
                return
            with open(self.metrics_file_path, newline="") as f:
                text = f.read()
            if text and not text.endswith("\n"):  # a row cut off by a kill
                text = text[: text.rfind("\n") + 1]
            reader = csv.DictReader(io.StringIO(text))
            rows = [r for r in reader if None not in r and _step(r) is not None and _step(r) < keep_before_step]
            rows.sort(key=_step)  # stable: rows of one step keep their order
            self.metrics_keys = sorted(reader.fieldnames or [])
            buf = io.StringIO()
            writer = csv.DictWriter(buf, fieldnames=self.metrics_keys)
            writer.writeheader()
            writer.writerows(rows)
            from ddim_bench.io import atomic_write
            atomic_write(self.metrics_file_path, buf.getvalue())

    return _ContinuingWriter(log_dir)
