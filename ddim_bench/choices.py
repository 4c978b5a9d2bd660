"""The named choices of the settings, declared once: :mod:`ddim_bench.schema` checks a config against them, and the
code that acts on a choice imports its list from here (no dependencies: the math modules import it too)."""

SKIPS = ("uniform", "quad", "trailing", "linspace")  # the timestep grid (ddim.timesteps); "uniform" is diffusers' "leading"
VARIANCES = ("eta", "hat")                            # σ(η) of Eq. 16, or the σ̂ row
SCHEDULES = ("linear", "cosine")                      # β schedules (ddim.alphas_cumprod)
WEIGHTS = ("ema", "raw")
WANDB_MODES = ("online", "offline", "disabled")
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")  # torch.compile's
DIGIT_EXTRACTORS = ("digits", "mnist")               # our classifier's features, trained on that data
DINOV2_EXTRACTORS = ("dinov2-vit-s-14", "dinov2-vit-b-14", "dinov2-vit-l-14")
EXTRACTORS = (*DIGIT_EXTRACTORS, "inception-v3-compat", *DINOV2_EXTRACTORS, "stand-in-2048")  # the last: benchmarks only
