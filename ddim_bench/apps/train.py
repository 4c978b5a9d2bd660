"""``ddim-bench-train``: train a diffusion UNet with Lightning, every knob composed by Hydra
(:func:`ddim_bench.training.run.train`).  A rerun in the same run folder resumes."""
from __future__ import annotations

from ddim_bench import signals
signals.hold()  # SLURM's warning signal during start-up is handed to Lightning's requeue once training starts
import hydra  # noqa: E402
from omegaconf import DictConfig  # noqa: E402
from ddim_bench import cli, schema  # noqa: E402


@hydra.main(version_base="1.3", config_path=str(cli.CONF_DIR), config_name="train")
@cli.app(schema.TrainApp)
def _main(cfg: DictConfig) -> None:
    from ddim_bench.training.run import train
    train(cfg)


def main() -> None:
    cli.run_hydra(_main, "train", schema.TrainApp)


if __name__ == "__main__":
    main()
