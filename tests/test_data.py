"""Data modules: the embedded digits, an image folder with the CelebA crop, and the one-line errors."""
import numpy as np
import pytest
import torch
from PIL import Image

from ddim_bench.config import build_datamodule
from ddim_bench.data.modules import DigitsDataModule, ImageFolderDataModule
from ddim_bench.errors import UserError


@pytest.mark.parametrize("res", [8, 16])
def test_digits_are_scaled_to_minus_one_one_and_split(res):
    dm = DigitsDataModule(resolution=res)
    train, test = dm.images("train"), dm.images("test")
    assert train.shape == (1500, 1, res, res) and test.shape == (297, 1, res, res)
    assert train.min() >= -1 and train.max() <= 1 and train.min() == -1 and train.max() > 0.9
    ref = dm.reference("train")
    assert len(ref) == 1500 and ref[0].dtype == torch.uint8 and ref[0].shape == (3, res, res)
    batch = next(iter(dm.train_dataloader()))
    assert batch[0].shape == (128, 1, res, res)


def test_digits_errors_are_one_line():
    with pytest.raises(UserError, match="data.resolution=12"):
        DigitsDataModule(resolution=12)
    with pytest.raises(UserError, match="has 297"):
        DigitsDataModule().images("test", 1000)


def test_image_folder_applies_the_celeba_crop(tmp_path):
    for i in range(3):  # 178 x 218 like CelebA; a bright square at the crop centre (89, 121)
        a = np.zeros((218, 178, 3), dtype=np.uint8)
        a[121 - 64:121 + 64, 89 - 64:89 + 64] = 200
        Image.fromarray(a).save(tmp_path / f"{i:06d}.jpg")
    dm = ImageFolderDataModule(root=str(tmp_path), resolution=64, crop={"cx": 89, "cy": 121, "size": 128},
                               test_size=1, num_workers=0)
    x = dm.images("train")
    assert x.shape == (2, 3, 64, 64)
    assert x.mean().item() == pytest.approx(200 / 127.5 - 1, abs=0.03)  # the crop holds only the square
    assert len(dm.dataset("test")) == 1


def test_image_folder_and_cifar_errors_name_the_root(tmp_path):
    with pytest.raises(UserError, match="data.root=.*holds no images"):
        ImageFolderDataModule(root=str(tmp_path)).dataset("train")
    with pytest.raises(UserError, match="data.root"):
        build_datamodule({"_target_": "ddim_bench.data.modules.Cifar10DataModule", "name": "cifar10",
                          "root": str(tmp_path), "download": False}).dataset("train")
