"""Where a (re)started training run resumes from: an explicit ``ckpt_path`` or the run folder's newest readable
checkpoint, checked before anything is written.

A checkpoint is readable when ``torch.load(..., weights_only=True, mmap=True)`` opens it: that reads the zip
directory (at the end of the file, so a truncated file fails) and the pickled structure, not the tensor data.
A truncated ``last.ckpt`` (a kill while Lightning wrote it) is named in one warning line and the next newest
readable checkpoint is used instead.
"""
from __future__ import annotations

import glob
import os
import pickle
import sys
from dataclasses import dataclass

from ddim_bench.errors import UserError


@dataclass
class Resume:
    """``path``: the checkpoint for ``Trainer.fit(ckpt_path=...)``, None for a fresh start; ``step``: its
    ``global_step`` (None when unknown)."""
    path: str | None = None
    step: int | None = None

    @property
    def history_step(self) -> float | None:
        """Logged rows of steps before this one belong to the resumed run's history (all of them when the step
        is unknown); None for a fresh start."""
        if self.path is None:
            return None
        return float("inf") if self.step is None else float(self.step)


class Unreadable(Exception):
    pass


def checkpoint_step(path: str) -> int | None:
    """The checkpoint's ``global_step`` (None when its pickle needs more than ``weights_only``); raises Unreadable."""
    import torch
    if os.path.getsize(path) == 0:
        raise Unreadable("empty file")
    try:
        try:
            ckpt = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as e:
            if "mmap can only be used" not in str(e):
                raise
            ckpt = torch.load(path, map_location="cpu", weights_only=True)  # the pre-zip format: read it all
    except pickle.UnpicklingError as e:
        if "Weights only load failed" in str(e):  # intact, but holds objects weights_only refuses
            return None
        raise Unreadable(_first_line(e)) from None
    except Exception as e:  # truncated zip: RuntimeError "failed finding central directory"; empty file; …
        raise Unreadable(_first_line(e)) from None
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt:
        raise Unreadable("no state_dict: not a Lightning checkpoint")
    return int(ckpt.get("global_step", 0))


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0].split(". ")[0][:200] if text else type(e).__name__


def candidates(out: str) -> list[str]:
    """The run folder's checkpoints, newest first: Lightning's SLURM ``hpc_ckpt_N.ckpt`` in the run folder,
    ``checkpoints/last*.ckpt`` and the periodic ``checkpoints/step_*.ckpt`` (not ``best-fid.ckpt``)."""
    ckpts = os.path.join(out, "checkpoints")
    paths = [p for pattern in (os.path.join(out, "hpc_ckpt_*.ckpt"), os.path.join(ckpts, "last*.ckpt"),
                               os.path.join(ckpts, "step_*.ckpt")) for p in glob.glob(pattern)]

    def newest(p: str) -> tuple:  # on equal times prefer hpc (written on requeue), then last.ckpt
        return os.path.getmtime(p), "hpc_ckpt_" in p, os.path.basename(p).startswith("last")
    return sorted(paths, key=newest, reverse=True)


def find_resume(ckpt_path: str | None, out: str, say: bool = True) -> Resume:
    """The checkpoint to resume from; ``say``: print the fallback warning (rank 0 only)."""
    if ckpt_path:
        if not os.path.isfile(ckpt_path):
            raise FileNotFoundError(f"ckpt_path={ckpt_path} does not exist; pass an existing checkpoint or null")
        try:
            return Resume(ckpt_path, checkpoint_step(ckpt_path))
        except Unreadable as e:
            raise UserError(f"ckpt_path={ckpt_path} is not a readable checkpoint ({e}); "
                            f"pass a complete checkpoint or null") from None
    bad = []
    for path in candidates(out):
        try:
            step = checkpoint_step(path)
        except Unreadable as e:
            bad.append((path, str(e)))
            continue
        if say:
            for b, why in bad:
                print(f"warning: {b} is not a readable checkpoint ({why}); resuming from {path} instead",
                      file=sys.stderr, flush=True)
        return Resume(path, step)
    if say:
        for b, why in bad:
            print(f"warning: {b} is not a readable checkpoint ({why}); no readable checkpoint left, "
                  f"training starts from step 0", file=sys.stderr, flush=True)
    return Resume()
