"""What a sweep prints: one line per record and per cell, the progress bar, and the lines it ends with."""
from __future__ import annotations

import sys

from ddim_bench.sampling.cell import Cell


def say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def record_line(r: dict) -> str:
    ci = f" [{r['fid_lo']:.3g}, {r['fid_hi']:.3g}]" if r.get("fid_lo") is not None else ""
    return (f"{Cell.from_record(r).label} seed {r['seed']}: FID {r['fid']:.3g}{ci}, "
            f"{r['images_per_sec']:.0f} img/s, NFE {r['nfe']}")


def cell_line(cell: Cell, recs: list) -> str:
    """One line per cell: FID mean ± sd over its seed blocks (or its one block's interval), speed, NFE."""
    from ddim_bench.reporting.aggregate import aggregate
    from ddim_bench.reporting.table1 import fmt
    recs = [r for r in recs if r is not None]
    row = aggregate(recs)[0]
    return (f"  {cell.label}: FID {fmt(row)} ({len(recs)} block{'s' * (len(recs) > 1)}), "
            f"{row['images_per_sec']:.0f} img/s, NFE {row['nfe']:.0f}")


def progress_bar(dist, total: int, desc: str):
    """tqdm on rank 0 only (a disabled bar elsewhere); leaves no line behind once the cell's line is printed."""
    from tqdm.auto import tqdm
    return tqdm(total=total, desc=desc, unit="img", leave=False, disable=not dist.main or not sys.stderr.isatty(),
                file=sys.stderr, dynamic_ncols=True)


def stopped_line(stop, slurm_signal, launcher_rank: int) -> str:
    """One line on a signal (``signals.Stopped``); on the job's warning signal under SLURM the job is requeued
    first."""
    from ddim_bench import signals
    requeued = ""
    if stop.signum == signals.from_spec(slurm_signal) and launcher_rank == 0:
        requeued = signals.requeue_self() or ""
    return (f"stopped by {stop.name}: the record in progress was not written and its claim is released; "
            f"finished records are kept{'; ' + requeued if requeued else ''}; rerun to resume")


def end_lines(tally, sweep_name: str) -> list[str]:
    """The sweep's last lines (rank 0): the records missing, if any, and the account of every record."""
    lines = []
    if tally.missing:
        lines.append(f"missing (no record, no live claim): {', '.join(tally.keys[k] for k in tally.missing[:5])}"
                     f"{', …' * (len(tally.missing) > 5)}; rerun the sweep to compute them")
    return lines + [tally.line(sweep_name)]
