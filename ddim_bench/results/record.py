"""What a sweep stores per (cell, seed block) and a reconstruction per S: the key fields, the builders, the columns.

A record is a JSON object on disk (see :mod:`ddim_bench.results.store`), built here only: :func:`cell_record`
(with :func:`measured_fields`) for a sweep's cell, :func:`reconstruction_record` for Table 2.  The report's
CSVs, the W&B tables and summaries take their columns from :func:`columns` / :data:`RECONSTRUCTION_COLUMNS`.
"""
from __future__ import annotations

import hashlib
import json
import time
from typing import Any

from ddim_bench import metric_table
from ddim_bench.sampling.cell import Cell

# Bump when the generated numbers of every cell change for the same settings (e.g. a new noise scheme).
RECORD_VERSION = 2


def cell_key(fields: dict) -> str:
    """A stable hash of everything that determines a record's numbers."""
    blob = json.dumps(fields, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


def key_fields(cell: Cell, seed: int, *, n_samples: int, checkpoint_sha256: str, weights: str, schedule: dict,
               extractor: str, reference: str, keep_images: int, fast: dict, noise_version: int,
               scheduler: dict | None = None) -> dict:
    """Everything that determines a (cell, seed) record's numbers — and nothing that does not (batch size,
    device count, bootstrap settings: intervals are recomputed from the stored features when those change).

    ``scheduler``: a diffusers sampler's effective configuration (``samplers.effective_config``: its class, full
    config, visited timesteps, per-step orders, diffusers' version), so that any switch inside diffusers gives
    another key.  Our DDIM is determined by the cell itself and has none in its key."""
    extra = {} if scheduler is None else {"scheduler": scheduler}
    return {**cell.fields(), **extra, "seed": int(seed), "n_samples": int(n_samples),
            "checkpoint_sha256": checkpoint_sha256, "weights": weights, "schedule": schedule, "extractor": extractor,
            "reference": reference, "keep_images": int(keep_images), "fast": fast, "noise_version": noise_version,
            "record_version": RECORD_VERSION}


# A cell record's columns, in order (the report's results.csv, W&B's records table and cell summaries): its
# settings, every metric of the metric table with its interval and SE, what the cell cost, where it came from.
SETTINGS = ("key", "sweep", "sampler", "steps", "eta", "variance", "skip", "seed", "n_samples")
COSTS = ("sec_per_image", "images_per_sec", "nfe", "nfe_predicted", "flops_per_image", "peak_mem_mb", "seconds")
PROVENANCE = ("world_size", "weights", "extractor", "reference", "clip_x0")
DEFAULTS = {"sampler": "ddim", "clip_x0": False}  # absent from records older than the field


def columns() -> list[str]:
    return [*SETTINGS, *metric_table.record_columns(se=True), "consistency_mse", *COSTS, *PROVENANCE]


def row(record: dict) -> list[Any]:
    """The record's values in :func:`columns` order (None where it has none)."""
    return [record.get(c, DEFAULTS.get(c)) for c in columns()]


def summary(record: dict) -> dict:
    """What a cell's W&B run shows as its numbers: the metrics with their intervals, and the costs."""
    keys = [*metric_table.record_columns(se=True), *COSTS]
    return {k: record[k] for k in keys if record.get(k) is not None}


def measured_fields(scores: dict, intervals: dict, *, n_samples: int, n_scored: int, seconds: float, nfe: int,
                    nfe_predicted: int, flops_per_call: float | None, peak_mem_mb: float, world_size: int,
                    device: str, device_name: str, timings: dict, subsets: dict | None = None) -> dict:
    """A record's measured part: the scores and their intervals, the metrics on the intervals' subsets
    (:func:`subset_fields`), and what the cell cost (``seconds``: the sampling wall time, the slowest rank's;
    ``timings``: the scoring stages' seconds)."""
    return {**scores, **intervals, **({"subsets": subsets} if subsets else {}), "n_scored": n_scored,
            "seconds": seconds, "sec_per_image": seconds / n_samples,
            "images_per_sec": n_samples / max(seconds, 1e-9), "nfe": nfe, "nfe_predicted": nfe_predicted,
            "flops_per_image": None if flops_per_call is None else flops_per_call * nfe,
            "peak_mem_mb": peak_mem_mb, "world_size": world_size, "device": device, "device_name": device_name,
            **timings}


def subset_fields(values: dict, *, n: int, partitions: int, seed: int) -> dict:
    """A record's ``subsets``: the partition (``subsets.subset_indices(n, partitions, 3, seed)``, which depends on
    nothing else) and, per metric key, [full-set value, [values on level 1's subsets, level 2's, …]] at full
    precision (JSON keeps every float64 exactly).  Two records of one seed block with the same partition give
    every paired difference of the report without per-sample features (``subsets.paired_from_values``)."""
    return {"n": int(n), "partitions": int(partitions), "seed": int(seed),
            "values": {k: [float(v), [[float(x) for x in level] for level in lv]] for k, (v, lv) in values.items()}}


def stored_subsets(rec: dict, metric: str) -> tuple[tuple, tuple] | None:
    """((n, partitions, seed), (full value, per-level values)) of ``metric`` in a record's ``subsets``; None for
    a record without them (older records, intervals off, N below the subsets' minimum)."""
    s = rec.get("subsets") or {}
    if metric not in s.get("values", {}):
        return None
    value, levels = s["values"][metric]
    return (int(s["n"]), int(s["partitions"]), int(s["seed"])), (value, levels)


def cell_record(key_fields: dict, key: str, measured: dict, *, sweep: str, sampler: str, scheduler: dict,
                checkpoint: dict, reference_split: str, reference_n: int, protocol: list, reference_file: str | None,
                feature_layers: dict) -> dict:
    """The record a sweep stores for one (cell, seed block): its key fields, its measured part
    (:func:`measured_fields`) and where it came from."""
    return {**key_fields, **measured, "scheduler": scheduler, "key": key, "sweep": sweep, "sampler": sampler,
            "checkpoint": checkpoint, "reference_split": reference_split, "reference_n": reference_n,
            "protocol": protocol, "reference_file": reference_file, "feature_layers": dict(feature_layers),
            "created": time.strftime("%Y-%m-%dT%H:%M:%S")}


RECONSTRUCTION_COLUMNS = ("steps", "mse", "mse_std", "mse_min", "mse_max", "mse_unclamped", "n_images", "split",
                          "skip", "nfe", "encode_seconds", "decode_seconds", "weights", "dataset", "key")


def reconstruction_fields(*, steps: int, skip: str, n_images: int, split: str, data: str, checkpoint_sha256: str,
                          weights: str, schedule: dict) -> dict:
    """Everything that determines a reconstruction record's numbers (not batch size or device)."""
    return {"task": "reconstruction", "steps": steps, "skip": skip, "n_images": n_images, "split": split,
            "data": data, "checkpoint_sha256": checkpoint_sha256, "weights": weights, "schedule": schedule}


def reconstruction_record(fields: dict, key: str, errors: dict, *, strip: str, nfe: int, encode_seconds: float,
                          decode_seconds: float, device: str, sweep: str, checkpoint: dict, dataset: str) -> dict:
    """The record of one S of Table 2: its key fields, the errors (``inversion.reconstruction_errors``: mse,
    mse_std/min/max, mse_unclamped, mse_per_image), what it cost and where it came from."""
    return {**fields, **errors, "key": key, "strip": strip, "nfe": nfe, "encode_seconds": encode_seconds,
            "decode_seconds": decode_seconds, "device": device, "sweep": sweep, "checkpoint": checkpoint,
            "dataset": dataset, "created": time.strftime("%Y-%m-%dT%H:%M:%S")}
