"""``ddim-bench-interpolate``: slerp between pairs of seeded x_T decoded at each S: :mod:`ddim_bench.tasks.interpolate`."""
from __future__ import annotations

import hydra
from omegaconf import DictConfig

from ddim_bench import cli, schema


@hydra.main(version_base="1.3", config_path=str(cli.CONF_DIR), config_name="interpolate")
@cli.app(schema.InterpolateApp)
def _main(cfg: DictConfig) -> None:
    from ddim_bench.tasks.interpolate import run
    run(cfg)


def main() -> None:
    cli.run_hydra(_main, "interpolate", schema.InterpolateApp)


if __name__ == "__main__":
    main()
