"""Run a real app (``ddim-bench-sweep`` or ``ddim-bench-report``) with its stages timed and their peak host memory
read, for ``benchmarks/cpu/paper_scale.py``:  ``python -m benchmarks.cpu.scale_probe sweep|report <overrides…>``.

The app's own code runs unchanged; the probe only wraps named functions (see ``STAGES``) with a timer and, for
the stages marked so, a peak-RSS window (Linux ``VmHWM``, reset through ``/proc/self/clear_refs``; a window that
closes is folded into every window still open, so an outer stage's peak includes its inner stages').  At exit
it writes ``<app>-<pid>.json`` into ``$SCALE_PROBE_OUT``: per stage {seconds, calls, peak_mb}, and the process's
peak.  Stages without memory windows (``network``, ``extract``: a call per batch) are only timed.
"""
from __future__ import annotations

import atexit
import functools
import importlib
import json
import os
import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from benchmarks.cpu.growth import peak_rss_mb, reset_peak_rss  # noqa: E402

# (module, attribute path, stage name, with a memory window)
STAGES = {
    "sweep": [("ddim_bench.sweep.run", "Run.__init__", "setup", True),
              ("ddim_bench.sweep.cell_run", "evaluate", "cell", True),
              ("ddim_bench.sweep.cell_run", "generate", "sample", True),
              ("ddim_bench.models.stand_in", "StandInEps.forward", "network", False),
              ("ddim_bench.scoring.metrics", "Scorer.features", "extract", False),
              ("ddim_bench.sweep.cell_run", "Shard.gathered", "gather", True),
              ("ddim_bench.scoring.metrics", "Scorer.score", "score", True),
              ("ddim_bench.sweep.cell_run", "_intervals", "intervals", True),
              ("ddim_bench.results.store", "ResultStore.put", "store", True),
              ("ddim_bench.tracking.runs", "log_cell", "wandb", True)],
    "report": [("ddim_bench.reporting.report", "make_report", "report", True),
               ("ddim_bench.results.store", "ResultStore.load_file", "load", True),
               ("ddim_bench.reporting.report", "make_claims", "claims", True),
               ("ddim_bench.tracking.runs", "log_report", "wandb", True)],
}


class Meter:
    """Accumulated time and peak RSS per stage; ``process``: the whole run's peak."""

    def __init__(self):
        self.stats: dict[str, dict] = {}
        self.process = {"peak_mb": 0.0}
        self.open: list[dict] = [self.process]
        self.exact = reset_peak_rss()

    def fold(self) -> None:
        hwm = peak_rss_mb()
        for window in self.open:
            window["peak_mb"] = max(window["peak_mb"], hwm)
        reset_peak_rss()

    def wrap(self, fn, name: str, memory: bool):
        @functools.wraps(fn)
        def timed(*args, **kwargs):
            window = {"peak_mb": 0.0}
            if memory:
                self.fold()
                self.open.append(window)
            t0 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                dt = time.perf_counter() - t0
                if memory:
                    self.fold()
                    self.open = [w for w in self.open if w is not window]
                st = self.stats.setdefault(name, {"seconds": 0.0, "calls": 0, "peak_mb": None})
                st["seconds"] += dt
                st["calls"] += 1
                if memory:
                    st["peak_mb"] = max(st["peak_mb"] or 0.0, window["peak_mb"])
        return timed

    def install(self, app: str) -> None:
        for module, attr, name, memory in STAGES[app]:
            owner = importlib.import_module(module)
            *path, last = attr.split(".")
            for part in path:
                owner = getattr(owner, part)
            setattr(owner, last, self.wrap(getattr(owner, last), name, memory))

    def write(self, app: str) -> None:
        self.fold()
        out = {"app": app, "pid": os.getpid(), "stages": self.stats, "peak_mb": self.process["peak_mb"],
               "exact_peaks": self.exact}
        folder = os.environ.get("SCALE_PROBE_OUT", ".")
        Path(folder, f"{app}-{os.getpid()}.json").write_text(json.dumps(out, indent=1))


def main() -> None:
    app, args = sys.argv[1], sys.argv[2:]
    meter = Meter()
    meter.install(app)
    atexit.register(meter.write, app)
    sys.argv = [f"ddim-bench-{app}", *args]
    importlib.import_module(f"ddim_bench.apps.{app}").main()


if __name__ == "__main__":
    main()
