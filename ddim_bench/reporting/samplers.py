"""The samplers' report: cells indexed by the network calls they cost, each sampler against DDIM η = 0 at the same
number of calls (paired), and the best cell at each budget (the Pareto front of FID against NFE and seconds).

NFE is the counted number of network calls per image (``CallCounter``), the same in every seed block of a cell.
Comparisons use :func:`ddim_bench.reporting.claims.paired_delta`, as the paper's claims do: the two cells of a seed
block start sample i from the same x_T, so Δ is resampled on the same sample indices and blocks are combined.
"""
from __future__ import annotations

from ddim_bench.scoring.uncertainty import verdict
from ddim_bench.reporting.aggregate import by_cell
from ddim_bench.reporting.claims import interval_text, not_checked, paired_delta
from ddim_bench.reporting.table1 import fmt
from ddim_bench.sampling.cell import Cell

WORDS = {"holds": "better", "reversed": "worse", "not significant": "not significant"}
COSTS = {"nfe": ("calls", "NFE"), "sec_per_image": ("s/image", "seconds per image")}


def has_samplers(rows: list[dict]) -> bool:
    """Whether the sweep compares samplers (any cell not of our DDIM)."""
    return any(r["sampler"] != "ddim" for r in rows)


def nfe(row: dict) -> int:
    return int(round(row["nfe"]))


def _columns(rows: list[dict]) -> dict[tuple, str]:
    """(row, skip) → column title: the row's name, with its skip where the row has cells on several."""
    skips: dict[str, set] = {}
    for r in rows:
        skips.setdefault(r["row"], set()).add(r["skip"])
    return {(r["row"], r["skip"]): r["row"] if len(skips[r["row"]]) == 1 else f"{r['row']} {r['skip']}"
            for r in rows}


def by_nfe_markdown(rows: list[dict]) -> str:
    """Rows: the counted NFE; columns: the samplers (η rows, σ̂); each cell FID mean ± sd over seed blocks, with S
    where it differs from the NFE (PNDM's S = 5 costs 14 calls, Heun's 9)."""
    rows = [r for r in rows if r.get("nfe") is not None]
    if not rows:  # records from before NFE was counted: Table 1 by S stands instead
        return ""
    cols = _columns(rows)
    titles = list(dict.fromkeys(cols.values()))
    by = {(cols[(r["row"], r["skip"])], nfe(r)): r for r in rows}
    skips = ", ".join(f"{t}: {skip}" for (_, skip), t in dict.fromkeys(cols.items()))
    lines = [f"FID by network calls per image (NFE, counted), N = {rows[0]['n_samples']} samples per block; "
             f"mean ± sd over seed blocks (one block: [its 95 % interval]); (S=…) where the steps differ from "
             f"the calls.  Skip (timestep grid): {skips}.", "",
             "| NFE | " + " | ".join(titles) + " |", "|---" * (len(titles) + 1) + "|"]
    for k in sorted({nfe(r) for r in rows}):
        cells = []
        for t in titles:
            r = by.get((t, k))
            cells.append("" if r is None else fmt(r) + (f" (S={r['steps']})" if r["steps"] != k else ""))
        lines.append(f"| {k} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def front(rows: list[dict], cost: str = "nfe") -> list[dict]:
    """The Pareto front of FID against ``cost``: in order of cost, each cell with a lower FID than every cell that
    costs as much or less ("best at ≤ k calls")."""
    pts = sorted((r for r in rows if r.get(cost) is not None and r.get("fid") is not None),
                 key=lambda r: (r[cost], r["fid"]))
    out, best = [], float("inf")
    for r in pts:
        if r["fid"] < best:
            out.append(r)
            best = r["fid"]
    return out


def _records(cell_recs: list[dict]) -> dict[int, dict]:
    return {int(r["seed"]): r for r in cell_recs}


def _compare(name: str, comparison: str, recs_a, recs_b, features, ref, layers, opts, **extra) -> dict | None:
    r = paired_delta(_records(recs_a), _records(recs_b), "fid", features, ref, layers, opts)
    if r is None:
        return None
    iv, blocks = r
    return {"claim": name, "comparison": comparison, **extra, "delta": iv.value, "lo": iv.lo, "hi": iv.hi,
            "level": iv.level, "blocks": blocks, "verdict": WORDS[verdict(iv.lo, iv.hi, "negative")]}


def _ddim_eta0(groups: dict[Cell, list[dict]], k: int, skip: str) -> Cell | None:
    """The DDIM η = 0 cell (no clipping) that costs k calls: on ``skip`` if there is one, else the first."""
    found = [c for c, recs in groups.items() if c.sampler == "ddim" and c.variance == "eta" and c.eta == 0
             and not c.clip_x0 and int(round(recs[0]["nfe"])) == k]
    return next((c for c in found if c.skip == skip), found[0] if found else None)


def vs_ddim(records: list[dict], features, ref, layers, opts) -> tuple[list[dict], list[str]]:
    """Each other sampler's cell against DDIM η = 0 at the same counted NFE: Δ = FID(sampler) − FID(DDIM), paired,
    verdict "better" / "worse" (the whole interval below / above 0) or "not significant".  Also the labels of the
    cells that have no DDIM η = 0 cell at their NFE (add DDIM at those S with ``grid.ddim_at_nfe=true``)."""
    groups = by_cell([r for r in records if r.get("nfe") is not None])
    out, unmatched = [], []
    for cell, recs in groups.items():
        if cell.sampler == "ddim":
            continue
        k = int(round(recs[0]["nfe"]))
        ref_cell = _ddim_eta0(groups, k, cell.skip)
        if ref_cell is None:
            unmatched.append(f"{cell.label} (NFE {k})")
            continue
        name, comparison = f"{cell.sampler} vs DDIM η = 0 at {k} calls", f"FID({cell.label}) − FID({ref_cell.label})"
        extra = {"sampler": cell.sampler, "nfe": k, "steps": cell.steps}
        row = _compare(name, comparison, recs, groups[ref_cell], features, ref, layers, opts, **extra)
        out.append(row or not_checked(name, comparison, opts["level"], _records(recs), _records(groups[ref_cell]),
                                      **extra))
    return out, unmatched


def front_steps(records: list[dict], rows: list[dict], cost: str, features, ref, layers, opts) -> list[dict]:
    """The front of FID against ``cost`` as rows "best at ≤ k": the cell, its FID and costs, and Δ against the
    previous (cheaper) best, paired, with its interval and verdict ("better": the gain is real)."""
    groups = by_cell(records)
    out, prev = [], None
    for r in front(rows, cost):
        cell = Cell(r["steps"], r["eta"], r["variance"], r["skip"], r["clip_x0"], r["sampler"])
        step = {"budget": r[cost], "cost": cost, "cell": r["label"], "sampler": r["sampler"], "steps": r["steps"],
                "nfe": r.get("nfe"), "sec_per_image": r.get("sec_per_image"), "fid": r["fid"],
                "fid_sd": r.get("fid_sd"), "blocks": r["blocks"], "delta": None, "lo": None, "hi": None,
                "verdict": ""}
        if prev is not None:
            c = _compare("", "", groups[cell], groups[prev], features, ref, layers, opts)
            if c:
                step.update({k: c[k] for k in ("delta", "lo", "hi", "verdict")})
        out.append(step)
        prev = cell
    return out


def _num(v, spec: str = ".4g") -> str:
    return "" if v is None else format(v, spec)


def front_markdown(steps: list[dict]) -> str:
    if not steps:
        return ""
    unit, title = COSTS[steps[0]["cost"]]
    lines = [f"Best at ≤ k {unit} (the Pareto front of FID against {title}): each cell beats every cell that costs "
             f"as much or less; Δ = its FID − the previous best's, paired over seed blocks (95 % interval).", "",
             f"| ≤ k {unit} | best cell | FID | NFE | s/image | Δ vs previous | Interval | Verdict |",
             "|---|---|---|---|---|---|---|---|"]
    for s in steps:
        fid = f"{s['fid']:.3g}" + (f" ± {s['fid_sd']:.2g}" if s["blocks"] > 1 and s.get("fid_sd") is not None else "")
        interval = "" if s["lo"] is None else f"[{s['lo']:.4g}, {s['hi']:.4g}]"
        lines.append(f"| {_num(s['budget'], '.3g')} | {s['cell']} | {fid} | {_num(s['nfe'], '.0f')} | "
                     f"{_num(s['sec_per_image'], '.3g')} | {_num(s['delta'])} | {interval} | {s['verdict']} |")
    return "\n".join(lines) + "\n"


def vs_ddim_markdown(rows: list[dict], unmatched: list[str]) -> str:
    lines = ["Each sampler against DDIM η = 0 at the same number of calls: Δ = FID(sampler) − FID(DDIM), paired on "
             "sample indices within each seed block (same x_T), blocks combined; better / worse: the whole 95 % "
             "interval below / above 0.", "",
             "| Sampler | NFE | S | Comparison | Δ FID | Interval | Blocks | Verdict |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['sampler']} | {r['nfe']} | {r['steps']} | {r['comparison']} | {_num(r['delta'])} | "
                     f"{interval_text(r, level=False)} | {r['blocks']} | {r['verdict']} |")
    if unmatched:
        lines += ["", "No DDIM η = 0 cell at the same NFE (run with grid.ddim_at_nfe=true): " + "; ".join(unmatched)]
    return "\n".join(lines) + "\n"
