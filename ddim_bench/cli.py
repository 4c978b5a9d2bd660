"""Entry-point plumbing shared by the Hydra apps: one-line errors instead of tracebacks, and the
rank-aware OmegaConf resolvers that conf/hydra/default.yaml uses (registered on import, i.e. before
Hydra composes a config)."""
from __future__ import annotations

import functools
import os
import sys
from pathlib import Path

CONF_DIR = Path(__file__).resolve().parent / "conf"  # inside the package: found wherever it is installed

# Where launchers put a process's rank: torchrun / Lightning's DDP children (RANK, LOCAL_RANK), srun
# (SLURM_PROCID, also in a plain sbatch script, where it is 0).
RANK_VARIABLES = ("RANK", "SLURM_PROCID", "LOCAL_RANK")


def launcher_rank() -> int:
    """This process's rank as its launcher set it: the first non-zero of RANK / SLURM_PROCID /
    LOCAL_RANK, else 0 (also when none is set: a plain single-process run is rank 0)."""
    for var in RANK_VARIABLES:
        value = os.environ.get(var, "").strip()
        if value.isdigit() and int(value) > 0:
            return int(value)
    return 0


def slurm_run_id() -> str | None:
    """A run name that every rank of one SLURM job step shares and that a requeued job gets again:
    ``slurm-<job>`` (``<array job>_<task>`` in an array), plus ``-<step>`` under srun.

    Only in batch jobs (sbatch, submitit) and non-interactive srun steps; None elsewhere, also in an
    interactive allocation (salloc, ``srun --pty``), where one would otherwise reuse (and resume) the
    previous run's folder."""
    job = os.environ.get("SLURM_JOB_ID")
    step = os.environ.get("SLURM_STEP_ID", "")
    batch = os.environ.get("ENVIRONMENT") == "BATCH"  # set by sbatch in the job, inherited by its steps
    if not job or not (batch or (step.isdigit() and not os.environ.get("SLURM_PTY_PORT"))):
        return None
    array_job, array_task = os.environ.get("SLURM_ARRAY_JOB_ID"), os.environ.get("SLURM_ARRAY_TASK_ID")
    if array_job and array_task:
        job = f"{array_job}_{array_task}"
    return f"slurm-{job}" + (f"-{step}" if step.isdigit() else "")


CACHE_VARIABLE = "DDIM_BENCH_CACHE"


def user_cache_dir() -> str:
    """One cache for every app, wherever it is started: ``$DDIM_BENCH_CACHE``, else ``ddim-bench`` in the user's
    cache folder (``$XDG_CACHE_HOME``, else ``~/.cache``).  It holds the trained digit classifiers, reference
    features and the weights files the presets name (``<cache>/weights/``)."""
    if os.environ.get(CACHE_VARIABLE):
        return os.environ[CACHE_VARIABLE]
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "ddim-bench")


def _register_resolvers() -> None:
    from omegaconf import OmegaConf
    resolvers = {
        # ${ddim_rank0:X}: X on rank 0, null on the other ranks (hydra.output_subdir: one .hydra/).
        "ddim_rank0": lambda value, other=None: value if launcher_rank() == 0 else other,
        # ${ddim_rank0_log:PATH}: PATH on rank 0, the null device elsewhere (one job log file).
        "ddim_rank0_log": lambda path: path if launcher_rank() == 0 else os.devnull,
        # ${ddim_slurm_run:DEFAULT}: slurm_run_id() under SLURM, DEFAULT elsewhere (hydra.run.dir).
        "ddim_slurm_run": lambda default: slurm_run_id() or default,
        # ${ddim_cache:}: user_cache_dir() (paths.cache_dir)
        "ddim_cache": user_cache_dir,
    }
    for name, fn in resolvers.items():
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, fn)


_register_resolvers()


def fail(message: str, code: int = 2, prefix: str = "error: "):
    print(f"{prefix}{message}", file=sys.stderr, flush=True)
    sys.exit(code)


def user_config_dirs(argv: list[str]) -> list[Path]:
    """The user's own config folders, added to Hydra's search path by ``--config-dir DIR`` (``-cd DIR``) or
    ``hydra.searchpath=[file://DIR,...]``: their groups and options count as ours."""
    dirs = []
    for i, arg in enumerate(argv):
        if arg in ("--config-dir", "-cd") and i + 1 < len(argv):
            dirs.append(argv[i + 1])
        elif arg.startswith("--config-dir="):
            dirs.append(arg.split("=", 1)[1])
        elif arg.startswith("hydra.searchpath="):
            items = arg.split("=", 1)[1].strip("[]").split(",")
            dirs += [item.strip().strip("'\"")[len("file://"):] for item in items if "file://" in item]
    return [Path(d).expanduser().resolve() for d in dirs if d]


def check_group_overrides(argv: list[str]) -> None:
    """``data=foo`` with no ``data/foo.yaml`` in our configs or the user's: say so in one line before Hydra
    prints a page."""
    roots = [CONF_DIR, *user_config_dirs(argv)]
    for arg in argv:
        if arg.startswith("-") or "=" not in arg:
            continue
        key, value = arg.split("=", 1)
        key = key.lstrip("+~")
        groups = [root / key.replace(".", "/") for root in roots]
        if "/" in key or key == "hydra" or not any(g.is_dir() for g in groups):
            continue
        choices = sorted({p.stem for g in groups for p in g.glob("*.yaml")})
        for option in value.split(","):
            if option and option != "null" and option not in choices:
                import difflib
                close = difflib.get_close_matches(option, choices, n=1)
                hint = f"did you mean {key}={close[0]}? " if close else ""
                fail(f"{key}={option} is not a known option; {hint}choose one of: {', '.join(choices)} "
                     f"(or add your own config folder with --config-dir)")


INTERRUPTED = "interrupted; rerun the same command to resume"


def app(schema_cls):
    """Wrap a Hydra task function: the config is validated against ``schema_cls`` (types, unknown keys, ranges)
    and the task gets the typed config; a ``UserError``/``ValueError`` becomes one line and exit status 2, and the
    run folder Hydra made for it is removed again if nothing else was written there.  Ctrl-C is one line too."""
    def decorate(task):
        @functools.wraps(task)
        def wrapper(cfg):
            from omegaconf.errors import OmegaConfBaseException
            from ddim_bench.errors import UserError
            try:
                from ddim_bench.validation import validate
                typed = validate(cfg, schema_cls)
                quiet_srun_warning(typed)
                quiet_libraries()
                return task(typed)
            except (UserError, ValueError, FileNotFoundError, OmegaConfBaseException) as err:
                if os.environ.get("DDIM_BENCH_TRACEBACK"):
                    raise
                remove_refused_run_dir()
                fail(str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__)
            except KeyboardInterrupt:
                if os.environ.get("DDIM_BENCH_TRACEBACK"):
                    raise
                fail(INTERRUPTED, code=130, prefix="")
        return wrapper
    return decorate


def remove_refused_run_dir() -> None:
    """The run folder of a refused command, when it holds only what Hydra put there (``.hydra/``, the job log):
    a refused command leaves nothing behind.  A folder with anything else (a resumed training run) is kept."""
    import shutil
    from hydra.core.hydra_config import HydraConfig
    if not HydraConfig.initialized() or launcher_rank() != 0:
        return
    hc = HydraConfig.get()
    out = hc.runtime.output_dir
    if not out or not os.path.isdir(out) or os.path.realpath(out) == os.path.realpath(os.getcwd()):
        return
    if set(os.listdir(out)) - {".hydra", f"{hc.job.name}.log", "multirun.yaml"}:
        return
    shutil.rmtree(out, ignore_errors=True)
    cwd = os.path.realpath(os.getcwd())
    parent = os.path.dirname(os.path.realpath(out))
    for _ in range(2):  # outputs/<app>/ and outputs/ under the working folder, when this run made them empty
        if not parent.startswith(cwd + os.sep) or not os.path.isdir(parent) or os.listdir(parent):
            break
        os.rmdir(parent)
        parent = os.path.dirname(parent)


def is_multirun() -> bool:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode
    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def overridden(group: str) -> set[str]:
    """Keys of ``group`` the user set on the command line (``group=option`` counts as all of them)."""
    from hydra.core.hydra_config import HydraConfig
    if not HydraConfig.initialized():
        return set()
    keys = set()
    for o in HydraConfig.get().overrides.task:
        key = o.split("=", 1)[0].lstrip("+~")
        if key == group:
            keys.add("*")
        elif key.startswith(group + "."):
            keys.add(key[len(group) + 1:])
    return keys


def given(key: str) -> bool:
    """Whether ``key`` itself (``sweep_name=...``) was set on the command line."""
    from hydra.core.hydra_config import HydraConfig
    return HydraConfig.initialized() and any(o.split("=", 1)[0].lstrip("+~") == key
                                             for o in HydraConfig.get().overrides.task)


def choice(group: str) -> str:
    """The option of config group ``group`` this run composed (``grid=paper`` → "paper"), "" outside Hydra."""
    from hydra.core.hydra_config import HydraConfig
    if not HydraConfig.initialized():
        return ""
    return str(HydraConfig.get().runtime.choices.get(group) or "")


def check_secrets(argv: list[str]) -> None:
    """A secret on the command line would land in Hydra's .hydra/*.yaml files: refuse it before Hydra starts."""
    from ddim_bench.tracking.settings import is_secret_key
    api_key = os.environ.get("WANDB_API_KEY", "")
    for arg in argv:
        key = arg.split("=", 1)[0].lstrip("+~")
        if "=" in arg and (is_secret_key(key.split(".")[-1]) or (api_key and api_key in arg)):
            fail(f"{key} looks like a secret and would be written to the run's .hydra/ files; "
                 f"put it in the environment instead (WANDB_API_KEY)")


def run_hydra(hydra_main, config_name: str, schema_cls=None, precheck=None) -> None:
    """Console-script body: validate group options, refuse secrets, then compose and validate every job of the
    command (each job of a multirun) against ``schema_cls`` and ``precheck(cfg, multirun)`` before Hydra starts
    (and writes its run folder); then hand over to Hydra."""
    from ddim_bench import preflight
    from ddim_bench.errors import UserError
    argv = sys.argv[1:]
    check_group_overrides(argv)
    check_secrets(argv)
    try:
        job_list = preflight.jobs(config_name, argv)
        if job_list is not None and schema_cls is not None:
            preflight.check_jobs(config_name, job_list, schema_cls, precheck,
                                 multirun=any(a in preflight.MULTIRUN_FLAGS for a in argv))
    except UserError as err:
        if os.environ.get("DDIM_BENCH_TRACEBACK"):
            raise
        fail(str(err))
    except KeyboardInterrupt:
        fail(INTERRUPTED, code=130, prefix="")
    except Exception as err:  # noqa: BLE001 - e.g. an override Hydra cannot parse: Hydra itself says it below
        if os.environ.get("DDIM_BENCH_TRACEBACK"):
            raise
        lines = [ln.strip() for ln in str(err).strip().splitlines() if ln.strip()]
        fail(" ".join(lines[:2]) if lines else type(err).__name__)
    try:
        hydra_main()
    except BrokenPipeError:  # the reader of the output went away (`--help | head`): end quietly, as shell tools do
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # nothing left to flush at exit
        sys.exit(141)  # 128 + SIGPIPE


def quiet_srun_warning(cfg) -> None:
    """Lightning's "srun is available but not used" helps only a multi-process run outside srun: silence it
    for single-process runs."""
    import warnings
    node = cfg.get("trainer") or cfg.get("eval")
    devices = node.get("devices", 1) if node is not None else 1
    world = (devices if isinstance(devices, int) else 2) * int(node.get("num_nodes", 1) if node is not None else 1)
    if world == 1:
        warnings.filterwarnings("ignore", message=".*srun. command is available on your system but is not used")


def quiet_libraries() -> None:
    """Keep the console to what the harness says: Lightning's info lines (tips, "GPU available: ...") go to the
    job's log file only (``<run folder>/<app>.log``), and a deprecation warning from inside Lightning is not shown.

    Lightning, imported before Hydra set up logging, gave its loggers a console handler of their own and cut
    them off from the root logger; they are handed back to the root logger, whose only handler is the log file."""
    import logging
    import warnings
    for name in ("pytorch_lightning", "lightning_fabric", "lightning.pytorch", "lightning.fabric"):
        lg = logging.getLogger(name)
        for h in [h for h in lg.handlers if type(h) is logging.StreamHandler]:
            lg.removeHandler(h)
        lg.propagate = True
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)` is deprecated")
