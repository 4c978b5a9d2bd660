"""The GPU fast path for sampling, as switches that are all off by default.

``channels_last`` only changes the memory layout.  ``bf16`` (autocast) and ``compile`` change the numbers
a little, so a sweep that turns them on is no longer comparable bit for bit with one that does not.
``compile_mode="reduce-overhead"`` records CUDA graphs of the (fixed-shape) network call; the sampler's
loop itself needs none: its α's are Python floats, so nothing in it waits on the device.

In a config: ``sampler.fast: {bf16: false, channels_last: false, compile: false, compile_mode: null}``,
applied with :func:`wrap` to the model that :func:`ddim_bench.models.checkpoint.build_model` returns.
"""
from __future__ import annotations

import torch
from torch import nn

from ddim_bench import choices
from ddim_bench.errors import UserError

DEFAULTS = {"bf16": False, "channels_last": False, "compile": False, "compile_mode": None}
COMPILE_MODES = (None, *choices.COMPILE_MODES)
CUDAGRAPH_MODES = ("reduce-overhead", "max-autotune")


class AutocastModel(nn.Module):
    """Runs ``model(x, t)`` under ``torch.autocast(x's device type, dtype)``; returns float32 ε."""

    def __init__(self, model: nn.Module, dtype: torch.dtype = torch.bfloat16):
        super().__init__()
        self.model, self.dtype = model, dtype

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        with torch.autocast(device_type=x.device.type, dtype=self.dtype):
            eps = self.model(x, t)
        return eps.float()


class GraphStep(nn.Module):
    """A CUDA-graphed model called in a loop: each call starts a new graph step and hands back a copy.

    CUDA-graph outputs live in a pool that the next replay overwrites; the copy keeps ε valid for as long as
    the caller holds it (one image-sized tensor per step, small next to the network).
    """

    def __init__(self, compiled: nn.Module):
        super().__init__()
        self.compiled = compiled

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        torch.compiler.cudagraph_mark_step_begin()
        return self.compiled(x, t).clone()


def prepare_model(model: nn.Module, *, channels_last: bool = False, compile: bool = False,
                  compile_mode: str | None = None) -> nn.Module:
    """The model in channels-last layout (in place, like ``Module.to``) and/or compiled; with neither switch it is
    returned as is."""
    if compile_mode not in COMPILE_MODES:
        raise UserError(f"sampler.fast.compile_mode={compile_mode} must be one of "
                        f"{', '.join(str(m) for m in COMPILE_MODES)}")
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    if compile:
        compiled = torch.compile(model, mode=compile_mode)
        model = GraphStep(compiled) if compile_mode in CUDAGRAPH_MODES else compiled
    return model


def check_bf16(device: torch.device) -> None:
    if device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise UserError(f"sampler.fast.bf16=true but {torch.cuda.get_device_name(device)} has no bfloat16; "
                        f"set sampler.fast.bf16=false")


def wrap(model: nn.Module, cfg_fast, device) -> nn.Module:
    """Apply ``sampler.fast`` (keys bf16, channels_last, compile, compile_mode) to a model for sampling.

    Order: layout on the weights, then autocast, then compile around both (so autocast is traced too).
    """
    opts = {**DEFAULTS, **dict(cfg_fast or {})}  # keys and types are checked by the config schema (schema.Fast)
    if opts["bf16"]:
        check_bf16(torch.device(device))
    model = prepare_model(model, channels_last=bool(opts["channels_last"]))
    if opts["bf16"]:
        model = AutocastModel(model, torch.bfloat16)
    return prepare_model(model, compile=bool(opts["compile"]), compile_mode=opts["compile_mode"])
