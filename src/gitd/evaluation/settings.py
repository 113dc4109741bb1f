"""The settings of one evaluation run besides its training protocol, declared once.

``gitd evaluate``'s flags come from these declarations and from the protocol's
(``gitd.retrieval.protocols.Protocol``); ``gitd.settings.validate`` checks both. Fields
declared ``affects_results=False`` stay out of the cache key of finished seeds. Light to
import: the command line builds its parser from here without loading torch.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

from gitd.errors import MAX_SEED, ConfigError
from gitd.settings import Boolean, Interval, Options, PathText, Text, setting

NORMALISATIONS = ("clip", "imagenet", "none")


@dataclass(frozen=True)
class EvaluateSettings:
    """What an evaluation runs besides the protocol: seeds, encoders, how a distilled tensor
    file is read, where it runs."""

    seeds: int = setting(3, Interval(int, 1, 1000),
                         "seeds; a seed fixes the head's initialisation, data order, caption "
                         "choice, augmentation and dropout", metavar="N")
    first_seed: int = setting(0, Interval(int, 0, MAX_SEED),
                              "the first seed (seeds run first_seed .. first_seed + seeds - 1)",
                              metavar="S")
    image_model: str = setting("auto", Text(),
                               "image encoder(s): auto (nfnet_l0 if cached, else "
                               "efficientnet_lite0), efficientnet_lite0, or timm:NAME; a comma-"
                               "separated list evaluates every (image, text) encoder pair and "
                               "their mean", metavar="M[,M...]")
    text_model: str = setting("auto", Text(),
                              "text encoder(s): auto (bert-base-uncased if cached, else minilm), "
                              "minilm, a Hugging Face name or folder; NAME@cls / NAME@mean picks "
                              "the pooling; a comma-separated list as --image-model",
                              metavar="M[,M...]")
    pretrained: bool = setting(True, Boolean(),
                               "pretrained image-encoder weights (--no-pretrained: random "
                               "weights drawn from a fixed seed, for smoke tests)")
    train_normalisation: str = setting(
        "clip", Options(*NORMALISATIONS),
        "how a distilled tensor file's pixels are normalised (LoRS, RepBlend and MTT-VL save "
        "CLIP-normalised pixels); they are converted to what the image encoder is fed",
        flags=("--train-normalisation",))
    train_similarity: str = setting(
        "use", Options("use", "ignore"),
        "a LoRS / RepBlend file's learned similarity matrix: use it as the training target "
        "(with LoRS's weighted BCE loss), or ignore it (identity target, the protocol's loss)")
    train_learned_lr: bool = setting(
        False, Boolean(),
        "train with a LoRS / RepBlend file's learned learning rates (syn_lr_img for the image "
        "encoder, syn_lr_txt for the text head) instead of the protocol's")
    allow_test_overlap: bool = setting(
        False, Boolean(),
        "evaluate even when the test set shares images with the training pairs' source split "
        "or with --val (refused otherwise); the results say so", affects_results=False)
    report_best_on_test: bool = setting(
        False, Boolean(),
        "also print the best epoch ON TEST (optimistic; for comparison with papers only)",
        affects_results=False)
    device: str = setting("auto", Text(), "auto (cuda if present), cpu, cuda or cuda:N",
                          affects_results=False)
    cache: str | None = setting(
        None, PathText(),
        "cache of features and finished seeds (default: $GITD_CACHE or ~/.cache/gitd); an "
        "identical evaluation is not run again", optional=True, affects_results=False,
        metavar="DIR")
    workers: int | None = setting(
        None, Interval(int, 0, 256),
        "image decoding worker processes (0: decode in the main process)", optional=True,
        affects_results=False, metavar="W")

    def image_models(self) -> list[str]:
        return split_models(self.image_model, "image")

    def text_models(self) -> list[str]:
        return split_models(self.text_model, "text")


def split_models(value: str, what: str) -> list[str]:
    """``"a, b"`` -> ``["a", "b"]``; an empty item or a repeated one is a ``ConfigError``."""
    names = [part.strip() for part in value.split(",")]
    if any(not n for n in names):
        raise ConfigError(f"{what}_model has an empty name in {value!r}")
    if len(set(names)) < len(names):
        raise ConfigError(f"{what}_model names an encoder twice in {value!r}")
    return names


def settings_fields() -> set[str]:
    return {f.name for f in fields(EvaluateSettings)}


def split_overrides(values: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Split flat keyword values into (protocol fields, evaluation settings); an unknown key
    is a ``ConfigError`` listing the known ones."""
    from gitd.retrieval.protocols import Protocol

    protocol_fields = {f.name for f in fields(Protocol)} - {"name"}
    own = settings_fields()
    unknown = sorted(set(values) - protocol_fields - own)
    if unknown:
        raise ConfigError(f"unknown evaluation setting(s) {', '.join(unknown)} (known: "
                          f"{', '.join(sorted(protocol_fields | own))})")
    return ({k: v for k, v in values.items() if k in protocol_fields},
            {k: v for k, v in values.items() if k in own})
