"""Process groups for sampling sweeps, through Lightning Fabric (which also reads ranks from SLURM/torchrun).

Rank 0 scores, stores, tracks and prints; every rank samples its share of the sample indices.
"""
from __future__ import annotations

import torch


class Dist:
    def __init__(self, cfg_eval):
        from lightning_fabric import Fabric
        world = int(cfg_eval.devices) * int(cfg_eval.num_nodes)
        self.fabric = Fabric(accelerator=cfg_eval.accelerator, devices=cfg_eval.devices,
                             num_nodes=cfg_eval.num_nodes, strategy="ddp" if world > 1 else "auto")
        self.fabric.launch()
        self.rank, self.world, self.device = self.fabric.global_rank, self.fabric.world_size, self.fabric.device

    @property
    def main(self) -> bool:
        return self.rank == 0

    def gather(self, obj) -> list:
        if self.world == 1:
            return [obj]
        out = [None] * self.world
        torch.distributed.all_gather_object(out, obj)
        return out

    def gather_to_main(self, obj) -> list | None:
        """Every rank's ``obj`` on rank 0 (in rank order); None elsewhere (no rank but 0 holds the others')."""
        if self.world == 1:
            return [obj]
        out = [None] * self.world if self.main else None
        torch.distributed.gather_object(obj, out, dst=0)
        return out

    def gather_tensors(self, t: torch.Tensor) -> list | None:
        """Every rank's ``t`` (one shape on all ranks) on rank 0's CPU, in rank order; None elsewhere."""
        if self.world == 1:
            return [t]
        on = t.to(self.device)
        out = [torch.empty_like(on) for _ in range(self.world)] if self.main else None
        torch.distributed.gather(on, out, dst=0)
        return [o.cpu() for o in out] if self.main else None

    def sum_(self, t: torch.Tensor) -> torch.Tensor:
        """Sum ``t`` over all ranks, in place (on the process group's device, as NCCL needs)."""
        if self.world > 1:
            on = t.to(self.device)
            torch.distributed.all_reduce(on, op=torch.distributed.ReduceOp.SUM)
            t.copy_(on)
        return t

    def broadcast(self, obj):
        return self.fabric.broadcast(obj, src=0) if self.world > 1 else obj

    def barrier(self):
        if self.world > 1:
            self.fabric.barrier()


def peak_memory_mb(device) -> float:
    """CUDA: the max allocated since the last reset; CPU: the process's peak RSS (Linux reports KiB)."""
    if torch.device(device).type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2 ** 20
    import resource
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def device_name(device) -> str:
    """What a throughput figure is measured on: the GPU's name, else the CPU's model name."""
    if torch.device(device).type == "cuda":
        return torch.cuda.get_device_name(device)
    import platform
    try:
        with open("/proc/cpuinfo") as f:
            return next(ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


def reset_peak_memory(device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def pick_device(name: str, key: str = "device") -> torch.device:
    """``cpu``, ``cuda[:N]`` or ``auto`` (CUDA when available), for the single-process apps."""
    from ddim_bench.errors import UserError
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UserError(f"{key}={name} must be cpu, cuda, cuda:N or auto") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"{key}={name} but this machine has no GPU; use {key}=cpu")
    return device
