"""W&B sweep files and Hydra multirun presets: every parameter is a valid override of the sweep app."""
from pathlib import Path

import pytest
import yaml
from hydra import compose, initialize_config_dir

from ddim_bench import cli as app_cli

SWEEPS = sorted((Path(__file__).resolve().parent.parent / "sweeps").glob("*.yaml"))


def compose_with(overrides):
    with initialize_config_dir(config_dir=str(app_cli.CONF_DIR), version_base="1.3"):
        return compose("sweep", overrides=overrides)


def overrides_of(params: dict, pick: int) -> list[str]:
    out = []
    for key, spec in params.items():
        values = spec["values"] if "values" in spec else [spec["value"]]
        value = values[min(pick, len(values) - 1)]
        out.append(f"{key}={str(value).lower() if isinstance(value, bool) else value}")
    return out


@pytest.mark.parametrize("path", SWEEPS, ids=lambda p: p.name)
def test_wandb_sweep_parameters_compose(path):
    spec = yaml.safe_load(path.read_text())
    assert spec["method"] == "grid" and "${args_no_hyphens}" in spec["command"]
    assert (Path(__file__).resolve().parent.parent / spec["program"]).is_file()
    params = spec["parameters"]
    longest = max(len(p.get("values", [0])) for p in params.values())
    for pick in range(longest):  # every value of every parameter appears in some composed config
        cfg = compose_with(overrides_of(params, pick))
        for key, value in (o.split("=", 1) for o in overrides_of(params, pick)):
            node = cfg
            if key in ("grid", "experiment"):
                continue  # group choices, not values
            for part in key.split("."):
                node = node[part]
            assert str(node).lower() == value.lower() or float(node) == float(value)


def test_table1_preset_is_the_papers_setup():
    cfg = compose_with(["experiment=cifar10_table1"])
    assert cfg.sampler.skip == "quad" and cfg.n_samples == 50000 and cfg.metrics.extractor == "inception-v3-compat"
    assert list(cfg.grid.steps) == [10, 20, 50, 100, 1000] and list(cfg.grid.eta) == [0.0, 0.2, 0.5, 1.0]
    assert cfg.grid.hat and cfg.model.ch == 128 and cfg.reference.split == "train"


@pytest.mark.parametrize("preset", ["demo", "table1", "table1_hat"])
def test_multirun_presets_name_valid_overrides(preset):
    cfg = yaml.safe_load((app_cli.CONF_DIR / "multirun" / f"{preset}.yaml").read_text())
    params = cfg["hydra"]["sweeper"]["params"]
    for key, values in params.items():
        for v in str(values).split(","):
            composed = compose_with([f"{key}={v}"])
            node = composed
            for part in key.split("."):
                node = node[part]
            assert str(node).lower() == v.lower() or float(node) == float(v)
