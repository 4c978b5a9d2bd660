"""Every job of a command checked before Hydra starts, so that a refused command writes nothing (no run folder,
no ``.hydra/``, no log) and a multirun stops before its first job, not in the middle.

:func:`jobs` expands the command line as Hydra's basic sweeper does (``hydra.sweeper.params`` of a preset first,
then the command line; a later value of a key replaces an earlier one); :func:`check_jobs` composes each job's
config, validates it against the app's schema and runs the app's own cheap check on it.
"""
from __future__ import annotations

import difflib
import itertools
import re

MULTIRUN_FLAGS = ("-m", "--multirun")


def jobs(config_name: str, argv: list[str]) -> list[list[str]] | None:
    """Each job's overrides (one job for a plain run), or None when Hydra's own flags (``--help``, ``--cfg``…) are
    given: those are left to Hydra."""
    flags = [a for a in argv if a.startswith("-")]
    overrides = [a for a in argv if not a.startswith("-")]
    if any(f not in MULTIRUN_FLAGS for f in flags):
        return None
    if not flags:
        return [overrides]
    from hydra.core.override_parser.overrides_parser import OverridesParser
    parser = OverridesParser.create()
    parsed = parser.parse_overrides(overrides)
    base = [o.input_line for o in parsed if not o.is_sweep_override()]
    try:
        params = compose(config_name, base, hydra=True).hydra.sweeper.params or {}
    except Exception:  # noqa: BLE001 - a bad override: check_jobs says which
        params = {}
    axes: dict[str, list[str]] = {}
    for o in parser.parse_overrides([f"{k}={v}" for k, v in params.items()] + overrides):
        key = o.get_key_element()
        axes[key] = ([f"{key}={v}" for v in o.sweep_string_iterator()] if o.is_sweep_override()
                     else [o.input_line])
    return [list(job) for job in itertools.product(*axes.values())]


def compose(config_name: str, overrides: list[str], hydra: bool = False):
    """The config Hydra would compose for ``overrides`` (``hydra.*`` overrides left out: they only place files);
    with ``hydra`` the ``hydra`` node is kept and HydraConfig is set to it, as inside the app."""
    from hydra import compose as hydra_compose, initialize_config_dir
    from hydra.core.hydra_config import HydraConfig

    from ddim_bench.cli import CONF_DIR
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = hydra_compose(config_name, overrides=[a for a in overrides if not a.startswith("hydra.")
                                                    or a.startswith("hydra.searchpath=")],
                            return_hydra_config=hydra)
    if hydra:
        cfg.hydra.runtime.output_dir = "."
        HydraConfig.instance().set_config(cfg)
    return cfg


def check_jobs(config_name: str, job_list: list[list[str]], schema_cls, precheck=None, multirun: bool = False):
    """Compose, validate (``schema_cls``) and ``precheck(typed_cfg, multirun)`` every job; the first problem is
    raised as a one-line UserError naming the key (and, in a multirun, the job)."""
    from hydra.errors import HydraException
    from omegaconf import OmegaConf, open_dict

    from ddim_bench.errors import UserError
    from ddim_bench.validation import validate
    varying = [k for k in range(len(job_list[0])) if len({job[k] for job in job_list}) > 1] if job_list else []
    for i, job in enumerate(job_list):
        swept = " ".join(job[k] for k in varying)
        where = f" (multirun job {i} of {len(job_list)}: {swept})" if multirun and len(job_list) > 1 else ""
        try:
            cfg = compose(config_name, job, hydra=True)
        except HydraException as err:
            raise UserError(compose_message(config_name, job, err) + where) from None
        with open_dict(cfg):
            del cfg["hydra"]
        try:
            typed = validate(OmegaConf.create(OmegaConf.to_container(cfg)), schema_cls)
            if precheck is not None:
                precheck(typed, multirun)
        except (UserError, ValueError) as err:
            raise UserError(str(err).strip().splitlines()[0] + where) from None


def compose_message(config_name: str, job: list[str], err) -> str:
    """One line for an override Hydra rejects; an unknown key gets the closest known one ("did you mean")."""
    lines = [ln.strip() for ln in str(err).strip().splitlines() if ln.strip()]
    missing = re.match(r"Could not override '([^']+)'", lines[0]) if lines else None
    if not missing:
        return " ".join(lines[:2]) if lines else type(err).__name__
    key = missing.group(1)
    rest = [a for a in job if a.split("=", 1)[0].lstrip("+~") != key]
    try:
        hint = did_you_mean(key, compose(config_name, rest))
    except Exception:  # noqa: BLE001 - a hint is optional
        hint = ""
    return (f"{key} is not in the config; {hint or 'check the spelling'} (settings are listed in "
            f"ddim_bench/schema.py), or add a key the target accepts with +{key}=...")


def did_you_mean(key: str, cfg) -> str:
    """``"did you mean sampler.steps?"`` for ``sampler.stpes`` when ``cfg`` has a close key, else ""."""
    from omegaconf import DictConfig, OmegaConf
    parent, _, leaf = key.rpartition(".")
    node = OmegaConf.select(cfg, parent) if parent else cfg
    if not isinstance(node, DictConfig):
        return ""
    close = difflib.get_close_matches(leaf, [str(k) for k in node.keys()], n=1, cutoff=0.6)
    return f"did you mean {parent + '.' if parent else ''}{close[0]}?" if close else ""
