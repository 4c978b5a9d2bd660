"""Performance benchmarks of ddim-bench (not part of the installed package); run from the repository root,
e.g. ``python -m benchmarks.run_all --quick`` or ``python benchmarks/run_all.py``."""
