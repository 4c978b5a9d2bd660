"""``ddim-bench-sweep plan=true [-m ...]``: the sweep's cost, printed before any sampling; nothing is written
(a missing checkpoint is fetched into the cache as the sweep itself would, since the plan times the network).

The configs are composed with Hydra's compose API (no run folder, no ``.hydra/``); under ``-m`` the sweep's
jobs are expanded as Hydra's basic sweeper does (command-line sweeps over ``hydra.sweeper.params``), one job per
SLURM array task under a submitit launcher.  The arithmetic lives in :mod:`ddim_bench.sweep.estimate`.
"""
from __future__ import annotations

import itertools
import sys
from dataclasses import dataclass

from ddim_bench import cli, config, schema, validation
from ddim_bench.dist import device_name
from ddim_bench.errors import UserError
from ddim_bench.sweep import estimate as P
from ddim_bench.sampling.cell import cells_from_config
from ddim_bench.sampling.generate import calls_per_image

PLAN_ON = {"plan=true", "plan=True", "plan=1", "plan=yes"}


def requested(argv: list[str]) -> bool:
    return any(a in PLAN_ON for a in argv)


@dataclass
class JobPlan:
    cells: int
    blocks: int
    n: int
    done: int             # records of the job already in the results folder (P.done_records): not counted below
    calls: int            # image-level network calls of the records left
    images: int
    disk: dict
    seconds: float        # wall seconds on the job's devices
    world: int
    rate: P.Rate


def job_overrides(argv: list[str], sweeper_params: dict) -> list[list[str]]:
    """The override list of every job: the cartesian product of the sweeps (command line over sweeper params)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    parsed = OverridesParser.create().parse_overrides(
        [f"{k}={v}" for k, v in (sweeper_params or {}).items()] + list(argv))
    axes = {}
    for o in parsed:  # a later override of the same key wins, as in Hydra
        key = o.get_key_element()
        axes[key] = ([f"{key}={v}" for v in o.sweep_string_iterator()] if o.is_sweep_override()
                     else [o.input_line])
    return [list(job) for job in itertools.product(*axes.values())]


def fixed(argv: list[str]) -> list[str]:
    """The overrides that are not sweeps (what the launcher and sweeper settings are composed from)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    return [o.input_line for o in OverridesParser.create().parse_overrides(argv) if not o.is_sweep_override()]


def compose(overrides: list[str], hydra: bool = False):
    """The sweep config as Hydra composes it for a job (with the hydra node when ``hydra``), nothing written."""
    from hydra import compose as hydra_compose, initialize_config_dir
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import OmegaConf, open_dict
    with initialize_config_dir(config_dir=str(cli.CONF_DIR), version_base="1.3"):
        cfg = hydra_compose("sweep", overrides=overrides, return_hydra_config=True)
    cfg.hydra.runtime.output_dir = cfg.hydra.run.dir  # never created: only for ${hydra:...} in paths
    HydraConfig.instance().set_config(cfg)
    if hydra:
        return cfg
    with open_dict(cfg):
        del cfg["hydra"]
    return validation.validate(OmegaConf.create(OmegaConf.to_container(cfg)), schema.SweepApp)


def plan_job(cfg, multirun: bool, cache: dict) -> JobPlan:
    """One job's cost; ``cache`` keeps loaded checkpoints and rates across jobs."""
    import torch
    from ddim_bench.models import checkpoint
    cells = cells_from_config(cfg, multirun)
    if cfg.checkpoint not in cache:
        # the sweep's own cache and download setting: a Hub model or the official file is fetched as the sweep would
        cache[cfg.checkpoint] = checkpoint.load(cfg.checkpoint, cfg.weights, cfg.paths.cache_dir, cfg.download)
    loaded = cache[cfg.checkpoint]
    schedule = loaded.schedule or config.plain(cfg.diffusion)
    validation.check_steps([c.steps for c in cells], schedule["num_timesteps"],
                           "sampler.steps" if len(cells) == 1 else "grid.steps")
    validation.check_accelerator("eval.accelerator", cfg.eval.accelerator)
    device = torch.device("cuda" if cfg.eval.accelerator in ("gpu", "cuda") or (
        cfg.eval.accelerator == "auto" and torch.cuda.is_available()) else "cpu")
    shape = loaded.shape
    if ("records", str(cfg.paths.results_dir)) not in cache:  # read once for all the jobs of a multirun
        cache["records", str(cfg.paths.results_dir)] = P.stored_records(cfg.paths.results_dir)
    stored = cache["records", str(cfg.paths.results_dir)]
    rate_key = (loaded.info["sha256"], str(cfg.paths.results_dir), device.type)
    if rate_key not in cache:
        cache[rate_key] = job_rate(cfg, loaded, shape, device, stored)
    rate, blocks, n = cache[rate_key], len(cfg.seeds), int(cfg.n_samples)
    world = int(cfg.eval.devices) * int(cfg.eval.num_nodes)
    done = P.done_records(stored, cells, cfg.seeds, n, loaded.info)
    left = [c for c in cells for seed in cfg.seeds if (c, int(seed)) not in done]
    nfe = {c: calls_per_image(c, schedule["num_timesteps"]) for c in cells}
    widths = P.feature_widths(cfg.metrics)
    return JobPlan(len(cells), blocks, n, len(done), n * sum(nfe[c] for c in left), n * len(left),
                   P.disk_bytes(len(left), n, shape, cfg.keep_images, widths, cfg.metrics.keep_features),
                   sum(P.record_seconds(n, nfe[c], rate, world) for c in left), world, rate)


def job_rate(cfg, loaded, shape, device, stored: list[dict]) -> P.Rate:
    """The newest measured rate in the results folder (``stored``) for this checkpoint and device, else a
    calibration."""
    from ddim_bench.models import checkpoint, fast
    name = device_name(device)
    found = P.measured_rate(stored, loaded.info["sha256"], name)
    if found:
        return found
    model = fast.wrap(checkpoint.build_model(loaded, device), cfg.sampler.fast, device)
    batch = min(int(cfg.sampler.batch_size), 64)
    rate = P.calibrate(model, shape, batch, device)
    return P.Rate(rate, 0.0, f"calibrated now: 3 network calls on a batch of {batch} on this machine's {name} "
                             f"({device.type}; scoring not included)")


def summary(jobs: list[JobPlan]) -> list[str]:
    j0, records = jobs[0], sum(j.cells * j.blocks for j in jobs)
    disk = {k: sum(j.disk[k] for j in jobs) for k in j0.disk}
    shape = (f"{sum(j.cells for j in jobs)} cells x {j0.blocks} seed blocks x N={j0.n}"
             if all((j.blocks, j.n) == (j0.blocks, j0.n) for j in jobs) else f"{sum(j.cells for j in jobs)} cells")
    device_h = sum(j.seconds * j.world for j in jobs) / 3600
    rates = dict.fromkeys(j.rate.source for j in jobs)
    done = sum(j.done for j in jobs)
    left = (f"{done} already in the results folder (matched on cell, seed block, N and checkpoint; skipped when "
            f"run): the figures below are for the {records - done} left" if done else
            "none in the results folder yet")
    return [f"plan: {shape} = {records} records, {left}",
            f"  model calls: {sum(j.calls for j in jobs):,} (image-level network evaluations, the samplers' NFE "
            f"formulas); images: {sum(j.images for j in jobs):,}",
            "  disk: " + ", ".join(f"{k} {P.human_bytes(v)}" for k, v in disk.items())
            + f" (total {P.human_bytes(sum(disk.values()))})",
            f"  estimated device-hours: {device_h:.3g} ({sum(j.seconds for j in jobs) / 3600:.3g} h of wall time "
            f"over {len(jobs)} job{'s' * (len(jobs) > 1)} on {j0.world} device{'s' * (j0.world > 1)} each)",
            *[f"  throughput: {src}" for src in rates]]


def slurm_lines(hydra_cfg, jobs: list[JobPlan]) -> list[str]:
    """Array size and time per task against the launcher's limit (slurm.time_min), with a warning."""
    launcher = hydra_cfg.hydra.get("launcher") or {}
    if "submitit" not in str(launcher.get("_target_", "")).lower():
        return []
    limit = float(launcher.timeout_min)
    worst = max(j.seconds for j in jobs) / 60
    need = f"{worst:,.0f}" if worst >= 100 else f"{worst:.2g}"
    lines = [f"  SLURM: array of {len(jobs)} task{'s' * (len(jobs) > 1)}, the longest ~{need} min against "
             f"the time limit of {limit:g} min (hydra.launcher.timeout_min; slurm.time_min under slurm_gpu)"]
    if worst > limit:
        lines.append(f"warning: a task needs ~{need} min but its time limit is {limit:g} min: it will be "
                     f"stopped; raise slurm.time_min (hydra.launcher.timeout_min) or give each task less work "
                     f"(fewer seeds, a smaller n_samples)")
    return lines


def run(argv: list[str]) -> None:
    """Print the plan of ``ddim-bench-sweep <argv>`` (``plan=true`` among them); writes nothing."""
    multirun = any(a in ("-m", "--multirun") for a in argv)
    args = overrides_only(argv)
    if any(a.startswith("-") for a in args):
        cli.fail(f"plan=true takes overrides, -m and --config-dir only, not "
                 f"{next(a for a in args if a.startswith('-'))}")
    try:
        hydra_cfg = compose(fixed(args) if multirun else args, hydra=True)
        params = dict(hydra_cfg.hydra.sweeper.get("params") or {}) if multirun else {}
        job_args = job_overrides(args, params) if multirun else [args]
        show([compose(a) for a in job_args], multirun, hydra_cfg if multirun else None)
    except (UserError, ValueError) as err:
        cli.fail(str(err).strip().splitlines()[0])


def overrides_only(argv: list[str]) -> list[str]:
    """The overrides, with the user's config folders (``--config-dir``) as one ``hydra.searchpath``."""
    dirs = cli.user_config_dirs(argv)
    skip = {i + 1 for i, a in enumerate(argv) if a in ("--config-dir", "-cd")}
    args = [a for i, a in enumerate(argv) if i not in skip and a not in ("-m", "--multirun", "--config-dir", "-cd")
            and not a.startswith(("--config-dir=", "hydra.searchpath="))]
    return args + ([f"hydra.searchpath=[{','.join(f'file://{d}' for d in dirs)}]"] if dirs else [])


def show(cfgs: list, multirun: bool, hydra_cfg=None) -> list[JobPlan]:
    """Plan the jobs of these (typed) configs and print the plan; returns the per-job plans."""
    cache = {}
    jobs = [plan_job(cfg, multirun, cache) for cfg in cfgs]
    print("\n".join(summary(jobs) + (slurm_lines(hydra_cfg, jobs) if hydra_cfg is not None else [])), flush=True)
    return jobs


def main() -> None:
    cli.check_group_overrides(sys.argv[1:])
    cli.check_secrets(sys.argv[1:])
    run(sys.argv[1:])
