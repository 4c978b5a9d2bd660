"""Claims a user states in the config (``claims: [{a: {...}, b: {...}, metric: fid, direction: lower}]``), checked
exactly as the paper's claims are: Δ = metric(a) − metric(b), paired on sample indices within each seed block,
blocks combined, and "holds" only when the whole interval is on the claimed side of 0.

A claim names each cell by its settings (``schema.CellRef``); a setting left null (``skip``, ``clip_x0``) matches
any, but the claim must then name exactly one cell of the sweep.  The sweep checks its claims against its grid
before any work and keeps them in ``claims.json`` in the results folder, where the report finds them.
"""
from __future__ import annotations

import json
import os

from omegaconf import OmegaConf

from ddim_bench.errors import UserError
from ddim_bench.metric_table import FAMILY
from ddim_bench.scoring.uncertainty import verdict
from ddim_bench.reporting.claims import not_checked, paired_delta, power_fields
from ddim_bench.sampling.cell import Cell

STORED = "claims.json"


def plain(claims) -> list[dict]:
    """The config's claims (a ListConfig, or a list of dicts) as plain dicts."""
    if claims is None:
        return []
    return [dict(c) for c in (OmegaConf.to_container(claims, resolve=True) if OmegaConf.is_config(claims) else claims)]


def _matches(cell: Cell, ref: dict) -> bool:
    eta_ok = ref["variance"] == "hat" or cell.eta == float(ref["eta"])
    return (cell.sampler == ref["sampler"] and cell.steps == int(ref["steps"]) and cell.variance == ref["variance"]
            and eta_ok and ref.get("skip") in (None, cell.skip) and ref.get("clip_x0") in (None, cell.clip_x0))


def _shown(ref: dict) -> str:
    return "{" + ", ".join(f"{k}: {v}" for k, v in ref.items() if v is not None) + "}"


def _cells_line(cells: list[Cell]) -> str:
    rows: dict[str, list[int]] = {}
    for c in cells:
        name = f"{c.sampler} {c.row}" if c.sampler == "ddim" else c.sampler
        rows.setdefault(f"{name} {c.skip}", []).append(c.steps)
    return "; ".join(f"{r} S={','.join(map(str, sorted(set(s))))}" for r, s in rows.items())


def resolve(ref: dict, cells: list[Cell], key: str) -> Cell:
    """The one cell of ``cells`` that ``ref`` names, else a one-line :class:`UserError` naming ``key``."""
    found = [c for c in cells if _matches(c, ref)]
    if not found:
        raise UserError(f"{key}={_shown(ref)} is not a cell of this sweep; its cells: {_cells_line(cells)}")
    if len(found) > 1:
        raise UserError(f"{key}={_shown(ref)} matches {len(found)} cells ({', '.join(c.label for c in found)}); "
                        f"set {key}.skip or {key}.clip_x0 to pick one")
    return found[0]


def check(claims: list[dict], cells: list[Cell], metrics_cfg=None) -> list[tuple[Cell, Cell]]:
    """Each claim's two cells, checked against the sweep's ``cells`` (and its metric against ``metrics_cfg``)."""
    pairs = []
    for i, c in enumerate(claims):
        a, b = resolve(c["a"], cells, f"claims[{i}].a"), resolve(c["b"], cells, f"claims[{i}].b")
        if a == b:
            raise UserError(f"claims[{i}]: a and b name the same cell ({a.label}); a claim compares two cells")
        if metrics_cfg is not None:
            flag = FAMILY[c["metric"]]
            if not metrics_cfg.get(flag, True):
                raise UserError(f"claims[{i}].metric={c['metric']} but metrics.{flag}=false; turn it on or claim "
                                f"another metric")
            boot = metrics_cfg.get("bootstrap") or {}
            if int(boot.get("replicates", 1)) < 1 and not metrics_cfg.get("keep_features", True):
                raise UserError(f"claims[{i}] needs each cell's metrics on the intervals' subsets (or its "
                                f"per-sample features) to pair the cells; set metrics.bootstrap.replicates >= 1")
        pairs.append((a, b))
    return pairs


def store(root: str, claims: list[dict]) -> None:
    """Add ``claims`` to the results folder's ``claims.json`` (each claim once), atomically."""
    from ddim_bench.io import atomic_write
    old = stored(root)
    new = old + [c for c in claims if c not in old]
    if new != old:
        atomic_write(os.path.join(root, STORED), json.dumps(new, indent=1) + "\n")


def stored(root: str) -> list[dict]:
    path = os.path.join(root, STORED)
    if not os.path.isfile(path):
        return []
    with open(path) as f:
        return json.load(f)


def describe(claim: dict, a: Cell, b: Cell) -> str:
    return claim.get("name") or f"(user) {claim['metric']} of {a.label} is {claim['direction']} than of {b.label}"


def evaluate(claims: list[dict], pairs: list[tuple[Cell, Cell]], groups: dict[Cell, list[dict]], features, ref,
             layers, opts) -> list[dict]:
    """Rows as :func:`claims.evaluate_claims` gives them, one per claim ("not checked" where no seed block of the
    two cells can be paired)."""
    rows = []
    for c, (a, b) in zip(claims, pairs):
        recs = [{int(r["seed"]): r for r in groups.get(cell, [])} for cell in (a, b)]
        r = paired_delta(*recs, c["metric"], features, ref, layers, opts)
        comparison = f"{c['metric']}({a.label}) − {c['metric']}({b.label})"
        if r is None:
            rows.append(not_checked(describe(c, a, b), comparison, opts["level"], *recs))
            continue
        iv, blocks = r
        expect = "negative" if c["direction"] == "lower" else "positive"
        rows.append({"claim": describe(c, a, b), "comparison": comparison,
                     "delta": iv.value, "lo": iv.lo, "hi": iv.hi, "level": iv.level, "blocks": blocks,
                     "verdict": verdict(iv.lo, iv.hi, expect),
                     **power_fields(iv, blocks, next(iter(recs[0].values())).get("n_samples"))})
    return rows
