"""A stand-in for torch-fidelity's InceptionV3 (``metrics=stand_in``): for measuring the harness, never for results.

The Inception interface — uint8 images [B, 3, H, W] in, features ``"2048"`` (FID/KID/prc) and
``"logits_unbiased"`` (1008 classes, IS) out, float32 — from a fixed random projection of the image average-pooled
to 8×8 (weights seeded, written once under ``paths.cache_dir`` so that records name them by content hash like any
extractor's).  It costs about 2 MFLOP an image instead of Inception's 5.7 GFLOP.
"""
from __future__ import annotations

import os

import torch
import torch.nn.functional as F
from torch_fidelity.utils_torch import torch_atomic_save

from ddim_bench.scoring.extractors.base import NamedFeatures, register

NAME = "stand-in-2048"
POOL, WIDTH, CLASSES, SEED = 8, 2048, 1008, 0


def ensure_weights(cache_dir: str) -> str:
    """The stand-in's weights file (made from ``SEED`` on first use)."""
    path = os.path.join(cache_dir, "stand_in", f"{NAME}-seed{SEED}.pt")
    if not os.path.isfile(path):
        g = torch.Generator().manual_seed(SEED)
        fan_in = 3 * POOL * POOL
        state = {"proj": torch.randn(fan_in, WIDTH, generator=g) / fan_in ** 0.5,
                 "logits": torch.randn(WIDTH, CLASSES, generator=g) / WIDTH ** 0.5}
        os.makedirs(os.path.dirname(path), exist_ok=True)
        torch_atomic_save(state, path)
    return path


class FeatureExtractorStandIn(NamedFeatures):
    FEATURES = ("2048", "logits_unbiased")
    LAYERS = {"isc": "logits_unbiased", "fid": "2048", "kid": "2048", "prc": "2048"}

    def __init__(self, name, features_list, feature_extractor_weights_path=None, **kwargs):
        super().__init__(name, features_list)
        state = torch.load(feature_extractor_weights_path, map_location="cpu", weights_only=True)
        self.register_buffer("proj", state["proj"])
        self.register_buffer("logits", state["logits"])
        self.eval()

    def features(self, x):
        pooled = F.adaptive_avg_pool2d(x.float() / 255, POOL).flatten(1)
        feats = torch.relu(pooled @ self.proj)
        return {"2048": feats, "logits_unbiased": feats @ self.logits}


register(NAME, FeatureExtractorStandIn)
