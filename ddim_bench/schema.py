"""Typed config schemas: every setting's type and range is declared here, once.

Each group is a dataclass; ``spec(default, min=…, max=…, choices=…)`` declares a range in the field's metadata,
read by :mod:`ddim_bench.validation`.  The apps' schemas (``TrainApp``, ``SweepApp``, …) are registered in
Hydra's ConfigStore and merged over the composed YAML before an app starts, so a wrong type or an unknown key
is one line naming the key.  "Open" groups (``data``, ``trainer``) have a known part typed here and pass any
other key through to their target (a DataModule, ``pl.Trainer``), whose signature decides.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from omegaconf import MISSING

from ddim_bench.choices import (COMPILE_MODES, EXTRACTORS, SCHEDULES, SKIPS, VARIANCES, WANDB_MODES,  # noqa: F401
                                WEIGHTS)


def spec(default=MISSING, *, min=None, max=None, below=None, choices=None, factory=None, help: str = "",
         listed: str | None = None):
    """A dataclass field with its declared range: ``min ≤ v ≤ max``, ``v < below``, ``v in choices``.

    ``listed`` (list settings): ``"values"`` — at least one value, each once; ``"or-empty"`` — each value once, and
    empty allowed because it means something (``grid.steps=[]``: no grid)."""
    meta = {k: v for k, v in dict(min=min, max=max, below=below, choices=choices, help=help, listed=listed).items()
            if v is not None and v != ""}
    if factory is not None:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)


# ----------------------------------------------------------------------------------------------- groups
@dataclass
class Diffusion:
    num_timesteps: int = spec(1000, min=1)
    schedule: str = spec("linear", choices=SCHEDULES)
    beta_start: float = spec(1e-4, min=1e-12, below=1)
    beta_end: float = spec(0.02, min=1e-12, below=1)


@dataclass
class Fast:
    bf16: bool = False
    channels_last: bool = False
    compile: bool = False
    compile_mode: Optional[str] = spec(None, choices=COMPILE_MODES)


@dataclass
class Sampler:
    name: str = "ddim"
    steps: int = spec(50, min=1)
    eta: float = spec(0.0, min=0, max=1, help="the paper's η: 0 = DDIM, 1 = DDPM")
    skip: str = spec("uniform", choices=SKIPS)
    variance: str = spec("eta", choices=VARIANCES)
    clip_x0: bool = False
    batch_size: int = spec(250, min=1)
    fast: Fast = field(default_factory=Fast)


@dataclass
class Grid:
    samplers: List[str] = spec(factory=lambda: ["ddim"], listed="values")
    steps: List[int] = spec(factory=list, min=1, listed="or-empty")   # empty: no grid, the one sampler.* cell
    eta: List[float] = spec(factory=list, min=0, max=1, listed="or-empty", help="the paper's η: 0 = DDIM, 1 = DDPM")   # needed by ddim rows (see cells_from_config)
    hat: bool = False
    skip: str = spec("uniform", choices=SKIPS)
    ddim_at_nfe: bool = False  # also DDIM η = 0 at each other sampler's NFE, for the paired comparison


from ddim_bench.metric_table import COMPARABLE as CLAIM_METRICS  # noqa: E402  (the claimable metric keys)


@dataclass
class CellRef:
    """One cell of a sweep, named in a claim; a setting left null matches any (it must then name one cell)."""
    sampler: str = "ddim"
    steps: int = spec(MISSING, min=1)
    eta: float = spec(0.0, min=0)
    variance: str = spec("eta", choices=VARIANCES)
    skip: Optional[str] = spec(None, choices=SKIPS)
    clip_x0: Optional[bool] = None


@dataclass
class Claim:
    """A user's claim: ``metric`` of cell ``a`` is ``direction`` (lower / higher) than of cell ``b``; checked as the
    paper's claims are (paired over seed blocks, Δ = metric(a) − metric(b), interval, verdict)."""
    a: CellRef = field(default_factory=CellRef)
    b: CellRef = field(default_factory=CellRef)
    metric: str = spec("fid", choices=CLAIM_METRICS)
    direction: str = spec(MISSING, choices=("lower", "higher"))
    name: Optional[str] = None


@dataclass
class Model:  # the DDPM UNet's keyword arguments
    _target_: str = "ddim_bench.models.unet.UNet"
    in_channels: int = spec(3, min=1)
    out_ch: int = spec(3, min=1)
    ch: int = spec(128, min=1)
    ch_mult: List[int] = spec(factory=lambda: [1, 2, 2, 2], min=1)
    num_res_blocks: int = spec(2, min=1)
    attn_resolutions: List[int] = field(default_factory=list)
    dropout: float = spec(0.0, min=0, below=1)
    resolution: int = spec(32, min=1)
    resamp_with_conv: bool = True


@dataclass
class Data:  # the known part; other keys go to the DataModule named by _target_
    _target_: str = MISSING
    name: str = MISSING
    channels: int = spec(3, min=1)
    resolution: int = spec(32, min=1)
    batch_size: int = spec(128, min=1)
    num_workers: int = spec(0, min=0)


@dataclass
class Trainer:  # the known part; other keys go to pytorch_lightning.Trainer
    accelerator: str = spec("auto", choices=("auto", "cpu", "gpu", "cuda", "mps", "tpu"))
    max_steps: int = spec(2000, min=1)
    num_nodes: int = spec(1, min=1)
    gradient_clip_val: Optional[float] = spec(None, min=0)
    log_every_n_steps: int = spec(25, min=1)


@dataclass
class Bootstrap:
    replicates: int = spec(200, min=0, help="0 turns the intervals off; else the bootstrap's replicates of means")
    partitions: int = spec(16, min=2, help="random partitions into disjoint subsets behind each interval")
    level: float = spec(0.95, min=0.5, below=1)
    seed: int = spec(0, min=0)


@dataclass
class Metrics:
    extractor: str = spec("digits", choices=EXTRACTORS)
    weights_path: Optional[str] = None
    classifier: Optional[Dict[str, Any]] = None
    fid: bool = True
    isc: bool = True
    kid: bool = True
    prc: bool = True
    kid_subset_size: int = spec(1000, min=2)
    kid_subsets: int = spec(100, min=1)
    isc_splits: int = spec(10, min=1)
    batch_size: int = spec(256, min=1)
    rng_seed: int = spec(2020, min=0, help="torch-fidelity's seed for KID's subsets and IS's shuffle (its default)")
    keep_features: bool = True
    bootstrap: Bootstrap = field(default_factory=Bootstrap)


@dataclass
class Wandb:
    project: str = "ddim-bench"
    entity: Optional[str] = None
    mode: str = spec("offline", choices=WANDB_MODES)
    group: Optional[str] = None
    tags: List[str] = field(default_factory=list)
    notes: Optional[str] = None
    dir: Optional[str] = None
    console: str = spec("off", choices=("off", "wrap", "redirect", "auto"))
    silent: bool = True          # false: wandb's own console output (run summaries) as well
    log_model: bool = False


@dataclass
class Logger:
    wandb: Wandb = field(default_factory=Wandb)


@dataclass
class Paths:
    root_dir: str = "."
    data_dir: str = "data"
    log_dir: str = "outputs"
    cache_dir: str = MISSING     # conf/paths/default.yaml: ${ddim_cache:}
    results_dir: str = MISSING
    output_dir: str = MISSING


@dataclass
class Reference:
    split: str = spec("train", choices=("train", "test"))
    n: Optional[int] = spec(None, min=2)


@dataclass
class Eval:
    accelerator: str = spec("cpu", choices=("cpu", "gpu", "cuda", "auto"))
    devices: int = spec(1, min=1)
    num_nodes: int = spec(1, min=1)
    lease_s: float = spec(300.0, min=1, help="a record's claim is renewed every tenth of it")
    timeout_s: float = spec(1800.0, min=1, help="how long a rank waits for the others in a collective")


@dataclass
class Optim:
    lr: float = spec(2e-4, min=1e-12)
    warmup_steps: int = spec(0, min=0)


@dataclass
class Ema:
    decay: float = spec(0.9999, min=0, below=1)


@dataclass
class SampleGridCb:
    every_n_steps: int = spec(500, min=0)
    n: int = spec(64, min=1)
    steps: int = spec(50, min=1)


@dataclass
class FidCb:
    every_n_steps: int = spec(0, min=0, help="0 = off")
    n_samples: int = spec(256, min=2)
    steps: int = spec(50, min=1)


@dataclass
class Callbacks:
    checkpoint_every_n_steps: int = spec(500, min=1)
    sample_grid: SampleGridCb = field(default_factory=SampleGridCb)
    fid: FidCb = field(default_factory=FidCb)


# ----------------------------------------------------------------------------------------------- apps
@dataclass
class App:
    """Keys every app has.  The experiment presets set keys for all apps at once, so each app's schema lists the
    groups it does not use as ``Any`` (accepted, unchecked, unused) and types the ones it uses."""
    task_name: str = MISSING
    sweep_name: str = "default"
    logger: Logger = field(default_factory=Logger)
    paths: Paths = field(default_factory=Paths)
    slurm: Any = None
    data: Any = None
    model: Any = None
    diffusion: Any = None
    sampler: Any = None
    metrics: Any = None
    trainer: Any = None
    callbacks: Any = None
    optim: Any = None
    ema: Any = None
    seed: Any = None
    seeds: Any = None
    n_samples: Any = None
    keep_images: Any = None
    reference: Any = None
    eval: Any = None
    grid: Any = None
    download: bool = True        # fetch missing public files (Hub models, weights, CIFAR-10) into paths.cache_dir
    claims: Any = None


@dataclass
class TrainApp(App):
    seed: int = spec(0, min=0)
    data: Any = MISSING          # open: Data
    model: Model = field(default_factory=Model)
    diffusion: Diffusion = field(default_factory=Diffusion)
    sampler: Sampler = field(default_factory=Sampler)
    trainer: Any = MISSING       # open: Trainer
    callbacks: Callbacks = field(default_factory=Callbacks)
    metrics: Metrics = field(default_factory=Metrics)
    optim: Optim = field(default_factory=Optim)
    ema: Ema = field(default_factory=Ema)
    ckpt_path: Optional[str] = None


@dataclass
class CheckpointApp(App):
    checkpoint: str = MISSING
    weights: str = spec("ema", choices=WEIGHTS)
    data: Any = MISSING          # open: Data
    model: Any = None            # the checkpoint's own model is used
    diffusion: Diffusion = field(default_factory=Diffusion)
    sampler: Sampler = field(default_factory=Sampler)
    metrics: Metrics = field(default_factory=Metrics)


@dataclass
class SweepApp(CheckpointApp):
    n_samples: int = spec(1000, min=2)
    seeds: List[int] = spec(factory=lambda: [0], min=0, listed="values")
    keep_images: int = spec(64, min=0)
    reference: Reference = field(default_factory=Reference)
    eval: Eval = field(default_factory=Eval)
    grid: Grid = field(default_factory=Grid)
    claims: List[Claim] = field(default_factory=list)
    plan: bool = False


@dataclass
class ReconstructApp(CheckpointApp):
    device: str = "cpu"
    steps: List[int] = spec(factory=lambda: [10, 20, 50, 100], min=1, listed="values")
    n_images: int = spec(64, min=1)
    split: str = spec("test", choices=("train", "test"))


@dataclass
class InterpolateApp(CheckpointApp):
    device: str = "cpu"
    steps: List[int] = spec(factory=lambda: [10, 50], min=1, listed="values")
    pairs: int = spec(4, min=1)
    points: int = spec(11, min=2)
    seed: int = spec(0, min=0)


@dataclass
class ReportApp(App):
    results_dir: str = MISSING
    paper: str = spec("auto", choices=("auto", "cifar10", "celeba", "none"))
    bootstrap: Bootstrap = field(default_factory=Bootstrap)
    claims: List[Claim] = field(default_factory=list)
    status: bool = False         # true: only show per sweep what is done, in progress and missing
