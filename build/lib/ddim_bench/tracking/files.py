"""Plain files beside every run, W&B or not: ``scalars.csv``, ``summary.json``, ``tables/*.csv``."""
from __future__ import annotations

import csv
import numbers
import os
import re

from ddim_bench.io import atomic_write
from ddim_bench.tracking.settings import plain

SCALARS_CSV = "scalars.csv"


def scalar(value):
    """A plain Python number for a loggable scalar (bool, int, float, numpy/torch 0-d), else None."""
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, numbers.Number) and not isinstance(value, complex):
        return value.item() if hasattr(value, "item") else value
    if hasattr(value, "item") and getattr(value, "ndim", None) == 0 and hasattr(value, "dtype"):
        v = value.item()
        return v if isinstance(v, (int, float)) else None
    return None


def safe_name(key: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", key).strip("_") or "table"


class ScalarCSV:
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
            lines = CSVText(header)
            for r in rows:
                lines.row(r)
            atomic_write(self.path, lines.text())
            self.header = header
        else:
            with open(self.path, "a", newline="") as f:
                csv.DictWriter(f, fieldnames=self.header, restval="").writerow(row)
                f.flush()


class CSVText:
    def __init__(self, header: list[str]):
        import io

        self.buf = io.StringIO()
        self.writer = csv.DictWriter(self.buf, fieldnames=header, restval="", extrasaction="ignore")
        self.writer.writeheader()

    def row(self, r: dict) -> None:
        self.writer.writerow(r)

    def text(self) -> str:
        return self.buf.getvalue()


def jsonable(v):
    s = scalar(v)
    if s is not None:
        return s
    v = plain(v)
    if isinstance(v, (str, type(None), list, dict)):
        return v
    return str(v)
