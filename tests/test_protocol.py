"""Departures from the paper's protocol, on crafted settings."""
import pytest
import torch_fidelity

from ddim_bench.scoring.protocol import departures, protocol_line

PAPER = {"n_samples": 50000, "weights": "ema", "dataset": "cifar10", "reference_split": "train", "skip": "quad",
         "table1": True, "extractor": "inception-v3-compat", "torch_fidelity": torch_fidelity.__version__,
         "seed_blocks": 3}


def test_the_papers_protocol_has_no_departure():
    assert departures(PAPER) == []
    assert protocol_line([]) == "matches the paper's protocol"


def test_digits_sweep():
    got = departures({**PAPER, "n_samples": 2000, "weights": "raw", "dataset": "digits", "reference_split": "test",
                      "skip": "uniform", "table1": False, "extractor": "digits-cnn", "seed_blocks": 1})
    assert got == [
        "2,000 samples per cell instead of 50,000: FID is biased upward at smaller N, so it is not comparable "
        "to the paper's",
        "raw weights instead of the EMA weights the paper samples from",
        "features from digits-cnn, not Inception-v3 (inception-v3-compat): the scores are on another scale",
        "1 seed block, fewer than 3: too few for a spread across seeds",
    ]


def test_cifar10_table1_sweep_with_other_split_skip_and_version():
    got = departures({**PAPER, "reference_split": "test", "skip": "uniform", "torch_fidelity": "0.3.0",
                      "seed_blocks": 2})
    assert got == [
        "CIFAR-10 reference is the test split, not the training set the paper uses",
        "uniform skip for rows compared to Table 1, where the paper's cifar10 rows use the quad skip",
        "torch-fidelity 0.3.0 installed, not the pinned 0.4.0",
        "2 seed blocks, fewer than 3: too few for a spread across seeds",
    ]
    assert protocol_line(got[:2]) == ("departs from the paper's protocol: " + got[0] + "; " + got[1])


def test_skip_only_matters_for_rows_compared_to_table1():
    assert departures({**PAPER, "skip": "uniform", "table1": False}) == []


def test_bad_settings_raise_value_error():
    with pytest.raises(ValueError, match="lacks seed_blocks"):
        departures({k: v for k, v in PAPER.items() if k != "seed_blocks"})
    with pytest.raises(ValueError, match="weights"):
        departures({**PAPER, "weights": "swa"})
