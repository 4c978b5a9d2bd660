"""Entry-point plumbing shared by the Hydra apps: one-line errors instead of tracebacks."""
from __future__ import annotations

import functools
import os
import sys
from pathlib import Path

CONF_DIR = Path(__file__).resolve().parent.parent / "conf"


def fail(message: str, code: int = 2):
    print(f"error: {message}", file=sys.stderr, flush=True)
    sys.exit(code)


def check_group_overrides(argv: list[str]) -> None:
    """``data=foo`` with no ``conf/data/foo.yaml``: say so in one line before Hydra prints a page."""
    for arg in argv:
        if arg.startswith("-") or "=" not in arg:
            continue
        key, value = arg.split("=", 1)
        key = key.lstrip("+~")
        group = CONF_DIR / key.replace(".", "/")
        if "/" in key or not group.is_dir() or key == "hydra":
            continue
        for option in value.split(","):
            if option and option != "null" and not (group / f"{option}.yaml").is_file():
                choices = sorted(p.stem for p in group.glob("*.yaml"))
                fail(f"{key}={option} is not a known option; choose one of: {', '.join(choices)}")


def user_errors(task):
    """Wrap a Hydra task function: a ``UserError``/``ValueError`` becomes one line and exit status 2."""
    @functools.wraps(task)
    def wrapper(cfg):
        from omegaconf.errors import OmegaConfBaseException
        from ddim_bench.errors import UserError
        try:
            return task(cfg)
        except (UserError, ValueError, FileNotFoundError, OmegaConfBaseException) as err:
            if os.environ.get("DDIM_BENCH_TRACEBACK"):
                raise
            fail(str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__)
    return wrapper


def run_hydra(hydra_main) -> None:
    """Console-script body: validate group options, then hand over to Hydra."""
    check_group_overrides(sys.argv[1:])
    hydra_main()
