"""Paper scale without a GPU: the harness's own cost at N = 50 000 through the real apps, with stand-ins.

``ddim-bench-sweep`` (2 cells: S = 10, η ∈ {0, 1}, × 3 seed blocks) then ``ddim-bench-report``, each a subprocess
under ``benchmarks/cpu/scale_probe.py`` (per-stage time and peak host memory), W&B offline, with the stand-in
ε-network (``checkpoint=stand-in``: a 1×1 convolution with the CIFAR-10 shapes) and the stand-in 2048-d
extractor (``metrics=stand_in``: the Inception interface, fixed random weights) on a folder of made-up 32×32
reference images — so what is measured is the harness, not the network.  Run at two sizes (N = 5 000 and
50 000; ``--quick``: 500 and 2 000) for each stage's growth exponent, and the report a second time on 2 of the
records to see whether its memory grows with the number of records.

``make perf-scale`` (full) or ``python -m benchmarks.cpu.paper_scale --quick``; the table is in docs/perf-scale.md.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

ROOT = Path(__file__).resolve().parents[2]
SIZES = {"full": (5_000, 50_000), "quick": (500, 2_000)}
SEEDS = (0, 1, 2)
# The GPU cell the harness is compared with: the CIFAR-10 UNet (12.4 GFLOP a call) at S = 10 on an H100 at 40 %
# of its dense bf16 peak (989 TFLOP/s) — assumed, as no GPU run exists (docs/perf-gpu.md).
UNET_FLOP_PER_CALL, H100_BF16_PEAK, ACHIEVED = 12.4e9, 989e12, 0.40
STEPS = 10
KID_SIZES = (1_000, 4_000)


def gpu_cell_seconds(n: int, steps: int = STEPS) -> float:
    """Network time of one cell of n images at S steps on the assumed H100 (one call per image per step)."""
    return n * steps * UNET_FLOP_PER_CALL / (ACHIEVED * H100_BF16_PEAK)


def make_reference(folder: Path, n: int) -> None:
    """n made-up 32×32 RGB PNGs (smooth random blobs), the reference set the stand-in extractor scores against."""
    import numpy as np
    from PIL import Image
    folder.mkdir(parents=True, exist_ok=True)
    if len(list(folder.glob("*.png"))) == n:  # made by an earlier run in the same --work folder
        return
    rng = np.random.default_rng(0)
    for i in range(n):
        small = rng.integers(0, 256, (4, 4, 3), dtype=np.uint8)
        Image.fromarray(small).resize((32, 32), Image.BILINEAR).save(folder / f"{i:06d}.png")


def common(work: Path, ref_n: int) -> list[str]:
    return ["checkpoint=stand-in", "data=image_folder", f"data.root={work / 'reference'}", "data.resolution=32",
            "data.test_size=0", "data.num_workers=0", "data.flip=false", f"reference.n={ref_n}",
            f"paths.cache_dir={work / 'cache'}", "logger=wandb", "logger.wandb.mode=offline"]


def run_app(app: str, args: list[str], probe_dir: Path, timeout: float) -> dict:
    """One app under the probe; its stage figures (the probe's JSON) and wall time."""
    probe_dir.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "SCALE_PROBE_OUT": str(probe_dir), "WANDB_SILENT": "true",
           "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "benchmarks.cpu.scale_probe", app, *args], cwd=ROOT, env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=timeout)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"{app} exited {proc.returncode}: {proc.stderr.strip()[-2000:]}")
    found = sorted(probe_dir.glob(f"{app}-*.json"), key=os.path.getmtime)
    return {**json.loads(found[-1].read_text()), "wall_s": wall}


def sweep(work: Path, n: int, ref_n: int, replicates: int, timeout: float, extra=()) -> dict:
    results = work / f"results-{n}"
    args = [*common(work, ref_n), f"n_samples={n}", f"seeds=[{','.join(map(str, SEEDS))}]", "grid=demo",
            f"grid.steps=[{STEPS}]", "grid.eta=[0.0,1.0]", "grid.hat=false", "metrics=stand_in", "metrics.kid=false",
            "metrics.keep_features=false",  # the claims read each record's subset values (--keep-features: before)
            f"metrics.bootstrap.replicates={replicates}", "sampler.batch_size=500", "keep_images=64",
            f"sweep_name=scale{n}", f"paths.results_dir={results}", f"hydra.run.dir={work / f'hydra-sweep-{n}'}",
            *extra]
    out = run_app("sweep", args, work / "probe" / f"sweep-{n}", timeout)
    return {**out, "disk": disk(results)}


def report(work: Path, results: Path, name: str, replicates: int, timeout: float) -> dict:
    args = [f"paths.results_dir={results}", f"sweep_name={name}", f"bootstrap.replicates={replicates}",
            f"paths.cache_dir={work / 'cache'}", "logger=wandb", "logger.wandb.mode=offline",
            f"hydra.run.dir={work / f'hydra-report-{results.name}'}"]
    return run_app("report", args, work / "probe" / f"report-{results.name}", timeout)


def disk(results: Path) -> dict:
    """Bytes on disk: each record's files (from the store's own listing, checked against the files), the W&B
    runs, the reference features kept for the report."""
    per_record = []
    for doc_path in sorted((results / "cells").glob("*.json")):
        doc = json.loads(doc_path.read_text())
        sizes = {suffix: (results / "cells" / f"{doc_path.stem}{suffix}").stat().st_size for suffix in doc["files"]}
        if any(sizes[s] != meta["bytes"] for s, meta in doc["files"].items()):
            raise RuntimeError(f"{doc_path}: side files differ from the sizes the record lists")
        per_record.append({"json": doc_path.stat().st_size, **sizes})
    return {"records": per_record, "wandb": tree_bytes(results / "runs"), "reference": tree_bytes(results / "reference"),
            "total": tree_bytes(results)}


def tree_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) if folder.is_dir() else 0


def keep_blocks(results: Path, dest: Path, seeds: set[int]) -> Path:
    """A copy of the results folder holding only the records of ``seeds`` (the report's memory against the number
    of records)."""
    shutil.copytree(results, dest, ignore=shutil.ignore_patterns("runs", "report"))
    for doc_path in (dest / "cells").glob("*.json"):
        if json.loads(doc_path.read_text())["record"]["seed"] not in seeds:
            for p in (dest / "cells").glob(f"{doc_path.stem}.*"):
                p.unlink()
    return dest


def per_record(sw: dict, stage: str) -> float:
    st = sw["stages"].get(stage)
    return st["seconds"] / len(sw["disk"]["records"]) if st else 0.0


def peak(run: dict, stage: str) -> float | None:
    st = run["stages"].get(stage)
    return st and st["peak_mb"]


def figures(sw: dict, rep: dict, rep_few: dict | None, n: int) -> dict:
    """The table's figures at one N: seconds per record of each sweep stage, the harness's own share, memory,
    disk, the report's."""
    f = {s: per_record(sw, s) for s in ("network", "extract", "sample", "gather", "score", "intervals", "store",
                                         "wandb", "cell")}
    f["loop"] = f["sample"] - f["network"] - f["extract"]  # sampler arithmetic, FID moments, feature buffers
    f["harness"] = f["loop"] + f["gather"] + f["score"] + f["intervals"] + f["store"] + f["wandb"]
    f["bookkeeping"] = f["gather"] + f["store"] + f["wandb"]
    f["gpu_cell"] = gpu_cell_seconds(n)
    recs = sw["disk"]["records"]
    f["disk_record"] = sum(sum(r.values()) for r in recs) / len(recs)
    f["disk_features"] = sum(r.get(".features.pt", 0) for r in recs) / len(recs)
    f["disk_json"] = sum(r["json"] for r in recs) / len(recs)
    f["disk_wandb"] = sw["disk"]["wandb"] / len(recs)
    f["disk_total"] = sw["disk"]["total"]
    f["records"] = len(recs)
    f["sweep_peak"] = sw["peak_mb"]
    f["sweep_wall"] = sw["wall_s"]
    for s in ("setup", "sample", "score", "intervals", "store", "wandb"):
        f[f"peak_{s}"] = peak(sw, s)
    f["report_wall"], f["report_peak"] = rep["wall_s"], rep["peak_mb"]
    for s in ("claims", "load", "wandb"):
        f[f"report_{s}"] = rep["stages"].get(s, {}).get("seconds", 0.0)
        f[f"report_peak_{s}"] = peak(rep, s)
    if rep_few is not None:
        f["report_peak_few"] = rep_few["peak_mb"]
    return f


def measure(work: Path, sizes, ref_n: int, replicates: int, timeout: float, extra=()) -> dict:
    """Sweep and report at each N (one at a time: never two apps at once), the report also on 2 records."""
    make_reference(work / "reference", ref_n)
    out = {}
    for n in sizes:
        sw = sweep(work, n, ref_n, replicates, timeout, extra)
        results = work / f"results-{n}"
        rep = report(work, results, f"scale{n}", replicates, timeout)
        few = None
        if n == sizes[0]:  # the report on 2 of the 6 records: its memory against the number of records
            few = report(work, keep_blocks(results, work / f"few-{n}", {SEEDS[0]}), f"scale{n}", replicates,
                         timeout)
        out[n] = figures(sw, rep, few, n)
        print(f"N={n}: sweep {sw['wall_s']:.0f} s, report {rep['wall_s']:.0f} s", file=sys.stderr, flush=True)
    return out


def kid_interval_seconds(sizes=KID_SIZES) -> dict:
    """Seconds of KID's interval as a sweep computes it (``subsets.subset_metrics``: the full set, 32 halves and 64
    quarters, each scored by torch-fidelity's 100 subsets of min(1 000, its size)), 2048-d, reference as large as
    the generated set, at small N; the sweep above runs with KID off."""
    import torch
    from ddim_bench.scoring.subsets import subset_metrics
    out = {}
    for n in sizes:
        g = torch.Generator().manual_seed(n)
        x, y = (torch.rand(n, 2048, generator=g, dtype=torch.float64) for _ in range(2))
        t0 = time.perf_counter()
        subset_metrics({"f": x}, {"f": y}, {"kid": "f"}, ("kid",))
        out[n] = time.perf_counter() - t0
    return out


def kid_bound_seconds(tries: int = 2) -> float:
    """What KID's interval costs at any N from which each subset's KID is computed from its own kernels
    (``draws._kid_direct``): 97 sets × 100 subsets × the measured seconds of one 1 000-sample subset, 2048-d."""
    import torch
    from ddim_bench.scoring import draws
    g = torch.Generator().manual_seed(0)
    x, y = (torch.rand(1000 * tries, 2048, generator=g, dtype=torch.float64) for _ in range(2))
    p, q = draws.kid_subsets(len(x), len(y), 1000, tries, 2020)
    t0 = time.perf_counter()
    draws._kid_direct(x, y, torch.arange(len(x))[None], p, q)
    return (time.perf_counter() - t0) / tries * 97 * 100


def growth(a: float | None, b: float | None, n_a: int, n_b: int) -> str:
    if not a or not b or a <= 0 or b <= 0:
        return "–"
    return f"{math.log(b / a) / math.log(n_b / n_a):.2f}"


# (key, label, unit, goal on the larger N's value or None); time rows are seconds per record
ROWS = [("network", "network calls (stand-in; not the harness)", "s", None),
        ("extract", "feature extraction (stand-in; not the harness)", "s", None),
        ("loop", "sampling loop, harness part (sampler, FID moments, feature buffers)", "s", None),
        ("gather", "features gathered to rank 0", "s", None),
        ("score", "score (FID from moments, IS, KID)", "s", None),
        ("intervals", "intervals (disjoint subsets; KID off)", "s", None),
        ("store", "store (torch.save, sha256, atomic writes)", "s", None),
        ("wandb", "W&B run (offline)", "s", None),
        ("harness", "harness's own time", "s", None),
        ("gpu_cell", "GPU cell at S = 10 (assumed H100 rate)", "s", None),
        ("harness_share", "harness's own time ÷ GPU cell", "%", 10.0),
        ("bookkeeping_share", "  of which gather + store + W&B (CPU work on any machine) ÷ GPU cell", "%", 10.0),
        ("sweep_peak", "sweep, peak host memory, rank 0", "MB", None),
        ("peak_score", "  during the score", "MB", None),
        ("peak_intervals", "  during the intervals", "MB", None),
        ("peak_store", "  during the store", "MB", None),
        ("disk_record", "disk per record (record, kept images, features)", "MB", None),
        ("disk_features", "  of which per-sample features", "MB", None),
        ("disk_json", "  of which the record (JSON, with its metrics on the interval subsets)", "MB", None),
        ("disk_wandb", "W&B run per record", "MB", None),
        ("disk_total", "results folder, all 6 records", "MB", None),
        ("report_claims", "report: claims (paired, on the interval subsets)", "s", None),
        ("report_load", "report: loading side files (features when kept, kept images)", "s", None),
        ("report_wandb", "report: W&B run", "s", None),
        ("report_wall", "report: wall time", "s", None),
        ("report_peak", "report: peak host memory", "MB", None),
        ("report_records_ratio", "report peak memory, 6 records ÷ 2 records (N = {N1})", "x", 1.1)]
GROWTH_GOAL = 1.2  # time and memory at most ~linear in N: nothing quadratic


def derived(f: dict) -> dict:
    mb = {k: f[k] / 2 ** 20 for k in ("disk_record", "disk_features", "disk_json", "disk_wandb", "disk_total")
          if k in f}
    share = {"harness_share": 100 * f["harness"] / f["gpu_cell"],
             "bookkeeping_share": 100 * f["bookkeeping"] / f["gpu_cell"]}
    ratio = {"report_records_ratio": f["report_peak"] / f["report_peak_few"]} if f.get("report_peak_few") else {}
    return {**f, **mb, **share, **ratio}


def fmt(v, unit: str) -> str:
    if v is None:
        return "–"
    return f"{v:.1f} %" if unit == "%" else f"{v:.3g}" if abs(v) < 100 else f"{v:.0f}"


def markdown(blob: dict) -> str:
    n1, n2 = blob["sizes"]
    f1, f2 = (derived(blob["figures"][str(n)]) for n in (n1, n2))
    lines = [f"| stage (per record unless said) | unit | N = {n1:,} | N = {n2:,} | growth exponent | goal | status |",
             "|---|---|---|---|---|---|---|"]
    for key, label, unit, goal in ROWS:
        a, b = f1.get(key), f2.get(key)
        grows = "–" if key in ("gpu_cell", "report_records_ratio") or unit in ("%",) else growth(a, b, n1, n2)
        judged = goal if goal is not None else (GROWTH_GOAL if grows != "–" and key not in ("network", "extract")
                                               else None)
        value = b if goal is not None else (float(grows) if judged is not None else None)
        if key == "report_records_ratio":
            value = a
        status = "" if judged is None or value is None else ("PASS" if value <= judged else "MISS")
        goal_text = "" if judged is None else (f"≤ {goal:g}{' %' if unit == '%' else ''}" if goal is not None
                                               else f"exponent ≤ {GROWTH_GOAL}")
        lines.append(f"| {label.format(R=blob['replicates'], N1=f'{n1:,}')} | {unit} | {fmt(a, unit)} | "
                     f"{fmt(b, unit)} | {grows} | {goal_text} | {status} |")
    return "\n".join(lines) + "\n" + kid_line(blob.get("kid_intervals"), n2, blob.get("kid_bound_s"))


def kid_line(kid: dict | None, n_paper: int, bound: float | None = None) -> str:
    """KID's interval, measured apart (the sweep above runs with KID off): growth, and the bound it stays under."""
    if not kid:
        return ""
    (a, ta), (b, tb) = sorted((int(k), v) for k, v in kid.items())
    e = math.log(tb / ta) / math.log(b / a)
    at_paper = tb * (n_paper / b) ** e
    tail = "" if bound is None else (f"; from N ≈ 40 000 on each subset's KID comes from its own kernels, "
                                     f"{bound:.3g} s a record whatever N (measured: 97 × 100 subsets of 1 000)")
    return (f"\nKID interval (`subsets.subset_metrics`, KID only: 97 sets × 100 subsets, 2048-d, reference as large "
            f"as the generated set; not in the sweep above): {ta:.3g} s at N = {a:,}, {tb:.3g} s at N = {b:,}: "
            f"growth exponent {e:.2f} below N ≈ 40 000 (the kernel path); at that rate {at_paper:.3g} s at "
            f"N = {n_paper:,}{tail}.\n")


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="N = 500 and 2 000 (a smoke run)")
    ap.add_argument("--sizes", type=int, nargs=2, help="the two sample counts (default 5000 50000)")
    ap.add_argument("--replicates", type=int, default=2, help="bootstrap replicates of the intervals and claims")
    ap.add_argument("--reference", type=int, default=None, help="reference images (default: the larger N)")
    ap.add_argument("--work", help="working folder (default: a temporary one, removed)")
    ap.add_argument("--json", default="outputs/perf-scale.json")
    ap.add_argument("--sweep-override", action="append", default=[], metavar="KEY=VALUE",
                    help="more sweep overrides, e.g. metrics.kid_subsets=5 for a smoke run")
    ap.add_argument("--timeout", type=float, default=3600, help="seconds allowed to each app run")
    ap.add_argument("--keep-features", action="store_true",
                    help="keep per-sample features beside each record (as before the records kept subset values)")
    a = ap.parse_args(argv)
    sizes = tuple(a.sizes or SIZES["quick" if a.quick else "full"])
    import tempfile
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(a.work or tmp)
        extra = [*a.sweep_override, *(["metrics.keep_features=true"] if a.keep_features else [])]
        found = measure(work, sizes, a.reference or sizes[-1], a.replicates, a.timeout, extra)
    kid = kid_interval_seconds(KID_SIZES if not a.quick else (500, 1_000))
    blob = {"sizes": list(sizes), "replicates": a.replicates, "overrides": extra, "kid_intervals": kid,
            "kid_bound_s": None if a.quick else kid_bound_seconds(), "figures": {str(k): v for k, v in found.items()}}
    os.makedirs(os.path.dirname(a.json) or ".", exist_ok=True)
    Path(a.json).write_text(json.dumps(blob, indent=1))
    print(markdown(blob))
    return blob


if __name__ == "__main__":
    main()
