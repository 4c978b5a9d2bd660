"""Feature extractors for FID / IS / KID, all going through torch-fidelity's registry.

* ``inception-v3-compat`` — torch-fidelity's own InceptionV3, loaded from a local weights file
  (it cannot be downloaded on every machine, so the path is always given explicitly).
* ``digits-cnn`` — a small CNN classifier for scikit-learn's 8×8 digits, trained once on CPU and cached on
  disk under a hash of its settings.  It provides a 64-d penultimate feature (``"64"``, for FID/KID) and
  ``"logits_unbiased"`` (10 classes, for IS).

Both take torch-fidelity's standard input: uint8 images [B, 3, H, W].
"""
from __future__ import annotations

import hashlib
import json
import os
import pickle

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch_fidelity.feature_extractor_base import FeatureExtractorBase
from torch_fidelity.feature_extractor_inceptionv3 import URL_INCEPTION_V3
from torch_fidelity.registry import FEATURE_EXTRACTORS_REGISTRY, register_feature_extractor
from torch_fidelity.utils import create_feature_extractor
from torch_fidelity.utils_torch import torch_atomic_save

from ddim_bench.errors import UserError

INCEPTION = "inception-v3-compat"
DIGITS = "digits-cnn"
INCEPTION_WEIGHTS_FILE = os.path.basename(URL_INCEPTION_V3)  # weights-inception-2015-12-05-6726825d.pth
DIGITS_ARCH_VERSION = 1

# How many times a digits classifier was actually trained in this process (tests check cache hits with it).
CLASSIFIER_TRAININGS = 0


class MissingWeightsError(UserError):
    """The configured feature-extractor weights file does not exist."""


def check_inception_weights(weights_path) -> str:
    """Return ``weights_path`` if the file exists, else raise a one-line :class:`MissingWeightsError`."""
    if not weights_path or not os.path.isfile(str(weights_path)):
        raise MissingWeightsError(
            f"metrics.extractor={INCEPTION} needs torch-fidelity's InceptionV3 weights file "
            f"{INCEPTION_WEIGHTS_FILE} (download: {URL_INCEPTION_V3}); put it at {weights_path} "
            f"(metrics.weights_path)")
    return str(weights_path)


# --------------------------------------------------------------------------------------------------------------
# The digits classifier
# --------------------------------------------------------------------------------------------------------------

class DigitsCNN(nn.Module):
    """Three 3×3 convolutions, global average pooling, a 64-d hidden layer and 10 logits."""

    def __init__(self, width: int = 32, feature_dim: int = 64):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(1, width, 3, padding=1), nn.ReLU(),
            nn.Conv2d(width, 2 * width, 3, padding=1), nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(2 * width, 2 * width, 3, padding=1), nn.ReLU(),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        )
        self.hidden = nn.Linear(2 * width, feature_dim)
        self.head = nn.Linear(feature_dim, 10)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Images in [−1, 1], [B, 1, R, R] → (penultimate features [B, 64], logits [B, 10])."""
        h = F.relu(self.hidden(self.body(x)))
        return h, self.head(h)


def digits_settings(resolution: int = 8, epochs: int = 20, seed: int = 0) -> dict:
    """Everything that changes the trained classifier (its cache key is a hash of this).

    8 is the data's native resolution (a few seconds on CPU); 16 works too but trains several times slower.
    """
    if resolution not in (8, 16):
        raise UserError(f"metrics.classifier.resolution={resolution} is not supported; use 8 or 16")
    return {"arch": DIGITS_ARCH_VERSION, "resolution": int(resolution), "epochs": int(epochs), "seed": int(seed),
            "batch_size": 64, "lr": 3e-3, "holdout": 360}


def settings_hash(settings: dict) -> str:
    """Short stable hash of a settings dict."""
    return hashlib.sha1(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:12]


def _digits_tensors(resolution: int) -> tuple[torch.Tensor, torch.Tensor]:
    """All 1797 sklearn digits as float images in [−1, 1] at ``resolution`` (bilinear, like the data module)."""
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.tensor(d.images, dtype=torch.float32)[:, None] / 16.0 * 2 - 1
    if resolution != 8:
        x = F.interpolate(x, size=resolution, mode="bilinear", align_corners=False).clamp(-1, 1)
    return x, torch.tensor(d.target, dtype=torch.long)


def train_digits_classifier(settings: dict) -> dict:
    """Train the classifier deterministically on one CPU thread (faster than several for a net this small).

    Returns a checkpoint dict: state dict, settings, held-out accuracy and ``feature_scale``, the factor that
    gives the 64-d features unit RMS on the training images (so KID's polynomial kernel sees O(1) values, as it
    does with Inception features).
    """
    global CLASSIFIER_TRAININGS
    x, y = _digits_tensors(settings["resolution"])
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(settings["seed"])
            perm = torch.randperm(len(x))
            test, train = perm[:settings["holdout"]], perm[settings["holdout"]:]
            net = DigitsCNN()
            _fit(net, x[train], y[train], settings)
        net.eval()
        with torch.no_grad():
            acc = (net(x[test])[1].argmax(1) == y[test]).float().mean().item()
            scale = net(x[train])[0].square().mean().rsqrt().item()
    finally:
        torch.set_num_threads(threads)
    CLASSIFIER_TRAININGS += 1
    return {"state_dict": net.state_dict(), "settings": settings, "heldout_accuracy": acc, "feature_scale": scale}


def _fit(net: nn.Module, x: torch.Tensor, y: torch.Tensor, settings: dict) -> None:
    """Adam with a one-cycle learning rate, shuffled minibatches (uses the global RNG)."""
    bs = settings["batch_size"]
    opt = torch.optim.Adam(net.parameters(), lr=settings["lr"])
    steps = settings["epochs"] * ((len(x) + bs - 1) // bs)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=settings["lr"], total_steps=steps)
    for _ in range(settings["epochs"]):
        order = torch.randperm(len(x))
        for i in range(0, len(x), bs):
            idx = order[i:i + bs]
            loss = F.cross_entropy(net(x[idx])[1], y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()


def ensure_digits_classifier(cache_dir: str, **settings) -> str:
    """Path of the cached classifier checkpoint for these settings, training it first if it is not there."""
    s = digits_settings(**settings)
    path = os.path.join(cache_dir, "digits_cnn", f"{DIGITS}-{settings_hash(s)}.pt")
    if not os.path.isfile(path):
        os.makedirs(os.path.dirname(path), exist_ok=True)
        torch_atomic_save(train_digits_classifier(s), path)
    return path


class FeatureExtractorDigits(FeatureExtractorBase):
    """torch-fidelity wrapper around a trained :class:`DigitsCNN` checkpoint (``feature_extractor_weights_path``)."""

    def __init__(self, name, features_list, feature_extractor_weights_path=None, **kwargs):
        super().__init__(name, features_list)
        if feature_extractor_weights_path is None:
            raise UserError(f"feature extractor {name} needs feature_extractor_weights_path (a trained checkpoint)")
        ckpt = torch.load(feature_extractor_weights_path, map_location="cpu", weights_only=False)
        self.resolution = ckpt["settings"]["resolution"]
        self.heldout_accuracy = ckpt["heldout_accuracy"]
        self.feature_scale = ckpt["feature_scale"]
        self.net = DigitsCNN()
        self.net.load_state_dict(ckpt["state_dict"])
        self.requires_grad_(False)
        self.eval()

    def forward(self, x):
        """uint8 [B, 3, H, W] → tuple of the requested features, in ``features_list`` order (float32)."""
        if not (torch.is_tensor(x) and x.dtype == torch.uint8 and x.dim() == 4 and x.shape[1] == 3):
            raise ValueError(f"expected uint8 images [B, 3, H, W], got {getattr(x, 'dtype', type(x))} "
                             f"{tuple(getattr(x, 'shape', ()))}")
        g = x.float().mean(dim=1, keepdim=True) / 255.0
        if g.shape[-1] > self.resolution or g.shape[-2] > self.resolution:
            g = F.interpolate(g, size=self.resolution, mode="area")
        elif g.shape[-1] < self.resolution or g.shape[-2] < self.resolution:
            g = F.interpolate(g, size=self.resolution, mode="bilinear", align_corners=False)
        feats, logits = self.net(g * 2 - 1)
        out = {"64": feats * self.feature_scale, "logits_unbiased": logits}
        return tuple(out[k] for k in self.features_list)

    @staticmethod
    def get_provided_features_list():
        return "64", "logits_unbiased"

    @staticmethod
    def get_default_feature_layer_for_metric(metric):
        return {"isc": "logits_unbiased", "fid": "64", "kid": "64", "prc": "64"}[metric]

    @staticmethod
    def can_be_compiled():
        return False

    @staticmethod
    def get_dummy_input_for_compile():
        return torch.zeros(1, 3, 8, 8, dtype=torch.uint8)


if DIGITS not in FEATURE_EXTRACTORS_REGISTRY:
    register_feature_extractor(DIGITS, FeatureExtractorDigits)


# --------------------------------------------------------------------------------------------------------------
# Building an extractor from the metrics config
# --------------------------------------------------------------------------------------------------------------

def extractor_name(metrics_cfg) -> str:
    """Registered torch-fidelity name for ``metrics.extractor`` (``digits`` is an alias of ``digits-cnn``)."""
    name = metrics_cfg.get("extractor", "digits")
    name = DIGITS if name == "digits" else name
    if name not in (DIGITS, INCEPTION):
        raise UserError(f"metrics.extractor={name} is not supported; use digits or {INCEPTION}")
    return name


def extractor_weights(metrics_cfg, cache_dir: str) -> str:
    """Weights file for the configured extractor: checked (inception) or trained-if-missing (digits)."""
    name = extractor_name(metrics_cfg)
    if name == INCEPTION:
        return check_inception_weights(metrics_cfg.get("weights_path"))
    return ensure_digits_classifier(cache_dir, **classifier_settings(metrics_cfg))


def classifier_settings(metrics_cfg) -> dict:
    """The ``metrics.classifier`` keys that :func:`digits_settings` takes."""
    clf = metrics_cfg.get("classifier") or {}
    return {k: clf[k] for k in ("resolution", "epochs", "seed") if k in clf}


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
