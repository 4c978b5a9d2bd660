"""What our own feature extractors share: torch-fidelity's extractor interface over a dict of named features.

A subclass declares ``FEATURES`` (the names it provides, torch-fidelity's ``get_provided_features_list``) and
``LAYERS`` (metric → the feature that metric uses), and implements ``features(x)``: uint8 images [B, 3, H, W] →
{name: float32 [B, d]}.  The uint8 check, the selection of the requested features and the registration live here.
"""
from __future__ import annotations

import torch
from torch_fidelity.feature_extractor_base import FeatureExtractorBase
from torch_fidelity.registry import FEATURE_EXTRACTORS_REGISTRY, register_feature_extractor

from ddim_bench.errors import UserError


class NamedFeatures(FeatureExtractorBase):
    FEATURES: tuple[str, ...] = ()
    LAYERS: dict[str, str] = {}
    DUMMY_SIZE = 8  # the side of the dummy input torch-fidelity may ask for

    def features(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def forward(self, x):
        """uint8 [B, 3, H, W] → tuple of the requested features, in ``features_list`` order (float32)."""
        if not (torch.is_tensor(x) and x.dtype == torch.uint8 and x.dim() == 4 and x.shape[1] == 3):
            raise ValueError(f"expected uint8 images [B, 3, H, W], got {getattr(x, 'dtype', type(x))} "
                             f"{tuple(getattr(x, 'shape', ()))}")
        out = self.features(x)
        return tuple(out[k] for k in self.features_list)

    @classmethod
    def get_provided_features_list(cls):
        return tuple(cls.FEATURES)

    @classmethod
    def get_default_feature_layer_for_metric(cls, metric):
        if metric not in cls.LAYERS:
            raise UserError(f"this feature extractor has no layer for metric {metric}; set metrics.{metric}: false")
        return cls.LAYERS[metric]

    @staticmethod
    def can_be_compiled():
        return False

    @classmethod
    def get_dummy_input_for_compile(cls):
        return torch.zeros(1, 3, cls.DUMMY_SIZE, cls.DUMMY_SIZE, dtype=torch.uint8)


def register(name: str, cls: type) -> None:
    """Into torch-fidelity's registry, once (a module imported again registers nothing new)."""
    if name not in FEATURE_EXTRACTORS_REGISTRY:
        register_feature_extractor(name, cls)
