"""CPU offload: the auto decision from (fake) free-memory figures, the device map a captioner
gets, and the setting's place outside every cache key."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from gitd.models import build_captioner, build_img2img
from gitd.models import offload as off
from gitd.models.offload import GIB, Need, choose_offload, gpu_budget

# BLIP-2 OPT-6.7B in fp16: 15.5 GB of weights, its largest block (a decoder layer) 0.4 GB.
BLIP2 = Need(weights=int(15.5e9), largest=int(0.4e9), activations=int(1.5 * GIB),
             others=int(0.8 * GIB))
# SD 1.5 img2img in fp16: 2.1 GB, UNet 1.7 GB.
SD = Need(weights=int(2.1e9), largest=int(1.7e9), activations=int(3 * GIB))


@pytest.mark.parametrize("free_gib, need, mode", [
    (80, BLIP2, "none"),        # an H100
    (24, BLIP2, "none"),        # a 24 GB card, nothing else on it
    (16, BLIP2, "model"),       # a 16 GB card: most of OPT on the GPU, the rest from CPU
    (2.5, BLIP2, "sequential"), # not even one block with its activations
    (8, SD, "none"),
    (5.8, SD, "model"),         # UNet alone fits, UNet + text encoder + VAE do not
    (4, SD, "sequential"),
])
def test_auto_chooses_from_free_memory_and_need(free_gib, need, mode):
    assert choose_offload("auto", int(free_gib * GIB), need) == mode


def test_explicit_modes_and_no_cuda():
    assert choose_offload("sequential", 80 * GIB, SD) == "sequential"
    assert choose_offload("none", 1 * GIB, BLIP2) == "none"   # asked for: the user's call
    assert choose_offload("model", None, SD) == "none"         # no CUDA: nothing to offload
    with pytest.raises(ValueError, match="offload must be one of"):
        choose_offload("disk", 1, SD)


def test_the_gpu_budget_leaves_room_for_activations_and_the_stage_other_models():
    free = 16 * GIB
    budget = gpu_budget("model", free, BLIP2)
    assert budget == free - off.MARGIN_BYTES - BLIP2.others - BLIP2.activations
    assert gpu_budget("sequential", free, BLIP2) == 0
    assert gpu_budget("none", free, BLIP2) == BLIP2.weights


def blip2_opt67b_on_meta():
    """BLIP-2 OPT-6.7B's architecture (the published config's sizes) on the meta device: no
    memory, sizes only."""
    from transformers import (
        Blip2Config,
        Blip2ForConditionalGeneration,
        Blip2QFormerConfig,
        Blip2VisionConfig,
        OPTConfig,
    )

    vision = Blip2VisionConfig(hidden_size=1408, intermediate_size=6144, num_hidden_layers=39,
                               num_attention_heads=16, image_size=224, patch_size=14)
    text = OPTConfig(hidden_size=4096, ffn_dim=16384, num_hidden_layers=32,
                     num_attention_heads=32, vocab_size=50272, max_position_embeddings=2048,
                     word_embed_proj_dim=4096)
    config = Blip2Config(vision_config=vision.to_dict(), text_config=text.to_dict(),
                         qformer_config=Blip2QFormerConfig().to_dict(), num_query_tokens=32)
    with torch.device("meta"):
        return Blip2ForConditionalGeneration(config).to(torch.float16)


def entry_bytes(net, key: str) -> int:
    """Bytes of a device map entry: a module or a bare parameter (BLIP-2's query tokens)."""
    try:
        return off.module_bytes(net.get_submodule(key))
    except AttributeError:
        p = net.get_parameter(key)
        return p.numel() * p.element_size()


def test_blip2_on_a_16_gb_gpu_keeps_most_blocks_there_and_the_rest_in_cpu_memory():
    # Computed from sizes alone (no CUDA call): the map dispatch_model gets on the GPU.
    net = blip2_opt67b_on_meta()
    total = off.module_bytes(net)
    assert total == pytest.approx(
        off.PARAMETERS[("captioner", "Salesforce/blip2-opt-6.7b-coco")] * 2, rel=1e-3)
    need = Need(weights=total, largest=off.largest_part(SimpleNamespace(model=net)),
                activations=int(off.ACTIVATION_BYTES["captioner"]), others=int(0.5 * GIB))
    free = 15 * GIB  # a 16 GB card with the CUDA context on it
    assert choose_offload("auto", free, need) == "model"
    budget = gpu_budget("model", free, need)
    device_map = off.transformers_device_map(net, 0, budget)
    on_gpu = sum(entry_bytes(net, k) for k, v in device_map.items() if v == 0)
    assert set(device_map.values()) == {0, "cpu"}
    assert 0.6 * total < on_gpu <= budget
    # No unsplittable block (a decoder layer, ...) is cut across devices.
    blocks = set(net._no_split_modules)
    for name, module in net.named_modules():
        if type(module).__name__ in blocks:
            devices = {v for k, v in device_map.items()
                       if k == name or k.startswith(name + ".") or name.startswith(k + ".")}
            assert len(devices) == 1, name
    assert off.transformers_device_map(net, 0, 2 * total) == {"": 0}
    assert set(off.transformers_device_map(net, 0, 0).values()) == {"cpu"}


def test_sizes_of_built_models():
    pipe = build_img2img("tiny-sd", seed=0)
    parts = off.components(pipe)
    assert {type(p).__name__ for p in parts} >= {"UNet2DConditionModel", "AutoencoderKL"}
    assert off.largest_part(pipe) == max(off.module_bytes(p) for p in parts)
    cap = build_captioner("tiny-blip", seed=0)
    assert 0 < off.largest_part(cap) < off.module_bytes(cap.model)
    assert off.estimate_bytes("captioner", "Salesforce/blip2-opt-6.7b-coco", torch.float16) > \
        15e9
    # An unknown model counts as its kind's largest preset model.
    assert off.estimate_bytes("captioner", "someone/else", torch.float16) == \
        off.estimate_bytes("captioner", "Salesforce/blip2-opt-6.7b-coco", torch.float16)


def test_offload_is_no_part_of_any_key():
    from gitd.config import make_config
    from gitd.settings import key_fields

    for method in ("gitd", "pds", "edge"):
        s = make_config("tiny", method=method)
        assert s.offload == "auto" and "offload" not in key_fields(s)
    from gitd.stages.caption_synthesis import command_settings

    assert "offload" not in key_fields(command_settings("tiny"))


def test_models_place_large_kinds_by_the_decision_on_cuda(monkeypatch):
    """On a (faked) CUDA device with 1 GiB free, auto builds the captioner on the CPU, measures
    it and offloads it; the VAE and the score model are never offloaded."""
    from dataclasses import dataclass

    from gitd.models import gpu, roles

    placed = []

    def fake_apply(model, kind, mode, device, *, budget=None):
        placed.append((kind, mode, budget))
        return model

    monkeypatch.setattr(off, "apply_offload", fake_apply)
    monkeypatch.setattr(gpu, "free_memory", lambda device: 1 * GIB)
    monkeypatch.setattr(gpu, "release_memory", lambda device=None: None)
    built_on = []
    real_build = roles.build

    def build(kind, name, *, device, **kw):
        built_on.append((kind, torch.device(device).type))
        return real_build(kind, name, device="cpu", **kw)

    monkeypatch.setattr(roles, "build", build)

    @dataclass(frozen=True)
    class S:
        cap: str = "tiny-blip"
        clip: str = "tiny-clip"
        seed: int = 0

    models = roles.Models({"captioner": roles.Role("captioner", "cap"),
                           "score": roles.Role("score", "clip")}, S(), torch.device("cuda"),
                          torch.float32, offload="auto",
                          stage_roles=[("captioner", "score")])
    models.get("captioner")
    models.get("score")
    assert built_on == [("captioner", "cpu"), ("score", "cuda")]
    # 1 GiB free is less than the margin: every block waits in CPU memory.
    assert placed == [("captioner", "sequential", 0)]
    assert models.placement == {"captioner": "sequential"}


def test_auto_reserves_room_for_the_models_that_share_the_roles_stage(monkeypatch):
    """With 3 GiB free a tiny captioner fits alone (margin 1 + activations 1.5 GiB), but not
    beside the CLIP score model its caption stage builds next (the plan's ``stage_roles``)."""
    from dataclasses import dataclass

    from gitd.models import gpu, roles

    placed = []
    monkeypatch.setattr(off, "apply_offload",
                        lambda model, kind, mode, device, *, budget=None: placed.append(mode))
    monkeypatch.setattr(gpu, "free_memory", lambda device: 3 * GIB)
    monkeypatch.setattr(gpu, "release_memory", lambda device=None: None)
    real_build = roles.build
    monkeypatch.setattr(roles, "build", lambda kind, name, *, device, **kw: real_build(
        kind, name, device="cpu", **kw))

    @dataclass(frozen=True)
    class S:
        cap: str = "tiny-blip"
        clip: str = "openai/clip-vit-large-patch14"
        seed: int = 0

    specs = {"captioner": roles.Role("captioner", "cap"), "score": roles.Role("score", "clip")}
    for stage_roles in ([("captioner",)], [("captioner", "score")]):
        roles.Models(specs, S(), torch.device("cuda"), torch.float32, offload="auto",
                     stage_roles=stage_roles).get("captioner")
    assert placed == ["none", "sequential"]


def test_every_large_role_of_every_method_is_offloadable():
    # EDGE's sampler is a text2img role (the plan's rename): offload must cover it as it covers
    # GITD's img2img, PDS's unCLIP and the captioners; only VAEs and score models stay whole.
    from gitd.methods.base import DistillMethod
    from gitd.registry import get_method, list_methods

    for name in list_methods("distill"):
        method = get_method(name)
        assert issubclass(method, DistillMethod)
        for role, spec in {**method.roles, "vlm": None}.items():
            kind = spec.kind if spec is not None else "captioner"
            assert kind in off.OFFLOADABLE or kind in ("vae", "score"), (name, role, kind)
            assert kind in off.DEFAULT_PARAMETERS and kind in off.ACTIVATION_BYTES
