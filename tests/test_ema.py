"""The sample grid and the FID during training see the EMA weights, swapped in by EMAWeightAveraging's public
hooks, and the raw weights come back exactly."""
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, TensorDataset

from ddim_bench.training.module import DiffusionModule, ema_weights

TINY = dict(in_channels=1, out_ch=1, ch=8, ch_mult=[1], num_res_blocks=1, attn_resolutions=[], dropout=0.0,
            resolution=8)
SCHEDULE = dict(num_timesteps=100, schedule="linear", beta_start=1e-4, beta_end=0.02)


class Probe(pl.Callback):
    """At the last step (after the EMA update: it comes later in the callback list), the weights seen inside
    ``ema_weights`` and the raw weights before and after."""

    def __init__(self, last: int):
        self.last, self.seen = last, {}

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.global_step != self.last:
            return
        state = lambda m: {k: v.detach().clone() for k, v in m.state_dict().items()}  # noqa: E731
        self.seen["raw_before"] = state(pl_module.model)
        with ema_weights(trainer, pl_module) as model:
            assert model is pl_module.model
            self.seen["inside"] = state(model)
        self.seen["raw_after"] = state(pl_module.model)


def test_ema_weights_are_the_averaged_ones_and_the_raw_ones_come_back(tmp_path):
    torch.manual_seed(0)
    module = DiffusionModule(TINY, SCHEDULE, lr=1e-2)
    data = DataLoader(TensorDataset(torch.rand(32, 1, 8, 8) * 2 - 1), batch_size=8)
    probe = Probe(last=4)
    trainer = pl.Trainer(accelerator="cpu", devices=1, max_steps=4, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, default_root_dir=str(tmp_path),
                         callbacks=[pl.callbacks.EMAWeightAveraging(decay=0.5), probe])
    trainer.fit(module, data)
    seen = probe.seen
    assert all(torch.equal(seen["raw_before"][k], seen["raw_after"][k]) for k in seen["raw_before"])
    assert any(not torch.equal(seen["inside"][k], seen["raw_before"][k]) for k in seen["inside"])
    # at the end of fit Lightning copies the averaged weights into the module: the ones seen inside
    final = module.model.state_dict()
    assert all(torch.allclose(seen["inside"][k], final[k]) for k in final)


def test_without_weight_averaging_the_raw_model_is_used():
    module = DiffusionModule(TINY, SCHEDULE)
    trainer = pl.Trainer(accelerator="cpu", devices=1, logger=False, enable_checkpointing=False, callbacks=[])
    with ema_weights(trainer, module) as model:
        assert model is module.model
