"""Experiment tracking: Weights & Biases (offline by default) plus plain CSV files.

* ``lightning_logger`` gives the training loop its loggers: a ``WandbLogger`` (one W&B run,
  ``job_type="train"``) and a ``CSVLogger`` that is always written.
* ``Tracker`` is one W&B run for a sweep cell, a report or a reconstruction task, with every
  logged scalar also appended to ``<dir>/scalars.csv``.

Offline runs land in ``<dir>/wandb/offline-run-*`` and can be uploaded later with ``wandb sync``.
No API key is ever put in a run's config: ``scrub`` drops secret-looking keys and any value that
contains ``$WANDB_API_KEY`` before a config reaches W&B.
"""
from __future__ import annotations

import csv
import json
import math
import numbers
import os
import re
import sys
from collections.abc import Mapping
from typing import Any

from ddim_bench.errors import UserError

MODES = ("online", "offline", "disabled")
SECRET_KEY_PARTS = ("api_key", "apikey", "token", "secret", "password")
REDACTED = "<redacted>"
SCALARS_CSV = "scalars.csv"


# --------------------------------------------------------------------------- config helpers
def validate_mode(mode) -> None:
    if mode not in MODES:
        raise UserError(f"logger.wandb.mode={mode} must be one of {', '.join(MODES)}")


def _plain(obj) -> Any:
    """OmegaConf containers -> plain dicts/lists (resolved); anything else unchanged."""
    try:
        from omegaconf import DictConfig, ListConfig, OmegaConf
    except ImportError:  # pragma: no cover - hydra is a dependency
        return obj
    if isinstance(obj, (DictConfig, ListConfig)):
        return OmegaConf.to_container(obj, resolve=True)
    return obj


def _wandb_section(logger_cfg) -> dict:
    """The ``logger.wandb`` mapping; accepts the ``logger`` group, its ``wandb`` part, or None."""
    if logger_cfg is None:
        return {"mode": "disabled"}
    if not isinstance(logger_cfg, Mapping):
        raise UserError(f"logger={logger_cfg!r} must be a mapping with a 'wandb' section (see conf/logger/wandb.yaml)")
    node = logger_cfg.get("wandb", logger_cfg)
    if not isinstance(node, Mapping):
        return {"mode": "disabled"}
    section = {}
    for key in node:
        try:
            section[key] = _plain(node[key])
        except Exception:
            # `dir` interpolates the Hydra run folder, unknown outside a Hydra app; the code
            # passes its folder explicitly anyway.
            if key != "dir":
                raise
            section[key] = None
    section.setdefault("mode", "offline")
    validate_mode(section["mode"])
    return section


def _is_secret_key(key) -> bool:
    k = str(key).lower().replace("-", "_")
    return any(part in k for part in SECRET_KEY_PARTS)


def scrub(obj, secrets: list[str] | None = None):
    """A copy of ``obj`` without secret-looking keys, and with any value containing a secret redacted.

    Secrets are ``$WANDB_API_KEY`` (when set) plus ``secrets``.
    """
    if secrets is None:
        secrets = []
    secrets = [s for s in [os.environ.get("WANDB_API_KEY", ""), *secrets] if s]
    return _scrub(_plain(obj), secrets)


def _scrub(obj, secrets: list[str]):
    if isinstance(obj, Mapping):
        return {k: _scrub(v, secrets) for k, v in obj.items() if not _is_secret_key(k)}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_scrub(v, secrets) for v in obj)
    if isinstance(obj, str) and any(s in obj for s in secrets):
        return REDACTED
    return obj


def _argv_has_secret() -> bool:
    api_key = os.environ.get("WANDB_API_KEY", "")
    for arg in sys.argv[1:]:
        name = arg.split("=", 1)[0] if "=" in arg else arg
        if (api_key and api_key in arg) or ("=" in arg and _is_secret_key(name)):
            return True
    return False


def _settings(section: dict):
    import wandb

    # No system-metrics sampler, no pip freeze, no console capture: fast startup, nothing
    # network-bound, and no stray output (which could echo secrets) copied into the run.
    # The run metadata records the command line; leave it out when an argument looks secret.
    return wandb.Settings(
        x_disable_stats=True,
        x_disable_meta=_argv_has_secret(),
        x_save_requirements=False,
        console=section.get("console", "off") or "off",
        silent=bool(section.get("silent", False)),
    )


def _init_kwargs(section: dict, *, job_type: str, group, name, config: dict, dir: str) -> dict:
    tags = _plain(section.get("tags")) or []
    return dict(
        project=section.get("project") or "ddim-bench",
        entity=section.get("entity"),
        mode=section["mode"],
        dir=str(dir or section.get("dir") or "."),
        job_type=job_type,
        group=section.get("group") or group,  # an explicit logger.wandb.group wins
        name=name,
        notes=section.get("notes"),
        tags=[str(t) for t in tags],
        config=scrub(config or {}),
        reinit="finish_previous",
        settings=_settings(section),
    )


def finish_active_run() -> None:
    """Finish the process's current W&B run (the Lightning logger leaves it open after ``fit``)."""
    import wandb

    run = wandb.run
    if run is not None:
        run_dir = run.settings.sync_dir
        wandb.finish()
        _wait_written(run_dir)


def _wait_written(run_dir: str | None) -> None:
    # wandb 0.31's finish() returns before the .wandb file is flushed; wait so the run can be
    # read back (or synced) as soon as this returns.
    if run_dir:
        from ddim_bench.wandb_records import wait_until_written

        wait_until_written(run_dir, timeout=30.0)


# --------------------------------------------------------------------------- Lightning
def lightning_logger(logger_cfg, run_config: dict, save_dir: str, name: str | None = None) -> list:
    """``[WandbLogger, CSVLogger]`` for ``Trainer(logger=...)``; only the CSVLogger when W&B is disabled.

    ``run_config`` (the full resolved Hydra config) becomes the W&B run config, secrets scrubbed.
    The W&B run stays open after ``fit``; call ``finish_active_run()`` (a later ``lightning_logger``
    or ``Tracker`` finishes it too).
    """
    from pytorch_lightning.loggers import CSVLogger

    section = _wandb_section(logger_cfg)
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
        kwargs = _init_kwargs(section, job_type="train", group=None, name=name, config=run_config, dir=save_dir)
        kwargs.pop("dir")
        kwargs.pop("name")
        # log_model needs an upload, so it only makes sense online.
        log_model = bool(section.get("log_model", False)) and section["mode"] == "online"
        loggers.append(_ScrubbingWandbLogger(name=name, save_dir=str(save_dir), log_model=log_model, **kwargs))
    # A requeued SLURM job starts again in the same folder: keep each start's CSV instead of overwriting it.
    restart = int(os.environ.get("SLURM_RESTART_COUNT", "0") or 0)
    loggers.append(CSVLogger(save_dir=str(save_dir), name="csv", version="" if restart == 0 else f"restart-{restart}"))
    return loggers


# --------------------------------------------------------------------------- Tracker
def _scalar(value):
    """A plain Python number for a loggable scalar (bool, int, float, numpy/torch 0-d), else None."""
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, numbers.Number) and not isinstance(value, complex):
        return value.item() if hasattr(value, "item") else value
    if hasattr(value, "item") and getattr(value, "ndim", None) == 0 and hasattr(value, "dtype"):
        v = value.item()
        return v if isinstance(v, (int, float)) else None
    return None


def _safe_name(key: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", key).strip("_") or "table"


def _atomic_write_text(path: str, text: str) -> None:
    from ddim_bench.store import atomic_write
    atomic_write(path, text.encode())


class _ScalarCSV:
    """``scalars.csv``: one row per ``log`` call; the header is the union of all keys seen so far.

    Rows are appended; when a new key shows up the file is rewritten (temp file + rename) with the
    wider header, so a reader never sees a half-written header.
    """

    def __init__(self, path: str):
        self.path = path
        self.header: list[str] = []
        if os.path.exists(path):
            with open(path, newline="") as f:
                self.header = next(csv.reader(f), [])

    def append(self, row: dict) -> None:
        new = [k for k in row if k not in self.header]
        if new or not self.header:
            header = (self.header or ["step"]) + [k for k in new if k != "step"]
            rows = []
            if os.path.exists(self.path):
                with open(self.path, newline="") as f:
                    rows = list(csv.DictReader(f))
            rows.append(row)
            lines = _CSVText(header)
            for r in rows:
                lines.row(r)
            _atomic_write_text(self.path, lines.text())
            self.header = header
        else:
            with open(self.path, "a", newline="") as f:
                csv.DictWriter(f, fieldnames=self.header, restval="").writerow(row)
                f.flush()


class _CSVText:
    def __init__(self, header: list[str]):
        import io

        self.buf = io.StringIO()
        self.writer = csv.DictWriter(self.buf, fieldnames=header, restval="", extrasaction="ignore")
        self.writer.writeheader()

    def row(self, r: dict) -> None:
        self.writer.writerow(r)

    def text(self) -> str:
        return self.buf.getvalue()


class Tracker:
    """One W&B run (a sweep cell, a report, a reconstruction task) plus ``<dir>/scalars.csv``.

    With ``logger.wandb.mode=disabled`` nothing touches W&B; the CSV (and ``tables/*.csv``,
    ``summary.json``) are still written. Use as a context manager or call ``finish()``.
    """

    def __init__(self, logger_cfg, job_type: str, group: str | None, name: str, config: dict, dir: str):
        self.section = _wandb_section(logger_cfg)
        self.dir = str(dir)
        os.makedirs(self.dir, exist_ok=True)
        self._csv = _ScalarCSV(os.path.join(self.dir, SCALARS_CSV))
        self._summary: dict = {}
        self.run = None
        self.run_dir: str | None = None
        if self.section["mode"] != "disabled":
            import wandb

            kwargs = _init_kwargs(self.section, job_type=job_type, group=group, name=name, config=config,
                                  dir=self.dir)
            self.run = wandb.init(**kwargs)
            self.run_dir = self.run.settings.sync_dir

    # -- context manager
    def __enter__(self) -> "Tracker":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.finish(exit_code=1 if exc_type is not None else 0)

    # -- logging
    def log(self, data: dict, step: int | None = None) -> None:
        """Log ``data`` to W&B and its scalars to ``scalars.csv``.

        W&B drops rows whose step is below its current one; such a row is logged at the current
        W&B step instead, with the requested value kept under the ``step`` key. For an x-axis other than
        the step (``S``, seconds), log it as a key and use ``line_plot``.
        """
        data = dict(data)
        scalars = {k: s for k, s in ((k, _scalar(v)) for k, v in data.items()) if s is not None}
        if scalars:
            self._csv.append({"step": "" if step is None else step, **scalars})
        if self.run is None:
            return
        self._wandb_log(data, step)

    def _wandb_log(self, data: dict, step: int | None = None) -> None:
        # W&B drops a row whose step is below its current step (which direct ``tracker.run.log``
        # calls also advance), so ask the run for its step and log such a row at the current one.
        if step is not None and step < self.run.step:
            data.setdefault("step", step)
            step = None
        self.run.log(data, step=step)

    def summary(self, data: dict) -> None:
        data = scrub(dict(data))
        self._summary.update({k: _jsonable(v) for k, v in data.items()})
        _atomic_write_text(os.path.join(self.dir, "summary.json"),
                           json.dumps(self._summary, indent=2, sort_keys=True, default=str) + "\n")
        if self.run is not None:
            self.run.summary.update(data)

    def image(self, key: str, path_or_array, caption=None) -> None:
        if self.run is None:
            return
        import wandb

        if isinstance(path_or_array, os.PathLike):
            path_or_array = os.fspath(path_or_array)
        self._wandb_log({key: wandb.Image(path_or_array, caption=caption)})

    def table(self, key: str, columns: list[str], rows: list[list]) -> None:
        columns = [str(c) for c in columns]
        rows = [list(r) for r in rows]
        out = _CSVText(columns)
        for r in rows:
            out.row(dict(zip(columns, r)))
        os.makedirs(os.path.join(self.dir, "tables"), exist_ok=True)
        _atomic_write_text(os.path.join(self.dir, "tables", _safe_name(key) + ".csv"), out.text())
        if self.run is None:
            return
        import wandb

        self._wandb_log({key: wandb.Table(columns=columns, data=rows)})

    def line_plot(self, key, table_rows, x: str, y: str, series: str, title) -> None:
        """A W&B line chart of ``y`` against ``x`` (e.g. ``S`` or seconds), one line per ``series`` value.

        ``table_rows`` are mappings (e.g. one per sweep cell) holding the ``x``, ``y`` and ``series`` keys.
        """
        if self.run is None:
            return
        import wandb

        lines: dict[str, list[tuple]] = {}
        for r in table_rows:
            xv, yv = r[x], r[y]
            if xv is None or yv is None or (isinstance(yv, float) and math.isnan(yv)):
                continue
            lines.setdefault(str(r[series]), []).append((xv, yv))
        if not lines:
            return
        keys = sorted(lines)
        pts = [sorted(lines[k]) for k in keys]
        chart = wandb.plot.line_series(
            xs=[[p[0] for p in ps] for ps in pts],
            ys=[[p[1] for p in ps] for ps in pts],
            keys=[f"{series}={k}" for k in keys],
            title=str(title),
            xname=x,
        )
        self._wandb_log({key: chart})

    def finish(self, exit_code: int = 0) -> None:
        """End the W&B run (each Hydra multirun job must get its own run). Safe to call twice."""
        if self.run is not None:
            self.run.finish(exit_code=exit_code)
            self.run = None
            _wait_written(self.run_dir)


def _jsonable(v):
    s = _scalar(v)
    if s is not None:
        return s
    v = _plain(v)
    if isinstance(v, (str, type(None), list, dict)):
        return v
    return str(v)
