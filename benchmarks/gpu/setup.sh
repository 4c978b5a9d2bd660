#!/usr/bin/env bash
# On the lent GPU machine (its own Python 3.12 with a CUDA torch, Lightning, torchmetrics, scikit-learn,
# matplotlib, tqdm; no internet): install what it lacks from the wheels that `make gpu-wheels` put in .whl/
# (the project's own among them, installed without its dependencies) into a folder of their own, so nothing of
# its torch is touched; then run the GPU check.  Arguments go to benchmarks/gpu/check.py.
#
#   GPU_CHECK_OUT=<folder> bash benchmarks/gpu/setup.sh [--budget-speed 270 ...]
#
# PYTHON (default python3), WHEELS (default .whl) and GPU_SITE (default .whl/site) can be changed.
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PYTHON:-$(command -v python3 || command -v python)}
WHEELS=${WHEELS:-.whl}
SITE=${GPU_SITE:-$WHEELS/site}
t0=$(date +%s)

"$PY" -c 'import sys, torch; print(f"python {sys.version.split()[0]}, torch {torch.__version__}, cuda {torch.version.cuda}, '\
'gpu: {torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}")'

# the wheels to install: those whose distribution this Python lacks (the project's own always), less any built
# for another torch than this one (a wheel that pins torch==X, as torchvision's do)
mapfile -t missing < <("$PY" -I - "$WHEELS" <<'PYEOF'
import glob, importlib.metadata as md, os, re, sys, zipfile
import torch
ours = torch.__version__.split("+")[0]
wheels = sorted(glob.glob(os.path.join(sys.argv[1], "*.whl")))
if not wheels:
    print(f"no wheels in {sys.argv[1]}: run 'make gpu-wheels' on the development machine first", file=sys.stderr)
for whl in wheels:
    name, version = os.path.basename(whl).split("-")[:2]
    try:
        if name != "ddim_bench":
            print(f"already there: {name} {md.version(name)} (ours: {version})", file=sys.stderr)
            continue
    except md.PackageNotFoundError:
        pass
    with zipfile.ZipFile(whl) as z:
        meta = next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))
        pins = re.findall(r"^Requires-Dist: torch ?\(?==([\w.]+)", z.read(meta).decode(), re.M)
    if pins and pins[0] != ours:
        print(f"not installed: {os.path.basename(whl)} is built for torch {pins[0]}, this one is {ours}",
              file=sys.stderr)
        continue
    print(whl)
PYEOF
)

rm -rf "$SITE"
mkdir -p "$SITE"
SITE=$(cd "$SITE" && pwd)
if "$PY" -m pip --version >/dev/null 2>&1; then
    if [ ${#missing[@]} -gt 0 ]; then
        # the project's own wheel among them (metadata, console scripts); its code runs from this tree, which
        # comes first on PYTHONPATH (ddim_bench/conf/ inside it).  No .pyc compiling: only what is imported is.
        "$PY" -m pip install -q --no-compile --no-index --no-deps --target "$SITE" "${missing[@]}"
    fi
else  # no pip: a wheel is a zip of what goes into site-packages
    echo "note: no pip for $PY: unpacking the wheels instead (no console scripts)"
    "$PY" - "$SITE" "${missing[@]}" <<'PYEOF'
import os, sys, zipfile
site, wheels = sys.argv[1], sys.argv[2:]
for whl in wheels:
    with zipfile.ZipFile(whl) as z:
        for info in z.infolist():
            path = z.extract(info, site)
            mode = info.external_attr >> 16
            if mode & 0o111:
                os.chmod(path, mode & 0o777)
PYEOF
fi

export PYTHONPATH="$PWD:$SITE${PYTHONPATH:+:$PYTHONPATH}"
export PATH="$SITE/bin:$PATH"
"$PY" -c 'import torchvision' 2>/dev/null || echo "warning: no torchvision here: torch-fidelity (the sweep's FID) needs" \
    "it; make gpu-wheels GPU_TORCHVISION=<the version matching this torch> adds its wheel"
echo "setup: $(( $(date +%s) - t0 )) s, ${#missing[@]} wheels installed into $SITE"
exec "$PY" -m benchmarks.gpu.check "$@"
