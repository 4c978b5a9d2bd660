"""``ddim-bench-reconstruct``: the paper's Table 2 (reconstruction error at each S): :mod:`ddim_bench.tasks.reconstruct`."""
from __future__ import annotations

import hydra
from omegaconf import DictConfig

from ddim_bench import cli, schema


@hydra.main(version_base="1.3", config_path=str(cli.CONF_DIR), config_name="reconstruct")
@cli.app(schema.ReconstructApp)
def _main(cfg: DictConfig) -> None:
    from ddim_bench.tasks.reconstruct import run
    run(cfg)


def main() -> None:
    cli.run_hydra(_main, "reconstruct", schema.ReconstructApp)


if __name__ == "__main__":
    main()
