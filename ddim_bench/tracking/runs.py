"""What the apps put into W&B: one ``eval`` run per (cell, seed) record, one ``report`` run per sweep.

A record's run is logged right after the record is stored; ``runs/<key>/logged`` marks it done, so a sweep killed
between the two catches up on its next start (:func:`catch_up`) instead of losing that run.
"""
from __future__ import annotations

import os

from ddim_bench.results import record as rec
from ddim_bench.images import image_grid, save_png
from ddim_bench.io import atomic_write
from ddim_bench.sampling.cell import Cell
from ddim_bench.tracking.tracker import Tracker

# checkpoint: its kind, file or folder, Hub repo and revision; scheduler: the sampler's effective configuration
CELL_CONFIG = ("sampler", "steps", "eta", "variance", "skip", "clip_x0", "n_samples", "seed", "extractor",
               "reference", "reference_split", "reference_n", "checkpoint_sha256", "checkpoint", "weights", "key",
               "sweep", "world_size", "protocol", "scheduler")
MARKER = "logged"


def log_cell(logger_cfg, record: dict, images, results_root: str) -> None:
    """One W&B run (job_type ``eval``, group = the sweep's name) holding the record's config and numbers."""
    cell = Cell.from_record(record)
    folder = os.path.join(results_root, "runs", record["key"])
    name = f"{cell.slug}-seed{record['seed']}"
    summary = rec.summary(record)
    with Tracker(logger_cfg, job_type="eval", group=record["sweep"], name=name,
                 config={k: record[k] for k in CELL_CONFIG if k in record}, dir=folder) as tr:
        tr.log(summary)
        tr.summary(summary)
        if images is not None and len(images):
            tr.image("samples", save_png(image_grid(images[:64]), os.path.join(folder, "samples.png")), caption=name)
    atomic_write(os.path.join(folder, MARKER), record["key"] + "\n")


def catch_up(logger_cfg, results, keys: list[str]) -> int:
    """Log the W&B run of every finished record that has none yet (a cell killed after its record was stored)."""
    n = 0
    for key in keys:
        if not os.path.isfile(os.path.join(results.root, "runs", key, MARKER)) and results.has(key):
            log_cell(logger_cfg, results.record(key), results.samples(key), results.root)
            n += 1
    return n


def samplers_tables(samplers: dict) -> list[tuple[str, list[dict]]]:
    """A sampler sweep's tables: each sampler against DDIM η = 0 at the same NFE, the fronts by NFE and seconds."""
    return [("vs_ddim", samplers.get("vs_ddim")), ("best_at_nfe", samplers.get("front_nfe")),
            ("best_at_seconds", samplers.get("front_seconds"))]


def log_report(logger_cfg, sweep_name: str, report: dict, results_root: str, extra: dict | None = None) -> str | None:
    """The report run (job_type ``report``): every record and every aggregated cell as tables, the claims table,
    a sampler sweep's comparisons with DDIM and its fronts (``samplers_tables``),
    FID against S / seconds / NFE per row with the block sd and interval ends, and the report's figures.

    Once it is written, the older offline report runs of this folder are removed: the newest report is the only
    one ``wandb sync`` uploads.  Returns the run's folder (None with W&B disabled)."""
    rows, records = report["rows"], report["records"]
    folder = os.path.join(results_root, "report", "run")
    with Tracker(logger_cfg, job_type="report", group=sweep_name, name=f"report-{sweep_name}",
                 config={"sweep": sweep_name, "cells": len(rows), "records": len(records),
                         "protocol": report.get("protocol", "")}, dir=folder) as tr:
        tr.table("records", rec.columns(), [rec.row(r) for r in records])
        agg_cols = [c for c in rows[0] if c not in ("seeds", "keys")]
        tr.table("cells", agg_cols, [[r.get(c) for c in agg_cols] for r in rows])
        for name, table in [("claims", report.get("claims"))] + samplers_tables(report.get("samplers") or {}):
            if table:
                tcols = list(dict.fromkeys(k for row in table for k in row))
                tr.table(name, tcols, [[row.get(k) for k in tcols] for row in table])
        if tr.run is not None:
            for x in ("S", "sec_per_image", "NFE"):
                tr.run.define_metric(x)
                tr.run.define_metric(f"fid_vs_{x}/*", step_metric=x)
            for x, field in (("S", "steps"), ("sec_per_image", "sec_per_image"), ("NFE", "nfe")):
                for r in sorted(rows, key=lambda r: r.get(field) or 0):
                    tr.run.log({x: r.get(field), **{f"fid_vs_{x}/{r['series']}{suffix}": r.get(f"fid{suffix}")
                                                    for suffix in ("", "_sd", "_lo", "_hi")
                                                    if r.get(f"fid{suffix}") is not None}})
        for x, title in (("steps", "FID vs steps S"), ("sec_per_image", "FID vs seconds per image"),
                         ("nfe", "FID vs NFE")):
            tr.line_plot(f"plot/fid_vs_{x}", rows, x, "fid", "series", title)
        for name, path in {**report["paths"], **(extra or {}).get("paths", {})}.items():
            if path.endswith(".png"):
                tr.image(f"figures/{name}", path, caption=name)
        for key, table in (extra or {}).get("tables", {}).items():
            tr.table(key, table["columns"], table["rows"])
        tr.summary({"cells": len(rows), "records": len(records), "best_fid": min(r["fid"] for r in rows)})
        run_dir = tr.run_dir
    if run_dir:
        remove_stale_offline_runs(os.path.dirname(run_dir), keep=run_dir)
    return run_dir


def remove_stale_offline_runs(wandb_dir: str, keep: str) -> None:
    """Every ``offline-run-*`` folder in ``wandb_dir`` but ``keep`` (a report superseded by a newer one)."""
    import shutil
    for name in os.listdir(wandb_dir):
        path = os.path.join(wandb_dir, name)
        if name.startswith("offline-run-") and os.path.realpath(path) != os.path.realpath(keep):
            shutil.rmtree(path, ignore_errors=True)
