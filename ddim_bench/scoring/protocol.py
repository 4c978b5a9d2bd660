"""Where a sweep departs from the protocol of the numbers it is compared against (the DDIM paper's Table 1).

The paper's protocol: FID of 50,000 samples from the EMA weights against the CIFAR-10 training set, Inception-v3
features (torch-fidelity's ``inception-v3-compat``), the quadratic timestep skip for CIFAR-10 (uniform for
CelebA).  This harness additionally pins torch-fidelity 0.4.0 and wants at least three seed blocks for a spread.
"""
from __future__ import annotations

from ddim_bench import paper

PAPER_N = 50_000
STANDARD_EXTRACTOR = "inception-v3-compat"
PINNED_TORCH_FIDELITY = "0.4.0"
MIN_SEED_BLOCKS = 3
SETTING_KEYS = ("n_samples", "weights", "dataset", "reference_split", "skip", "table1", "extractor",
                "torch_fidelity", "seed_blocks")


def departures(setting: dict) -> list[str]:
    """Short sentences, one per departure, in a fixed order (empty: the protocol is matched).

    ``setting``: n_samples (per cell), weights ("ema" or "raw"), dataset (e.g. "cifar10", "digits"),
    reference_split, skip ("quad"/"uniform"), table1 (bool: rows are compared to Table 1), extractor (a
    torch-fidelity extractor name), torch_fidelity (the *installed* ``torch_fidelity.__version__``), seed_blocks.
    """
    missing = [k for k in SETTING_KEYS if k not in setting]
    if missing:
        raise ValueError(f"protocol setting lacks {', '.join(missing)}")
    s = setting
    if s["weights"] not in ("ema", "raw"):
        raise ValueError(f"weights must be 'ema' or 'raw', got {s['weights']!r}")
    n, blocks = int(s["n_samples"]), int(s["seed_blocks"])
    out = []
    if n < PAPER_N:
        out.append(f"{n:,} samples per cell instead of {PAPER_N:,}: FID is biased upward at smaller N, "
                   f"so it is not comparable to the paper's")
    if s["weights"] == "raw":
        out.append("raw weights instead of the EMA weights the paper samples from")
    if s["dataset"] == "cifar10" and s["reference_split"] != "train":
        out.append(f"CIFAR-10 reference is the {s['reference_split']} split, not the training set the paper uses")
    paper_skip = paper.TABLE1_SKIP.get(s["dataset"])
    if s["table1"] and paper_skip is not None and s["skip"] != paper_skip:
        out.append(f"{s['skip']} skip for rows compared to Table 1, where the paper's {s['dataset']} rows "
                   f"use the {paper_skip} skip")
    if s["extractor"] != STANDARD_EXTRACTOR:
        out.append(f"features from {s['extractor']}, not Inception-v3 ({STANDARD_EXTRACTOR}): "
                   f"the scores are on another scale")
    if str(s["torch_fidelity"]) != PINNED_TORCH_FIDELITY:
        out.append(f"torch-fidelity {s['torch_fidelity']} installed, not the pinned {PINNED_TORCH_FIDELITY}")
    if blocks < MIN_SEED_BLOCKS:
        out.append(f"{blocks} seed block{'s' if blocks != 1 else ''}, fewer than {MIN_SEED_BLOCKS}: "
                   f"too few for a spread across seeds")
    return out


def protocol_line(departures: list[str]) -> str:
    """One line: "matches the paper's protocol", or "departs from the paper's protocol: a; b; c"."""
    if not departures:
        return "matches the paper's protocol"
    return "departs from the paper's protocol: " + "; ".join(departures)
