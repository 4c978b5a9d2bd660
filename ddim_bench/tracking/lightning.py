"""The training loop's loggers: a W&B run (``job_type="train"``) and Lightning's CSV file, always written."""
from __future__ import annotations

import os
from collections.abc import Mapping

from ddim_bench.tracking.settings import finish_active_run, init_kwargs, scrub, wandb_section


def lightning_logger(logger_cfg, run_config: dict, save_dir: str, name: str | None = None) -> list:
    """``[WandbLogger, CSVLogger]`` for ``Trainer(logger=...)``; only the CSVLogger when W&B is disabled.

    ``run_config`` (the full resolved Hydra config) becomes the W&B run config, secrets scrubbed.
    The W&B run stays open after ``fit``; call ``finish_active_run()`` (a later ``lightning_logger``
    or ``Tracker`` finishes it too).
    """
    from pytorch_lightning.loggers import CSVLogger

    section = wandb_section(logger_cfg)
    os.makedirs(save_dir, exist_ok=True)
    loggers: list = []
    if section["mode"] != "disabled":
        from pytorch_lightning.loggers import WandbLogger
        from pytorch_lightning.utilities import rank_zero_only

        class _ScrubbingWandbLogger(WandbLogger):
            def log_hyperparams(self, params) -> None:  # model hparams go through the same scrub
                if isinstance(params, Mapping):
                    params = scrub(params)
                super().log_hyperparams(params)

        if rank_zero_only.rank == 0:
            # WandbLogger would silently reuse a run left open by an earlier job of this process.
            finish_active_run()
        kwargs = init_kwargs(section, job_type="train", group=None, name=name, config=run_config, dir=save_dir)
        kwargs.pop("dir")
        kwargs.pop("name")
        # log_model needs an upload, so it only makes sense online.
        log_model = bool(section.get("log_model", False)) and section["mode"] == "online"
        loggers.append(_ScrubbingWandbLogger(name=name, save_dir=str(save_dir), log_model=log_model, **kwargs))
    # A requeued SLURM job starts again in the same folder: keep each start's CSV instead of overwriting it.
    restart = int(os.environ.get("SLURM_RESTART_COUNT", "0") or 0)
    loggers.append(CSVLogger(save_dir=str(save_dir), name="csv", version="" if restart == 0 else f"restart-{restart}"))
    return loggers
