# The two commands a newcomer needs: `make demo` (the main job on the embedded digits data) and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
OUT ?= outputs/demo

.PHONY: demo demo-samplers test test-quick test-lowest perf perf-scale clean

# The exact versions of constraints.txt (what CI runs); pyproject.toml itself only states compatible ranges.
$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints.txt -e '.[dev]'
	touch $@

BIN := $(VENV)/bin
CKPT = checkpoint=$(OUT)/train/checkpoints/last.ckpt
DEMO = experiment=digits sweep_name=demo paths.results_dir=$(OUT)/results

# The main job: train the tiny digits UNet, sweep S x eta (+ sigma-hat) over three seed blocks with bootstrap
# intervals, the inversion tasks, and the report with Table 1, the claims table and the figures.
demo: $(VENV)/.installed
	$(BIN)/ddim-bench-train experiment=digits hydra.run.dir=$(OUT)/train
	$(BIN)/ddim-bench-sweep $(DEMO) $(CKPT) 'seeds=[0,1,2]' hydra.run.dir=$(OUT)/sweep
	$(BIN)/ddim-bench-reconstruct $(DEMO) $(CKPT) hydra.run.dir=$(OUT)/reconstruct
	$(BIN)/ddim-bench-interpolate $(DEMO) $(CKPT) hydra.run.dir=$(OUT)/interpolate
	$(BIN)/ddim-bench-report sweep_name=demo paths.results_dir=$(OUT)/results hydra.run.dir=$(OUT)/report
	@echo "tables, claims and figures: $(OUT)/results/report/   W&B runs (offline): $(OUT)/results/runs/ and $(OUT)/train/wandb/"

# DDIM against the samplers that followed it, on the demo's checkpoint (run `make demo` first): FID by counted
# network calls, each sampler against DDIM eta=0 at the same NFE (paired), the best cell at each budget, and one
# claim of your own (SAMPLER_CLAIM); tables and FID vs NFE in $(OUT)/samplers/report/.
SAMPLER_CLAIM ?= {a: {sampler: deis, steps: 10}, b: {sampler: ddim, steps: 10}, metric: fid, direction: lower}
demo-samplers: $(VENV)/.installed
	$(BIN)/ddim-bench-sweep experiment=digits grid=samplers sweep_name=samplers $(CKPT) 'seeds=[0,1,2]' \
		'claims=[$(SAMPLER_CLAIM)]' paths.results_dir=$(OUT)/samplers hydra.run.dir=$(OUT)/samplers-run
	$(BIN)/ddim-bench-report sweep_name=samplers paths.results_dir=$(OUT)/samplers hydra.run.dir=$(OUT)/samplers-report

test: $(VENV)/.installed
	$(PY) -m pytest -q -rs tests

# The unit tests only, for the edit loop: everything but the end-to-end tests (marked slow; see tests/conftest.py).
test-quick: $(VENV)/.installed
	$(PY) -m pytest -q -rs -m "not slow" tests

# The oldest versions pyproject.toml admits (every lower bound), in their own venv: the math, sampler, metric and
# store tests, and train -> sweep -> report -> W&B end to end.
LOWEST := .venv-lowest
$(LOWEST)/.installed: pyproject.toml
	$(PYTHON) -m venv $(LOWEST)
	$(LOWEST)/bin/python -m pip install -q --upgrade pip
	$(PYTHON) tests/lower_bounds.py > $(LOWEST)/lowest.txt
	$(LOWEST)/bin/python -m pip install -q -c $(LOWEST)/lowest.txt -e '.[dev]'
	touch $@

test-lowest: $(LOWEST)/.installed
	$(LOWEST)/bin/python -m pytest -q -rs $(addprefix tests/test_,$(LOWEST_TESTS))

LOWEST_TESTS := diffusion.py samplers.py metrics.py uncertainty.py unet.py noise.py data.py store.py claims.py \
	train.py sweep.py report.py sweep_wandb.py diffusers_models.py downloads.py fid_scale.py sweep_plan.py \
	sampler_report.py

perf: $(VENV)/.installed
	$(PY) benchmarks/run_all.py

# The harness's own cost at paper scale (N = 5 000 and 50 000, 2 cells x 3 blocks, sweep then report) with a
# stand-in network and extractor: docs/perf-scale.md.  About 30 minutes on 2 CPU cores.
perf-scale: $(VENV)/.installed
	$(PY) -m benchmarks.cpu.paper_scale

clean:
	rm -rf outputs .cache $(LOWEST)

# The GPU check (benchmarks/gpu/check.py): on a machine with CUDA the full run (under 8 minutes on an H100),
# elsewhere its small CPU version.  On the lent GPU machine (no venv, no internet) run
# `GPU_CHECK_OUT=<folder> bash benchmarks/gpu/setup.sh` instead, after `make gpu-wheels` here.
.PHONY: gpu-check gpu-wheels
GPU_CHECK_OUT ?= outputs/gpu-check
gpu-check: $(VENV)/.installed
	$(PY) benchmarks/gpu/check.py --out $(GPU_CHECK_OUT) $$($(PY) -c "import torch; print('' if torch.cuda.is_available() else '--quick')")

# Wheels of what the GPU machine lacks, for its Python (cp312, manylinux x86-64), into .whl/ (ignored by git).
# Also torchvision (torch-fidelity needs it) for the GPU machine's torch (2.11 when last seen): benchmarks/gpu/setup.sh
# installs it only where torchvision is missing and the wheel's torch pin is that machine's torch.
GPU_TORCHVISION ?= 0.26.0
gpu-wheels: $(VENV)/.installed
	$(PY) -m benchmarks.gpu.wheels --dest .whl $(if $(GPU_TORCHVISION),--torchvision $(GPU_TORCHVISION))
