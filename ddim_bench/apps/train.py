"""``ddim-bench-train``: train a diffusion UNet with Lightning, every knob composed by Hydra
(:func:`ddim_bench.training.run.train`).  A rerun in the same run folder resumes."""
from __future__ import annotations

import hydra
from omegaconf import DictConfig

from ddim_bench import cli, schema


@hydra.main(version_base="1.3", config_path=str(cli.CONF_DIR), config_name="train")
@cli.app(schema.TrainApp)
def _main(cfg: DictConfig) -> None:
    from ddim_bench.training.run import train
    train(cfg)


def main() -> None:
    cli.run_hydra(_main, "train", schema.TrainApp)


if __name__ == "__main__":
    main()
