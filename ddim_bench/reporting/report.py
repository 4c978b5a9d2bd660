"""The report of a results folder: per-record and per-cell CSVs, Table 1 (mean ± sd over seed blocks), the claims
table (the paper's claims with paired intervals and verdicts), figures and a W&B report run
(``ddim-bench-report`` is the console script around :func:`run_job`).

Nothing is written before the config is valid, and a corrupt record is named, moved aside and left out (the
sweep recomputes it) instead of stopping the report.
"""
from __future__ import annotations

import csv
import io
import os
import sys
from collections.abc import Mapping

from ddim_bench import cli
from ddim_bench.errors import UserError
from ddim_bench.results import record as rec
from ddim_bench.io import atomic_write
from ddim_bench.reporting import aggregate, figures, samplers, status, table1


def write_csv(path: str, columns: list[str], rows: list[list]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(columns)
    w.writerows([["" if v is None else v for v in r] for r in rows])
    atomic_write(path, buf.getvalue())
    return path


def protocol_line(records: list[dict]) -> str:
    from ddim_bench.scoring.protocol import protocol_line as line
    found = list(dict.fromkeys(d for r in records for d in r.get("protocol", [])))
    return line(found)


SETUP = (("n_samples", "N = {}"), ("extractor", "extractor {}"), ("reference", "reference {}"),
         ("checkpoint_sha256", "checkpoint {:.8}"), ("weights", "{} weights"))


def by_setup(records: list[dict]) -> dict[str, list[dict]]:
    """Records grouped by what makes their numbers comparable (sample count, extractor, reference, checkpoint),
    largest N first; each group is labelled by the fields that differ between groups ("" for a single group)."""
    groups: dict[tuple, list[dict]] = {}
    for r in records:
        groups.setdefault(tuple(str(r.get(k)) for k, _ in SETUP), []).append(r)
    varying = [i for i in range(len(SETUP)) if len({key[i] for key in groups}) > 1]
    order = sorted(groups, key=lambda key: (-int(groups[key][0].get("n_samples") or 0), key))
    return {", ".join(SETUP[i][1].format(groups[key][0].get(SETUP[i][0])) for i in varying): groups[key]
            for key in order}


def select(records: list[dict], results_dir: str, sweep: str | None) -> list[dict]:
    """The finished records, of sweep ``sweep`` only when it is given; none is a one-line error."""
    done = [r for r in records if "fid" in r]
    if sweep is not None:
        names = sorted({str(r.get("sweep")) for r in done})
        done = [r for r in done if r.get("sweep") == sweep]
        if not done and names:
            raise UserError(f"sweep_name={sweep}: results_dir={results_dir} holds no records of that sweep; "
                            f"its sweeps: {', '.join(names)}")
    if not done:
        raise UserError(f"results_dir={results_dir} holds no finished cells; run ddim-bench-sweep first")
    return done


def make_report(results_dir: str, paper_setting: str = "auto", bootstrap=None, claims=None,
                sweep: str | None = None) -> dict:
    """Tables, claims and figures per setup (one per sample count when a folder holds sweeps of several N:
    numbers of different N are never aggregated or paired together).  The user's claims are checked on the
    first (largest-N) setup."""
    from ddim_bench.results.store import ResultStore
    results = ResultStore(results_dir)
    records = select(results.records(), results_dir, sweep)
    groups = by_setup(records)
    mine = user_claims_of(results_dir, next(iter(groups.values())), claims)  # a claim naming no cell: one line
    aggregate.add_consistency(records, results.samples)
    out = os.path.join(results_dir, "report")
    os.makedirs(out, exist_ok=True)
    proto = protocol_line(records)
    paths = {"records_csv": write_csv(os.path.join(out, "results.csv"), rec.columns(), [rec.row(r) for r in records])}
    rows, parts = [], [setup_part(label, recs, results, bootstrap, paper_setting, proto, out,
                                  mine if i == 0 else ([], []), len(groups) > 1, paths)
                       for i, (label, recs) in enumerate(groups.items())]
    for part in parts:
        rows += part["rows"]
    cols = list(dict.fromkeys(c for r in rows for c in r if c not in ("seeds", "keys")))
    paths["cells_csv"] = write_csv(os.path.join(out, "cells.csv"), cols, [[r.get(c) for c in cols] for r in rows])
    md = "\n".join(p["markdown"] for p in parts)
    paths["table"] = os.path.join(out, "table1.md")
    atomic_write(paths["table"], md)
    extra = parts[0]["samplers"]
    if any(p["samplers"] for p in parts):
        paths["samplers"] = os.path.join(out, "samplers.md")
        atomic_write(paths["samplers"], "\n".join(p["samplers_markdown"] for p in parts if p["samplers"]))
        extra = {**extra, "markdown": "\n".join(p["samplers_markdown"] for p in parts if p["samplers"])}
    by_sweep = status.states(results)
    if status.missing_rows(by_sweep):
        paths["missing_csv"] = write_csv(os.path.join(out, "missing.csv"), ["sweep", "record", "key", "state", "holder"],
                                         status.missing_rows(by_sweep))
    claims_md = "\n".join(p["claims_markdown"] for p in parts if p["claims_markdown"])
    if claims_md:
        paths["claims"] = os.path.join(out, "claims.md")
        atomic_write(paths["claims"], claims_md)
    grid = figures.consistency_grid(parts[0]["rows"], results.samples, os.path.join(out, "consistency_grid.png"))
    if grid:
        paths["consistency_grid"] = grid
    return {"records": records, "rows": rows, "paths": paths, "markdown": md,
            "claims": [c for p in parts for c in p["claims"]], "claims_markdown": claims_md, "protocol": proto,
            "samplers": extra, "setups": list(groups), "status": status.status_lines(by_sweep)}


def setup_part(label: str, recs: list[dict], results, bootstrap, paper_setting: str, proto: str, out: str, mine,
               several: bool, paths: dict) -> dict:
    """One setup's rows, Table 1 (or the NFE table), sampler comparisons, claims and figures (into ``paths``)."""
    rows = aggregate.aggregate(recs)
    for r in rows if label else ():  # W&B series: one per row and setup
        r["series"] = f"{r['series']} ({label})"
    compare = comparison_inputs(recs, results, bootstrap)
    extra = samplers_report(recs, rows, compare) if samplers.has_samplers(rows) else {}
    md = extra.get("by_nfe_markdown") or table1.markdown(rows, recs, table1.paper_dataset(
        rows, recs, paper_setting), proto)
    found, found_md = make_claims(recs, results, compare, mine)
    head = f"### {label}\n\n" if label else ""
    paths.update(figures.curves(rows, out, extra.get("front_nfe"), f"-n{recs[0]['n_samples']}" if several else ""))
    return {"rows": rows, "markdown": head + md, "samplers": extra,
            "samplers_markdown": head + extra.get("markdown", ""),
            "claims": [{**c, "setup": label} if label else c for c in found],
            "claims_markdown": head + found_md if found_md else ""}


def comparison_inputs(records: list[dict], results, bootstrap) -> dict:
    """What every paired comparison reads: the records' stored subset values, else (older records) the stored
    per-sample features by key and the reference features, both read only when a comparison needs them; the
    metric layers and the interval settings (``claims.options``)."""
    from ddim_bench.reporting import claims
    b = {"replicates": 200, "level": 0.95, "seed": 0, **(dict(bootstrap) if bootstrap else {})}
    layers = records[0].get("feature_layers") or {}
    ref = LazyReference(results, records)

    def features(key):  # as stored (float16): a comparison turns the one layer it uses into float64, then drops it
        return results.load_file(key, ".features.pt") if ref.available and layers else None

    return {"features": features, "ref": ref, "layers": layers,
            "opts": claims.options(b["replicates"], b["level"], b["seed"], partitions=b.get("partitions", 16))}


class LazyReference(Mapping):
    """The reference features the sweep kept beside its records, loaded on first read (a report whose records
    hold their subset values never reads them), each layer float64 once (the comparisons' reference side is then
    computed once: ``draws.reference_moments``)."""

    def __init__(self, results, records: list[dict]):
        self.results, self.records, self.got = results, records, None
        self.available = results.reference_path(records) is not None

    def _data(self):
        if self.got is None:
            from ddim_bench.scoring.metrics import Float64Features
            ref = self.results.reference(self.records) if self.available else None
            self.got = Float64Features(ref or {})
        return self.got

    def __getitem__(self, layer):
        return self._data()[layer]

    def __contains__(self, layer):
        return layer in self._data()

    def __iter__(self):
        return iter(self._data())

    def __len__(self):
        return len(self._data())


def samplers_report(records: list[dict], rows: list[dict], c: dict) -> dict:
    """The NFE-indexed table, each sampler against DDIM η = 0 at the same NFE, and the fronts by NFE and seconds."""
    args = (c["features"], c["ref"], c["layers"], c["opts"])
    vs, unmatched = samplers.vs_ddim(records, *args)
    fronts = {cost: samplers.front_steps(records, rows, cost, *args) for cost in ("nfe", "sec_per_image")}
    body = [samplers.vs_ddim_markdown(vs, unmatched)] + [samplers.front_markdown(f) for f in fronts.values() if f]
    return {"by_nfe_markdown": samplers.by_nfe_markdown(rows), "vs_ddim": vs, "front_nfe": fronts["nfe"],
            "front_seconds": fronts["sec_per_image"], "markdown": "\n".join(body)}


def user_claims_of(root: str, records: list[dict], claims) -> tuple[list[dict], list]:
    """The config's claims (each must name cells of these records: else a one-line error) and those the sweeps
    kept in ``claims.json`` (one whose cells have no records yet is left out, with a line saying so)."""
    from ddim_bench.reporting import user_claims
    cells = list(aggregate.by_cell(records))
    mine = user_claims.plain(claims)
    pairs = user_claims.check(mine, cells)
    for c in user_claims.stored(root):
        if c in mine:
            continue
        try:
            pairs += user_claims.check([c], cells)
            mine.append(c)
        except UserError as err:
            print(f"claim left out (its cells have no records here): {err}", file=sys.stderr)
    return mine, pairs


def make_claims(records: list[dict], results, compare: dict, mine=([], [])) -> tuple[list[dict], str]:
    """The paper's claims on this sweep and the user's, with paired intervals over the stored per-sample
    features."""
    from ddim_bench.reporting import claims, user_claims
    from ddim_bench.reporting.reconstruction import reconstruction_records
    o, c = compare["opts"], compare
    rows = claims.evaluate_claims(records, c["features"], c["ref"], layers=c["layers"],
                                  reconstruction=reconstruction_by_steps(reconstruction_records(results.root)),
                                  kept=results.samples, replicates=o["replicates"], level=o["level"], seed=o["seed"],
                                  partitions=o["partitions"])
    rows += user_claims.evaluate(*mine, aggregate.by_cell(records), c["features"], c["ref"], c["layers"], o)
    return rows, claims.claims_markdown(rows)


def reconstruction_by_steps(recs: list[dict]) -> dict | None:
    """{S: per-image MSEs} of the most common reconstruction setup (the same images at every S)."""
    from collections import Counter
    from ddim_bench.reporting.reconstruction import setup_label
    recs = [r for r in recs if r.get("mse_per_image")]
    if not recs:
        return None
    label = Counter(setup_label(r) for r in recs).most_common(1)[0][0]
    return {r["steps"]: r["mse_per_image"] for r in recs if setup_label(r) == label}


def run_job(cfg) -> None:
    """The app's job: the status view (``status=true``: nothing written), or the report, its W&B run and its
    console summary."""
    from ddim_bench.tracking.runs import log_report
    if cfg.status:
        from ddim_bench.results.store import ResultStore
        print("\n".join(status.status_lines(status.states(ResultStore(cfg.results_dir)))
                        or [f"results_dir={cfg.results_dir} has no sweeps yet"]))
        return
    rep = make_report(cfg.results_dir, cfg.paper, cfg.bootstrap, cfg.claims,
                      cfg.sweep_name if cli.given("sweep_name") else None)
    extra = {}
    if os.path.isdir(os.path.join(cfg.results_dir, "reconstruction")):
        from ddim_bench.reporting.reconstruction import report_reconstruction
        extra = report_reconstruction(cfg.results_dir)
    run_dir = log_report(cfg.logger, cfg.sweep_name, rep, cfg.results_dir, extra)
    print_report(rep, extra, cfg.results_dir, run_dir)


def print_report(rep: dict, extra: dict, results_dir: str, run_dir: str | None) -> None:
    """The tables, claims, protocol line and status, then where the files and the W&B run are."""
    print(rep["markdown"])
    if rep["samplers"]:
        print(rep["samplers"]["markdown"])
    if rep["claims_markdown"]:
        print(rep["claims_markdown"])
    print(f"protocol: {rep['protocol']}")
    print("\n".join(rep["status"]))
    names = sorted(os.path.basename(p) for p in {**rep["paths"], **extra.get("paths", {})}.values()
                   if os.path.dirname(p) == os.path.join(results_dir, "report"))
    print(f"report: {os.path.join(results_dir, 'report')}/ ({', '.join(names)})")
    if run_dir:
        print(f"W&B report run: {run_dir} (replaces the previous report run; upload with wandb sync {run_dir})")
    sys.stdout.flush()
