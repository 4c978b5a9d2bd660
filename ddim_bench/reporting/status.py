"""What each sweep expects and where it stands: every sweep run writes the records its grid expects to
``<results>/sweeps/<sweep name>/<hash>.json`` (one file per distinct grid: multirun jobs and array tasks each add
theirs, atomically, never editing another's); the report lists the expected records that are missing, and the
status view shows per sweep how many are done, in progress (holder, age of its last renewal) and missing."""
from __future__ import annotations

import json
import os

from ddim_bench.results import accounting
from ddim_bench.results.record import cell_key
from ddim_bench.io import write_json

SWEEPS_DIR = "sweeps"


def write_expected(root: str, sweep: str, labels: dict) -> str:
    """Record that sweep ``sweep`` expects these records (key → label)."""
    path = os.path.join(root, SWEEPS_DIR, sweep, f"{cell_key(sorted(labels))}.json")
    if not os.path.isfile(path):
        write_json(path, {"sweep": sweep, "records": labels})
    return path


def expected(root: str) -> dict[str, dict]:
    """{sweep name: {key: label}} over every grid each sweep has run; unreadable files are skipped."""
    out: dict[str, dict] = {}
    folder = os.path.join(root, SWEEPS_DIR)
    for sweep in sorted(os.listdir(folder)) if os.path.isdir(folder) else []:
        for name in sorted(os.listdir(os.path.join(folder, sweep))):
            try:
                with open(os.path.join(folder, sweep, name)) as f:
                    out.setdefault(sweep, {}).update(json.load(f)["records"])
            except (OSError, ValueError, KeyError, TypeError):
                continue
    return out


def states(results) -> dict[str, list[tuple]]:
    """{sweep: [(label, key, state, holder)]} in the order the sweeps expect their records."""
    return {sweep: [(label, key, *accounting.state(results, key)) for key, label in labels.items()]
            for sweep, labels in expected(results.root).items()}


def status_lines(by_sweep: dict[str, list[tuple]], list_missing: bool = True) -> list[str]:
    """Per sweep: ``sweep x: 12 expected: 10 done, 1 in progress (node3 pid 4242, renewed 12 s ago), 1 missing``,
    then one line per missing record."""
    lines = []
    for sweep, rows in by_sweep.items():
        count = {s: [r for r in rows if r[2] == s] for s in (accounting.DONE, accounting.HELD, accounting.MISSING)}
        held = count[accounting.HELD]
        who = f" ({'; '.join(accounting.holder_text(r[3]) for r in held[:3])}{'; …' * (len(held) > 3)})" if held else ""
        lines.append(f"sweep {sweep}: {len(rows)} expected: {len(count[accounting.DONE])} done, {len(held)} in "
                     f"progress{who}, {len(count[accounting.MISSING])} missing")
        if list_missing:
            lines += [f"  missing: {label} ({key})" for label, key, _, _ in count[accounting.MISSING]]
    return lines


def missing_rows(by_sweep: dict[str, list[tuple]]) -> list[list]:
    """Rows of ``missing.csv``: sweep, record, key, state, holder — the records expected and not done."""
    return [[sweep, label, key, st, accounting.holder_text(h) if st == accounting.HELD else ""]
            for sweep, rows in by_sweep.items() for label, key, st, h in rows if st != accounting.DONE]
