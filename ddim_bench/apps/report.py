"""``ddim-bench-report``: a results folder → CSVs, Table 1, the claims table, figures and a W&B report run
(:mod:`ddim_bench.reporting.report`); ``status=true`` shows per sweep what is done, in progress and missing."""
from __future__ import annotations

import hydra
from omegaconf import DictConfig

from ddim_bench import cli, schema


@hydra.main(version_base="1.3", config_path=str(cli.CONF_DIR), config_name="report")
@cli.app(schema.ReportApp)
def _main(cfg: DictConfig) -> None:
    from ddim_bench.reporting.report import run_job
    run_job(cfg)


def main() -> None:
    cli.run_hydra(_main, "report", schema.ReportApp)


if __name__ == "__main__":
    main()
