"""``ddim-bench-sweep``: sample a checkpoint over a grid of cells × seed blocks and score each with torch-fidelity.

Everything that can be checked is checked before the first sample: the config against its schema, then — right
after the checkpoint is loaded — the step counts against the checkpoint's own T, the data's image size against
its model, the reference split, the results folder.  Each (cell, seed) is one record, claimed with a lock before
it is computed and skipped when finished, so reruns and concurrent job-array tasks never compute it twice.
"""
from __future__ import annotations

import logging
import signal
import sys
import time

import hydra
from omegaconf import DictConfig

from ddim_bench import cli, config, schema, signals, validation
from ddim_bench.dist import PeerLost
from ddim_bench.errors import UserError
from ddim_bench.evaluation import protocol, record as rec
from ddim_bench.evaluation.accounting import DONE, HELD, MISSING, Tally, holder_text, overdue, state
from ddim_bench.models import checkpoint, fast
from ddim_bench.sampling.cell import Cell, cells_from_config

log = logging.getLogger(__name__)


def prepare(cfg: DictConfig, multirun: bool) -> dict:
    """All checks and cheap loading, in the order that needs no GPU and writes nothing."""
    from ddim_bench.evaluation import metrics
    from ddim_bench.evaluation.store import ResultStore
    from ddim_bench.reporting import user_claims
    cells = cells_from_config(cfg, multirun, cli.overridden("sampler"), cli.choice("grid"))
    claims = user_claims.plain(cfg.claims)
    if not multirun:  # a multirun job has one cell: its claims are checked by the report
        user_claims.check(claims, cells, cfg.metrics)
    spec = (cfg.get("slurm") or {}).get("signal")
    if spec and signals.from_spec(spec) is None:
        raise UserError(f"slurm.signal={spec} names no signal; use e.g. USR1@90 (sbatch --signal)")
    metrics.check_extractor(cfg.metrics, cfg.download)  # missing weights: stop before any sampling
    validation.check_accelerator("eval.accelerator", cfg.eval.accelerator)
    dm = config.build_datamodule(cfg.data)  # before a model is fetched
    loaded = checkpoint.load(cfg.checkpoint, cfg.weights, cfg.paths.cache_dir, cfg.download)
    schedule = loaded.schedule or config.plain(cfg.diffusion)
    validation.check_schedule(cfg.diffusion, schedule, cfg.checkpoint, cli.overridden("diffusion"))
    validation.check_steps([c.steps for c in cells], schedule["num_timesteps"],
                           "sampler.steps" if len(cells) == 1 else "grid.steps")
    shape = loaded.shape
    warning = metrics.data_mismatch(cfg.metrics, dm.name)
    if warning:
        say(warning)
    ref = dm.reference(cfg.reference.split)
    validation.check_resolution(config.image_shape(ref, dm), shape, dm.name, cfg.checkpoint)
    ref_n = len(ref) if cfg.reference.n is None else int(cfg.reference.n)
    if ref_n > len(ref) or ref_n < 2:
        raise UserError(f"reference.n={cfg.reference.n} must be in [2, {len(ref)}] (the {cfg.reference.split} split "
                        f"of data={dm.name}); use null for the whole split")
    results = ResultStore(cfg.paths.results_dir, lease_s=cfg.eval.lease_s)
    results.check_writable()
    return {"cells": cells, "claims": claims, "loaded": loaded, "schedule": schedule, "shape": shape, "dm": dm,
            "ref": ref, "ref_n": ref_n, "ref_key": f"{dm.key(cfg.reference.split)}|n={ref_n}", "results": results}


def run_sweep(cfg: DictConfig) -> list[dict]:
    """The records this run computed (see :func:`sweep` for the whole accounting)."""
    return sweep(cfg).computed


def sweep(cfg: DictConfig) -> Tally:
    """Every (cell, seed) record of the config not done yet, claimed one at a time and computed; a signal stops it
    with the claim released (:class:`signals.Stopped`)."""
    if cfg.plan:  # reached through Hydra or in-process (the console script plans before Hydra starts)
        from ddim_bench.apps import sweep_plan
        sweep_plan.show([cfg], cli.is_multirun())
        return Tally({}, set())
    stop = [signal.SIGTERM, signal.SIGINT, signals.from_spec((cfg.get("slurm") or {}).get("signal"))]
    with signals.stop_on(*[s for s in stop if s]):
        run = Run(cfg)
        try:
            held = run.pass_over(run.pending)
            for _ in range(10):  # claims of processes that stopped renewing them: wait for their lease to run out
                held = run.dist.broadcast(held if run.dist.main else None)
                if not held:
                    break
                held = run.pass_over(run.wait_for_orphans(held))
        finally:
            run.dist.stop_watching()  # from here on the other ranks may exit
        run.dist.barrier()
        if run.dist.main:
            run.tally.settle(run.results)
        return run.tally


class Run:
    """One sweep run: what every record shares, and the pass over the records."""

    def __init__(self, cfg: DictConfig):
        import torch
        from ddim_bench.dist import Dist
        from ddim_bench.evaluation import metrics
        from ddim_bench.evaluation.cell_run import Context
        from ddim_bench.reporting import user_claims
        from ddim_bench.tracking import runs
        self.cfg, p = cfg, prepare(cfg, cli.is_multirun())
        self.p, self.loaded, self.results, cells = p, p["loaded"], p["results"], p["cells"]
        self.dist = dist = Dist(cfg.eval)
        self.claim = None  # the claim of the record in progress
        dist.on_peer_lost = self.peer_lost
        model = fast.wrap(checkpoint.build_model(self.loaded, dist.device), cfg.sampler.fast, dist.device)
        self.scorer = scorer = metrics.Scorer(cfg.metrics, cfg.paths.cache_dir, device=dist.device)
        self.fields = dict(n_samples=cfg.n_samples, checkpoint_sha256=self.loaded.info["sha256"],
                           weights=self.loaded.info["weights"], schedule=p["schedule"], extractor=scorer.extractor_id,
                           reference=p["ref_key"], keep_images=cfg.keep_images, fast=config.plain(cfg.sampler.fast),
                           noise_version=noise_version())
        alphas = config.build_alphas(p["schedule"])
        self.schedulers = {c: scheduler_config(c, alphas) for c in cells}
        self.jobs = [(seed, c, rec.cell_key(self.key_fields(c, seed))) for c in cells for seed in cfg.seeds]
        self.ref_file = f"reference/{rec.cell_key({'reference': p['ref_key'], 'extractor': scorer.extractor_id})}.pt"
        self.pending = dist.broadcast([j for j in self.jobs if not self.results.has(j[2])] if dist.main else None)
        self.departures = protocol.departures(protocol_setting(cfg, self.loaded.info, p["dm"].name, scorer.name))
        self.tally = Tally({k: f"{c.label} seed {s}" for s, c, k in self.jobs},
                           {j[2] for j in self.jobs if j not in self.pending})
        if dist.main:
            from ddim_bench.reporting.status import write_expected
            write_expected(self.results.root, cfg.sweep_name, self.tally.keys)
            say(f"sweep {cfg.sweep_name}: {len(cells)} cells x {len(cfg.seeds)} seed blocks, "
                f"{len(self.tally.before)} records already done; results in {self.results.root}")
            say(f"protocol: {protocol.protocol_line(self.departures)}")
            runs.catch_up(cfg.logger, self.results, sorted(self.tally.before))
            user_claims.store(self.results.root, p["claims"])
            if self.pending:
                scorer.reference_features = scorer.reference(
                    torch.utils.data.Subset(p["ref"], range(p["ref_n"])), p["ref_key"])
                if cfg.metrics.keep_features:
                    save_reference(self.results.root, self.ref_file, scorer.reference_features)
        self.ctx = Context(dist, model, alphas, p["shape"], scorer, cfg.n_samples, cfg.keep_images,
                           cfg.sampler.batch_size, cfg.metrics.bootstrap, flops_per_call(self.loaded, p["shape"]),
                           cfg.metrics.keep_features)

    def key_fields(self, cell: Cell, seed: int) -> dict:
        return rec.key_fields(cell, seed, **self.fields, scheduler=keyed(cell, self.schedulers))

    def pass_over(self, jobs: list) -> list:
        """Compute each of ``jobs`` that this process can claim; the jobs live processes hold (rank 0's list)."""
        from ddim_bench.evaluation.cell_run import evaluate
        held = []
        for i, (seed, cell, key) in enumerate(jobs, 1):
            self.claim = claim = self.results.claim(key) if self.dist.main else None
            if not self.dist.broadcast(bool(claim) if self.dist.main else None):
                st, holder = state(self.results, key) if self.dist.main else (DONE, None)
                if st != DONE:
                    by = holder_text(holder) if holder else "another process"
                    say(f"[{i}/{len(jobs)}] {cell.label} seed {seed}: held by {by}, skipped")
                    held.append((seed, cell, key))
                continue
            try:
                with progress_bar(self.dist, self.cfg.n_samples, f"[{i}/{len(jobs)}] {cell.label} seed {seed}") as bar:
                    out = evaluate(self.ctx, cell, seed, bar)
                if self.dist.main:
                    self.store(seed, cell, key, out, claim)
            finally:
                claim and claim.release()  # a failed or stopped record is not left claimed
            self.dist.barrier()
        return held

    def peer_lost(self, reason: str) -> None:
        """Rank 0, from the watcher thread: another rank died; stop now, the record in progress released."""
        import os
        if self.claim is not None:
            self.claim.release()
        say(f"error: {reason}; the sweep stopped, the record in progress was not written and its claim is "
            f"released; rerun to resume")
        os._exit(1)

    def store(self, seed: int, cell: Cell, key: str, out, claim) -> None:
        """Rank 0: write the record (unless its claim was lost meanwhile), log it, say it."""
        from ddim_bench.evaluation.store import LostClaim
        from ddim_bench.tracking import runs
        cfg, p = self.cfg, self.p
        record = {**self.key_fields(cell, seed), **out.fields, "scheduler": self.schedulers[cell], "key": key,
                  "sweep": cfg.sweep_name,
                  "sampler": cell.sampler, "checkpoint": self.loaded.info, "reference_split": cfg.reference.split,
                  "reference_n": p["ref_n"], "protocol": self.departures,
                  "reference_file": self.ref_file if cfg.metrics.keep_features else None,
                  "feature_layers": dict(self.scorer.layers), "created": time.strftime("%Y-%m-%dT%H:%M:%S")}
        files = {".samples.pt": out.images}
        if cfg.metrics.keep_features:
            files[".features.pt"] = {k: v.half() for k, v in out.features.items()}
        try:
            self.results.put(key, record, files, claim=claim)
        except LostClaim as err:
            say(f"{cell.label} seed {seed}: not written, its claim was lost ({err}); the new holder computes it")
            self.tally.failed[key] = str(err)
            return
        runs.log_cell(cfg.logger, record, out.images, self.results.root)
        log.info(record_line(record))
        self.tally.computed.append(record)
        if seed == cfg.seeds[-1]:  # the cell's last block: one console line for the cell
            say(cell_line(cell, [self.results.record(k) for s, c, k in self.jobs if c == cell]))

    def wait_for_orphans(self, held: list) -> list:
        """Rank 0 watches the claims others hold until each is seen renewed (its holder lives: left to it) or
        lapses (its holder died: waited out until its lease ends); returns, to every rank, the records left
        without a live claim, to be offered again (empty: nothing to redo)."""
        retry, alive, last, said, deadline = [], set(), {}, False, None
        while self.dist.main:
            states = {j: state(self.results, j[2]) for j in held}
            retry = [j for j, (st, _) in states.items() if st == MISSING]
            for j, (st, h) in states.items():
                if st == HELD and h["age_s"] < last.get(j, -1):
                    alive.add(j)  # renewed since the last look
                last[j] = h["age_s"] if st == HELD else -1
            unsure = [h for j, (st, h) in states.items() if st == HELD and j not in alive]
            if retry or not unsure:
                break
            deadline = deadline or time.monotonic() + max(h["lease_s"] - h["age_s"] for h in unsure) + 10
            if time.monotonic() > deadline:
                break
            if not said and any(overdue(h) for h in unsure):
                say(f"waiting for {len(unsure)} claim(s) no longer renewed ({holder_text(unsure[0])}) "
                    f"until their lease runs out")
                said = True
            time.sleep(min(5.0, min(h["lease_s"] for h in unsure) / 20))
        return self.dist.broadcast(retry if self.dist.main else None)


def scheduler_config(cell: Cell, alphas) -> dict:
    """The sampler's effective configuration for this cell (``samplers.effective_config``), kept in its record."""
    from ddim_bench.sampling.samplers import effective_config
    return effective_config(cell.sampler, alphas, cell.steps, cell.skip, clip_x0=cell.clip_x0)


def keyed(cell: Cell, schedulers: dict) -> dict | None:
    """A diffusers scheduler's configuration is part of the record's key; ours (``ddim``) is fixed by the cell."""
    return None if cell.sampler == "ddim" else schedulers[cell]


def protocol_setting(cfg, info: dict, dataset: str, extractor: str) -> dict:
    import torch_fidelity
    return {"n_samples": cfg.n_samples, "weights": info["weights"], "dataset": dataset,
            "reference_split": cfg.reference.split, "skip": cfg.grid.skip if cfg.grid.steps else cfg.sampler.skip,
            "table1": dataset == "cifar10", "extractor": extractor, "torch_fidelity": torch_fidelity.__version__,
            "seed_blocks": len(cfg.seeds)}


def record_line(r: dict) -> str:
    ci = f" [{r['fid_lo']:.3g}, {r['fid_hi']:.3g}]" if r.get("fid_lo") is not None else ""
    return (f"{Cell.from_record(r).label} seed {r['seed']}: FID {r['fid']:.3g}{ci}, "
            f"{r['images_per_sec']:.0f} img/s, NFE {r['nfe']}")


def cell_line(cell: Cell, recs: list) -> str:
    """One line per cell: FID mean ± sd over its seed blocks (or its one block's interval), speed, NFE."""
    from ddim_bench.reporting.aggregate import aggregate
    from ddim_bench.reporting.table1 import fmt
    recs = [r for r in recs if r is not None]
    row = aggregate(recs)[0]
    return (f"  {cell.label}: FID {fmt(row)} ({len(recs)} block{'s' * (len(recs) > 1)}), "
            f"{row['images_per_sec']:.0f} img/s, NFE {row['nfe']:.0f}")


def say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def progress_bar(dist, total: int, desc: str):
    """tqdm on rank 0 only (a disabled bar elsewhere); leaves no line behind once the cell's line is printed."""
    from tqdm.auto import tqdm
    return tqdm(total=total, desc=desc, unit="img", leave=False, disable=not dist.main or not sys.stderr.isatty(),
                file=sys.stderr, dynamic_ncols=True)


def save_reference(root: str, rel: str, features: dict) -> None:
    """The reference features beside the records (float16), once: the report's paired differences need them."""
    import io
    import os
    import torch
    from ddim_bench.io import atomic_write
    path = os.path.join(root, rel)
    if not os.path.isfile(path):
        buf = io.BytesIO()
        torch.save({k: v.half() for k, v in features.items()}, buf)
        atomic_write(path, buf.getvalue())


def noise_version() -> int:
    try:
        from ddim_bench.sampling.noise import NOISE_VERSION
        return NOISE_VERSION
    except ImportError:
        return 1


def flops_per_call(loaded, shape) -> float | None:
    """FLOPs of one network call on one image (``torch.utils.flop_counter``), or None where it cannot count."""
    try:
        from ddim_bench.sampling.cost import flops_per_call as count
        return float(count(checkpoint.build_model(loaded, "cpu"), (1, *shape), "cpu"))
    except Exception:  # noqa: BLE001 - a cost figure is optional
        return None


def check_cells(cfg: DictConfig, multirun: bool) -> None:
    """The cheap per-job check run before Hydra starts: the job's cells (sampler settings, grid overrides)."""
    cells_from_config(cfg, multirun, cli.overridden("sampler"), cli.choice("grid"))


@hydra.main(version_base="1.3", config_path=str(cli.CONF_DIR), config_name="sweep")
@cli.app(schema.SweepApp)
def _main(cfg: DictConfig) -> None:
    try:
        tally = sweep(cfg)
    except signals.Stopped as stop:
        say(stopped_line(stop, cfg))
        sys.exit(stop.exit_code)
    except PeerLost as err:
        say(f"error: {err}; the sweep stopped with its claims released; rerun to resume")
        sys.exit(1)
    if tally.final:  # rank 0
        if tally.missing:
            say(f"missing (no record, no live claim): {', '.join(tally.keys[k] for k in tally.missing[:5])}"
                f"{', …' * (len(tally.missing) > 5)}; rerun the sweep to compute them")
        say(tally.line(cfg.sweep_name))
        if tally.missing:
            sys.exit(3)


def stopped_line(stop: signals.Stopped, cfg: DictConfig) -> str:
    """One line on a signal; on the job's warning signal under SLURM the job is requeued first."""
    requeued = ""
    if stop.signum == signals.from_spec((cfg.get("slurm") or {}).get("signal")) and cli.launcher_rank() == 0:
        requeued = signals.requeue_self() or ""
    return (f"stopped by {stop.name}: the record in progress was not written and its claim is released; "
            f"finished records are kept{'; ' + requeued if requeued else ''}; rerun to resume")


def main() -> None:
    from ddim_bench.apps import sweep_plan
    if sweep_plan.requested(sys.argv[1:]):  # composed without Hydra's run: no output folder, nothing written
        return sweep_plan.main()
    cli.run_hydra(_main, "sweep", schema.SweepApp, check_cells)


if __name__ == "__main__":
    main()
