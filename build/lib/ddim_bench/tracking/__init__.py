"""Experiment tracking: Weights & Biases (offline by default) plus plain CSV/JSON files beside every run.

``lightning_logger`` gives training its loggers; ``Tracker`` is one W&B run for anything else; ``runs`` says
what each app logs.
"""
from ddim_bench.tracking.lightning import lightning_logger
from ddim_bench.tracking.settings import MODES, finish_active_run, scrub, validate_mode
from ddim_bench.tracking.tracker import Tracker

__all__ = ["MODES", "Tracker", "finish_active_run", "lightning_logger", "scrub", "validate_mode"]
