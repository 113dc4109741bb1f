"""Settings of ``gitd finetune``: one frozen dataclass, its presets, its checks and its help.

Each field declares its constraint and its help once (``gitd.settings.setting``); validation and
the CLI flags (``gitd.cli.finetune``) are derived from them. Presets:

* ``paper``: EDGE's released hyperparameters: SD 1.5, CLIP ViT-B/32, plain SGD lr 1e-3 (no
  momentum, no weight decay), batch 128, 10 epochs, 224 px training images, loss weights 1/1/0.
* ``tiny``: the tiny random-weight models (``gitd.models.tiny``): trains on a CPU in minutes
  (the demo's 400 images, 500 steps: 344 s on a busy 2-core machine; README).
* ``random-paper``: ``paper`` with random-weight models of the real sizes, for timing offline.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, fields
from typing import Any

from gitd.errors import ConfigError
from gitd.errors import short_value
from gitd.presets import presets_of, register_presets
from gitd.settings import (Boolean, Constraint, Interval, Options, Text, key_dict, setting,
                           validate)

MIXED_PRECISION = ("auto", "no", "fp16", "bf16")
DEVICES = ("auto", "cpu", "cuda")
_WEIGHT = Interval(float, 0, None)


@dataclass(frozen=True)
class CountOrAuto(Constraint):
    """A positive integer, or ``auto`` (decided at run time)."""

    metavar: str | None = "N|auto"

    def parse(self, text: str):
        import argparse

        if text.strip().lower() == "auto":
            return "auto"
        try:
            value = int(text, 10)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be a positive integer or auto, got "
                                             f"{short_value(text)}") from None
        if value < 1:
            raise argparse.ArgumentTypeError(f"must be a positive integer or auto, got {value}")
        return value

    def describe(self) -> str:
        return "a positive integer or auto"

    def problem(self, value) -> str | None:
        if value == "auto" or (isinstance(value, int) and not isinstance(value, bool)
                               and value >= 1):
            return None
        return f"must be a positive integer or auto, got {short_value(value)}"


@dataclass(frozen=True)
class FinetuneSettings:
    """One fine-tuning run; the defaults are the ``paper`` preset. Settings declared
    ``affects_results=False`` change how a run is executed, not the trained weights, so a
    resumed run may change them."""

    preset: str = setting("paper", Text(), "preset the other settings start from", cli=False)
    diffusion_model: str = setting(
        "stable-diffusion-v1-5/stable-diffusion-v1-5", Text(),
        "Stable Diffusion id or folder whose UNet is fine-tuned (tiny-sd, random-sd15 offline)")
    diffusion_revision: str | None = setting(None, Text(), "revision (commit/tag) of the SD "
                                             "model", optional=True, metavar="REV")
    clip_model: str = setting(
        "openai/clip-vit-base-patch32", Text(),
        "CLIP id or folder giving the image and text features of the loss (tiny-clip offline)")
    clip_revision: str | None = setting(None, Text(), "revision (commit/tag) of the CLIP model",
                                        optional=True, metavar="REV")
    resolution: int = setting(224, Interval(int, 8, None, multiple_of=8),
                              "side of the square training images, in pixels")
    batch_size: int = setting(128, Interval(int, 2, None),
                              "pairs per optimiser step, over all processes; the contrastive "
                              "and diversity terms see the whole batch")
    epochs: int = setting(10, Interval(int, 1, None), "passes over the training pairs")
    lr: float = setting(1e-3, Interval(float, 0, None, closed="neither"), "SGD learning rate")
    momentum: float = setting(0.0, Interval(float, 0, 1), "SGD momentum (EDGE: none)")
    weight_decay: float = setting(0.0, _WEIGHT, "SGD weight decay (EDGE: none)")
    contrastive_weight: float = setting(1.0, _WEIGHT, "weight of the symmetric InfoNCE term")
    diversity_weight: float = setting(1.0, _WEIGHT, "weight of the diversity term (mean "
                                      "off-diagonal cosine of the joint features)")
    denoise_weight: float = setting(0.0, _WEIGHT, "weight of the usual noise-prediction MSE, "
                                    "which keeps the model close to SD (EDGE: 0)")
    temperature: float = setting(0.1, Interval(float, 0, None, closed="neither"),
                                 "InfoNCE temperature")
    seed: int = setting(0, Interval(int, 0, 2**32 - 1), "seed of the data order, timesteps and "
                        "noise (and of random-weight models)")
    mixed_precision: str = setting(
        "auto", Options(*MIXED_PRECISION), "no, fp16 or bf16 autocast over fp32 master "
        "weights; auto: bf16 on CUDA when supported, else fp16, and no on CPU")
    gradient_accumulation_steps: int = setting(
        1, Interval(int, 1, None), "split each process's share of the batch into this many "
        "micro-batches (less memory, the same result)", affects_results=False)
    micro_batch: int | str = setting(
        "auto", CountOrAuto(), "pairs per UNet pass; the loss is still the whole batch's "
        "(gradient caching), so this changes memory and speed, not the result. auto: on CUDA "
        "the most that fit the GPU's free memory (measured with 1 and 2 pairs), elsewhere the "
        "whole batch (or batch / --gradient-accumulation-steps)", affects_results=False)
    gradient_checkpointing: bool = setting(
        False, Boolean(), "recompute UNet and VAE-decoder activations in the backward pass "
        "(less memory, more time)", affects_results=False)
    checkpoint_every: int = setting(100, Interval(int, 1, None), "steps between checkpoints (a "
                                    "killed run resumes from the last one)",
                                    affects_results=False)
    num_workers: int = setting(2, Interval(int, 0, None), "image-decoding worker processes per "
                               "training process", affects_results=False)
    device: str = setting("auto", Options(*DEVICES), "auto (CUDA when present), cpu or cuda",
                          affects_results=False)

    # -- construction ------------------------------------------------------------------------
    @classmethod
    def from_preset(cls, name: str | None = None, **overrides: Any) -> "FinetuneSettings":
        """Defaults < preset ``name`` (default paper, from the one registry of presets,
        ``gitd.presets``) < ``overrides``."""
        _check_keys(overrides)
        return presets_of("finetune").make(name, **overrides)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def result_dict(self) -> dict[str, Any]:
        """The settings the trained weights depend on (a resumed run must not change them)."""
        return key_dict(self)

    # -- validation --------------------------------------------------------------------------
    def validate(self) -> "FinetuneSettings":
        validate(self)
        if self.preset not in PRESETS:
            raise ConfigError(f"preset must be one of {', '.join(PRESETS)}; got {self.preset!r}")
        if not (self.contrastive_weight or self.diversity_weight or self.denoise_weight):
            raise ConfigError("at least one of contrastive_weight, diversity_weight and "
                              "denoise_weight must be above 0")
        return self


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
    # Tiny random-weight models: minutes on a CPU (about 0.7 s a step); the output is noise.
    "tiny": {
        "diffusion_model": "tiny-sd", "clip_model": "tiny-clip", "resolution": 64,
        "batch_size": 8, "epochs": 2, "lr": 1e-2, "momentum": 0.0, "weight_decay": 0.0,
        "contrastive_weight": 1.0, "diversity_weight": 1.0, "denoise_weight": 0.0,
        "temperature": 0.1, "checkpoint_every": 2, "num_workers": 0,
    },
}
PRESETS["random-paper"] = {**PRESETS["paper"], "diffusion_model": "random-sd15",
                           "clip_model": "random-clip-b32"}
register_presets("finetune", FinetuneSettings, PRESETS, default="paper", what="gitd finetune",
                 notes={"paper": "EDGE's released hyperparameters",
                        "tiny": "random-weight models, offline on a CPU, 2 epochs of batch "
                                "8: 500 steps in 344 s on the demo's 400 images on a busy "
                                "2-core machine, README",
                        "random-paper": "times the paper setting with random weights"})
