"""What the sweep and the report put into W&B: one ``eval`` run per cell, one ``report`` run per sweep."""
from __future__ import annotations

import os

from ddim_bench.tracking.tracker import Tracker

CELL_CONFIG = ("steps", "eta", "variance", "skip", "clip_x0", "n_samples", "seed", "extractor", "reference",
               "reference_split", "reference_n", "checkpoint_sha256", "weights", "key", "sweep", "world_size")
CELL_SUMMARY = ("fid", "is_mean", "is_std", "kid_mean", "kid_std", "sec_per_image", "images_per_sec", "nfe",
                "peak_mem_mb", "seconds")


def cell_name(rec: dict) -> str:
    row = "hat" if rec["variance"] == "hat" else f"eta{rec['eta']:g}"
    return f"S{rec['steps']}-{row}-{rec['skip']}"


def log_cell(logger_cfg, record: dict, images, results_root: str) -> None:
    """One W&B run (job_type ``eval``, group = the sweep's name) holding the cell's config and numbers."""
    from ddim_bench.images import save_png
    from ddim_bench.images import image_grid
    folder = os.path.join(results_root, "runs", record["key"])
    with Tracker(logger_cfg, job_type="eval", group=record["sweep"], name=cell_name(record),
                 config={k: record[k] for k in CELL_CONFIG if k in record}, dir=folder) as tr:
        tr.log({k: record[k] for k in CELL_SUMMARY})
        tr.summary({k: record[k] for k in CELL_SUMMARY})
        if images is not None and len(images):
            path = os.path.join(folder, "samples.png")
            save_png(image_grid(images[:64]), path)
            tr.image("samples", path, caption=cell_name(record))


def series(rec: dict) -> str:
    return "sigma_hat" if rec["variance"] == "hat" else f"eta={rec['eta']:g}"


def log_report(logger_cfg, sweep_name: str, report: dict, results_root: str, extra: dict | None = None) -> None:
    """The report run (job_type ``report``): a table of all cells, FID-vs-S and FID-vs-seconds curves whose
    x-axes are set with ``define_metric``, and the same PNG figures as on disk."""
    from ddim_bench.apps.report import COLUMNS
    records = report["records"]
    folder = os.path.join(results_root, "report", "run")
    with Tracker(logger_cfg, job_type="report", group=sweep_name, name=f"report-{sweep_name}",
                 config={"sweep": sweep_name, "cells": len(records)}, dir=folder) as tr:
        tr.table("cells", COLUMNS, [[r.get(c) for c in COLUMNS] for r in records])
        if tr.run is not None:
            tr.run.define_metric("S")
            tr.run.define_metric("fid_vs_S/*", step_metric="S")
            tr.run.define_metric("sec_per_image")
            tr.run.define_metric("fid_vs_sec/*", step_metric="sec_per_image")
            for r in sorted(records, key=lambda r: r["steps"]):
                tr.run.log({"S": r["steps"], f"fid_vs_S/{series(r)}": r["fid"]})
            for r in sorted(records, key=lambda r: r["sec_per_image"]):
                tr.run.log({"sec_per_image": r["sec_per_image"], f"fid_vs_sec/{series(r)}": r["fid"]})
        tr.line_plot("plot/fid_vs_steps", [{**r, "series": series(r)} for r in records], "steps", "fid",
                     "series", "FID vs steps S")
        tr.line_plot("plot/fid_vs_sec", [{**r, "series": series(r)} for r in records], "sec_per_image", "fid",
                     "series", "FID vs seconds per image")
        for name, path in {**report["paths"], **(extra or {}).get("paths", {})}.items():
            if path.endswith(".png"):
                tr.image(f"figures/{name}", path, caption=name)
        for key, table in (extra or {}).get("tables", {}).items():
            tr.table(key, table["columns"], table["rows"])
        tr.summary({"cells": len(records), "best_fid": min(r["fid"] for r in records)})
