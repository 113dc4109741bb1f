"""What the accelerator offers: native bf16, free memory, peak FLOP/s, and giving memory back.

Every CUDA call gitd makes to decide something (a dtype, an offload mode, a micro-batch) is here
and is thin: the decisions themselves are pure functions of the figures these return
(``gitd.models.offload``, ``gitd.stages.finetune.memory``), tested with made-up figures on a
CPU.
"""

from __future__ import annotations

import gc
import re

import torch


def bf16_native(device: torch.device | str | None = None) -> bool:
    """True when the CUDA device computes bf16 in hardware (Ampere, compute capability 8.0, and
    later). ``torch.cuda.is_bf16_supported()`` alone also says True on T4, V100 and RTX 20xx,
    where bf16 is emulated (slowly) and cuDNN has no bf16 convolutions; gitd never picks bf16
    there."""
    if not torch.cuda.is_available():
        return False
    if device is not None and torch.device(device).type != "cuda":
        return False
    return bool(torch.cuda.is_bf16_supported(including_emulation=False))


def free_memory(device: torch.device | str) -> int | None:
    """Free bytes on a CUDA ``device`` (``torch.cuda.mem_get_info``: what the driver reports,
    so other processes' use counts); None for a device without such a figure (CPU, MPS)."""
    device = torch.device(device)
    if device.type != "cuda" or not torch.cuda.is_available():
        return None
    free, _total = torch.cuda.mem_get_info(device)
    return int(free)


def release_memory(device: torch.device | str | None = None) -> None:
    """Collect unreachable objects and, on CUDA, return the caching allocator's unused blocks
    to the driver, so the next model (or another process) can have them."""
    gc.collect()
    if torch.cuda.is_available() and (device is None or torch.device(device).type == "cuda"):
        torch.cuda.empty_cache()


# Dense (no sparsity) tensor-core peak FLOP/s by GPU name, fp16/bf16 inputs with fp32
# accumulation, from the vendors' data sheets. The first pattern that matches the name wins.
PEAK_FLOPS: tuple[tuple[str, float], ...] = (
    (r"H200", 989e12),
    (r"H100.*(SXM|HBM3)", 989e12),
    (r"H100", 756e12),            # PCIe
    (r"GH200", 989e12),
    (r"A100", 312e12),
    (r"A10G", 70e12),
    (r"A10\b", 125e12),
    (r"L40S", 362e12),
    (r"L40\b", 181e12),
    (r"L4\b", 121e12),
    (r"RTX 4090", 165e12),
    (r"RTX 3090", 71e12),
    (r"A6000", 155e12),
    (r"V100", 125e12),
    (r"T4\b", 65e12),
)


def peak_flops_from_name(name: str) -> float | None:
    """The data-sheet peak of a GPU named ``name`` (``torch.cuda.get_device_name``), or None
    when the name is not in ``PEAK_FLOPS``."""
    for pattern, flops in PEAK_FLOPS:
        if re.search(pattern, name):
            return flops
    return None
