# The two commands a newcomer needs: `make demo` (the main job on the embedded digits data) and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
OUT ?= outputs/demo

.PHONY: demo test perf clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

demo: $(VENV)/.installed
	$(VENV)/bin/ddim-bench-train experiment=digits hydra.run.dir=$(OUT)/train
	$(VENV)/bin/ddim-bench-sweep experiment=digits sweep_name=demo checkpoint=$(OUT)/train/checkpoints/last.ckpt \
		paths.results_dir=$(OUT)/results hydra.run.dir=$(OUT)/sweep
	$(VENV)/bin/ddim-bench-tasks experiment=digits sweep_name=demo checkpoint=$(OUT)/train/checkpoints/last.ckpt \
		paths.results_dir=$(OUT)/results hydra.run.dir=$(OUT)/tasks
	$(VENV)/bin/ddim-bench-report sweep_name=demo results_dir=$(OUT)/results hydra.run.dir=$(OUT)/report

test: $(VENV)/.installed
	$(PY) -m pytest -q -rs tests

perf: $(VENV)/.installed
	$(PY) benchmarks/perf.py

clean:
	rm -rf outputs .cache
