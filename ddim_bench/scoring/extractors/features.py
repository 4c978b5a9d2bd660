"""Feature extractors for FID / IS / KID, all going through torch-fidelity's registry.

* ``inception-v3-compat`` — torch-fidelity's own InceptionV3, loaded from a local weights file
  (it cannot be downloaded on every machine, so the path is always given explicitly).
* ``digits-cnn`` — a small CNN digit classifier (``classifier.py``), trained once on CPU on scikit-learn's 8×8
  digits or (``metrics.extractor: mnist`` / ``metrics.classifier.dataset: mnist``) on real MNIST digits, and
  cached on disk under a hash of its settings.  It provides a 64-d penultimate feature (``"64"``, for
  FID/KID) and ``"logits_unbiased"`` (10 classes, for IS).

Both take torch-fidelity's standard input: uint8 images [B, 3, H, W].
"""
from __future__ import annotations

import functools
import os
import pickle

import torch
from torch_fidelity.feature_extractor_base import FeatureExtractorBase
from torch_fidelity.feature_extractor_inceptionv3 import URL_INCEPTION_V3
from torch_fidelity.utils import create_feature_extractor
from torch_fidelity.utils_torch import torch_atomic_save

from ddim_bench.choices import DIGIT_EXTRACTORS, DINOV2_EXTRACTORS
from ddim_bench.downloads import Remote, ensure
from ddim_bench.errors import UserError
from ddim_bench.scoring.extractors import classifier as _classifier
from ddim_bench.scoring.extractors.base import NamedFeatures, register
from ddim_bench.scoring.extractors import dinov2 as _dinov2  # registers dinov2-vit-{s,b,l}-14-local
from ddim_bench.scoring.extractors import stand_in as _stand_in  # registers stand-in-2048 (benchmarks only)
from ddim_bench.scoring.extractors.classifier import (DIGITS_ARCH_VERSION, DigitsCNN, MnistCNN, build_net,  # noqa: F401
                                              dataset_of, fit_input, settings_for, settings_hash, train_classifier)

INCEPTION = "inception-v3-compat"
DIGITS = "digits-cnn"
INCEPTION_WEIGHTS_FILE = os.path.basename(URL_INCEPTION_V3)  # weights-inception-2015-12-05-6726825d.pth
# metrics.extractor: dinov2-vit-{s,b,l}-14 → our offline extractor (torch-fidelity's own needs torch.hub)
DINOV2 = {name: f"{name}-local" for name in DINOV2_EXTRACTORS}


class MissingWeightsError(UserError):
    """The configured feature-extractor weights file does not exist."""


INCEPTION_REMOTE = Remote(INCEPTION_WEIGHTS_FILE, URL_INCEPTION_V3, "torch-fidelity's InceptionV3 weights file",
                          sha256_prefix=torch.hub.HASH_REGEX.search(INCEPTION_WEIGHTS_FILE).group(1))


def dinov2_remote(size: str) -> Remote:
    return Remote(_dinov2.weights_file(size), _dinov2.weights_url(size), "the DINOv2 weights file",
                  loads=functools.partial(_dinov2.weights_problem, size=size))


def check_weights_file(extractor: str, remote: Remote, weights_path, download: bool = False) -> str:
    """Return ``weights_path`` once it holds the file (fetched when ``download`` and it is the known file by name),
    else raise a one-line :class:`MissingWeightsError` saying which file it must be, where to get it and where to
    put it.  A file with the known name is checked against ``remote``; another name is the user's own file."""
    line = (f"metrics.extractor={extractor} needs {remote.what} {remote.name} (download: {remote.url}); "
            f"put it at {weights_path} (metrics.weights_path)")
    if weights_path and os.path.basename(str(weights_path)) == remote.name:
        try:
            return ensure(str(weights_path), remote, download, line)
        except UserError as err:
            raise MissingWeightsError(str(err)) from None
    if not weights_path or not os.path.isfile(str(weights_path)):
        raise MissingWeightsError(line)
    return str(weights_path)


def check_inception_weights(weights_path, download: bool = False) -> str:
    return check_weights_file(INCEPTION, INCEPTION_REMOTE, weights_path, download)


def check_dinov2_weights(name: str, weights_path, download: bool = False) -> str:
    return check_weights_file(name.removesuffix("-local"), dinov2_remote(_dinov2.NAMES[name]), weights_path, download)


# --------------------------------------------------------------------------------------------------------------
# The digit classifiers (trained and cached; the networks and their training live in classifier.py)
# --------------------------------------------------------------------------------------------------------------

def classifier_recipe(resolution: int | None = None, epochs: int | None = None, seed: int = 0,
                    dataset: str = "digits") -> dict:
    """Everything that determines a trained digit classifier, on the digits or on MNIST (``dataset``; see
    ``classifier.settings_for``); the digits defaults give the old cache key."""
    return settings_for(dataset, resolution, epochs, seed)


def __getattr__(name):  # the live training counter, kept in classifier.py
    if name == "CLASSIFIER_TRAININGS":
        return _classifier.CLASSIFIER_TRAININGS
    raise AttributeError(name)


def ensure_classifier(cache_dir: str, **settings) -> str:
    """Path of the cached classifier checkpoint for these settings, training it first if it is not there.

    digits: ``digits_cnn/digits-cnn-<hash>.pt`` (as always); mnist: ``mnist_cnn/mnist-cnn-<hash>.pt``.
    """
    s = classifier_recipe(**settings)
    kind = dataset_of(s)
    path = os.path.join(cache_dir, f"{kind}_cnn", f"{kind}-cnn-{settings_hash(s)}.pt")
    if not os.path.isfile(path):
        os.makedirs(os.path.dirname(path), exist_ok=True)
        torch_atomic_save(train_classifier(s), path)
    return path


class FeatureExtractorClassifier(NamedFeatures):
    """torch-fidelity wrapper around a trained digit classifier checkpoint (:class:`DigitsCNN` or :class:`MnistCNN`,
    ``feature_extractor_weights_path``)."""
    FEATURES = ("64", "logits_unbiased")
    LAYERS = {"isc": "logits_unbiased", "fid": "64", "kid": "64", "prc": "64"}

    def __init__(self, name, features_list, feature_extractor_weights_path=None, **kwargs):
        super().__init__(name, features_list)
        if feature_extractor_weights_path is None:
            raise UserError(f"feature extractor {name} needs feature_extractor_weights_path (a trained checkpoint)")
        ckpt = torch.load(feature_extractor_weights_path, map_location="cpu", weights_only=True)
        self.settings = ckpt["settings"]
        self.resolution = self.settings["resolution"]
        self.heldout_accuracy = ckpt["heldout_accuracy"]
        self.feature_scale = ckpt["feature_scale"]
        self.net = build_net(self.settings)
        self.net.load_state_dict(ckpt["state_dict"])
        self.requires_grad_(False)
        self.eval()

    def features(self, x):
        g = fit_input(x.float().mean(dim=1, keepdim=True) / 255.0, self.settings)
        feats, logits = self.net(g * 2 - 1)
        return {"64": feats * self.feature_scale, "logits_unbiased": logits}


register(DIGITS, FeatureExtractorClassifier)


# --------------------------------------------------------------------------------------------------------------
# Building an extractor from the metrics config
# --------------------------------------------------------------------------------------------------------------

def extractor_name(metrics_cfg) -> str:
    """Registered torch-fidelity name for ``metrics.extractor``: ``digits`` and ``mnist`` (a classifier trained
    on MNIST) both name the ``digits-cnn`` extractor, whose checkpoint says which network it holds."""
    name = metrics_cfg.get("extractor", "digits")
    name = DIGITS if name in DIGIT_EXTRACTORS else DINOV2.get(name, name)
    if name not in (DIGITS, INCEPTION, *DINOV2.values(), _stand_in.NAME):
        raise UserError(f"metrics.extractor={name} is not supported; use digits, mnist, {INCEPTION} or "
                        f"{', '.join(DINOV2)}")
    return name


def extractor_weights(metrics_cfg, cache_dir: str) -> str:
    """Weights file for the configured extractor: checked (inception) or trained-if-missing (digits)."""
    name = extractor_name(metrics_cfg)
    if name == INCEPTION:
        return check_inception_weights(metrics_cfg.get("weights_path"))
    if name in _dinov2.NAMES:
        return check_dinov2_weights(name, metrics_cfg.get("weights_path"))
    if name == _stand_in.NAME:
        return _stand_in.ensure_weights(cache_dir)
    return ensure_classifier(cache_dir, **classifier_settings(metrics_cfg))


def classifier_settings(metrics_cfg) -> dict:
    """The ``metrics.classifier`` keys that :func:`classifier_recipe` takes; ``extractor: mnist`` implies
    ``classifier.dataset: mnist`` (and contradicting it is an error)."""
    clf = metrics_cfg.get("classifier") or {}
    out = {k: clf[k] for k in ("resolution", "epochs", "seed", "dataset") if k in clf}
    if metrics_cfg.get("extractor") == "mnist":
        if out.setdefault("dataset", "mnist") != "mnist":
            raise UserError(f"metrics.classifier.dataset={out['dataset']} contradicts metrics.extractor=mnist; "
                            f"drop one of them")
    return out


def build_extractor(metrics_cfg, cache_dir: str, features_list, device="cpu") -> tuple[FeatureExtractorBase, str]:
    """(torch-fidelity feature extractor on ``device``, weights file) for the configured extractor."""
    name = extractor_name(metrics_cfg)
    weights = extractor_weights(metrics_cfg, cache_dir)
    try:
        fe = create_feature_extractor(name, list(features_list), cuda=False, verbose=False,
                                      feature_extractor_weights_path=weights)
    except (RuntimeError, OSError, KeyError, EOFError, pickle.UnpicklingError) as e:
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UserError(f"could not load {name} weights from {weights}: {msg}") from e
    return fe.to(device), weights
