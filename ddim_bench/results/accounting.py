"""Where every record a sweep expects stands: done, in progress (who holds its claim, how long since it was
renewed) or missing — for the sweep's last line and exit status, and for the report's status view."""
from __future__ import annotations

from dataclasses import dataclass, field

DONE, HELD, MISSING = "done", "in progress", "missing"


def state(results, key: str) -> tuple[str, dict | None]:
    """``(DONE | HELD | MISSING, holder)`` of one record; a claim whose lease ran out counts as missing."""
    if results.has(key):
        return DONE, None
    holder = results.holder(key)
    if holder is not None and holder["stale"] is None:
        return HELD, holder
    return MISSING, holder


def holder_text(h: dict) -> str:
    return f"{h['host']} pid {h['pid']}, renewed {h['age_s']:.0f} s ago"


def overdue(h: dict | None) -> bool:
    """The holder missed three heartbeats in a row (it renews every tenth of its lease): likely dead."""
    return h is not None and h["age_s"] > 0.3 * float(h.get("lease_s") or 0)


@dataclass
class Tally:
    """One sweep run's accounting: ``keys`` (each expected record's key → its label), ``before`` (keys done when
    it started), ``computed`` (its own records), ``failed`` (key → why its record was not written), and at the end
    the state of every expected key."""
    keys: dict
    before: set
    computed: list = field(default_factory=list)
    failed: dict = field(default_factory=dict)
    final: dict = field(default_factory=dict)   # key -> (state, holder)

    def settle(self, results) -> None:
        self.final = {k: state(results, k) for k in self.keys}

    @property
    def missing(self) -> list:
        return [k for k, (s, _) in self.final.items() if s == MISSING]

    def line(self, name: str) -> str:
        mine = {r["key"] for r in self.computed}
        others = sum(1 for k, (s, _) in self.final.items() if s == DONE and k not in mine and k not in self.before)
        held = [h for s, h in self.final.values() if s == HELD]
        held_txt = f" ({'; '.join(holder_text(h) for h in held[:3])}{'; …' * (len(held) > 3)})" if held else ""
        return (f"sweep {name}: {len(self.keys)} records: {len(self.before)} done before, {len(mine)} computed now, "
                f"{others} by other processes, {len(held)} held by live processes{held_txt}, "
                f"{len(self.failed)} failed, {len(self.missing)} missing")
