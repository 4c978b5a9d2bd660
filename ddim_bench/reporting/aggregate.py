"""From records to what the report shows: one row per cell, aggregated over its seed blocks.

Each metric gets the mean, sample sd, min (EDM's convention) and the number of blocks; with a single block the
row carries that record's interval instead of a spread.
"""
from __future__ import annotations

import math
import statistics

from ddim_bench.metric_table import BY_KEY, BY_SHORT
from ddim_bench.sampling.cell import Cell

METRICS = (*BY_KEY, "consistency_mse")
COSTS = ("sec_per_image", "images_per_sec", "nfe", "nfe_predicted", "flops_per_image", "peak_mem_mb")
INTERVAL = {m.key: m.short for m in BY_KEY.values()}  # metric → the prefix of its interval's keys


def by_cell(records: list[dict]) -> dict[Cell, list[dict]]:
    """Records grouped by their cell, cells in table order, each cell's records by seed."""
    groups: dict[Cell, list[dict]] = {}
    for r in records:
        groups.setdefault(Cell.from_record(r), []).append(r)
    order = sorted(groups, key=lambda c: (c.row_order, c.skip, c.steps))
    return {c: sorted(groups[c], key=lambda r: r["seed"]) for c in order}


def blocks(values: list[float]) -> dict:
    """mean, sample sd (NaN for one block), min and n of one metric over seed blocks."""
    vals = [float(v) for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    if not vals:
        return {"mean": None, "sd": None, "min": None, "n": 0}
    return {"mean": statistics.fmean(vals), "sd": statistics.stdev(vals) if len(vals) > 1 else math.nan,
            "min": min(vals), "n": len(vals)}


def aggregate(records: list[dict]) -> list[dict]:
    """One row per cell: its settings, ``<metric>`` (mean), ``<metric>_sd``/``_min``/``_n`` and, from the records'
    intervals, ``<metric>_lo``/``_hi`` (a single block's interval, or the blocks' mean of the interval ends)."""
    rows = []
    for cell, recs in by_cell(records).items():
        row = {**cell.fields(), "row": cell.row, "series": cell.series, "label": cell.label,
               "seeds": [r["seed"] for r in recs], "keys": [r["key"] for r in recs], "n_samples": recs[0]["n_samples"], "blocks": len(recs)}
        for m in METRICS:
            agg = blocks([r.get(m) for r in recs])
            row[m], row[f"{m}_sd"], row[f"{m}_min"], row[f"{m}_n"] = agg["mean"], agg["sd"], agg["min"], agg["n"]
            name = INTERVAL.get(m)
            if name and agg["n"] and all(r.get(f"{name}_lo") is not None for r in recs):
                row[f"{m}_lo"], row[f"{m}_hi"] = combined_interval(agg["mean"], recs, name)
        for c in COSTS:
            row[c] = blocks([r.get(c) for r in recs])["mean"]
        rows.append(row)
    return rows


def combined_interval(mean: float, recs: list[dict], name: str) -> tuple[float, float]:
    """The interval of the blocks' mean, the blocks independent: se(mean) = √(Σ se_b²) / B with each block's
    stored SE and Student's t with Welch–Satterthwaite degrees of freedom (:func:`subsets.combine_se`); records
    written before SEs were stored read their half-width as 1.96 SE (normal).  One block keeps its own ends;
    the ends stay in the metric's support."""
    from ddim_bench.scoring.subsets import combine_se, degrees_of_freedom
    from ddim_bench.scoring.uncertainty import clip_to_support
    metric = BY_SHORT[name].key
    if len(recs) == 1:
        return clip_to_support(metric, recs[0][f"{name}_lo"], recs[0][f"{name}_hi"])
    blocks = []
    for r in recs:
        se = r.get(f"{name}_se")
        df = degrees_of_freedom(r["ci_partitions"]) if se is not None and r.get("ci_partitions") else None
        blocks.append((0.0, se if se is not None else (r[f"{name}_hi"] - r[f"{name}_lo"]) / (2 * 1.96), df))
    iv = combine_se(blocks, float(recs[0].get("ci_level", 0.95)))
    return clip_to_support(metric, mean + iv.lo, mean + iv.hi)


def spread(row: dict, metric: str = "fid") -> tuple[float, float] | None:
    """The error bar of a cell's metric: ±sd over blocks when there are several, else its interval."""
    if row.get(f"{metric}_n", 0) > 1 and row.get(f"{metric}_sd") is not None:
        return row[metric] - row[f"{metric}_sd"], row[metric] + row[f"{metric}_sd"]
    if row.get(f"{metric}_lo") is not None:
        return row[f"{metric}_lo"], row[f"{metric}_hi"]
    return None


def add_consistency(records: list[dict], samples) -> None:
    """For each deterministic record: the mean squared difference (on [0, 1]) of its kept images from the same
    seeds' images in the deterministic cell of the same sampler, skip and seed block with the largest S (the
    paper's consistency property).  ``samples(key)`` gives a record's kept uint8 images or None."""
    groups: dict[tuple, list[dict]] = {}
    for r in records:
        if Cell.from_record(r).deterministic:
            groups.setdefault((r.get("sampler", "ddim"), r["skip"], r["seed"]), []).append(r)
    for group in groups.values():
        ref = samples(max(group, key=lambda r: r["steps"])["key"])
        for r in group:
            imgs = samples(r["key"])
            if ref is not None and imgs is not None and len(imgs) and len(ref):
                k = min(len(ref), len(imgs))
                r["consistency_mse"] = float(((imgs[:k].float() - ref[:k].float()) / 255).pow(2).mean())
