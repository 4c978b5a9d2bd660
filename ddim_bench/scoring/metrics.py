"""FID / IS / KID from torch-fidelity, computed from feature dicts so that many processes can share the work.

Each process turns its samples into features with :meth:`Scorer.features`; the features are merged with
:func:`concat_features` and scored against a reference computed once and cached on disk
(:meth:`Scorer.reference`).  :func:`torchmetrics_fid` gives the same FID as a torchmetrics metric for use
during training.
"""
from __future__ import annotations

import functools
import hashlib
import math
import os
import re
from collections.abc import Mapping

import torch
import torch.nn as nn
from torch.utils.data import DataLoader
from torch_fidelity.metric_isc import isc_featuresdict_to_metric
from torch_fidelity.metric_kid import kid_featuresdict_to_metric
from torch_fidelity.registry import FEATURE_EXTRACTORS_REGISTRY
from torchmetrics.image.fid import FrechetInceptionDistance

from ddim_bench.scoring.extractors.features import (DIGITS, INCEPTION, MissingWeightsError, build_extractor, check_inception_weights,
                                 check_dinov2_weights, classifier_recipe, classifier_settings, extractor_name)
from ddim_bench.errors import UserError
from ddim_bench.scoring.extractors.dinov2 import NAMES as DINOV2_NAMES
from ddim_bench.scoring.extractors.stand_in import NAME as STAND_IN
from ddim_bench.scoring.moments import Moments, fid as fid_of_moments

__all__ = ["Scorer", "MissingWeightsError", "check_extractor", "data_mismatch", "concat_features", "torchmetrics_fid",
           "REFERENCE_COMPUTATIONS"]

# How many reference feature sets were actually computed (not loaded from the cache) in this process.
REFERENCE_COMPUTATIONS = 0


def check_extractor(metrics_cfg, download: bool = False) -> str:
    """Fail early (one-line UserError) when the configured extractor cannot be built; returns its name.

    Checks the weights file (fetching a missing or wrong one when ``download``) or the classifier settings;
    builds no extractor.
    """
    name = extractor_name(metrics_cfg)
    if name == INCEPTION:
        check_inception_weights(metrics_cfg.get("weights_path"), download)
    elif name in DINOV2_NAMES:
        if metrics_cfg.get("isc", True):
            FEATURE_EXTRACTORS_REGISTRY[name].get_default_feature_layer_for_metric("isc")  # the one-line UserError
        check_dinov2_weights(name, metrics_cfg.get("weights_path"), download)
    elif name == STAND_IN:
        pass  # made from its seed on first use
    else:
        classifier_recipe(**classifier_settings(metrics_cfg))
    return name


def data_mismatch(metrics_cfg, data_name: str) -> str | None:
    """A warning when a digit classifier trained on one dataset scores images of another (``metrics=mnist`` on a
    digits checkpoint): its features were never fitted to those images.  None when they match or for other
    extractors."""
    if extractor_name(metrics_cfg) != DIGITS:
        return None
    trained_on = classifier_settings(metrics_cfg).get("dataset", "digits")
    if data_name not in ("digits", "mnist") or trained_on == data_name:
        return None
    return (f"warning: metrics={metrics_cfg.get('extractor')} scores with a classifier trained on {trained_on} "
            f"images, but data={data_name}; use metrics={data_name} for numbers on this data's own features")


def concat_features(parts) -> dict:
    """Merge a list of featuresdicts (batches, or per-process shards) into one, along the sample axis."""
    parts = [p for p in parts if p]
    if not parts:
        return {}
    return {k: torch.cat([p[k] for p in parts], dim=0) for k in parts[0]}


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._=-]+", "_", text)[:80]


def _file_hash(path: str) -> str:
    """Short content hash of a (weights) file."""
    h = hashlib.sha1()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:10]


def typed(metrics_cfg):
    """The ``metrics`` config with the schema's defaults and types (:class:`ddim_bench.schema.Metrics`): the
    scorer keeps no defaults of its own.  Interpolations are resolved first (``${paths.cache_dir}``); keys the
    schema does not know are the apps' validation's to refuse, and are not read here."""
    from dataclasses import fields
    from omegaconf import DictConfig, OmegaConf
    from ddim_bench.schema import Metrics
    if isinstance(metrics_cfg, DictConfig):
        metrics_cfg = OmegaConf.to_container(metrics_cfg, resolve=True)
    known = {f.name for f in fields(Metrics)}
    return OmegaConf.merge(OmegaConf.structured(Metrics), {k: v for k, v in metrics_cfg.items() if k in known})


class Scorer:
    """FID / IS / KID with one torch-fidelity feature extractor chosen by the ``metrics`` config."""

    def __init__(self, metrics_cfg, cache_dir: str, device="cpu"):
        self.cfg = metrics_cfg = typed(metrics_cfg)
        self.cache_dir = str(cache_dir)
        self.device = torch.device(device)
        self.name = extractor_name(metrics_cfg)
        self.enabled = {m: bool(metrics_cfg[m]) for m in ("fid", "isc", "kid")}
        self.prc = bool(metrics_cfg.prc)  # precision/recall: computed with the intervals
        self.batch_size = metrics_cfg.batch_size
        self.kid_subset_size, self.kid_subsets = metrics_cfg.kid_subset_size, metrics_cfg.kid_subsets
        self.isc_splits, self.rng_seed = metrics_cfg.isc_splits, metrics_cfg.rng_seed
        cls = FEATURE_EXTRACTORS_REGISTRY[self.name]
        self.layers = {}
        for m in ("fid", "isc", "kid"):
            try:
                self.layers[m] = cls.get_default_feature_layer_for_metric(m)
            except (KeyError, UserError):  # an extractor may lack a layer (DINOv2: no isc): fine if it is off
                if m == "fid" or self.enabled[m]:
                    raise
        # The FID layer is always extracted: torchmetrics_fid() needs it even when fid is off here.
        wanted = sorted({self.layers[m] for m in self.layers if self.enabled[m]} | {self.layers["fid"]})
        self.extractor, weights = build_extractor(metrics_cfg, self.cache_dir, wanted, self.device)
        # Identifies the extractor *and its weights* (stable across machines): digits-cnn-<settings hash> or
        # inception-v3-compat-<weights content hash>.  Part of every reference cache file name.
        self.extractor_id = (os.path.splitext(os.path.basename(weights))[0] if self.name == DIGITS
                             else f"{self.name}-{_file_hash(weights)}")

    @torch.no_grad()
    def features(self, images: torch.Tensor, dtype=torch.float64, device="cpu") -> dict[str, torch.Tensor]:
        """uint8 images [B, 3, H, W] → featuresdict {layer: [B, d]}, float64 on the CPU by default
        (``dtype=None``: the extractor's own dtype, which float64 holds exactly)."""
        parts = []
        for i in range(0, len(images), self.batch_size):
            out = self.extractor(images[i:i + self.batch_size].to(self.device))
            d = self.extractor.convert_features_tuple_to_dict(out)
            parts.append({k: v.detach().to(device, dtype or v.dtype) for k, v in d.items()})
        return concat_features(parts)

    @functools.cached_property
    def widths(self) -> dict:
        """{layer: (width, dtype)} of the extracted features (one tiny image through the extractor)."""
        out = self.features(torch.zeros(1, 3, 8, 8, dtype=torch.uint8), dtype=None)
        return {k: (int(v.shape[1]), v.dtype) for k, v in out.items()}

    def reference(self, dataset, key: str) -> dict:
        """Featuresdict of a dataset of uint8 [3, H, W] images, computed once per ``key`` and cached on disk.

        ``key`` must name everything about the dataset that changes the images (name, split, resolution…);
        the extractor and its weights are added to the cache file name here.  The cache file is verified when
        loaded (see ``reference_cache``): a damaged one is named, moved aside and computed again.
        """
        from ddim_bench.errors import UserError
        from ddim_bench.results import reference_cache
        if len(dataset) < 2:  # before the cache: an empty reference must never be stored
            raise UserError(f"reference.n={len(dataset)} must be >= 2 (FID/KID need at least two reference "
                            f"images); raise reference.n or use null for the whole split")
        layers = list(self.extractor.get_requested_features_list())
        digest = hashlib.sha1(f"{key}|{self.extractor_id}|{'+'.join(layers)}".encode()).hexdigest()[:16]
        path = os.path.join(self.cache_dir, "references", f"ref-{_slug(key)}-{self.extractor_id}-{digest}.pt")

        def compute():
            global REFERENCE_COMPUTATIONS
            REFERENCE_COMPUTATIONS += 1
            loader = DataLoader(dataset, batch_size=self.batch_size, shuffle=False, num_workers=0)
            return concat_features([self.features(b[0] if isinstance(b, (list, tuple)) else b) for b in loader])

        return reference_cache.load_or_compute(path, layers, compute)

    def score(self, gen_features: dict, ref_features: dict, gen_moments: Moments | None = None,
              ref_moments: Moments | None = None) -> dict:
        """Enabled metrics of generated vs reference features: fid, is_mean/is_std, kid_mean/kid_std (floats).

        FID comes from the float64 moments of the FID layer (:mod:`moments`): given (summed over processes), or
        else taken from the features.  Small sets are fine: KID's subset size and IS's split count shrink to fit;
        a metric that is undefined (fewer than 2 samples) is NaN.
        """
        gen = Float64Features(gen_features)
        ref = Float64Features(ref_features)
        out = {}
        if self.enabled["fid"]:
            layer = self.layers["fid"]
            gen_moments = gen_moments or Moments.of(gen_features[layer])
            ref_moments = ref_moments or Moments.of(ref_features[layer])
            out["fid"] = math.nan if min(gen_moments.n, ref_moments.n) < 2 else fid_of_moments(gen_moments,
                                                                                               ref_moments)
        if self.enabled["isc"]:
            layer = self.layers["isc"]
            n = len(gen[layer])
            if n < 1:
                out["is_mean"] = out["is_std"] = math.nan
            else:
                r = isc_featuresdict_to_metric(gen, layer, isc_splits=min(self.isc_splits, n),
                                               samples_shuffle=True, rng_seed=self.rng_seed, verbose=False)
                out["is_mean"], out["is_std"] = r["inception_score_mean"], r["inception_score_std"]
        if self.enabled["kid"]:
            layer = self.layers["kid"]
            size = min(self.kid_subset_size, len(gen[layer]), len(ref[layer]))
            if size < 2:
                out["kid_mean"] = out["kid_std"] = math.nan
            else:
                r = kid_featuresdict_to_metric(gen, ref, layer, kid_subset_size=size, kid_subsets=self.kid_subsets,
                                               rng_seed=self.rng_seed, verbose=False)
                out["kid_mean"] = r["kernel_inception_distance_mean"]
                out["kid_std"] = r["kernel_inception_distance_std"]
        return {k: float(v) for k, v in out.items()}


class Float64Features(Mapping):
    """A featuresdict whose layers are turned into float64 CPU tensors when first read (only those a metric uses),
    then kept."""

    def __init__(self, features: dict):
        self.source, self.converted = features, {}

    def __getitem__(self, layer):
        if layer not in self.converted:
            self.converted[layer] = self.source[layer].to("cpu", torch.float64)
        return self.converted[layer]

    def __contains__(self, layer):
        return layer in self.source

    def __iter__(self):
        return iter(self.source)

    def __len__(self):
        return len(self.source)


class _FidLayer(nn.Module):
    """The scorer's extractor seen as ``uint8 [B, 3, H, W] → FID features [B, d]`` (float32).

    The extractor is held outside the module tree, so it stays on the scorer's device and in eval mode, and its
    weights do not end up in the state dict (or checkpoints) of whatever module owns the metric.
    """

    def __init__(self, scorer: Scorer):
        super().__init__()
        self._scorer = [scorer]
        self.index = list(scorer.extractor.get_requested_features_list()).index(scorer.layers["fid"])
        self.num_features = int(self(torch.zeros(1, 3, 8, 8, dtype=torch.uint8)).shape[-1])

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scorer = self._scorer[0]
        return scorer.extractor(x.to(scorer.device))[self.index].float().to(x.device)


def torchmetrics_fid(scorer: Scorer, ref_features: dict | None = None) -> FrechetInceptionDistance:
    """A torchmetrics FID on the scorer's extractor and FID layer (``reset_real_features=False``).

    Feed it with ``update(uint8 images, real=...)``.  With ``ref_features`` (from :meth:`Scorer.reference`)
    the real-side statistics are filled in directly, so only generated images need updating.
    """
    fid = FrechetInceptionDistance(feature=_FidLayer(scorer), reset_real_features=False)
    if ref_features is not None:
        f = ref_features[scorer.layers["fid"]].double()
        fid.real_features_sum = f.sum(dim=0).to(fid.real_features_sum.device)
        fid.real_features_cov_sum = (f.t() @ f).to(fid.real_features_cov_sum.device)
        fid.real_features_num_samples = torch.tensor(len(f), device=fid.real_features_num_samples.device)
    return fid
