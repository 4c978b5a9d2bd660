"""Table 1 as Markdown: rows η (σ̂, other samplers), columns S; each cell mean ± sd over seed blocks (or the
95 % interval of a single block), and the paper's number in parentheses where the protocol allows it."""
from __future__ import annotations

import math

from ddim_bench import paper

DIGITS_NOTE = ("FID here is computed on the digits classifier's 64-d features, not on Inception: values near "
               "0.1–2 are what this small extractor gives and are not comparable to CIFAR-10 FIDs; compare cells "
               "with each other, with their intervals.")


def paper_dataset(rows: list[dict], records: list[dict], setting: str) -> str | None:
    if setting != "auto":
        return None if setting == "none" else setting
    refs = {str(r.get("reference", "")).split("|")[0] for r in records}
    return "cifar10" if refs == {"cifar10"} else None


def fmt(row: dict, metric: str = "fid") -> str:
    v = row.get(metric)
    if v is None:
        return ""
    if row.get(f"{metric}_n", 1) > 1 and not math.isnan(row[f"{metric}_sd"]):
        return f"{v:.3g} ± {row[f'{metric}_sd']:.2g}"
    if row.get(f"{metric}_lo") is not None:
        return f"{v:.3g} [{row[f'{metric}_lo']:.3g}, {row[f'{metric}_hi']:.3g}]"
    return f"{v:.3g}"


def markdown(rows: list[dict], records: list[dict], dataset: str | None, protocol_line: str) -> str:
    steps = sorted({r["steps"] for r in rows})
    names = list(dict.fromkeys(r["row"] for r in rows))
    by = {(r["row"], r["steps"]): r for r in rows}
    skips = sorted({r["skip"] for r in rows})
    blocks = sorted({r["blocks"] for r in rows})
    show_paper = dataset is not None and skips == [paper.TABLE1_SKIP.get(dataset)]
    extractor = str(records[0].get("extractor", ""))
    head = [f"FID, N = {rows[0]['n_samples']} samples per block, skip {'/'.join(skips)}; "
            f"{'/'.join(map(str, blocks))} seed block(s): mean ± sd over blocks "
            f"(one block: [its 95 % interval])."]
    if show_paper:
        head.append(f"Paper's {dataset} numbers in parentheses, for reference; protocol: {protocol_line}.")
    if extractor.startswith("digits"):
        head.append(DIGITS_NOTE)
    lines = [" ".join(head), ""] + _grid(names, steps, by, "fid", dataset if show_paper else None)
    if any(r.get("fid_inf") is not None for r in rows):
        lines += ["", "FD∞ (FID extrapolated to N → ∞ from its values on subsets of N/8 … N samples, those larger than "
                      "the feature dimension d; Chong & Forsyth 2020), the same layout: comparable across N, and with "
                      "the paper's 50 000-sample numbers when the subsets are much larger than d.", ""]
        lines += _grid(names, steps, by, "fid_inf", None)
    return "\n".join(lines) + "\n"


def _grid(names: list, steps: list, by: dict, metric: str, dataset: str | None) -> list[str]:
    lines = ["| | " + " | ".join(f"S={s}" for s in steps) + " |", "|---" * (len(steps) + 1) + "|"]
    for name in names:
        cells = []
        for s in steps:
            r = by.get((name, s))
            text = "" if r is None else fmt(r, metric)
            key = "hat" if name == "σ̂" else (float(name.split("=")[1]) if name.startswith("η") else None)
            ref = paper.table1_value(dataset, key, s) if dataset and key is not None else None
            cells.append(text + (f" ({ref:.2f})" if ref is not None else ""))
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return lines
