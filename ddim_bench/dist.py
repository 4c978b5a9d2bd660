"""Process groups for sampling sweeps, through Lightning Fabric (which also reads ranks from SLURM/torchrun).

Rank 0 scores, stores, tracks and prints; every rank samples its share of the sample indices.

A rank that dies stops the others: a collective that fails or waits longer than ``eval.timeout_s`` (the process
group's timeout) raises :class:`PeerLost`; and rank 0 watches the ranks on its own host, so that it stops within a
second of one dying (before Lightning's launcher kills it without a chance to release its claim) by calling
``on_peer_lost``.
"""
from __future__ import annotations

import os
import re
import socket
import threading
import time
from datetime import timedelta

import torch


class PeerLost(Exception):
    """Another rank of the process group died or stopped answering."""


class Dist:
    def __init__(self, cfg_eval):
        from lightning_fabric import Fabric
        from lightning_fabric.strategies import DDPStrategy
        world = int(cfg_eval.devices) * int(cfg_eval.num_nodes)
        self.timeout_s = float(getattr(cfg_eval, "timeout_s", 1800))
        timeout = timedelta(seconds=self.timeout_s)
        strategy = DDPStrategy(timeout=timeout) if world > 1 else "auto"
        self.fabric = Fabric(accelerator=cfg_eval.accelerator, devices=cfg_eval.devices,
                             num_nodes=cfg_eval.num_nodes, strategy=strategy)
        self.fabric.launch()
        self.rank, self.world, self.device = self.fabric.global_rank, self.fabric.world_size, self.fabric.device
        self.on_peer_lost = None  # rank 0: called (from a watcher thread) with a one-line reason
        self._watching = threading.Event()
        if self.world > 1:
            peers = self.gather((socket.gethostname(), os.getpid()))
            if self.main:
                here = [(r, pid) for r, (host, pid) in enumerate(peers) if host == socket.gethostname() and r]
                self._watching.set()
                threading.Thread(target=self._watch, args=(here,), name="peer-watch", daemon=True).start()

    @property
    def main(self) -> bool:
        return self.rank == 0

    def stop_watching(self) -> None:
        """The work is over (or stopping): the other ranks may exit now without that counting as a death."""
        self._watching.clear()

    def _watch(self, peers: list[tuple[int, int]]) -> None:
        """Ranks started by this process (Lightning's launcher) are waited for: the death is seen at once and
        reaped here, before the launcher's own 5-second poll would SIGKILL rank 0 without a word. Others are
        polled."""
        children = [(r, pid) for r, pid in peers if _is_child(pid)]
        for r, pid in children:
            threading.Thread(target=self._wait_child, args=(r, pid), name=f"peer-wait-{r}", daemon=True).start()
        polled = [p for p in peers if p not in children]
        while polled and self._watching.is_set():
            time.sleep(0.2)
            gone = [(r, pid) for r, pid in polled if not _running(pid)]
            if gone:
                self._lost(*gone[0])
                return

    def _wait_child(self, rank: int, pid: int) -> None:
        try:
            _, status = os.waitpid(pid, 0)
        except ChildProcessError:  # already reaped elsewhere
            return
        if os.waitstatus_to_exitcode(status) != 0:
            self._lost(rank, pid)

    def _lost(self, rank: int, pid: int) -> None:
        if self.on_peer_lost is not None and self._watching.is_set():
            self.on_peer_lost(f"rank {rank} of {self.world} (pid {pid}) died")

    def _collective(self, fn, *args):
        try:
            return fn(*args)
        except (RuntimeError, torch.distributed.DistError) as err:
            raise PeerLost(peer_error(err, self.rank, self.timeout_s)) from None

    def gather(self, obj) -> list:
        if self.world == 1:
            return [obj]
        out = [None] * self.world
        self._collective(torch.distributed.all_gather_object, out, obj)
        return out

    def gather_to_main(self, obj) -> list | None:
        """Every rank's ``obj`` on rank 0 (in rank order); None elsewhere (no rank but 0 holds the others')."""
        if self.world == 1:
            return [obj]
        out = [None] * self.world if self.main else None
        self._collective(torch.distributed.gather_object, obj, out, 0)
        return out

    def gather_tensors(self, t: torch.Tensor) -> list | None:
        """Every rank's ``t`` (one shape on all ranks) on rank 0's CPU, in rank order; None elsewhere."""
        if self.world == 1:
            return [t]
        on = t.to(self.device)
        out = [torch.empty_like(on) for _ in range(self.world)] if self.main else None
        self._collective(torch.distributed.gather, on, out, 0)
        return [o.cpu() for o in out] if self.main else None

    def sum_(self, t: torch.Tensor) -> torch.Tensor:
        """Sum ``t`` over all ranks, in place (on the process group's device, as NCCL needs)."""
        if self.world > 1:
            on = t.to(self.device)
            self._collective(torch.distributed.all_reduce, on, torch.distributed.ReduceOp.SUM)
            t.copy_(on)
        return t

    def broadcast(self, obj):
        return self._collective(self.fabric.broadcast, obj, 0) if self.world > 1 else obj

    def barrier(self):
        if self.world > 1:
            self._collective(self.fabric.barrier)

    def close(self) -> None:
        """The work is done on every rank: meet once more, then take the process group down. A process that exits
        with gloo's process group still up can abort at exit ("terminate called without an active exception",
        exit -6) after its work is done; only call this on success, as a rank that failed may not be answering."""
        self.stop_watching()
        if self.world > 1 and torch.distributed.is_initialized():
            self.barrier()
            torch.distributed.destroy_process_group()


def peer_error(err: Exception, rank: int, timeout_s: float) -> str:
    """One line for a failed collective: a rank that stopped answering (the process group's timeout: a hung rank
    or a lost node), one whose connection closed (it crashed or was killed), else the backend's first sentence
    without its source-file prefix."""
    text = re.sub(r"^\[[^\]]*\]\s*", "", (str(err).strip().splitlines() or [type(err).__name__])[0])
    if "timed out" in text.lower() or "timeout" in text.lower():  # gloo: "Timed out ..."; NCCL: "... timeout"
        return (f"rank {rank} heard nothing from another rank within eval.timeout_s ({timeout_s:g} s): a rank hung "
                f"or its node was lost")
    if "connection closed" in text.lower() or "connection reset" in text.lower():
        return f"another rank closed its connection to rank {rank}: it crashed or was killed"
    return f"a collective of rank {rank} failed: {text.split('. ')[0]}"


def _is_child(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
        return int(stat[stat.rindex(")") + 2:].split()[1]) == os.getpid()
    except (OSError, ValueError, IndexError):
        return False


def _running(pid: int) -> bool:
    """The process exists and is not a zombie (a killed child its parent has not reaped yet)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
        return stat[stat.rindex(")") + 2] not in "ZX"
    except (OSError, ValueError, IndexError):
        try:
            os.kill(pid, 0)
            return True
        except ProcessLookupError:
            return False
        except PermissionError:
            return True


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
