"""``make perf``: every benchmark, one combined table, one JSON (written atomically).

Sections: sampler overhead (benchmarks/sampler_overhead.py, where it exists), diffusers loop, training step,
evaluation share, growth, scoring memory at N = 50 000 (fid_memory).  Each figure is a ratio of two things timed side by side in one run
(see benchmarks/timing.py).
"""
from __future__ import annotations

import importlib
import os
import sys
import traceback
from pathlib import Path

if __package__ in (None, ""):  # run as a file (python benchmarks/run_all.py): make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import Opts, Row, arg_parser, machine, opts_from, print_table, skip_row, write_json  # noqa: E402

SECTIONS = {"sampler": "sampler_overhead", "diffusers": "diffusers_loop", "training": "training_step",
            "evaluation": "evaluation_share", "growth": "growth", "fid_memory": "fid_memory"}


def sampler_rows(opts: Opts) -> list[Row]:
    """Figures 1a/1b come from benchmarks/sampler_overhead.py, which has its own owner: used where it exists."""
    label = "sampler overhead (eta=0 / eta=1 vs the bare network)"
    if not (Path(__file__).resolve().parent / "sampler_overhead.py").is_file():
        return [skip_row("1", label, "benchmarks/sampler_overhead.py does not exist yet")]
    try:
        mod = importlib.import_module("benchmarks.sampler_overhead")
    except Exception as err:  # noqa: BLE001 - another module's failure must not stop the other sections
        return [skip_row("1", label, f"benchmarks/sampler_overhead.py does not import: {err!r}"[:300])]
    if hasattr(mod, "rows"):
        return list(mod.rows(opts))
    if hasattr(mod, "main"):
        quick = "--quick" in Path(mod.__file__).read_text()
        if opts.quick and not quick:
            return [skip_row("1", label, "not in --quick: benchmarks/sampler_overhead.py has no --quick; run it alone "
                                         "(python benchmarks/sampler_overhead.py) or without --quick")]
        quick = opts.quick and quick
        print(f"[sampler] benchmarks/sampler_overhead.py has no rows(opts): its own table follows "
              f"({'--quick' if quick else 'its default sizes'})", flush=True)
        try:
            mod.main(["--quick"] if quick else [])
        except (Exception, SystemExit) as err:  # noqa: BLE001 - its failure is its row, not the end of the run
            return [Row("1", label, None, detail=f"ERROR benchmarks/sampler_overhead.py: {err!r}"[:300],
                        extra={"error": True})]
        return [skip_row("1", label, "printed above by benchmarks/sampler_overhead.py (no rows(opts) to combine)")]
    return [skip_row("1", label, "benchmarks/sampler_overhead.py has neither rows(opts) nor main()")]


def section_rows(name: str, opts: Opts) -> list[Row]:
    """One section's rows; a section that raises becomes one ERROR row (and a non-zero exit), not a lost table."""
    if name == "sampler":
        return sampler_rows(opts)
    try:
        return importlib.import_module(f"benchmarks.{SECTIONS[name]}").rows(opts)
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
