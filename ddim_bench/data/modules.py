"""Datasets as LightningDataModules: ``digits`` (embedded), ``cifar10`` and ``image_folder``.

Training batches are float tensors in [−1, 1], shape [B, C, H, W].  ``reference(split)`` gives the same
images as uint8 [3, H, W] for the feature extractors, and ``key(split)`` names everything that changes them.
"""
from __future__ import annotations

import os
from pathlib import Path

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset, TensorDataset

from ddim_bench.errors import UserError
from ddim_bench.images import to_uint8_rgb

IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".bmp", ".webp")


class ImageView(Dataset):
    """A view of an image dataset (items may be ``(image, label)``) that maps each image with ``apply``."""

    def __init__(self, base: Dataset):
        self.base = base

    def __len__(self):
        return len(self.base)

    def __getitem__(self, i):
        x = self.base[i]
        return self.apply(x[0] if isinstance(x, (tuple, list)) else x)


class Uint8View(ImageView):
    """A [−1, 1] image dataset seen as uint8 RGB [3, H, W], as torch-fidelity takes it."""

    def apply(self, x):
        return to_uint8_rgb(x[None])[0]


class FlipDataset(ImageView):
    """Random horizontal flip, as in the paper's training."""

    def apply(self, x):
        return x.flip(-1) if torch.rand(()) < 0.5 else x


class ImageDataModule(pl.LightningDataModule):
    """Shared plumbing: subclasses implement ``dataset(split)`` (split ∈ {train, test}) and ``describe()``."""

    channels = 3

    def __init__(self, resolution: int, batch_size: int = 128, num_workers: int = 0, flip: bool = True):
        super().__init__()
        self.resolution, self.batch_size, self.num_workers, self.flip = resolution, batch_size, num_workers, flip

    def train_dataloader(self):
        ds = self.dataset("train")
        return DataLoader(FlipDataset(ds) if self.flip else ds, batch_size=self.batch_size, shuffle=True,
                          drop_last=len(ds) >= self.batch_size, num_workers=self.num_workers,
                          persistent_workers=self.num_workers > 0)

    def reference(self, split: str = "train") -> Dataset:
        return Uint8View(self.dataset(split))

    def images(self, split: str, n: int | None = None) -> torch.Tensor:
        """The first ``n`` images of a split as one [−1, 1] tensor (held-out sets for reconstruction)."""
        ds = self.dataset(split)
        n = len(ds) if n is None else n
        if len(ds) == 0:
            raise UserError(f"the {split} split of data={self.name} is empty; choose another split or dataset")
        if n > len(ds):
            raise UserError(f"asked for {n} images but the {split} split of data={self.name} has {len(ds)}; "
                            f"lower the number of images")
        items = [ds[i] for i in range(n)]
        return torch.stack([x[0] if isinstance(x, (tuple, list)) else x for x in items])

    def key(self, split: str) -> str:
        return f"{self.describe()}|split={split}|n={len(self.dataset(split))}"


class DigitsDataModule(ImageDataModule):
    """scikit-learn's 8×8 handwritten digits (ships with the package), upsampled to ``resolution``."""

    name, channels = "digits", 1

    def __init__(self, resolution: int = 8, batch_size: int = 128, num_workers: int = 0, flip: bool = False,
                 test_size: int = 297, split_seed: int = 0):
        super().__init__(resolution, batch_size, num_workers, flip)
        if resolution not in (8, 16, 32):
            raise UserError(f"data.resolution={resolution} is not supported for digits; use 8, 16 or 32")
        if not 0 <= test_size < 1797:
            raise UserError(f"data.test_size={test_size} must be in [0, 1796] (digits has 1797 images)")
        self.test_size, self.split_seed = test_size, split_seed
        self._splits = None

    def _load(self):
        if self._splits is None:
            from sklearn.datasets import load_digits
            x = torch.tensor(load_digits().images, dtype=torch.float32)[:, None] / 16.0 * 2 - 1
            if self.resolution != 8:
                x = F.interpolate(x, size=self.resolution, mode="bilinear", align_corners=False).clamp(-1, 1)
            perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(self.split_seed))
            x = x[perm]
            self._splits = {"train": x[self.test_size:], "test": x[:self.test_size]}
        return self._splits

    def dataset(self, split: str) -> Dataset:
        return TensorDataset(self._load()[split])

    def describe(self) -> str:
        return f"digits|res={self.resolution}|test={self.test_size}|seed={self.split_seed}"


class Cifar10DataModule(ImageDataModule):
    """torchvision CIFAR-10 in [−1, 1]; ``download`` (the top-level setting) fetches it into ``root``."""

    name = "cifar10"

    def __init__(self, root: str, download: bool = True, resolution: int = 32, batch_size: int = 128,
                 num_workers: int = 4, flip: bool = True):
        super().__init__(resolution, batch_size, num_workers, flip)
        self.root, self.download = root, download

    def dataset(self, split: str) -> Dataset:
        from torchvision import datasets, transforms
        self.ensure_files()
        tf = transforms.Compose([transforms.ToTensor(), transforms.Normalize(0.5, 0.5)])
        return datasets.CIFAR10(self.root, train=split == "train", transform=tf, download=False)

    def ensure_files(self) -> None:
        """The batches checked against torchvision's MD5s; else the archive fetched through ``downloads.ensure``
        (temporary file, MD5-checked, renamed; a wrong one moved aside) and extracted."""
        from torchvision.datasets import CIFAR10
        from torchvision.datasets.utils import check_integrity, extract_archive

        from ddim_bench.downloads import Remote, ensure
        base = Path(self.root) / CIFAR10.base_folder
        files = CIFAR10.train_list + CIFAR10.test_list + [[CIFAR10.meta["filename"], CIFAR10.meta["md5"]]]
        if all(check_integrity(str(base / name), md5) for name, md5 in files):
            return
        archive = os.path.join(self.root, CIFAR10.filename)
        line = (f"data.root={self.root} holds no CIFAR-10 ({CIFAR10.base_folder}/): fetch {CIFAR10.url} and "
                f"extract it there, or point data.root at it")
        remote = Remote(CIFAR10.filename, CIFAR10.url, "the CIFAR-10 archive", md5=(CIFAR10.tgz_md5,))
        extract_archive(ensure(archive, remote, self.download, line), self.root)

    def describe(self) -> str:
        return f"cifar10|res={self.resolution}"


class FolderImages(Dataset):
    def __init__(self, files, resolution: int, crop: dict | None):
        from torchvision import transforms
        self.files = files
        steps = []
        if crop:  # CelebA: the official 128×128 crop centred at (cx, cy) = (89, 121)
            half = crop["size"] // 2
            steps.append(transforms.Lambda(lambda im: im.crop(
                (crop["cx"] - half, crop["cy"] - half, crop["cx"] + half, crop["cy"] + half))))
        steps += [transforms.Resize(resolution), transforms.CenterCrop(resolution),
                  transforms.ToTensor(), transforms.Normalize(0.5, 0.5)]
        self.tf = transforms.Compose(steps)

    def __len__(self):
        return len(self.files)

    def __getitem__(self, i):
        from PIL import Image
        with Image.open(self.files[i]) as im:
            return self.tf(im.convert("RGB"))


class ImageFolderDataModule(ImageDataModule):
    """Any folder of images; the last ``test_size`` files (sorted) are held out."""

    name = "image_folder"

    def __init__(self, root: str, resolution: int = 64, batch_size: int = 128, num_workers: int = 4,
                 flip: bool = True, crop: dict | None = None, test_size: int = 0):
        super().__init__(resolution, batch_size, num_workers, flip)
        if test_size < 0:
            raise UserError(f"data.test_size={test_size} must be >= 0 (images held out for the test split)")
        self.root, self.crop, self.test_size = root, dict(crop) if crop else None, test_size

    def _files(self):
        if not os.path.isdir(self.root):
            raise UserError(f"data.root={self.root} is not a folder; point data.root at a folder of images")
        files = sorted(str(p) for p in Path(self.root).rglob("*") if p.suffix.lower() in IMAGE_EXTS)
        if not files:
            raise UserError(f"data.root={self.root} holds no images ({', '.join(IMAGE_EXTS)})")
        return files

    def dataset(self, split: str) -> Dataset:
        files = self._files()
        cut = len(files) - self.test_size
        return FolderImages(files[:cut] if split == "train" else files[cut:], self.resolution, self.crop)

    def describe(self) -> str:
        return f"folder:{os.path.abspath(self.root)}|res={self.resolution}|crop={self.crop}|test={self.test_size}"
