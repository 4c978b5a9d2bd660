"""The one timing helper of the benchmarks: interleaved repeats, medians, ratios measured side by side.

Every ratio a benchmark reports is the median over repeats of the per-repeat ratio of two functions timed in
turn (A, B, A, B …) in one process after a warm-up, so load that drifts between repeats touches both sides
alike.  Each timing waits for the GPU before and after when CUDA is in use.
"""
from __future__ import annotations

import statistics
import time
from typing import Callable

import torch


def sync() -> None:
    """Wait for queued GPU work (a no-op without CUDA or before CUDA was first used)."""
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()


def timed(fn: Callable[[], object]) -> float:
    """Wall seconds of one call of ``fn``, GPU work included."""
    sync()
    t0 = time.perf_counter()
    fn()
    sync()
    return time.perf_counter() - t0


def interleaved(fns: dict[str, Callable[[], object]], repeats: int, warmup: int = 1) -> dict[str, list[float]]:
    """Seconds per call of each function, run in turn (A, B, A, B …) after ``warmup`` untimed rounds."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeats):
        for k, fn in fns.items():
            times[k].append(timed(fn))
    return times


def median(values) -> float:
    return statistics.median(values)


def median_ratio(num: list[float], den: list[float]) -> float:
    """Median over repeats of num[i] / den[i] (both sides of a repeat were timed back to back)."""
    return statistics.median(a / b for a, b in zip(num, den))


def per_call(fn: Callable[[], object], min_run_time: float = 0.2) -> float:
    """Median seconds per call of a short function, by ``torch.utils.benchmark`` (blocked autorange; it
    synchronises CUDA itself), with this process's thread count rather than the Timer's default of one."""
    from torch.utils import benchmark
    timer = benchmark.Timer(stmt="fn()", globals={"fn": fn}, num_threads=torch.get_num_threads())
    return timer.blocked_autorange(min_run_time=min_run_time).median


def interleaved_per_call(fns: dict[str, Callable[[], object]], repeats: int,
                         min_run_time: float = 0.1) -> dict[str, list[float]]:
    """``per_call`` of each function, in turn, ``repeats`` times: for functions too short to time one call."""
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeats):
        for k, fn in fns.items():
            times[k].append(per_call(fn, min_run_time))
    return times
