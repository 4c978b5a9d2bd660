"""The DDIM paper's qualitative claims, checked as comparisons with intervals.

Each claim is a difference Δ whose expected sign says the claim holds; its interval comes from
:mod:`ddim_bench.scoring.uncertainty`.  FID comparisons are *paired* within a seed block (cells of one block
start sample i from the same x_T, so sample i of both is paired): each cell is scored on the same disjoint subsets
(its record keeps its metrics' values on them), Δ on each subset is paired, and the blocks that have both cells
are combined (:func:`combine_se`).  Verdicts: "holds" when the whole interval is on
the expected side of 0, "reversed" when it is wholly on the other side, else "not significant".

Claims (S_min / S_max: the smallest / largest S of the grid):

1. η = 0 beats η = 1 at S_min:                     Δ = FID(η=0) − FID(η=1)                     < 0
2. at η = 0, FID falls from S_min to S_max:         Δ = FID(S_max) − FID(S_min)                 < 0
3. σ̂ is the worst row at S_min:                    Δ = FID(other row) − FID(σ̂), every other row < 0
4. σ̂ is the best row at S = 1000 (if in the grid): Δ = FID(σ̂) − FID(other row), every other row < 0
5. reconstruction error falls with S:               Δ = mean MSE(S_max) − mean MSE(S_min)        < 0
6. η = 0 is consistent across S:                    Δ = mean_k [MSE(x_k, y_k) − mean_{l≠k} MSE(x_k, y_l)] < 0
   with x_k / y_k the kept image k (from x_T of index k) at S_min / S_max, MSE per dimension on [0, 1]

For 3 and 4 the row reports the weakest of the comparisons (the largest upper bound).  Claim 5 resamples images
(the same images at each S, so paired); claim 6 resamples images within each seed block and combines blocks.
Only DDIM cells are used (``sampler`` absent or "ddim"), and η rows without x̂0 clipping.  A claim whose cells
(or images) are missing is left out; one whose cells are there but share no seed block with stored subset values
or features is a row "not checked" (:func:`not_checked`).  The user's claims (:mod:`.user_claims`) and the samplers'
comparisons (:mod:`.samplers`) use the same paired difference, :func:`paired_delta`.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping

import torch

from ddim_bench.results.record import stored_subsets
from ddim_bench.scoring.subsets import combine_se, paired_from_values, paired_subset_difference, power
from ddim_bench.scoring.uncertainty import Interval, combine_blocks, percentile_interval, resample_indices, verdict

__all__ = ["evaluate_claims", "claims_markdown", "paired_delta", "options"]


def _getter(source) -> Callable:
    if source is None:
        return lambda key: None
    if isinstance(source, Mapping):
        return source.get
    if callable(source):
        return source
    raise ValueError(f"expected a mapping or a callable key -> value, got {type(source).__name__}")


def _row(rec: dict):
    """("hat",) for σ̂, ("eta", η) for an η row without clipping, None for anything else."""
    if rec.get("sampler", "ddim") != "ddim":
        return None
    if rec["variance"] == "hat":
        return ("hat",)
    return None if rec.get("clip_x0", False) else ("eta", float(rec["eta"]))


def _name(row) -> str:
    return "σ̂" if row[0] == "hat" else f"η={row[1]:g}"


class _Grid:
    """Records of one skip indexed by (row, S, seed)."""

    def __init__(self, records: list[dict]):
        self.cells: dict = {}
        for r in records:
            row = _row(r)
            if row is not None:
                self.cells.setdefault((row, int(r["steps"]), int(r["seed"])), r)
        self.steps = sorted({s for _, s, _ in self.cells})
        self.rows = sorted({row for row, _, _ in self.cells}, key=lambda r: (r[0] == "hat", r[1:]))

    def seeds(self, row, steps) -> list[int]:
        return sorted(seed for rw, s, seed in self.cells if rw == row and s == steps)


def paired_delta(recs_a: Mapping[int, dict], recs_b: Mapping[int, dict], metric: str, features, ref, layers,
                 opts) -> tuple[Interval, int] | None:
    """metric(a) − metric(b), paired on sample indices within each seed block (the same disjoint subsets for both
    cells, :func:`paired_block`), over the blocks where both cells have what it needs, combined
    (:func:`combine_se`); None when no block has.  ``recs_a``/``recs_b``: seed → record of each cell;
    ``opts``: :func:`options`."""
    blocks = [b for seed in sorted(set(recs_a) & set(recs_b))
              if (b := paired_block(recs_a[seed], recs_b[seed], metric, features, ref, layers, opts)) is not None]
    if not blocks:
        return None
    return combine_se(blocks, opts["level"]), len(blocks)


def paired_block(rec_a: dict, rec_b: dict, metric: str, features, ref, layers, opts) -> tuple | None:
    """(Δ, SE, df) of one seed block, on the subsets ``subset_indices(N, opts partitions, 3, opts seed)``: from
    the metric's values on those subsets stored in both records (no features read), else from the per-sample
    features (the same numbers: ``subsets.paired_from_values``); a pair of records whose stored subsets are of
    another partition than the report's and that have no features uses their own partition.  None when the
    records hold neither (records from before ``subsets``, with ``metrics.keep_features=false``)."""
    sa, sb = stored_subsets(rec_a, metric), stored_subsets(rec_b, metric)
    same = sa is not None and sb is not None and sa[0] == sb[0]
    if same and sa[0][1:] == (opts["partitions"], opts["seed"]):
        iv = paired_from_values(sa[1], sb[1], opts["partitions"], opts["level"], metric)
    else:
        fa = features(rec_a["key"])
        fb = features(rec_b["key"]) if fa is not None else None
        if fb is not None:
            iv = paired_subset_difference(fa, fb, ref, metric, layers=layers, partitions=opts["partitions"],
                                          level=opts["level"], seed=opts["seed"], device=opts["device"])
        elif same:
            iv = paired_from_values(sa[1], sb[1], sa[0][1], opts["level"], metric)
        else:
            return None
    return iv.value, iv.se, iv.df


def options(replicates: int = 200, level: float = 0.95, seed: int = 0, device="cpu", centered: bool = True,
            partitions: int = 16) -> dict:
    """The interval settings every comparison uses (``replicates``/``centered``: the bootstrap of means)."""
    return {"replicates": int(replicates), "level": float(level), "seed": int(seed), "device": device,
            "centered": bool(centered), "partitions": int(partitions)}


def power_fields(iv: Interval, blocks: int, n: int | None) -> dict:
    """The smallest difference the comparison could detect (80 % power at its level) and, when it is not
    significant, about how many blocks (or samples per block) would settle it at the observed Δ."""
    se = iv.se if iv.se is not None else (float(iv.draws.std()) if iv.draws is not None else None)
    if se is None:
        return {"se": None, "detectable": None, "blocks_needed": None, "n_needed": None}
    p = power(iv.value, se, blocks, int(n or 0), iv.level)
    settled = verdict(iv.lo, iv.hi, "negative") != "not significant"
    return {"se": se, "detectable": p["detectable"], "blocks_needed": None if settled else p["blocks_needed"],
            "n_needed": None if settled or not n else p["n_needed"]}


def _fid_delta(grid, cell_a, cell_b, features, ref, layers, opts) -> tuple[Interval, int] | None:
    """Paired FID(a) − FID(b) of two (row, S) cells of ``grid``."""
    def recs(cell):
        return {seed: grid.cells[(*cell, seed)] for seed in grid.seeds(*cell)}
    return paired_delta(recs(cell_a), recs(cell_b), "fid", features, ref, layers, opts)


def _out(claim: str, comparison: str, iv: Interval, blocks: int, expect: str = "negative", n=None) -> dict:
    return {"claim": claim, "comparison": comparison, "delta": iv.value, "lo": iv.lo, "hi": iv.hi,
            "level": iv.level, "blocks": blocks, "verdict": verdict(iv.lo, iv.hi, expect),
            **power_fields(iv, blocks, n)}


NOT_CHECKED = "not checked"


def not_checked(claim: str, comparison: str, level: float, seeds_a, seeds_b, **extra) -> dict:
    """The row of a comparison whose two cells both have records that cannot be paired, with why: they share no
    seed block, or no common block has subset values or features in both records (records from before subset
    values were stored, without features).  Shown, never silently left out."""
    common = set(seeds_a) & set(seeds_b)
    why = ("no common seed block has both cells' subset values or features (old records: delete them and rerun)"
           if common else f"the cells share no seed block (seeds {_seeds(seeds_a)} and {_seeds(seeds_b)}): run both "
                          f"on the same seeds")
    return {"claim": claim, "comparison": comparison, **extra, "delta": None, "lo": None, "hi": None,
            "level": level, "blocks": 0, "verdict": f"{NOT_CHECKED}: {why}", "se": None, "detectable": None,
            "blocks_needed": None, "n_needed": None}


def _seeds(seeds) -> str:
    return ", ".join(str(s) for s in sorted(seeds))


def _weakest(results: list[tuple[str, Interval, int]]):
    """The comparison with the largest upper bound (the closest to failing a '< 0' claim)."""
    return max(results, key=lambda t: t[1].hi)


def _fid_claims(grid: _Grid, features, ref, layers, opts, tag: str) -> list[dict]:
    rows = []
    if not grid.steps:
        return rows
    s_min, s_max = grid.steps[0], grid.steps[-1]
    eta0, eta1, hat = ("eta", 0.0), ("eta", 1.0), ("hat",)
    n = next(iter(grid.cells.values())).get("n_samples")

    def one(claim, comparison, a, b):
        r = _fid_delta(grid, a, b, features, ref, layers, opts)
        if r:
            rows.append(_out(claim, comparison, *r, n=n))
        elif grid.seeds(*a) and grid.seeds(*b):
            rows.append(not_checked(claim, comparison, opts["level"], grid.seeds(*a), grid.seeds(*b)))

    one("η = 0 beats η = 1 at the fewest steps", f"FID(η=0) − FID(η=1) at S={s_min}{tag}", (eta0, s_min),
        (eta1, s_min))
    if s_max != s_min:
        one("at η = 0, FID falls from the fewest to the most steps", f"FID(S={s_max}) − FID(S={s_min}) at η=0{tag}",
            (eta0, s_max), (eta0, s_min))
    for steps, claim, worst in ((s_min, "σ̂ is the worst row at the fewest steps", True),
                                (1000, "σ̂ is the best row at S = 1000", False)):
        if steps not in grid.steps:
            continue
        results, unpaired = [], []
        for other in [row for row in grid.rows if row != hat]:
            a, b = ((other, steps), (hat, steps)) if worst else ((hat, steps), (other, steps))
            text = f"FID({_name(a[0])}) − FID({_name(b[0])}) at S={steps}"
            r = _fid_delta(grid, a, b, features, ref, layers, opts)
            if r:
                results.append((text, *r))
            elif grid.seeds(*a) and grid.seeds(*b):
                unpaired.append((text, grid.seeds(*a), grid.seeds(*b)))
        if unpaired:  # the weakest of the comparisons is unknown while one of them cannot be made
            text, seeds_a, seeds_b = unpaired[0]
            rows.append(not_checked(claim, f"{text}{tag}", opts["level"], seeds_a, seeds_b))
        elif results:
            text, iv, blocks = _weakest(results)
            rows.append(_out(claim, f"{text}{tag} (weakest of {len(results)})", iv, blocks, n=n))
    return rows


def _reconstruction_claim(mse: Mapping, opts) -> list[dict]:
    steps = sorted(int(s) for s in mse)
    if len(steps) < 2:
        return []
    lo_s, hi_s = steps[0], steps[-1]
    a = torch.as_tensor(mse[hi_s], dtype=torch.float64).reshape(-1)
    b = torch.as_tensor(mse[lo_s], dtype=torch.float64).reshape(-1)
    if a.numel() != b.numel() or a.numel() < 2:
        raise ValueError(f"reconstruction MSEs must cover the same >= 2 images at each S, got {b.numel()} "
                         f"at S={lo_s} and {a.numel()} at S={hi_s}")
    idx = resample_indices(a.numel(), opts["replicates"], opts["seed"])
    d = a - b
    iv = percentile_interval(float(d.mean()), d[idx].mean(1), opts["level"], opts["centered"])
    return [_out("reconstruction error falls with S",
                 f"mean MSE(S={hi_s}) − mean MSE(S={lo_s}), paired over {a.numel()} images", iv, 1)]


def _consistency_terms(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per image k: MSE(x_k, y_k) − mean_{l≠k} MSE(x_k, y_l), images as uint8 [K, ...] mapped to [0, 1]."""
    a = x.reshape(len(x), -1).double() / 255
    b = y.reshape(len(y), -1).double() / 255
    mse = torch.cdist(a, b).square() / a.shape[1]                     # [K, K] per-dimension MSE
    k = len(a)
    same = mse.diagonal()
    return same - (mse.sum(1) - same) / (k - 1)


def _consistency_claim(grid: _Grid, kept, opts, tag: str) -> list[dict]:
    if len(grid.steps) < 2:
        return []
    s_min, s_max, eta0 = grid.steps[0], grid.steps[-1], ("eta", 0.0)
    blocks = []
    for i, seed in enumerate(sorted(set(grid.seeds(eta0, s_min)) & set(grid.seeds(eta0, s_max)))):
        x = kept(grid.cells[(eta0, s_min, seed)]["key"])
        y = kept(grid.cells[(eta0, s_max, seed)]["key"])
        if x is None or y is None or len(x) < 2:
            continue
        if x.shape != y.shape:
            raise ValueError(f"kept images of seed {seed} differ in shape: {tuple(x.shape)} vs {tuple(y.shape)}")
        d = _consistency_terms(x, y)
        idx = resample_indices(len(d), opts["replicates"], opts["seed"] + i)
        blocks.append((float(d.mean()), d[idx].mean(1)))
    if not blocks:
        return []
    iv = combine_blocks(blocks, opts["level"], opts["centered"])
    return [_out("η = 0 samples are consistent across S",
                 f"MSE(S={s_min}, same x_T at S={s_max}) − MSE(other x_T at S={s_max}) at η=0{tag}",
                 iv, len(blocks))]


def evaluate_claims(records: list[dict], features, ref: dict, *, layers: dict[str, str],
                    reconstruction: Mapping | None = None, kept=None, replicates: int = 200,
                    level: float = 0.95, seed: int = 0, device="cpu", centered: bool = True,
                    partitions: int = 16) -> list[dict]:
    """Rows {claim, comparison, delta, lo, hi, level, blocks, verdict} for the claims the inputs allow.

    ``records``: cell records (steps, eta, variance, skip, seed, key; ``sampler``/``clip_x0`` optional);
    ``features``: key → featuresdict (per-sample features, one sample order per seed block) or None, read only
    for records without the comparison's stored subset values (:func:`paired_block`);
    ``ref``: the reference featuresdict (read with the features); ``layers``: metric → layer (``Scorer.layers``; FID's is used);
    ``reconstruction``: {S: per-image MSEs [n]} (the same n images at each S);
    ``kept``: key → uint8 images [K, 3, H, W] (image k of every cell of a block from the same x_T), or None.
    ``features``/``kept`` may be mappings.  With several skips in the records, FID and consistency claims are
    made per skip.
    """
    opts = options(replicates, level, seed, device, centered, partitions)
    features, kept = _getter(features), _getter(kept)
    skips = sorted({str(r["skip"]) for r in records})
    rows = []
    for skip in skips:
        grid = _Grid([r for r in records if str(r["skip"]) == skip])
        tag = f", skip {skip}" if len(skips) > 1 else ""
        rows += _fid_claims(grid, features, ref, layers, opts, tag)
    if reconstruction:
        rows += _reconstruction_claim(reconstruction, opts)
    for skip in skips:
        grid = _Grid([r for r in records if str(r["skip"]) == skip])
        rows += _consistency_claim(grid, kept, opts, f", skip {skip}" if len(skips) > 1 else "")
    return rows


def claims_markdown(rows: list[dict]) -> str:
    """A Markdown table of :func:`evaluate_claims` rows (a one-line note when there are none)."""
    if not rows:
        return "No claim of the paper could be checked: the cells it needs are missing.\n"
    lines = ["| Claim | Comparison | Δ | Interval | Blocks | Verdict | Detectable | To settle |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['claim']} | {r['comparison']} | {_num(r['delta'], '.4g')} | {interval_text(r)} | "
                     f"{r['blocks']} | {r['verdict']} | {_num(r.get('detectable'))} | {to_settle(r)} |")
    return "\n".join(lines) + "\n" + POWER_NOTE


POWER_NOTE = ("\nDetectable: the smallest |Δ| this comparison finds 80 % of the time at its level (2.8 SE at 95 %). "
              "To settle: for a comparison that is not significant, about how many seed blocks (or samples per "
              "block) would find the observed Δ 80 % of the time.\n")


def _num(v, spec: str = ".3g") -> str:
    return "" if v is None else format(v, spec)


def interval_text(r: dict, level: bool = True) -> str:
    """"[lo, hi] (95 %)", or "" for a row that was not checked."""
    if r["lo"] is None:
        return ""
    return f"[{r['lo']:.4g}, {r['hi']:.4g}]" + (f" ({r['level']:.0%})" if level else "")


def to_settle(r: dict) -> str:
    """"≈ B blocks or N samples" for a not-significant row (blank for a settled or old one)."""
    if r.get("blocks_needed") is None:
        return ""
    return f"≈ {r['blocks_needed']} blocks" + (f" or {r['n_needed']} samples" if r.get("n_needed") else "")
