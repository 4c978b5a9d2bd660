"""What the inversion tasks (reconstruct, interpolate) share: load the checkpoint and check the config against it."""
from __future__ import annotations

from ddim_bench import cli, config, validation
from ddim_bench.dist import pick_device
from ddim_bench.models import checkpoint


def load_checked(cfg, steps_key: str) -> dict:
    """Device, checkpoint, its schedule (a differing ``diffusion`` override is refused), α and the image shape;
    ``cfg.steps`` checked against the checkpoint's T.  Loads no model onto the device yet."""
    device = pick_device(str(cfg.device))
    loaded = checkpoint.load(cfg.checkpoint, cfg.weights, cfg.paths.cache_dir, cfg.download)
    schedule = loaded.schedule or config.plain(cfg.diffusion)
    validation.check_schedule(cfg.diffusion, schedule, cfg.checkpoint, cli.overridden("diffusion"))
    validation.check_steps(list(cfg.steps), schedule["num_timesteps"], steps_key)
    shape = loaded.shape
    return {"device": device, "loaded": loaded, "schedule": schedule, "alphas": config.build_alphas(schedule),
            "shape": shape}
