"""Weights & Biases settings shared by every run the harness starts: mode, scrubbing of secrets, init arguments.

Offline runs land in ``<dir>/wandb/offline-run-*`` and can be uploaded later with ``wandb sync``.
No API key is ever put in a run's config: ``scrub`` drops secret-looking keys and any value that
contains ``$WANDB_API_KEY`` before a config reaches W&B.
"""
from __future__ import annotations

import os
import sys
from collections.abc import Mapping

from ddim_bench.choices import WANDB_MODES
from ddim_bench.config import plain
from ddim_bench.errors import UserError

MODES = WANDB_MODES
SECRET_KEY_PARTS = ("api_key", "apikey", "token", "secret", "password")
REDACTED = "<redacted>"


def validate_mode(mode) -> None:
    if mode not in MODES:
        raise UserError(f"logger.wandb.mode={mode} must be one of {', '.join(MODES)}")


def wandb_section(logger_cfg) -> dict:
    """The ``logger.wandb`` mapping; accepts the ``logger`` group, its ``wandb`` part, or None."""
    if logger_cfg is None:
        return {"mode": "disabled"}
    if not isinstance(logger_cfg, Mapping):
        raise UserError(f"logger={logger_cfg!r} must be a mapping with a 'wandb' section (see conf/logger/wandb.yaml)")
    node = logger_cfg.get("wandb", logger_cfg)
    if not isinstance(node, Mapping):
        return {"mode": "disabled"}
    section = {}
    for key in node:
        try:
            section[key] = plain(node[key])
        except Exception:
            # `dir` interpolates the Hydra run folder, unknown outside a Hydra app; the code
            # passes its folder explicitly anyway.
            if key != "dir":
                raise
            section[key] = None
    section.setdefault("mode", "offline")
    validate_mode(section["mode"])
    return section


def is_secret_key(key) -> bool:
    k = str(key).lower().replace("-", "_")
    return any(part in k for part in SECRET_KEY_PARTS)


def scrub(obj, secrets: list[str] | None = None):
    """A copy of ``obj`` without secret-looking keys, and with any value containing a secret redacted.

    Secrets are ``$WANDB_API_KEY`` (when set) plus ``secrets``.
    """
    if secrets is None:
        secrets = []
    secrets = [s for s in [os.environ.get("WANDB_API_KEY", ""), *secrets] if s]
    return _scrub(plain(obj), secrets)


def _scrub(obj, secrets: list[str]):
    if isinstance(obj, Mapping):
        return {k: _scrub(v, secrets) for k, v in obj.items() if not is_secret_key(k)}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_scrub(v, secrets) for v in obj)
    if isinstance(obj, str) and any(s in obj for s in secrets):
        return REDACTED
    return obj


def _argv_has_secret() -> bool:
    api_key = os.environ.get("WANDB_API_KEY", "")
    for arg in sys.argv[1:]:
        name = arg.split("=", 1)[0] if "=" in arg else arg
        if (api_key and api_key in arg) or ("=" in arg and is_secret_key(name)):
            return True
    return False


def _settings(section: dict):
    import wandb

    # No system-metrics sampler, no pip freeze, no console capture: fast startup, nothing
    # network-bound, and no stray output (which could echo secrets) copied into the run.
    # The run metadata records the command line; leave it out when an argument looks secret.
    return wandb.Settings(
        x_disable_stats=True,
        x_disable_meta=_argv_has_secret(),
        x_save_requirements=False,
        console=section.get("console", "off") or "off",
        silent=bool(section.get("silent", True)),  # no per-run console summary: the apps print one line per run
    )


def init_kwargs(section: dict, *, job_type: str, group, name, config: dict, dir: str) -> dict:
    tags = plain(section.get("tags")) or []
    return dict(
        project=section.get("project") or "ddim-bench",
        entity=section.get("entity"),
        mode=section["mode"],
        dir=str(dir or section.get("dir") or "."),
        job_type=job_type,
        group=section.get("group") or group,  # an explicit logger.wandb.group wins
        name=name,
        notes=section.get("notes"),
        tags=[str(t) for t in tags],
        config=scrub(config or {}),
        reinit="finish_previous",
        settings=_settings(section),
    )


def finish_active_run() -> None:
    """Finish the process's current W&B run (the Lightning logger leaves it open after ``fit``)."""
    import wandb

    if wandb.run is not None:
        wandb.finish()
