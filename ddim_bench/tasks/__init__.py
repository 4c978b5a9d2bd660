"""The inversion tasks on a checkpoint: reconstruction (the paper's Table 2, §5.4) and interpolation (§5.3);
``ddim-bench-reconstruct`` and ``ddim-bench-interpolate`` are the console scripts around their ``run``."""
