"""GPU check, part 1: the environment, and the GPU's peak dense throughput from a table of known GPUs.

Peaks are the vendors' dense (non-sparsity) datasheet figures in TFLOP/s: FP32 on the CUDA cores, TF32 and
BF16 on the tensor cores (BF16 with FP32 accumulate, what PyTorch uses).  Datasheets quote tensor figures "with
sparsity", twice these.
"""
from __future__ import annotations

import os
import platform
import re

import torch

# name, pattern on torch.cuda.get_device_name() (lower case; first match wins), fp32, tf32, bf16 (dense TFLOP/s)
KNOWN_GPUS = [
    ("H100 NVL", r"h100.*nvl", 60.0, 417.5, 835.5),
    ("H100 PCIe", r"h100.*pcie", 51.0, 378.0, 756.5),
    ("H100 SXM", r"h100", 67.0, 494.7, 989.4),
    ("H200 NVL", r"h200.*nvl", 60.0, 417.5, 835.5),
    ("H200 SXM", r"h200", 67.0, 494.7, 989.4),
    ("A100 80GB", r"a100.*80", 19.5, 156.0, 312.0),
    ("A100 40GB", r"a100", 19.5, 156.0, 312.0),
    ("L40S", r"l40s", 91.6, 183.0, 362.05),
    ("L4", r"\bl4\b", 30.3, 60.0, 121.0),
    ("RTX 4090", r"4090", 82.6, 82.6, 165.2),
]


def peaks_for(name: str) -> dict:
    """{'gpu', 'fp32', 'tf32', 'bf16'} in FLOP/s for a device name; 'unknown' (and None's) if not in the table."""
    low = name.lower()
    for label, pattern, fp32, tf32, bf16 in KNOWN_GPUS:
        if re.search(pattern, low):
            return {"gpu": label, "fp32": fp32 * 1e12, "tf32": tf32 * 1e12, "bf16": bf16 * 1e12}
    return {"gpu": "unknown", "fp32": None, "tf32": None, "bf16": None}


def fp32_peak_key() -> str:
    """Which peak an "fp32" network runs against: convolutions use TF32 tensor cores when cuDNN allows it."""
    return "tf32" if torch.backends.cudnn.allow_tf32 else "fp32"


def environment(device: torch.device) -> dict:
    info = {"torch": torch.__version__, "cuda": torch.version.cuda, "cudnn": torch.backends.cudnn.version(),
            "python": platform.python_version(), "device": str(device), "cpu_count": os.cpu_count(),
            "cudnn_allow_tf32": torch.backends.cudnn.allow_tf32,
            "matmul_precision": torch.get_float32_matmul_precision()}
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info.update(gpu_name=props.name, gpu_memory_gib=round(props.total_memory / 2 ** 30, 1),
                    capability=f"{props.major}.{props.minor}", sm_count=props.multi_processor_count,
                    bf16_supported=torch.cuda.is_bf16_supported())
    else:
        info.update(gpu_name="none (CPU run)")
    info["peak"] = peaks_for(info["gpu_name"]) if device.type == "cuda" else peaks_for("")
    for mod in ("pytorch_lightning", "diffusers", "hydra", "omegaconf", "wandb", "torch_fidelity", "mlxtend"):
        info[f"{mod}_version"] = module_version(mod)
    return info


def module_version(name: str) -> str:
    try:
        mod = __import__(name)
    except Exception as err:  # noqa: BLE001 - reported, not fatal
        return f"missing ({type(err).__name__})"
    return str(getattr(mod, "__version__", "?"))


def run(ctx, budget=None) -> dict:
    info = environment(ctx.device)
    ctx.peak = info["peak"]
    peak = info["peak"]
    tflops = {k: (f"{peak[k] / 1e12:g}" if peak[k] else "unknown") for k in ("fp32", "tf32", "bf16")}
    rows = [[k, str(v)] for k, v in info.items() if k != "peak"]
    rows += [["peak (dense, vendor)", f"{peak['gpu']}: fp32 {tflops['fp32']}, tf32 {tflops['tf32']}, "
                                      f"bf16 {tflops['bf16']} TFLOP/s"]]
    return {"info": info, "tables": [{"title": "Environment", "columns": ["what", "value"], "rows": rows}]}
