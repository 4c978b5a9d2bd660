"""The pass over a sweep's records: each (cell, seed block) not done yet is claimed with a lock, computed
(:func:`ddim_bench.sweep.cell_run.evaluate`), stored, logged to W&B and said, so reruns and concurrent job-array
tasks never compute a record twice.  A signal stops it with the claim released (:class:`signals.Stopped`)."""
from __future__ import annotations

import logging
import signal
import time

from omegaconf import DictConfig

from ddim_bench import cli, config, signals
from ddim_bench.dist import PeerLost
from ddim_bench.scoring import protocol
from ddim_bench.results import record as rec
from ddim_bench.results.accounting import DONE, HELD, MISSING, Tally, holder_text, overdue, state
from ddim_bench.models import checkpoint, fast
from ddim_bench.sampling.cell import Cell
from ddim_bench.sweep import prepare as prep
from ddim_bench.sweep.console import cell_line, end_lines, progress_bar, record_line, say, stopped_line

log = logging.getLogger(__name__)


def run_job(cfg: DictConfig) -> int:
    """The app's job: the sweep, its last lines and its exit status (0; 3 when a record is missing; 128 + the
    signal when stopped by one; 1 when another rank died)."""
    try:
        tally = sweep(cfg)
    except signals.Stopped as stop:
        say(stopped_line(stop, (cfg.get("slurm") or {}).get("signal"), cli.launcher_rank()))
        return stop.exit_code
    except PeerLost as err:
        say(f"error: {err}; the sweep stopped with its claims released; rerun to resume")
        return 1
    if tally.final:  # rank 0
        for line in end_lines(tally, cfg.sweep_name):
            say(line)
        if tally.missing:
            return 3
    return 0


def run_sweep(cfg: DictConfig) -> list[dict]:
    """The records this run computed (see :func:`sweep` for the whole accounting)."""
    return sweep(cfg).computed


def sweep(cfg: DictConfig) -> Tally:
    """Every (cell, seed) record of the config not done yet, claimed one at a time and computed; a signal stops it
    with the claim released (:class:`signals.Stopped`)."""
    if cfg.plan:  # reached through Hydra or in-process (the console script plans before Hydra starts)
        from ddim_bench.sweep import plan
        plan.show([cfg], cli.is_multirun())
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
        run.dist.close()  # every rank is done: the process group goes down before the interpreter does
        if run.dist.main:
            run.tally.settle(run.results)
        return run.tally


class Run:
    """One sweep run: what every record shares, and the pass over the records."""

    def __init__(self, cfg: DictConfig):
        from ddim_bench.dist import Dist
        from ddim_bench.scoring import metrics
        self.cfg, p = cfg, prep.prepare(cfg, cli.is_multirun())
        self.p, self.loaded, self.results, cells = p, p["loaded"], p["results"], p["cells"]
        self.dist = dist = Dist(cfg.eval)
        self.claim = None  # the claim of the record in progress
        dist.on_peer_lost = self.peer_lost
        model = fast.wrap(checkpoint.build_model(self.loaded, dist.device), cfg.sampler.fast, dist.device)
        self.scorer = scorer = metrics.Scorer(cfg.metrics, cfg.paths.cache_dir, device=dist.device)
        self.fields = dict(n_samples=cfg.n_samples, checkpoint_sha256=self.loaded.info["sha256"],
                           weights=self.loaded.info["weights"], schedule=p["schedule"], extractor=scorer.extractor_id,
                           reference=p["ref_key"], keep_images=cfg.keep_images, fast=config.plain(cfg.sampler.fast),
                           noise_version=prep.noise_version())
        self.alphas = config.build_alphas(p["schedule"])
        self.schedulers = {c: prep.scheduler_config(c, self.alphas) for c in cells}
        self.jobs = [(seed, c, rec.cell_key(self.key_fields(c, seed))) for c in cells for seed in cfg.seeds]
        self.ref_file = self.results.reference_file(rec.cell_key({"reference": p["ref_key"],
                                                                   "extractor": scorer.extractor_id}))
        self.pending = dist.broadcast([j for j in self.jobs if not self.results.has(j[2])] if dist.main else None)
        self.departures = protocol.departures(prep.protocol_setting(cfg, self.loaded.info, p["dm"].name, scorer.name))
        self.tally = Tally({k: f"{c.label} seed {s}" for s, c, k in self.jobs},
                           {j[2] for j in self.jobs if j not in self.pending})
        if dist.main:
            self.start(cells)
        self.ctx = self.context(model)

    def start(self, cells: list) -> None:
        """Rank 0: say what the run does, catch up on W&B runs, keep the claims and the reference features."""
        import torch
        from ddim_bench.reporting import user_claims
        from ddim_bench.reporting.status import write_expected
        from ddim_bench.tracking import runs
        cfg, p = self.cfg, self.p
        write_expected(self.results.root, cfg.sweep_name, self.tally.keys)
        say(f"sweep {cfg.sweep_name}: {len(cells)} cells x {len(cfg.seeds)} seed blocks, "
            f"{len(self.tally.before)} records already done; results in {self.results.root}")
        say(f"protocol: {protocol.protocol_line(self.departures)}")
        runs.catch_up(cfg.logger, self.results, sorted(self.tally.before))
        user_claims.store(self.results.root, p["claims"])
        if self.pending:
            self.scorer.reference_features = self.scorer.reference(
                torch.utils.data.Subset(p["ref"], range(p["ref_n"])), p["ref_key"])
            if cfg.metrics.keep_features:
                self.results.put_reference(self.ref_file, self.scorer.reference_features)

    def context(self, model):
        """What every cell's evaluation shares (:class:`cell_run.Context`)."""
        from ddim_bench.sweep.cell_run import Context
        cfg, dist = self.cfg, self.dist
        return Context(dist, model, self.alphas, self.p["shape"], self.scorer, cfg.n_samples, cfg.keep_images,
                       cfg.sampler.batch_size, cfg.metrics.bootstrap, prep.flops_per_call(self.loaded, self.p["shape"]),
                       cfg.metrics.keep_features)

    def key_fields(self, cell: Cell, seed: int) -> dict:
        return rec.key_fields(cell, seed, **self.fields, scheduler=prep.keyed(cell, self.schedulers))

    def pass_over(self, jobs: list) -> list:
        """Compute each of ``jobs`` that this process can claim; the jobs live processes hold (rank 0's list)."""
        from ddim_bench.sweep.cell_run import evaluate
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

    def record(self, seed: int, cell: Cell, key: str, measured: dict) -> dict:
        cfg, p = self.cfg, self.p
        return rec.cell_record(self.key_fields(cell, seed), key, measured, sweep=cfg.sweep_name, sampler=cell.sampler,
                               scheduler=self.schedulers[cell], checkpoint=self.loaded.info,
                               reference_split=cfg.reference.split, reference_n=p["ref_n"], protocol=self.departures,
                               reference_file=self.ref_file if cfg.metrics.keep_features else None,
                               feature_layers=self.scorer.layers)

    def store(self, seed: int, cell: Cell, key: str, out, claim) -> None:
        """Rank 0: write the record (unless its claim was lost meanwhile), log it, say it."""
        from ddim_bench.results.store import LostClaim
        from ddim_bench.tracking import runs
        cfg = self.cfg
        record = self.record(seed, cell, key, out.fields)
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
