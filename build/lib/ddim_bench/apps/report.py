"""``ddim-bench-report``: a results folder → per-record and per-cell CSVs, Table 1 (mean ± sd over seed blocks),
the claims table (the paper's claims with paired-bootstrap intervals and verdicts), figures and a W&B report run.

Nothing is written before the config is valid, and a corrupt record is named, moved aside and left out (the
sweep recomputes it) instead of stopping the report.
"""
from __future__ import annotations

import csv
import io
import os
import sys

import hydra
from omegaconf import DictConfig

from ddim_bench import cli, schema
from ddim_bench.errors import UserError
from ddim_bench.evaluation.record import CellRecord
from ddim_bench.io import atomic_write
from ddim_bench.reporting import aggregate, figures, table1


def write_csv(path: str, columns: list[str], rows: list[list]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(columns)
    w.writerows([["" if v is None else v for v in r] for r in rows])
    atomic_write(path, buf.getvalue())
    return path


def protocol_line(records: list[dict]) -> str:
    from ddim_bench.evaluation.protocol import protocol_line as line
    found = list(dict.fromkeys(d for r in records for d in r.get("protocol", [])))
    return line(found)


def make_report(results_dir: str, paper_setting: str = "auto", bootstrap=None) -> dict:
    from ddim_bench.evaluation.store import ResultStore
    results = ResultStore(results_dir)
    records = [r for r in results.records() if "fid" in r]
    if not records:
        raise UserError(f"results_dir={results_dir} holds no finished cells; run ddim-bench-sweep first")
    aggregate.add_consistency(records, results.samples)
    rows = aggregate.aggregate(records)
    out = os.path.join(results_dir, "report")
    os.makedirs(out, exist_ok=True)
    proto = protocol_line(records)
    paths = {"records_csv": write_csv(os.path.join(out, "results.csv"), CellRecord.columns(),
                                      [CellRecord.from_dict(r).row() for r in records])}
    cols = [c for c in rows[0] if c not in ("seeds", "keys")]
    paths["cells_csv"] = write_csv(os.path.join(out, "cells.csv"), cols, [[r.get(c) for c in cols] for r in rows])
    md = table1.markdown(rows, records, table1.paper_dataset(rows, records, paper_setting), proto)
    paths["table"] = os.path.join(out, "table1.md")
    atomic_write(paths["table"], md)
    claims, claims_md = make_claims(records, results, bootstrap)
    if claims_md:
        paths["claims"] = os.path.join(out, "claims.md")
        atomic_write(paths["claims"], claims_md)
    paths.update(figures.curves(rows, out))
    grid = figures.consistency_grid(rows, results.samples, os.path.join(out, "consistency_grid.png"))
    if grid:
        paths["consistency_grid"] = grid
    return {"records": records, "rows": rows, "paths": paths, "markdown": md, "claims": claims,
            "claims_markdown": claims_md, "protocol": proto}


def make_claims(records: list[dict], results, bootstrap) -> tuple[list[dict], str]:
    """The paper's claims on this sweep, with paired-bootstrap intervals over the stored per-sample features."""
    from ddim_bench.reporting import claims
    from ddim_bench.reporting.reconstruction import reconstruction_records
    b = {"replicates": 200, "level": 0.95, "seed": 0, **(dict(bootstrap) if bootstrap else {})}
    ref = load_reference(results.root, records)
    layers = records[0].get("feature_layers") or {}

    def features(key):
        f = results.load_file(key, ".features.pt")
        return None if f is None else {k: v.double() for k, v in f.items()}

    rows = claims.evaluate_claims(records, features if ref is not None and layers else (lambda key: None), ref or {},
                                  layers=layers, reconstruction=reconstruction_by_steps(reconstruction_records(
                                      results.root)), kept=results.samples, replicates=int(b["replicates"]),
                                  level=float(b["level"]), seed=int(b["seed"]))
    return rows, claims.claims_markdown(rows)


def load_reference(root: str, records: list[dict]) -> dict | None:
    """The reference features the sweep kept beside its records (``reference/<hash>.pt``), if all share one."""
    import torch
    files = {r.get("reference_file") for r in records}
    if len(files) != 1 or None in files or not os.path.isfile(os.path.join(root, next(iter(files)))):
        return None
    ref = torch.load(os.path.join(root, next(iter(files))), map_location="cpu", weights_only=True)
    return {k: v.double() for k, v in ref.items()}


def reconstruction_by_steps(recs: list[dict]) -> dict | None:
    """{S: per-image MSEs} of the most common reconstruction setup (the same images at every S)."""
    from collections import Counter
    from ddim_bench.reporting.reconstruction import setup_label
    recs = [r for r in recs if r.get("mse_per_image")]
    if not recs:
        return None
    label = Counter(setup_label(r) for r in recs).most_common(1)[0][0]
    return {r["steps"]: r["mse_per_image"] for r in recs if setup_label(r) == label}


@hydra.main(version_base="1.3", config_path=str(cli.CONF_DIR), config_name="report")
@cli.app(schema.ReportApp)
def _main(cfg: DictConfig) -> None:
    from ddim_bench.tracking.runs import log_report
    rep = make_report(cfg.results_dir, cfg.paper, cfg.bootstrap)
    extra = {}
    if os.path.isdir(os.path.join(cfg.results_dir, "reconstruction")):
        from ddim_bench.reporting.reconstruction import report_reconstruction
        extra = report_reconstruction(cfg.results_dir)
    log_report(cfg.logger, cfg.sweep_name, rep, cfg.results_dir, extra)
    print(rep["markdown"])
    if rep["claims_markdown"]:
        print(rep["claims_markdown"])
    print(f"protocol: {rep['protocol']}")
    names = sorted(os.path.basename(p) for p in {**rep["paths"], **extra.get("paths", {})}.values()
                   if os.path.dirname(p) == os.path.join(cfg.results_dir, "report"))
    print(f"report: {os.path.join(cfg.results_dir, 'report')}/ ({', '.join(names)})")
    sys.stdout.flush()


def main() -> None:
    cli.run_hydra(_main, "report")


if __name__ == "__main__":
    main()
