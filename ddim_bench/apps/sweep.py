"""``ddim-bench-sweep``: sample a checkpoint over a grid of cells × seed blocks and score each with torch-fidelity
(the sweep itself: :mod:`ddim_bench.sweep`).  ``plan=true`` shows its cost instead, with nothing written."""
from __future__ import annotations

import sys
from ddim_bench import signals
signals.hold()  # SLURM's warning signal during start-up is acted on once the sweep begins
import hydra  # noqa: E402
from omegaconf import DictConfig  # noqa: E402
from ddim_bench import cli, schema  # noqa: E402


@hydra.main(version_base="1.3", config_path=str(cli.CONF_DIR), config_name="sweep")
@cli.app(schema.SweepApp)
def _main(cfg: DictConfig) -> None:
    from ddim_bench.sweep.run import run_job
    status = run_job(cfg)
    if status:
        sys.exit(status)


def main() -> None:
    from ddim_bench.sweep import plan, prepare
    if plan.requested(sys.argv[1:]):  # composed without Hydra's run: no output folder, nothing written
        return plan.main()
    cli.run_hydra(_main, "sweep", schema.SweepApp, prepare.check_cells)


if __name__ == "__main__":
    main()
