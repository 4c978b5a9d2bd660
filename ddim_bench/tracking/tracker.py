"""``Tracker``: one W&B run (a sweep cell, a report, a reconstruction task) plus its plain files."""
from __future__ import annotations

import json
import math
import os

from ddim_bench.io import atomic_write
from ddim_bench.tracking.files import SCALARS_CSV, CSVText, ScalarCSV, jsonable, safe_name, scalar
from ddim_bench.tracking.settings import init_kwargs, scrub, wandb_section


class Tracker:
    """One W&B run (a sweep cell, a report, a reconstruction task) plus ``<dir>/scalars.csv``.

    With ``logger.wandb.mode=disabled`` nothing touches W&B; the CSV (and ``tables/*.csv``,
    ``summary.json``) are still written. Use as a context manager or call ``finish()``.
    """

    def __init__(self, logger_cfg, job_type: str, group: str | None, name: str, config: dict, dir: str):
        self.section = wandb_section(logger_cfg)
        self.dir = str(dir)
        os.makedirs(self.dir, exist_ok=True)
        self._csv = ScalarCSV(os.path.join(self.dir, SCALARS_CSV))
        self._summary: dict = {}
        self.run = None
        self.run_dir: str | None = None
        if self.section["mode"] != "disabled":
            import wandb

            kwargs = init_kwargs(self.section, job_type=job_type, group=group, name=name, config=config,
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
        scalars = {k: s for k, s in ((k, scalar(v)) for k, v in data.items()) if s is not None}
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
        self._summary.update({k: jsonable(v) for k, v in data.items()})
        atomic_write(os.path.join(self.dir, "summary.json"),
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
        out = CSVText(columns)
        for r in rows:
            out.row(dict(zip(columns, r)))
        os.makedirs(os.path.join(self.dir, "tables"), exist_ok=True)
        atomic_write(os.path.join(self.dir, "tables", safe_name(key) + ".csv"), out.text())
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
