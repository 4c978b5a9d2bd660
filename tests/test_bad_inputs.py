"""Bad input stops before any expensive work: exit status 2, one ``error:`` line naming the key, nothing written
(no results, no caches, no W&B runs).  Each case is one a user hit; they run through the real console scripts."""
import os

import pytest

ERROR_CASES = [
    # (app, overrides, the key the one line must name)
    ("sweep", ["keep_images=-1"], "keep_images=-1"),
    ("sweep", ["keep_images=abc"], "keep_images=abc"),
    ("sweep", ["reference.n=0"], "reference.n=0"),
    ("sweep", ["reference.n=-1"], "reference.n=-1"),
    ("sweep", ["reference.split=nosuch"], "reference.split=nosuch"),
    ("sweep", ["eval.accelerator=gpu"], "eval.accelerator=gpu"),
    ("sweep", ["eval.devices=0"], "eval.devices=0"),
    ("sweep", ["grid=none", "sampler.eta=nan"], "sampler.eta=nan"),
    ("sweep", ["sampler.eta=abc"], "sampler.eta=abc"),
    ("sweep", ["n_samples=abc"], "n_samples=abc"),
    ("sweep", ["seeds=abc"], "seeds"),
    ("sweep", ["seeds=0"], "seeds=0 must be a list, e.g. seeds=[0]"),
    ("sweep", ["data=digit"], "did you mean data=digits?"),
    ("sweep", ["+sampler.stepz=3"], "sampler.stepz is not a setting of this app; did you mean sampler.steps?"),
    ("sweep", ["sampler.name=dpmpp_2m", "sampler.steps=10"], "sampler.name=dpmpp_2m is not used: grid=demo"),
    ("sweep", ["sampler.skip=quad"], "set grid.skip=quad"),
    ("sweep", ["grid=none", "sampler.name=dpmpp_2m", "sampler.eta=1"], "sampler.eta=1.0 is not used by"),
    ("sweep", ["grid=none", "sampler.name=euler_a", "sampler.clip_x0=true"], "sampler.clip_x0=True"),
    ("sweep", ["grid=none", "sampler.name=deis", "sampler.skip=quad"], "sampler.skip=quad"),
    ("sweep", ["grid=none", "sampler.eta=2"], "sampler.eta=2.0 must be <= 1"),
    ("sweep", ["grid.eta=[0,1.5]"], "grid.eta=[0.0, 1.5] must be <= 1"),
    ("sweep", ["diffusion.schedule=cosine"], "diffusion.schedule=cosine"),
    ("sweep", ["diffusion.num_timesteps=500"], "diffusion.num_timesteps=500"),
    ("sweep", ["data.resolution=16"], "data.resolution"),
    ("sweep", ["+sampler.nosuch=1"], "sampler.nosuch"),
    ("sweep", ["sampler.nosuch=1"], "sampler.nosuch"),
    ("sweep", ["grid.steps=[10,2000]"], "grid.steps=2000"),
    ("sweep", ["+logger.wandb.api_key=abc123"], "logger.wandb.api_key"),
    ("sweep", ["claims=[{a:{sampler:deis,steps:10},b:{steps:10},direction:lower}]"], "claims[0].a={sampler: deis"),
    ("sweep", ["claims=[{a:{steps:10},b:{steps:7},direction:lower}]"], "claims[0].b={sampler: ddim, steps: 7"),
    ("sweep", ["claims=[{a:{steps:10},b:{steps:20},direction:up}]"], "claims[0].direction=up"),
    ("sweep", ["claims=[{a:{steps:10},b:{steps:20}}]"], "claims[0].direction is not set"),
    ("sweep", ["claims=[{a:{steps:10},b:{steps:20},direction:lower,metric:kid_mean}]", "metrics.kid=false"],
     "claims[0].metric=kid_mean"),
    ("sweep", ["claims=[{a:{steps:10},b:{steps:20},direction:lower}]", "metrics.keep_features=false",
               "metrics.bootstrap.replicates=0"], "claims[0] needs each cell's metrics on the intervals' subsets"),
    # list settings, one rule: no empty list (where empty means nothing), no value twice
    ("sweep", ["seeds=[]"], "seeds=[] is empty"),
    ("sweep", ["seeds=[0,0]"], "seeds=[0, 0] lists 0 twice"),
    ("sweep", ["grid.steps=[10,20,10]"], "grid.steps=[10, 20, 10] lists 10 twice"),
    ("sweep", ["grid.eta=[0.0,0]"], "grid.eta=[0.0, 0.0] lists 0.0 twice"),
    ("sweep", ["grid.eta=[]", "grid.hat=false"], "grid.eta=[] is empty"),
    ("sweep", ["grid.samplers=[]"], "grid.samplers=[] is empty"),
    ("sweep", ["grid.samplers=[ddim,heun,ddim]"], "grid.samplers=['ddim', 'heun', 'ddim'] lists ddim twice"),
    ("reconstruct", ["steps=[]"], "steps=[] is empty"),
    ("interpolate", ["steps=[10,10]"], "steps=[10, 10] lists 10 twice"),
    # keys passed through to Lightning / the DataModule: the target's own verdict, before training
    ("train", ["trainer.devices=0"], "trainer.devices=0: `Trainer(devices=0)` value is not a valid input"),
    ("train", ["trainer.precision=abc"], "trainer.precision=abc: Precision 'abc' is invalid"),
    ("train", ["data.split_seed=abc"], "data.split_seed=abc must be an integer (DigitsDataModule takes split_seed"),
    ("train", ["data.flip=maybe"], "data.flip=maybe must be true or false"),
    ("train", ["data.test_size=-5"], "data.test_size=-5 must be in [0, 1796]"),
    ("sweep", ["slurm.signal=NOPE@90"], "slurm.signal=NOPE@90 names no signal"),
    ("train", ["trainer.max_steps=abc"], "trainer.max_steps=abc"),
    ("train", ["model.ch=0"], "model.ch=0"),
    ("train", ["trainer.accelerator=gpu"], "trainer.accelerator=gpu"),
    ("train", ["diffusion.num_timesteps=0"], "diffusion.num_timesteps=0"),
    ("train", ["data.batch_size=0"], "data.batch_size=0"),
    ("train", ["seed=abc"], "seed=abc"),
    ("train", ["optim.lr=0"], "optim.lr=0"),
    ("train", ["logger.wandb.mode=bogus"], "logger.wandb.mode=bogus"),
    ("train", ["+logger.wandb.api_key=abc123"], "logger.wandb.api_key"),
    ("reconstruct", ["split=nosuch"], "split=nosuch"),
    ("reconstruct", ["steps=[10,1001]"], "steps=1001"),
    ("reconstruct", ["n_images=100000"], "asked for 100000 images"),
    ("reconstruct", ["data.test_size=0"], "split of data=digits is empty"),
    ("interpolate", ["pairs=0"], "pairs=0"),
    ("interpolate", ["points=1"], "points=1"),
    ("report", ["paper=bogus"], "paper=bogus"),
    ("report", ["logger.wandb.mode=bogus"], "logger.wandb.mode=bogus"),
]


def args_for(app, tmp_path, ckpt, results):
    if app == "train":
        return [f"hydra.run.dir={tmp_path / 'run'}", "trainer.max_steps=2"]
    if app == "report":
        return [f"results_dir={results}", f"hydra.run.dir={tmp_path / 'run'}"]
    return [f"checkpoint={ckpt}", f"paths.results_dir={results}", f"hydra.run.dir={tmp_path / 'run'}"]


def written(tmp_path, results_before: set) -> list[str]:
    """Files and folders under tmp_path that were not there before (Hydra's run folder, .hydra/ and job log
    included: a refused command leaves none of them)."""
    out = []
    for root, dirs, files in os.walk(tmp_path):
        rel = os.path.relpath(root, tmp_path)
        out += [os.path.join(rel, f) for f in files + dirs if os.path.join(rel, f) not in results_before]
    return out


@pytest.mark.parametrize("app,overrides,key", ERROR_CASES, ids=[" ".join(c[1]) + f" ({c[0]})" for c in ERROR_CASES])
def test_bad_input_is_one_line_naming_the_key_and_writes_nothing(app, overrides, key, trained, tmp_path, cli,
                                                                   cache_dir):
    results = tmp_path / "results"
    if app == "report":  # a report needs a results folder; a sweep's records are copied in untouched
        results.mkdir()
    before = set(written(tmp_path, set()))
    cache_before = sorted(p.name for p in cache_dir.rglob("*"))
    wandb = [] if "logger.wandb.mode" in " ".join(overrides) else ["logger.wandb.mode=offline"]
    proc = cli(f"ddim-bench-{app}", *args_for(app, tmp_path, trained / "checkpoints" / "last.ckpt", results),
               *overrides, *wandb, check=False, timeout=300)
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert len(lines) == 1 and lines[0].startswith("error: ") and key in lines[0], lines
    assert written(tmp_path, before) == [], "nothing may be written"
    assert sorted(p.name for p in cache_dir.rglob("*")) == cache_before, "nothing may be cached"
    assert "abc123" not in "".join(open(os.path.join(r, f), errors="ignore").read()
                                   for r, _, fs in os.walk(tmp_path) for f in fs)


def test_checkpoint_problems_are_one_line(trained, tmp_path, cli):
    good = trained / "checkpoints" / "last.ckpt"
    truncated = tmp_path / "cut.ckpt"
    truncated.write_bytes(good.read_bytes()[:5000])
    readme = tmp_path / "README.md"
    readme.write_text("# a text file\n")
    folder = tmp_path / "train"
    (folder / "checkpoints").mkdir(parents=True)
    (folder / "checkpoints" / "last.ckpt").write_bytes(good.read_bytes())
    (tmp_path / "empty").mkdir()
    cases = ((tmp_path / "empty", "nor a checkpoint; it holds no checkpoint file"),
             (folder, f"nor a checkpoint; pass the file in it: checkpoint={folder / 'checkpoints' / 'last.ckpt'}"),
             (truncated, "cannot be read"), (tmp_path / "no.ckpt", "does not exist"),
             (readme, "is not a checkpoint file (torch checkpoints are zip or pickle files); pass a last.ckpt of "
                      "ddim-bench-train or a saved state dict"))  # the whole line: before, cut mid-sentence
    for ckpt, needle in cases:
        proc = cli("ddim-bench-sweep", f"checkpoint={ckpt}", f"paths.results_dir={tmp_path / 'res'}",
                   f"hydra.run.dir={tmp_path / 'run'}", "logger.wandb.mode=offline", check=False)
        lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
        assert proc.returncode == 2 and len(lines) == 1 and needle in lines[0], lines
        assert "weights_only=False" not in lines[0]
    assert not (tmp_path / "res").exists() and not (tmp_path / "run").exists()


def test_results_dir_that_is_a_file(trained, tmp_path, cli):
    blocker = tmp_path / "results"
    blocker.write_text("not a folder")
    proc = cli("ddim-bench-sweep", f"checkpoint={trained / 'checkpoints' / 'last.ckpt'}", f"paths.results_dir={blocker}",
               f"hydra.run.dir={tmp_path / 'run'}", "logger.wandb.mode=offline", check=False)
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert proc.returncode == 2 and len(lines) == 1 and "paths.results_dir" in lines[0], lines
    assert blocker.read_text() == "not a folder"


MULTIRUN_CASES = [
    # (overrides, the complete message's start, its end): before, a raw Hydra page (exit 1) or job 0 computed first
    (["sampler.stpes=10"], "error: sampler.stpes is not in the config; did you mean sampler.steps?", ""),
    (["grid=none", "sampler.steps=10,ten"], "error: sampler.steps=ten must be an integer",
     "(multirun job 1 of 2: sampler.steps=ten)"),
    (["+multirun=demo", "sampler.name=dpmpp_2m"], "error: sampler.eta=0.5 is not used by sampler.name=dpmpp_2m",
     "(multirun job 1 of 12: sampler.steps=10 sampler.eta=0.5)"),
]


@pytest.mark.parametrize("overrides,start,end", MULTIRUN_CASES, ids=[" ".join(c[0]) for c in MULTIRUN_CASES])
def test_every_multirun_job_is_checked_before_the_first_starts(overrides, start, end, trained, tmp_path, cli):
    ckpt = trained / "checkpoints" / "last.ckpt"
    proc = cli("ddim-bench-sweep", "-m", f"checkpoint={ckpt}", f"paths.results_dir={tmp_path / 'results'}",
               f"hydra.sweep.dir={tmp_path / 'multi'}", "logger.wandb.mode=offline", "n_samples=8", *overrides,
               check=False, timeout=300)
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr[-2000:]
    assert lines[0].startswith(start) and lines[0].endswith(end), lines
    assert os.listdir(tmp_path) == [], "no job may have started, no sweep folder be written"


def test_a_refused_run_in_the_default_folder_leaves_no_outputs(trained, tmp_path, cli, bin_dir, clean_env):
    """A refused command makes no outputs/<app>/<time>/.hydra/ (Hydra's default run folder) in the working folder."""
    import subprocess
    for args in (["seeds=0"], [f"checkpoint={tmp_path / 'none.ckpt'}"]):  # refused before Hydra / inside the app
        proc = subprocess.run([str(bin_dir / "ddim-bench-sweep"), f"checkpoint={trained / 'checkpoints' / 'last.ckpt'}",
                               *args], cwd=tmp_path, capture_output=True, text=True, env=clean_env(), timeout=300)
        assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
        assert os.listdir(tmp_path) == [], args
