"""``CSVHistory``: training's ``csv/metrics.csv``, one history across restarts (a Lightning ``Logger``).

Lightning's ``CSVLogger`` deletes the file when its folder exists, so a resumed start would lose the history.
This logger appends each row as it is logged (a kill loses none); a resumed start keeps the rows of steps before
the checkpoint it resumes from (rows logged after it by the killed start are dropped: the resumed start logs those
steps again) and a row cut off by a kill.  The header is the sorted union of the keys, as in ``CSVLogger``'s
file; a new key rewrites the file with the wider header.
"""
from __future__ import annotations

import csv
import io
import os

from pytorch_lightning.loggers import Logger
from pytorch_lightning.utilities import rank_zero_only

from ddim_bench.io import atomic_write

METRICS_FILE = "metrics.csv"


def _step(row: dict) -> float | None:
    try:
        return float(row.get("step") or "")
    except ValueError:
        return None


def _plain(value):
    return value.item() if hasattr(value, "item") else value


def kept_rows(path: str, keep_before_step: float) -> tuple[list[str], list[dict]]:
    """The header and the rows of ``path`` whose step is below ``keep_before_step``, in step order."""
    if not os.path.isfile(path):
        return [], []
    with open(path, newline="") as f:
        text = f.read()
    if text and not text.endswith("\n"):  # a row cut off by a kill
        text = text[: text.rfind("\n") + 1]
    reader = csv.DictReader(io.StringIO(text))
    rows = [r for r in reader if None not in r and _step(r) is not None and _step(r) < keep_before_step]
    rows.sort(key=_step)  # stable: rows of one step keep their order
    return sorted(reader.fieldnames or []), rows


def csv_text(keys: list[str], rows: list[dict]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=keys)
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


class CSVHistory(Logger):
    """``<save_dir>/csv/metrics.csv``; ``keep_before_step``: the step a resumed start continues from (None: a
    fresh start, which begins a new file)."""

    def __init__(self, save_dir: str, keep_before_step: float | None = None):
        super().__init__()
        self._save_dir = str(save_dir)
        self.path = os.path.join(self.log_dir, METRICS_FILE)
        self.keys: list[str] = []
        if rank_zero_only.rank == 0:
            os.makedirs(self.log_dir, exist_ok=True)
            if keep_before_step is None:
                if os.path.isfile(self.path):
                    os.remove(self.path)
            else:
                self.keys, rows = kept_rows(self.path, keep_before_step)
                atomic_write(self.path, csv_text(self.keys, rows))

    @property
    def name(self) -> str:
        return "csv"

    @property
    def version(self) -> str:
        return ""

    @property
    def save_dir(self) -> str:
        return self._save_dir

    @property
    def log_dir(self) -> str:
        return os.path.join(self._save_dir, "csv")

    @rank_zero_only
    def log_hyperparams(self, params, *args, **kwargs) -> None:
        pass  # the run's whole config goes to W&B and to Hydra's .hydra/config.yaml

    @rank_zero_only
    def log_metrics(self, metrics: dict, step: int | None = None) -> None:
        row = {k: _plain(v) for k, v in metrics.items()}
        row["step"] = step
        new = set(row) - set(self.keys)
        if new or not os.path.isfile(self.path):
            self.keys = sorted(set(self.keys) | new)
            _, old = kept_rows(self.path, float("inf"))
            atomic_write(self.path, csv_text(self.keys, old + [row]))
            return
        with open(self.path, "a", newline="") as f:
            csv.DictWriter(f, fieldnames=self.keys).writerow(row)
