"""``make perf``: every benchmark, one combined table, one JSON (written atomically).

Sections (the modules of benchmarks/cpu/): sampler overhead, diffusers loop, training step, evaluation share,
growth, scoring memory at N = 50 000 (fid_memory), the bootstrap intervals' cost (bootstrap_cost).  Each figure
is a ratio of two things timed side by side in one run (see benchmarks/timing.py).
"""
from __future__ import annotations

import importlib
import os
import sys
import traceback
from pathlib import Path

if __package__ in (None, ""):  # run as a file (python benchmarks/run_all.py): make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import Opts, Row, arg_parser, machine, opts_from, print_table, write_json  # noqa: E402

SECTIONS = {"sampler": "sampler_overhead", "diffusers": "diffusers_loop", "training": "training_step",
            "evaluation": "evaluation_share", "growth": "growth", "fid_memory": "fid_memory",
            "bootstrap": "bootstrap_cost"}


def section_rows(name: str, opts: Opts) -> list[Row]:
    """One section's rows; a section that raises becomes one ERROR row (and a non-zero exit), not a lost table."""
    try:
        return importlib.import_module(f"benchmarks.cpu.{SECTIONS[name]}").rows(opts)
    except Exception as err:  # noqa: BLE001 - reported in the table and by the exit status
        traceback.print_exc()
        return [Row(name, f"{name}: failed", None, detail=f"ERROR {type(err).__name__}: {err}"[:300],
                    extra={"error": True})]


def main(argv=None) -> list[Row]:
    p = arg_parser(__doc__.splitlines()[0], "perf.json")
    p.add_argument("--only", nargs="+", choices=list(SECTIONS), default=list(SECTIONS), help="sections to run")
    args = p.parse_args(argv)
    opts = opts_from(args)
    info, rows = machine(opts.threads), []
    for name in args.only:
        opts_from(args)  # each section starts from the asked thread count
        rows += section_rows(name, opts)
        print(f"[{name} done]", file=sys.stderr, flush=True)
    info["load_avg_end"] = list(os.getloadavg())
    print_table(rows, info, opts.quick)
    write_json(args.out, rows, info, opts)
    print(f"written {args.out}")
    if any(r.extra.get("error") for r in rows):
        sys.exit(1)
    return rows


if __name__ == "__main__":
    main()
