"""The reconstruction part of the report: Table-2-style Markdown, a CSV and an MSE-vs-S figure,
all made from the records that ``ddim-bench-reconstruct`` wrote under ``<results_dir>/reconstruction/``."""
from __future__ import annotations

import csv
import io
import os

from ddim_bench import paper
from ddim_bench.io import atomic_write
from ddim_bench.reporting.figures import save_figure
from ddim_bench.results.record import RECONSTRUCTION_COLUMNS

# the record's columns, and the paper's CIFAR-10 MSE at the same S beside ours
RECORD_COLUMNS = [*RECONSTRUCTION_COLUMNS[:-1], "paper_cifar10_mse", RECONSTRUCTION_COLUMNS[-1]]


def reconstruction_records(results_dir: str) -> list[dict]:
    """All verified reconstruction records under ``results_dir``, sorted by setup then S."""
    from ddim_bench.results.store import ResultStore
    recs = ResultStore(os.path.join(results_dir, "reconstruction")).records()
    return sorted(recs, key=lambda r: (setup_label(r), r["steps"]))


def setup_label(rec: dict) -> str:
    """What a row of Table 2 stands for: checkpoint, weights, data split and N, skip."""
    return (f"{rec['dataset']} {rec['split']} N={rec['n_images']}, {rec['weights']} "
            f"{rec['checkpoint_sha256'][:8]}, skip {rec['skip']}")


def _fmt(v) -> str:
    return "" if v is None else f"{v:.4g}"


def table2_markdown(records: list[dict]) -> str:
    """Columns S; a row of our MSE (and its std over images) per setup, then the paper's CIFAR-10 row."""
    steps = sorted({r["steps"] for r in records} | set(paper.TABLE2))
    lines = ["Reconstruction error: per-dimension MSE on [0, 1] after encoding and decoding with S steps (η = 0).",
             "The last row holds the paper's CIFAR-10 numbers (Table 2), for reference only: "
             "a different dataset and model.", "",
             "| | " + " | ".join(f"S={s}" for s in steps) + " |", "|---" * (len(steps) + 1) + "|"]
    for label in dict.fromkeys(setup_label(r) for r in records):
        by = {r["steps"]: r for r in records if setup_label(r) == label}
        lines.append(f"| ours: {label} | " + " | ".join(_fmt(by[s]["mse"]) if s in by else "" for s in steps) + " |")
        lines.append("| ± std over images | "
                     + " | ".join(_fmt(by[s]["mse_std"]) if s in by else "" for s in steps) + " |")
    lines.append("| paper, CIFAR-10 (reference) | " + " | ".join(_fmt(paper.TABLE2.get(s)) for s in steps) + " |")
    return "\n".join(lines) + "\n"


def table_rows(records: list[dict]) -> list[list]:
    return [[{**r, "paper_cifar10_mse": paper.TABLE2.get(r["steps"])}.get(c) for c in RECORD_COLUMNS]
            for r in records]


def write_csv(records: list[dict], path: str) -> None:
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(RECORD_COLUMNS)
    w.writerows([["" if v is None else v for v in row] for row in table_rows(records)])
    atomic_write(path, buf.getvalue().encode())


def mse_figure(records: list[dict], path: str) -> str:
    """The MSE-vs-S figure written to ``path`` (PNG); returns ``path``."""
    return save_figure(mse_plot(records), path)


def mse_plot(records: list[dict]):
    """Log-log MSE against S: one line per setup, the paper's CIFAR-10 numbers dashed (a matplotlib Figure)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(5, 3.5))
    for label in dict.fromkeys(setup_label(r) for r in records):
        pts = sorted((r["steps"], r["mse"]) for r in records if setup_label(r) == label)
        ax.plot(*zip(*pts), marker="o", label=f"ours: {label}")
    ax.plot(*zip(*sorted(paper.TABLE2.items())), "k--", marker="x", label="paper, CIFAR-10 (reference)")
    ax.set_xscale("log"), ax.set_yscale("log"), ax.set_xlabel("steps S"), ax.set_ylabel("MSE on [0, 1]")
    ax.legend(fontsize=7), ax.grid(alpha=0.3, which="both")
    fig.tight_layout()
    return fig


def report_reconstruction(results_dir: str) -> dict:
    """Table 2 (Markdown), CSV and MSE-vs-S figure under ``<results_dir>/report/``, from the records.

    Returns {"paths": {name: path}, "tables": {"reconstruction": {"columns", "rows"}}, "markdown": str};
    paths also name each record's image strip and the interpolation grids.
    """
    records = reconstruction_records(results_dir)
    out = os.path.join(results_dir, "report")
    paths = {}
    md = ""
    tables = {}
    if records:
        os.makedirs(out, exist_ok=True)
        md = table2_markdown(records)
        paths["table2"] = os.path.join(out, "table2.md")
        atomic_write(paths["table2"], md.encode())
        paths["reconstruction_csv"] = os.path.join(out, "reconstruction.csv")
        write_csv(records, paths["reconstruction_csv"])
        paths["reconstruction_mse"] = mse_figure(records, os.path.join(out, "reconstruction_mse.png"))
        tables["reconstruction"] = {"columns": list(RECORD_COLUMNS), "rows": table_rows(records)}
        several = len({setup_label(r) for r in records}) > 1
        for r in records:
            name = f"reconstruction_S{r['steps']}" + (f"_{r['key'][:8]}" if several else "")
            paths[name] = os.path.join(results_dir, "reconstruction", r["strip"])
    interp = os.path.join(results_dir, "interpolation")
    if os.path.isdir(interp):
        for name in sorted(os.listdir(interp)):
            if name.endswith(".png") and not name.startswith("."):
                paths[f"interpolation_{name[:-4]}"] = os.path.join(interp, name)
    return {"paths": paths, "tables": tables, "markdown": md}

