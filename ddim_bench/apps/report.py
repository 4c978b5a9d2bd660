"""``ddim-bench-report``: a results folder → CSV, a Table-1 Markdown table, figures and a W&B report run."""
from __future__ import annotations

import csv
import io
import os
import sys

import hydra
import torch
from omegaconf import DictConfig

from ddim_bench import cli
from ddim_bench import paper
from ddim_bench.evaluation import store
from ddim_bench.io import atomic_write

COLUMNS = ["steps", "eta", "variance", "skip", "n_samples", "fid", "is_mean", "is_std", "kid_mean", "kid_std",
           "sec_per_image", "images_per_sec", "nfe", "peak_mem_mb", "consistency_mse", "seconds", "weights",
           "extractor", "reference", "world_size", "key"]


def row_label(rec: dict):
    return "hat" if rec["variance"] == "hat" else float(rec["eta"])


def add_consistency(records: list[dict], results: store.ResultStore) -> None:
    """For each deterministic cell: mean squared difference (on [0, 1]) of its kept images from the same
    seeds' images in the deterministic cell with the largest S (the paper's consistency property)."""
    det = [r for r in records if r["variance"] == "eta" and r["eta"] == 0]
    for skip in {r["skip"] for r in det}:
        group = [r for r in det if r["skip"] == skip]
        top = max(group, key=lambda r: r["steps"])
        ref = results.samples(top["key"])
        for r in group:
            imgs = results.samples(r["key"])
            if ref is not None and imgs is not None:
                k = min(len(ref), len(imgs))
                r["consistency_mse"] = float(((imgs[:k].float() - ref[:k].float()) / 255).pow(2).mean())


def paper_dataset(records: list[dict], setting: str) -> str | None:
    if setting != "auto":
        return None if setting == "none" else setting
    refs = {str(r.get("reference", "")).split("|")[0] for r in records}
    return "cifar10" if refs == {"cifar10"} else None


def write_csv(records: list[dict], path: str) -> None:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=COLUMNS, extrasaction="ignore")
    w.writeheader()
    for r in records:
        w.writerow({c: r.get(c, "") for c in COLUMNS})
    atomic_write(path, buf.getvalue().encode())


def table1_markdown(records: list[dict], dataset: str | None) -> str:
    """Rows η (and σ̂), columns S; each cell "ours" or "ours (paper)" where the paper has that cell."""
    steps = sorted({r["steps"] for r in records})
    rows = sorted({row_label(r) for r in records}, key=lambda v: (v == "hat", v if v != "hat" else 0))
    skips = sorted({r["skip"] for r in records})
    by = {(row_label(r), r["steps"]): r for r in records}
    same_skip = dataset is not None and skips == [paper.TABLE1_SKIP[dataset]]
    head = f"FID, {records[0]['n_samples']} samples, skip {'/'.join(skips)}"
    if same_skip:
        head += f"; paper's {dataset} numbers in parentheses"
    lines = [head, "", "| | " + " | ".join(f"S={s}" for s in steps) + " |", "|---" * (len(steps) + 1) + "|"]
    for row in rows:
        cells = []
        for s in steps:
            r = by.get((row, s))
            text = "" if r is None else f"{r['fid']:.2f}"
            ref = paper.table1_value(dataset, row, s) if same_skip else None
            cells.append(text + (f" ({ref:.2f})" if ref is not None else ""))
        name = "σ̂" if row == "hat" else f"η = {row:g}"
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def figures(records: list[dict], results: store.ResultStore, out: str) -> dict[str, str]:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from ddim_bench.images import save_png
    from ddim_bench.images import image_grid
    paths = {}
    rows = sorted({row_label(r) for r in records}, key=lambda v: (v == "hat", v if v != "hat" else 0))
    for name, x, xlabel in (("fid_vs_steps", "steps", "steps S"), ("fid_vs_time", "sec_per_image", "s / image")):
        fig, ax = plt.subplots(figsize=(5, 3.5))
        for row in rows:
            pts = sorted((r[x], r["fid"]) for r in records if row_label(r) == row)
            ax.plot(*zip(*pts), marker="o", label="σ̂" if row == "hat" else f"η = {row:g}")
        ax.set_xscale("log"), ax.set_xlabel(xlabel), ax.set_ylabel("FID"), ax.legend(), ax.grid(alpha=0.3)
        paths[name] = os.path.join(out, f"{name}.png")
        fig.tight_layout(), fig.savefig(paths[name] + ".tmp.png", dpi=120), plt.close(fig)
        os.replace(paths[name] + ".tmp.png", paths[name])
    steps = sorted({r["steps"] for r in records})
    by = {(row_label(r), r["steps"]): r for r in records}
    tiles = []
    for row in rows:
        for s in steps:
            imgs = results.samples(by[(row, s)]["key"]) if (row, s) in by else None
            tiles.append(image_grid(imgs[:4], nrow=2) if imgs is not None and len(imgs) >= 4 else None)
    shape = next(t.shape for t in tiles if t is not None)
    tiles = [t if t is not None else torch.full(shape, 255, dtype=torch.uint8) for t in tiles]
    paths["consistency_grid"] = os.path.join(out, "consistency_grid.png")
    save_png(image_grid(torch.stack(tiles), nrow=len(steps)), paths["consistency_grid"])
    return paths


def make_report(results_dir: str, paper_setting: str = "auto") -> dict:
    results = store.ResultStore(results_dir)
    records = [r for r in results.records() if "fid" in r]
    if not records:
        from ddim_bench.errors import UserError
        raise UserError(f"results_dir={results_dir} holds no finished cells; run ddim-bench-sweep first")
    records.sort(key=lambda r: (r["variance"] == "hat", r["eta"], r["skip"], r["steps"]))
    add_consistency(records, results)
    out = os.path.join(results_dir, "report")
    os.makedirs(out, exist_ok=True)
    write_csv(records, os.path.join(out, "results.csv"))
    md = table1_markdown(records, paper_dataset(records, paper_setting))
    atomic_write(os.path.join(out, "table1.md"), md.encode())
    paths = {"csv": os.path.join(out, "results.csv"), "table": os.path.join(out, "table1.md"),
             **figures(records, results, out)}
    return {"records": records, "paths": paths, "markdown": md}


@hydra.main(version_base="1.3", config_path=str(cli.CONF_DIR), config_name="report")
@cli.user_errors
def _main(cfg: DictConfig) -> None:
    from ddim_bench.tracking.runs import log_report
    rep = make_report(cfg.results_dir, cfg.paper)
    extra = {}
    if os.path.isdir(os.path.join(cfg.results_dir, "reconstruction")):
        from ddim_bench.reporting.reconstruction import report_reconstruction
        extra = report_reconstruction(cfg.results_dir)
    log_report(cfg.logger, cfg.sweep_name, rep, cfg.results_dir, extra)
    print(rep["markdown"])
    for name, path in {**rep["paths"], **extra.get("paths", {})}.items():
        print(f"{name}: {path}")
    sys.stdout.flush()


def main() -> None:
    cli.run_hydra(_main)


if __name__ == "__main__":
    main()
