"""Real MNIST digits offline: the data module, the MNIST classifier's cache and accuracy, a CLI training run."""
import os
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from ddim_bench import config
from ddim_bench.data.mnist import MnistDataModule
from ddim_bench.errors import UserError
from ddim_bench.scoring.extractors import features as F

FAST = {"dataset": "mnist", "epochs": 2}  # a third of the default training: ~95 % (the default 6 epochs: 99 %)


@pytest.fixture(scope="module")
def dm():
    return MnistDataModule()


def test_shapes_range_and_padding(dm):
    train, test = dm.images("train"), dm.images("test")
    assert train.shape == (4500, 1, 32, 32) and test.shape == (500, 1, 32, 32)
    assert train.dtype == torch.float32 and train.min() == -1 and train.max() == 1
    border = torch.cat([train[..., :2, :].flatten(), train[..., -2:, :].flatten(),
                        train[..., :2].flatten(), train[..., -2:].flatten()])
    assert (border == -1).all()  # 28 px digits padded with black
    ref = dm.reference("test")[0]
    assert ref.dtype == torch.uint8 and ref.shape == (3, 32, 32)
    assert MnistDataModule(resolution=28).images("test", 3).shape == (3, 1, 28, 28)
    assert dm.channels == 1 and dm.name == "mnist"


def test_split_is_stratified_disjoint_and_deterministic(dm):
    assert dm.labels("test").bincount().tolist() == [50] * 10
    assert dm.labels("train").bincount().tolist() == [450] * 10
    train, test = dm.images("train").flatten(1), dm.images("test").flatten(1)
    assert not (torch.cdist(test, train).min(dim=1).values == 0).any()  # no held-out image in train
    again = MnistDataModule()
    assert torch.equal(again.images("test"), dm.images("test")) and again.key("test") == dm.key("test")
    other = MnistDataModule(split_seed=1)
    assert not torch.equal(other.images("test"), dm.images("test")) and other.key("test") != dm.key("test")
    assert len(MnistDataModule(test_per_class=10).dataset("test")) == 100


def test_bad_settings_are_one_line_user_errors():
    with pytest.raises(UserError, match="data.resolution=30"):
        MnistDataModule(resolution=30)
    with pytest.raises(UserError, match="data.test_per_class"):
        MnistDataModule(test_per_class=600)
    with pytest.raises(UserError, match="metrics.classifier.resolution=8"):
        F.classifier_recipe(dataset="mnist", resolution=8)
    with pytest.raises(UserError, match="metrics.classifier.dataset=cifar"):
        F.classifier_recipe(dataset="cifar")
    with pytest.raises(UserError, match="metrics.classifier.dataset=digits"):
        F.classifier_settings({"extractor": "mnist", "classifier": {"dataset": "digits"}})


def test_the_configs_compose_validate_and_build(root_dir, compose):
    built = config.build_datamodule(OmegaConf.load(root_dir / "ddim_bench" / "conf" / "data" / "mnist.yaml"))
    assert isinstance(built, MnistDataModule) and built.resolution == 32 and built.test_per_class == 50
    cfg = compose("train", "experiment=mnist")
    assert cfg.data.name == "mnist" and cfg.model.resolution == 32 and cfg.model.in_channels == 1
    assert cfg.metrics.extractor == "mnist" and F.classifier_settings(cfg.metrics)["dataset"] == "mnist"


def test_digits_classifier_cache_key_is_unchanged():
    assert F.settings_hash(F.classifier_recipe()) == "28b7e95cb625"  # the key before MNIST support
    assert F.settings_hash(F.classifier_recipe(**FAST)) != F.settings_hash(F.classifier_recipe(dataset="mnist"))


def test_mnist_classifier_is_trained_once_cached_and_accurate(tmp_path, dm):
    before = F.CLASSIFIER_TRAININGS
    path = F.ensure_classifier(str(tmp_path), **FAST)
    assert F.CLASSIFIER_TRAININGS == before + 1
    assert Path(path).name.startswith("mnist-cnn-") and Path(path).parent.name == "mnist_cnn"
    assert F.ensure_classifier(str(tmp_path), **FAST) == path
    assert F.CLASSIFIER_TRAININGS == before + 1  # the second build loads it
    ckpt = torch.load(path, weights_only=False)
    assert ckpt["heldout_accuracy"] > 0.9, ckpt["heldout_accuracy"]

    metrics_cfg = {"extractor": "mnist", "classifier": {"epochs": 2}}
    fe, weights = F.build_extractor(metrics_cfg, str(tmp_path), ["64", "logits_unbiased"])
    assert weights == path and F.CLASSIFIER_TRAININGS == before + 1
    images = torch.stack([dm.reference("test")[i] for i in range(500)])
    feats, logits = fe(images)
    assert feats.shape == (500, 64) and logits.shape == (500, 10)
    assert (logits.argmax(1) == dm.labels("test")).float().mean() > 0.9
    _, logits28 = fe(images[..., 2:-2, 2:-2])  # 28 px inputs are padded, not resized
    assert torch.allclose(logits28, logits)


def test_training_cli_on_mnist_writes_a_checkpoint(tmp_path, cache_dir, cli):
    run = tmp_path / "run"
    cli("ddim-bench-train", "experiment=mnist", "trainer.max_steps=3", "trainer.accelerator=cpu",
        "trainer.precision=32-true", "trainer.enable_progress_bar=false", "trainer.log_every_n_steps=1",
        "model.ch=32", "model.num_res_blocks=1", "data.batch_size=8", "callbacks.checkpoint_every_n_steps=3",
        "callbacks.sample_grid.every_n_steps=0", "callbacks.fid.every_n_steps=0", "logger=csv",
        f"hydra.run.dir={run}", env={"OMP_NUM_THREADS": "1"}, timeout=300)
    last = run / "checkpoints" / "last.ckpt"
    assert last.is_file()
    ckpt = torch.load(last, map_location="cpu", weights_only=False)
    model = ckpt["hyper_parameters"]["model"]
    assert ckpt["global_step"] == 3 and model["resolution"] == 32 and model["in_channels"] == 1
    assert model["ch_mult"] == [1, 2, 2] and model["attn_resolutions"] == [16]
    assert os.path.isdir(run)
