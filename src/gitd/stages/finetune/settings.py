"""Settings of ``gitd finetune``: one frozen dataclass, its presets, its checks and its help.

Each field declares its help and its constraint once (``metadata``); ``validate()`` and the CLI
flags (``gitd.cli.finetune``) are derived from them. Presets:

* ``paper``: EDGE's released hyperparameters: SD 1.5, CLIP ViT-B/32, plain SGD lr 1e-3 (no
  momentum, no weight decay), batch 128, 10 epochs, 224 px training images, loss weights 1/1/0.
* ``tiny``: the tiny random-weight models (``gitd.models.tiny``): trains on a CPU in seconds.
* ``random-paper``: ``paper`` with random-weight models of the real sizes, for timing offline.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field, fields
from typing import Any

from gitd.config import _choice, _int, _number, _string
from gitd.errors import ConfigError

MIXED_PRECISION = ("auto", "no", "fp16", "bf16")
DEVICES = ("auto", "cpu", "cuda")


def _setting(default: Any, help: str, check: tuple = (), *, runtime: bool = False):
    """A field with its help and constraint. ``check``: ("int", min) | ("float", low, high,
    low_open) | ("choice", choices) | ("str",) | ("bool",) | ("optional-int", min).
    ``runtime``: the setting changes how a run is executed, not its result, so a resumed run may
    change it."""
    return field(default=default, metadata={"help": help, "check": check, "runtime": runtime})


@dataclass(frozen=True)
class FinetuneSettings:
    """One fine-tuning run; the defaults are the ``paper`` preset."""

    preset: str = _setting("paper", "preset the other settings start from", ("str",))
    diffusion_model: str = _setting(
        "stable-diffusion-v1-5/stable-diffusion-v1-5",
        "Stable Diffusion id or folder whose UNet is fine-tuned (tiny-sd, random-sd15 offline)",
        ("str",))
    diffusion_revision: str | None = _setting(None, "revision (commit/tag) of the SD model")
    clip_model: str = _setting(
        "openai/clip-vit-base-patch32",
        "CLIP id or folder giving the image and text features of the loss (tiny-clip offline)",
        ("str",))
    clip_revision: str | None = _setting(None, "revision (commit/tag) of the CLIP model")
    resolution: int = _setting(224, "side of the square training images, in pixels "
                                    "(a multiple of 8)", ("int", 8))
    batch_size: int = _setting(128, "pairs per optimiser step, over all processes; the "
                                    "contrastive and diversity terms see the whole batch",
                               ("int", 2))
    epochs: int = _setting(10, "passes over the training pairs", ("int", 1))
    lr: float = _setting(1e-3, "SGD learning rate", ("float", 0.0, math.inf, True))
    momentum: float = _setting(0.0, "SGD momentum (EDGE: none)", ("float", 0.0, 1.0, False))
    weight_decay: float = _setting(0.0, "SGD weight decay (EDGE: none)",
                                   ("float", 0.0, math.inf, False))
    contrastive_weight: float = _setting(1.0, "weight of the symmetric InfoNCE term",
                                         ("float", 0.0, math.inf, False))
    diversity_weight: float = _setting(1.0, "weight of the diversity term (mean off-diagonal "
                                            "cosine of the joint features)",
                                       ("float", 0.0, math.inf, False))
    denoise_weight: float = _setting(0.0, "weight of the usual noise-prediction MSE, which keeps "
                                          "the model close to SD (EDGE: 0)",
                                     ("float", 0.0, math.inf, False))
    temperature: float = _setting(0.1, "InfoNCE temperature", ("float", 0.0, math.inf, True))
    seed: int = _setting(0, "seed of the data order, timesteps and noise (and of random-weight "
                            "models)", ("int", 0))
    mixed_precision: str = _setting(
        "auto", "no, fp16 or bf16 autocast over fp32 master weights; auto: bf16 on CUDA when "
                "supported, else fp16, and no on CPU", ("choice", MIXED_PRECISION))
    gradient_accumulation_steps: int = _setting(
        1, "split each process's share of the batch into this many micro-batches (less "
           "memory, same result)", ("int", 1), runtime=True)
    gradient_checkpointing: bool = _setting(
        False, "recompute UNet and VAE-decoder activations in the backward pass (less memory, "
               "more time)", ("bool",), runtime=True)
    checkpoint_every: int = _setting(100, "steps between checkpoints (a killed run resumes from "
                                          "the last one)", ("int", 1), runtime=True)
    num_workers: int = _setting(2, "image-decoding worker processes per training process",
                                ("int", 0), runtime=True)
    device: str = _setting("auto", "auto (CUDA when present), cpu or cuda",
                           ("choice", DEVICES), runtime=True)

    # -- construction ------------------------------------------------------------------------
    @classmethod
    def from_preset(cls, name: str = "paper", **overrides: Any) -> "FinetuneSettings":
        if name not in PRESETS:
            raise ConfigError(f"unknown preset {name!r}; choose one of: {', '.join(PRESETS)}")
        _check_keys(overrides)
        return cls(**{**PRESETS[name], "preset": name, **overrides})

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "FinetuneSettings":
        _check_keys(data)
        return cls(**data)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def result_dict(self) -> dict[str, Any]:
        """The settings the trained weights depend on (a resumed run must not change them)."""
        return {f.name: getattr(self, f.name) for f in fields(self)
                if not f.metadata.get("runtime")}

    # -- validation --------------------------------------------------------------------------
    def validate(self) -> "FinetuneSettings":
        for f in fields(self):
            _check(f.name, getattr(self, f.name), f.metadata.get("check", ()))
        if self.resolution % 8:
            raise ConfigError(f"resolution must be a multiple of 8 (the VAE downsamples by 8), "
                              f"got {self.resolution}")
        if self.preset not in PRESETS:
            raise ConfigError(f"preset must be one of {', '.join(PRESETS)}; got {self.preset!r}")
        if not (self.contrastive_weight or self.diversity_weight or self.denoise_weight):
            raise ConfigError("at least one of contrastive_weight, diversity_weight and "
                              "denoise_weight must be above 0")
        return self


def _check(name: str, value: Any, check: tuple) -> None:
    if not check:
        if value is not None:
            _string(name, value)
    elif check[0] == "str":
        _string(name, value)
    elif check[0] == "bool":
        if not isinstance(value, bool):
            raise ConfigError(f"{name} must be true or false, got {value!r}")
    elif check[0] == "choice":
        _choice(name, value, check[1])
    elif check[0] == "int":
        _int(name, value, check[1])
    elif check[0] == "float":
        _number(name, value, check[1], check[2], low_open=check[3])


FIELD_NAMES = tuple(f.name for f in fields(FinetuneSettings))


def _check_keys(data: dict[str, Any]) -> None:
    unknown = sorted(set(data) - set(FIELD_NAMES))
    if unknown:
        raise ConfigError(f"unknown fine-tuning setting(s) {', '.join(unknown)}; known: "
                          f"{', '.join(FIELD_NAMES)}")


PRESETS: dict[str, dict[str, Any]] = {
    # EDGE's released edge_diffusion_train.py defaults.
    "paper": {
        "diffusion_model": "stable-diffusion-v1-5/stable-diffusion-v1-5",
        "clip_model": "openai/clip-vit-base-patch32", "resolution": 224, "batch_size": 128,
        "epochs": 10, "lr": 1e-3, "momentum": 0.0, "weight_decay": 0.0,
        "contrastive_weight": 1.0, "diversity_weight": 1.0, "denoise_weight": 0.0,
        "temperature": 0.1, "checkpoint_every": 100, "num_workers": 2,
    },
    # Tiny random-weight models: a few seconds on a CPU; the output is noise.
    "tiny": {
        "diffusion_model": "tiny-sd", "clip_model": "tiny-clip", "resolution": 64,
        "batch_size": 8, "epochs": 2, "lr": 1e-2, "momentum": 0.0, "weight_decay": 0.0,
        "contrastive_weight": 1.0, "diversity_weight": 1.0, "denoise_weight": 0.0,
        "temperature": 0.1, "checkpoint_every": 2, "num_workers": 0,
    },
}
PRESETS["random-paper"] = {**PRESETS["paper"], "diffusion_model": "random-sd15",
                           "clip_model": "random-clip-b32"}

__all__ = ["FIELD_NAMES", "FinetuneSettings", "MIXED_PRECISION", "PRESETS"]
