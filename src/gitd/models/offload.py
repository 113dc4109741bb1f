"""CPU offload of the large models: which mode a stage needs, and putting a model in it.

Modes (``--offload``):

* ``none``: the whole model on the GPU (fastest);
* ``model``: diffusers pipelines move one component at a time to the GPU when it runs
  (``enable_model_cpu_offload``: the UNet and the text encoder never sit there together);
  transformers captioners keep as many blocks on the GPU as ``max_memory`` allows and the rest
  in CPU memory, copied in for each forward (accelerate's ``dispatch_model`` over the map
  ``infer_auto_device_map`` makes, what ``device_map="auto"`` does when loading);
* ``sequential``: every block stays in CPU memory and is copied in when it runs (least GPU
  memory, slowest);
* ``auto``: from the GPU's free memory (``torch.cuda.mem_get_info``) and what the stage needs
  (:func:`choose_offload`).

Offload does not change results: every kernel still runs on the same GPU in the same dtype, on
weights copied bit for bit, and gitd draws all its noise from CPU generators; only where the
weights wait between uses changes. That is why the setting is not part of any cache key.

Only the large kinds are offloaded (``OFFLOADABLE``); VAEs and CLIP score models always sit
on the device. The decision is a pure function of byte counts (tested with made-up figures);
the CUDA calls that apply it are thin.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from gitd.log import get_logger
from gitd.settings import Options, setting

log = get_logger("gitd.models")

OFFLOAD_MODES = ("auto", "none", "model", "sequential")
# Registry kinds offload applies to: diffusers pipelines and transformers captioners/VLMs.
# text2img (EDGE's sampler) is SD's img2img pipeline's components as a text-to-image pipeline.
OFFLOADABLE = ("img2img", "text2img", "unclip", "captioner")
GIB = 1024 ** 3

# Parameters of the models the presets name, for reserving room for a role not built yet
# (``estimate_bytes``). Counted from the published configs; the random-* models have the same
# architectures (gitd.models.fullsize).
PARAMETERS: dict[tuple[str, str], float] = {
    ("img2img", "stable-diffusion-v1-5/stable-diffusion-v1-5"): 1066.2e6,  # UNet+text+VAE
    ("img2img", "random-sd15"): 1066.2e6,
    ("text2img", "stable-diffusion-v1-5/stable-diffusion-v1-5"): 1066.2e6,
    ("text2img", "random-sd15"): 1066.2e6,
    ("vae", "stable-diffusion-v1-5/stable-diffusion-v1-5"): 83.7e6,
    ("vae", "random-sd15"): 83.7e6,
    ("score", "openai/clip-vit-base-patch32"): 151.3e6,
    ("score", "random-clip-b32"): 151.3e6,
    ("score", "openai/clip-vit-large-patch14"): 427.6e6,
    ("score", "random-clip-l14"): 427.6e6,
    ("captioner", "Salesforce/blip2-opt-6.7b-coco"): 7750e6,
    ("captioner", "Salesforce/blip-image-captioning-base"): 247.4e6,
    ("captioner", "random-blip-base"): 247.4e6,
    ("captioner", "llava-hf/llava-1.5-7b-hf"): 7063e6,
    ("unclip", "sd2-community/stable-diffusion-2-1-unclip-small"): 1597.5e6,
    ("unclip", "stabilityai/stable-diffusion-2-1-unclip-small"): 1597.5e6,
    ("unclip", "random-sd21-unclip"): 1597.5e6,
}
# An unknown name of a kind: as large as the largest the presets use, so that auto errs on
# the side of offloading.
DEFAULT_PARAMETERS = {"vae": 83.7e6, "score": 427.6e6, "img2img": 1066.2e6,
                      "text2img": 1066.2e6, "unclip": 1597.5e6, "captioner": 7750e6}

# Room for activations while a model runs at the paper presets' batch sizes, in fp16: the peak
# of each stage measured on the CPU with the full-size random models in float32, less their
# weights, halved (docs/models.md#gpu-memory, benchmarks/stage_memory.py): GITD's encode (batch
# 16 at 512 px) 5.1 GiB, img2img 3.2, EDGE's text2img 1.0, PDS's unclip 1.9, embed 0.3, BLIP
# base captioning 0.5. CPU kernels keep more alive than the GPU's fused attention, so these are
# upper bounds. text2img keeps img2img's room (the same SD pipeline; EDGE's sampler had it
# when it was built as an img2img role). The captioners' 1.5 is an estimate for the 7B ones
# (KV cache and vision tower at batch 1), not measured.
ACTIVATION_BYTES = {"vae": 5.0 * GIB, "score": 0.5 * GIB, "img2img": 3.5 * GIB,
                    "text2img": 3.5 * GIB, "unclip": 2.0 * GIB, "captioner": 1.5 * GIB}
# What the CUDA context, the allocator's fragmentation and other small tensors take besides.
MARGIN_BYTES = 1.0 * GIB


@dataclass(frozen=True)
class OffloadFields:
    """The ``offload`` setting, shared by every command that runs the large models (a mixin of
    the distill methods' settings and ``gitd caption``'s)."""

    offload: str = setting(
        "auto", Options(*OFFLOAD_MODES),
        "where the large models (SD/unCLIP pipelines, captioners, VLMs) keep their weights on a "
        "CUDA GPU: none (all on the GPU), model (a pipeline's components one at a time; as many "
        "captioner blocks as fit, the rest copied in from CPU memory), sequential (block by "
        "block: least GPU memory, slowest), auto (from the GPU's free memory and what the stage "
        "needs; none off CUDA). Not part of any cache key: the same kernels run on the same GPU "
        "on the same weights, only where the weights wait between uses changes",
        affects_results=False)


def dtype_bytes(dtype: torch.dtype) -> int:
    return torch.empty((), dtype=dtype).element_size()


def estimate_bytes(kind: str, name: str, dtype: torch.dtype) -> int:
    """Weights plus activation room of a model not built yet (``PARAMETERS``; an unknown name
    counts as its kind's largest preset model)."""
    params = PARAMETERS.get((kind, name), DEFAULT_PARAMETERS.get(kind, 1000e6))
    return int(params * dtype_bytes(dtype) + ACTIVATION_BYTES.get(kind, 1.0 * GIB))


def module_bytes(module: torch.nn.Module) -> int:
    """Bytes of a module's parameters and buffers (each shared tensor once)."""
    seen, total = set(), 0
    for t in list(module.parameters()) + list(module.buffers()):
        if id(t) not in seen:
            seen.add(id(t))
            total += t.numel() * t.element_size()
    return total


def components(model: Any) -> list[torch.nn.Module]:
    """The ``nn.Module`` parts of a built model: a pipeline's components, a captioner's or
    score model's network, or the model itself."""
    if hasattr(model, "components") and isinstance(model.components, dict):
        return [m for m in model.components.values() if isinstance(m, torch.nn.Module)]
    inner = getattr(model, "model", None)
    if isinstance(inner, torch.nn.Module):
        return [inner]
    return [model] if isinstance(model, torch.nn.Module) else []


@dataclass(frozen=True)
class Need:
    """What running one role takes on the GPU, in bytes: ``weights`` (all of them),
    ``largest`` (the largest part that must be resident at once under ``model`` offload: a
    pipeline's UNet; for a transformers model, a block), ``activations`` (while it runs) and
    ``others`` (the stage's other roles, not built yet)."""

    weights: int
    largest: int
    activations: int
    others: int = 0


def choose_offload(requested: str, free: int | None, need: Need, *,
                   margin: int = int(MARGIN_BYTES)) -> str:
    """The offload mode for a role: ``requested`` unless it is ``auto``; ``auto`` picks
    ``none`` when the whole model, its activations and the stage's other roles fit in
    ``free`` bytes less ``margin``, else ``model`` when its largest part does, else
    ``sequential``. ``free`` None (no CUDA) is always ``none``."""
    if requested not in OFFLOAD_MODES:
        raise ValueError(f"offload must be one of {', '.join(OFFLOAD_MODES)}, got {requested!r}")
    if free is None:
        return "none"
    if requested != "auto":
        return requested
    room = free - margin - need.others - need.activations
    if need.weights <= room:
        return "none"
    if need.largest <= room:
        return "model"
    return "sequential"


def gpu_budget(mode: str, free: int, need: Need, *, margin: int = int(MARGIN_BYTES)) -> int:
    """Bytes of a transformers model's weights kept on the GPU under ``mode``: all under
    ``none``; under ``model`` what is left of ``free`` after the margin, the activations and the
    stage's other roles; none under ``sequential``."""
    if mode == "none":
        return need.weights
    if mode == "sequential":
        return 0
    return max(0, free - margin - need.others - need.activations)


def transformers_device_map(model: torch.nn.Module, gpu: int, budget: int) -> dict[str, Any]:
    """accelerate's map of ``model``'s blocks to GPU ``gpu`` (up to ``budget`` bytes, in module
    order) and ``"cpu"`` (the rest), never splitting the model's ``_no_split_modules``.
    Computed from sizes alone: no CUDA call."""
    from accelerate import infer_auto_device_map

    no_split = sorted(getattr(model, "_no_split_modules", None) or [])
    return infer_auto_device_map(model, max_memory={gpu: int(budget), "cpu": 2 ** 50},
                                 no_split_module_classes=no_split)


def apply_offload(model: Any, kind: str, mode: str, device: torch.device, *,
                  budget: int | None = None) -> Any:
    """Put a model built on the CPU onto ``device`` under ``mode`` (thin: the CUDA work is
    diffusers' and accelerate's). ``budget``: GPU bytes for a transformers model's weights
    under ``model`` (``gpu_budget``). Returns the model."""
    if mode == "none":
        return place(model, device)
    if hasattr(model, "enable_model_cpu_offload"):  # a diffusers pipeline
        if mode == "model":
            model.enable_model_cpu_offload(device=device)
        else:
            model.enable_sequential_cpu_offload(device=device)
        return model
    net = getattr(model, "model", None)
    if not isinstance(net, torch.nn.Module):
        raise TypeError(f"cannot offload a {type(model).__name__} ({kind})")
    from accelerate import dispatch_model

    index = device.index if device.index is not None else torch.cuda.current_device()
    keep = (budget or 0) if mode == "model" else 0
    device_map = transformers_device_map(net, index, keep)
    dispatch_model(net, device_map=device_map, main_device=torch.device("cuda", index))
    model.execution_device = torch.device("cuda", index)
    return model


def place(model: Any, device: torch.device) -> Any:
    """Move a built model (pipeline, captioner, score model, bare module) wholly to ``device``."""
    if hasattr(model, "to") and not isinstance(getattr(model, "model", None), torch.nn.Module):
        out = model.to(device)
        return model if out is None else out
    for part in components(model):
        part.to(device)
    return model


def largest_part(model: Any) -> int:
    """Bytes that must sit on the GPU at once under ``model`` offload: a pipeline's largest
    component; a transformers model's largest unsplittable block (``_no_split_modules``)."""
    parts = components(model)
    if hasattr(model, "enable_model_cpu_offload"):
        return max((module_bytes(p) for p in parts), default=0)
    best = 0
    for net in parts:
        no_split = set(getattr(net, "_no_split_modules", None) or [])
        sizes = [module_bytes(m) for m in net.modules() if type(m).__name__ in no_split]
        best = max(best, max(sizes, default=module_bytes(net)))
    return best


def describe_need(need: Need) -> str:
    return (f"weights {need.weights / GIB:.1f} GiB, largest part {need.largest / GIB:.1f} GiB, "
            f"activations {need.activations / GIB:.1f} GiB, the stage's other models "
            f"{need.others / GIB:.1f} GiB")
