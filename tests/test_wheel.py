"""The installed package works without the source checkout: a wheel is built, installed (not editable) into a
fresh folder, and every app's config is composed and validated there from another working directory, including a
user's own config folder on Hydra's search path (a dataset group of their own)."""
import json
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
APPS = ("train", "sweep", "report", "reconstruct", "interpolate")

# Runs inside the installed copy: compose + validate each app's config as the app does, and report what it found.
PROBE = """
import json, sys
import ddim_bench
from ddim_bench import cli, schema
from ddim_bench.validation import validate
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from omegaconf import OmegaConf, open_dict
apps = dict(train="TrainApp", sweep="SweepApp", report="ReportApp", reconstruct="ReconstructApp",
            interpolate="InterpolateApp")
out = {"package": ddim_bench.__file__, "conf": str(cli.CONF_DIR), "apps": {}}
for app, cls in apps.items():
    with initialize_config_dir(config_dir=str(cli.CONF_DIR), version_base="1.3"):
        cfg = compose(app, overrides=sys.argv[1:] if app == "train" else [], return_hydra_config=True)
    cfg.hydra.runtime.output_dir = cfg.hydra.run.dir  # as Hydra sets it when it runs the app
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        del cfg["hydra"]
    typed = validate(OmegaConf.create(OmegaConf.to_container(cfg)), getattr(schema, cls))
    out["apps"][app] = sorted(typed.keys())
    if app == "train":
        out["train_data"] = OmegaConf.to_container(typed.data)
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """(site folder, wheel path): the project's wheel built and installed with --no-deps into a new folder."""
    work = tmp_path_factory.mktemp("wheel")
    # built from a copy: setuptools writes build/ and *.egg-info into the folder it builds
    src = work / "src"
    shutil.copytree(ROOT, src, ignore=shutil.ignore_patterns(".git", ".venv*", "outputs", "build", "*.egg-info",
                                                             ".cache", "__pycache__", "wandb", ".whl"))
    build = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(work), str(src)]
    subprocess.run(build, check=True, capture_output=True, timeout=600)
    wheel = next(work.glob("ddim_bench-*.whl"))
    site = work / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(site), str(wheel)],
                   check=True, capture_output=True, timeout=600)
    return site, wheel


def run_installed(site: Path, cwd: Path, *args: str) -> subprocess.CompletedProcess:
    env = {"PYTHONPATH": str(site), "PATH": "/usr/bin:/bin", "HOME": str(cwd), "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_wheel_ships_every_config(installed):
    _, wheel = installed
    shipped = {n.split("ddim_bench/conf/", 1)[1] for n in zipfile.ZipFile(wheel).namelist() if "/conf/" in n}
    source = {str(p.relative_to(ROOT / "ddim_bench" / "conf")) for p in (ROOT / "ddim_bench" / "conf").rglob("*.yaml")}
    assert source and shipped == source


@pytest.mark.slow
def test_installed_apps_compose_from_another_folder_with_a_users_dataset_group(installed, tmp_path):
    site, _ = installed
    own = tmp_path / "my-conf" / "data"
    own.mkdir(parents=True)
    (own / "my_digits.yaml").write_text("defaults:\n  - digits\n  - _self_\nname: my_digits\nbatch_size: 32\n")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    proc = run_installed(site, elsewhere, "-c", PROBE, f"hydra.searchpath=[file://{tmp_path / 'my-conf'}]",
                         "data=my_digits")
    assert proc.returncode == 0, proc.stderr[-3000:]
    found = json.loads(proc.stdout.strip().splitlines()[-1])
    assert Path(found["package"]).is_relative_to(site) and Path(found["conf"]).is_relative_to(site)
    assert set(found["apps"]) == set(APPS) and all("sampler" in found["apps"][a] for a in ("sweep", "reconstruct"))
    assert found["train_data"]["name"] == "my_digits" and found["train_data"]["batch_size"] == 32
    assert found["train_data"]["_target_"].endswith("DigitsDataModule")


@pytest.mark.slow
def test_installed_console_entry_takes_a_users_config_dir(installed, tmp_path):
    """The app's own entry (group-option check, compose check, Hydra) accepts ``--config-dir`` groups and still
    refuses an option that is in neither folder, with one line."""
    site, _ = installed
    own = tmp_path / "my-conf" / "data"
    own.mkdir(parents=True)
    (own / "my_digits.yaml").write_text("defaults:\n  - digits\n  - _self_\nname: my_digits\n")
    entry = "from ddim_bench.apps.train import main; main()"
    ok = run_installed(site, tmp_path, "-c", entry, "--config-dir", str(tmp_path / "my-conf"), "data=my_digits",
                       "--cfg", "job")
    assert ok.returncode == 0, ok.stderr[-3000:]
    assert "name: my_digits" in ok.stdout and "DigitsDataModule" in ok.stdout
    bad = run_installed(site, tmp_path, "-c", entry, "--config-dir", str(tmp_path / "my-conf"), "data=nosuch")
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1
    assert "data=nosuch is not a known option" in bad.stderr and "my_digits" in bad.stderr
    assert not (tmp_path / "outputs").exists()
