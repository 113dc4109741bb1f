"""Device facts: native bf16 only, free memory, data-sheet FLOP/s (CUDA faked on a CPU)."""

from __future__ import annotations

import pytest
import torch

from gitd.models import gpu
from gitd.stages.finetune.train import resolve_mixed_precision


def fake_cuda(monkeypatch, *, native: bool):
    """A CUDA GPU whose bf16 is native (Ampere+) or only emulated (T4, V100, RTX 20xx)."""
    calls = []

    def is_bf16_supported(including_emulation: bool = True) -> bool:
        calls.append(including_emulation)
        return native or including_emulation

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", is_bf16_supported)
    return calls


def test_emulated_bf16_is_not_chosen(monkeypatch):
    calls = fake_cuda(monkeypatch, native=False)
    assert gpu.bf16_native() is False
    assert resolve_mixed_precision("auto", "cuda") == "fp16"
    assert calls and not any(calls)  # always asked without emulation


def test_native_bf16_is_chosen(monkeypatch):
    fake_cuda(monkeypatch, native=True)
    assert gpu.bf16_native() is True
    assert resolve_mixed_precision("auto", "cuda") == "bf16"
    assert gpu.bf16_native("cpu") is False
    assert resolve_mixed_precision("auto", "cpu") == "no"
    assert resolve_mixed_precision("fp16", "cuda") == "fp16"


def test_no_cuda_no_figures():
    if torch.cuda.is_available():
        pytest.skip("a CUDA machine")
    assert gpu.bf16_native() is False
    assert gpu.free_memory("cpu") is None
    gpu.release_memory("cpu")  # gc only; no CUDA call


@pytest.mark.parametrize("name, flops", [
    ("NVIDIA H100 80GB HBM3", 989e12), ("NVIDIA H100 PCIe", 756e12), ("NVIDIA H200", 989e12),
    ("NVIDIA A100-SXM4-80GB", 312e12), ("NVIDIA A10G", 70e12), ("NVIDIA A10", 125e12),
    ("Tesla T4", 65e12), ("NVIDIA L4", 121e12), ("NVIDIA L40S", 362e12),
    ("NVIDIA GeForce RTX 4090", 165e12), ("Some Future GPU", None)])
def test_peak_flops_from_the_name(name, flops):
    assert gpu.peak_flops_from_name(name) == flops
