"""One metric table: every metric a record holds, declared once.

Read by the scorer (which families to compute), the intervals (keys and supports), the record's columns, the
aggregation over seed blocks, the claims and W&B.  A metric's value is stored under ``key``; its interval under
``<short>_lo`` / ``<short>_hi`` and its standard error under ``<short>_se``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

INF = math.inf


@dataclass(frozen=True)
class Metric:
    key: str                  # the record's key of the value
    family: str               # the ``metrics.<family>`` switch and torch-fidelity's flag: fid, kid, isc, prc
    short: str                # the prefix of its interval's keys
    label: str                # how tables and figures name it
    higher_is_better: bool
    support: tuple[float, float]  # the values its estimator can take (an interval is kept inside)
    derived: bool = False     # computed from another metric's subsets (FD∞), not by torch-fidelity

    @property
    def lo(self) -> str:
        return f"{self.short}_lo"

    @property
    def hi(self) -> str:
        return f"{self.short}_hi"

    @property
    def se(self) -> str:
        return f"{self.short}_se"


# FID is a squared distance (>= 0); IS is exp of a mean KL (>= 1); precision and recall are fractions; KID's
# estimator is unbiased and can be negative.  FD∞ (Chong & Forsyth 2020) is FID extrapolated to infinitely many
# samples, from the FID family's subsets.
METRICS = (
    Metric("fid", "fid", "fid", "FID", False, (0.0, INF)),
    Metric("fid_inf", "fid", "fid_inf", "FD∞", False, (0.0, INF), derived=True),
    Metric("is_mean", "isc", "is", "IS", True, (1.0, INF)),
    Metric("kid_mean", "kid", "kid", "KID", False, (-INF, INF)),
    Metric("precision", "prc", "precision", "precision", True, (0.0, 1.0)),
    Metric("recall", "prc", "recall", "recall", True, (0.0, 1.0)),
)
BY_KEY = {m.key: m for m in METRICS}
BY_SHORT = {m.short: m for m in METRICS}
FAMILIES = ("fid", "kid", "isc", "prc")  # in the order they are scored
# family → the keys torch-fidelity's formulas give it (FD∞ comes with FID's intervals)
FAMILY_KEYS = {f: tuple(m.key for m in METRICS if m.family == f and not m.derived) for f in FAMILIES}
FAMILY = {m.key: m.family for m in METRICS if not m.derived}
SUPPORT = {m.key: m.support for m in METRICS}
COMPARABLE = tuple(FAMILY)  # the metrics a claim may compare (``claims[].metric``)


def record_columns(se: bool = False) -> list[str]:
    """Every metric's value and interval ends (and SE), in table order: the record's metric columns."""
    return [c for m in METRICS for c in (m.key, m.lo, m.hi, *((m.se,) if se else ()))]
