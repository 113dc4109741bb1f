"""Training protocols of the retrieval evaluator: one declared settings class, named presets.

``Protocol`` declares every field with ``gitd.settings.setting`` (constraint and help), so that
``gitd evaluate``'s flags and the one validator come from here. ``PROTOCOL_PRESETS`` holds the
papers' evaluators, each read from its released code (the commit and file are named beside it;
docs/evaluation.md tabulates how they differ):

* ``gitd`` (default): GITD (clorf6/Multimodal-DD) - AdamW, lr 5e-4, weight decay 5e-4, 400
  epochs, batch 32, constant lr, trainable image encoder.
* ``mtt-vl``: MTT-VL (princetonvisualai/multimodal_dataset_distillation) - SGD momentum 0.9,
  weight decay 5e-4, lr 0.1, 50 epochs, batch 64, constant lr (its decay is coded after the last
  epoch and never applies).
* ``lors``: LoRS (silicx/LoRS_Distill), also RepBlend's - SGD momentum 0.9, weight decay 5e-4,
  lr 0.1, 100 epochs, lr / 10 at the half, batch 128 drawn as independent random subsets,
  weighted BCE against the similarity target (identity, or the set's learned matrix).
* ``pds``: PDS (junhyeok9712/PDS) - image encoder frozen with its 1000 ImageNet logits as
  features, only the text head trains (SGD momentum 0.9, lr 0.2, 100 epochs, batch 128).
* ``edge``: EDGE (ichbill/EDGE) - SGD lr 0.1 without momentum or weight decay, 100 epochs,
  batch 64 dropping the last partial batch, BLIP's training augmentation.

Every protocol is scored the honest way (last epoch, or the epoch chosen on a validation split;
mean and sample std over seeds); the papers' best-epoch-on-test figure is computed only on
request (``--report-best-on-test``), labelled. Choices the papers leave open, fixed here for all:

* ``freeze_bn``: BatchNorm layers of the image encoder keep their pretrained running statistics
  while their weights train (a distilled set gives batches of a few images; NFNet, the papers'
  encoder, has no BatchNorm).
* ``normalize="clip"``: images are scaled with CLIP's mean/std as the papers' code does;
  ``normalize="model"`` uses the image encoder's own pretraining statistics instead.

The presets are held in the one registry of presets (``gitd.presets``, owner ``protocol``),
like every method's, the fine-tuning run's and the caption command's.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from typing import Any

from gitd.errors import ConfigError
from gitd.presets import register_presets
from gitd.settings import Boolean, Interval, Options, Text, setting, validate

DEFAULT_PROTOCOL = "gitd"


@dataclass(frozen=True)
class Protocol:
    """How the retrieval model trains on a set; every field changes the numbers."""

    name: str = setting(DEFAULT_PROTOCOL, Text(), "the preset these settings start from",
                        cli=False)
    optimizer: str = setting("adamw", Options("sgd", "adamw"), "optimiser")
    lr: float = setting(5e-4, Interval(float, 0, None, closed="neither"),
                        "learning rate (both the image encoder and the text head)")
    image_lr: float | None = setting(None, Interval(float, 0, None, closed="neither"),
                                     "learning rate of the image encoder (default: --lr)",
                                     optional=True)
    text_lr: float | None = setting(None, Interval(float, 0, None, closed="neither"),
                                    "learning rate of the text projection head (default: --lr)",
                                    optional=True)
    weight_decay: float = setting(5e-4, Interval(float, 0, None), "weight decay")
    momentum: float = setting(0.9, Interval(float, 0, 1), "SGD momentum")
    epochs: int = setting(400, Interval(int, 0, 100_000),
                          "epochs; 0 scores the untrained model", metavar="E")
    batch_size: int = setting(32, Interval(int, 1, 65_536), "training batch size",
                              metavar="B")
    lr_schedule: str = setting("constant", Options("constant", "step_half"),
                               "constant, or step_half: lr / 10 from the middle epoch on")
    batches: str = setting("shuffle", Options("shuffle", "random"),
                           "shuffle: each epoch a permutation cut into batches; random: each "
                           "batch an independent random subset (LoRS's and PDS's loader)")
    drop_last: bool = setting(False, Boolean(),
                              "drop an epoch's last partial batch (when there is a full one)")
    loss: str = setting("infonce", Options("infonce", "wbce"),
                        "infonce: symmetric cross-entropy; wbce: LoRS's weighted binary "
                        "cross-entropy of sigmoid(logits) against the similarity target")
    temperature: float = setting(0.07, Interval(float, 0, None, closed="neither"),
                                 "fixed temperature of the logits")
    head_dropout: float = setting(0.1, Interval(float, 0, 1, closed="left"),
                                  "dropout of the text projection head")
    image_size: int = setting(224, Interval(int, 32, 4096), "image size (square)",
                              metavar="PX")
    interpolation: str = setting("bicubic", Options("bicubic", "bilinear", "nearest"),
                                 "resizing filter")
    normalize: str = setting("clip", Options("clip", "model"),
                             "pixel statistics fed to the image encoder: CLIP's, or the "
                             "encoder's own")
    augment: str = setting("none", Options("none", "blip"),
                           "training augmentation: none, or blip (random resized crop 0.5-1, "
                           "flip, RandAugment 2 ops at magnitude 5; EDGE's)")
    freeze_image: bool = setting(False, Boolean(),
                                 "keep the image encoder frozen (features cached; only the "
                                 "text head trains)")
    image_output: str = setting("pooled", Options("pooled", "logits"),
                                "image features: the pooled backbone, or its 1000 ImageNet "
                                "logits (PDS's evaluator)")
    freeze_bn: bool = setting(True, Boolean(),
                              "BatchNorm layers keep their pretrained running statistics")
    eval_every: int | None = setting(None, Interval(int, 1, 100_000),
                                     "score the test set every K epochs and at the last "
                                     "(default: about five points)", optional=True,
                                     metavar="K")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def lr_at(self, epoch: int, base: float | None = None) -> float:
        """Learning rate for 0-based ``epoch`` (``base``: a group's own lr, default ``lr``)."""
        lr = self.lr if base is None else base
        if self.lr_schedule == "step_half" and epoch >= self.epochs // 2:
            return lr / 10.0
        return lr


# name -> field values over Protocol's defaults, each from the evaluator's released code.
PROTOCOL_PRESETS: dict[str, dict[str, Any]] = {
    # clorf6/Multimodal-DD @301d584, evaluate/evaluate.py (train_* arguments, AdamW for the
    # image encoder and the head, eval every 10 epochs). Its loader drops the last partial
    # batch; here every pair trains every epoch (--drop-last gives the released behaviour).
    "gitd": dict(optimizer="adamw", lr=5e-4, weight_decay=5e-4, epochs=400, batch_size=32,
                 lr_schedule="constant", eval_every=None),
    # princetonvisualai/multimodal_dataset_distillation @c696fd6, epoch.py evaluate_synset and
    # distill.py's defaults (epoch_eval_train 50, batch_train 64, lr_teacher 0.1, SGD momentum
    # 0.9, weight decay 5e-4); it scores the test set once, after the last epoch.
    "mtt-vl": dict(optimizer="sgd", lr=0.1, momentum=0.9, weight_decay=5e-4, epochs=50,
                   batch_size=64, lr_schedule="constant", eval_every=50),
    # silicx/LoRS_Distill @8a712af, src/epoch.py evaluate_synset_with_similarity (SGD momentum
    # 0.9, weight decay 5e-4, MultiStepLR at the half, SimilarityDataloader), src/
    # similarity_mining.py (WBCE), sh/distill_*_lors_*.sh (--loss_type WBCE, lr 0.1),
    # evaluate_only.py (epoch_eval_train 100, batch_train 128, scored every 10 epochs).
    "lors": dict(optimizer="sgd", lr=0.1, momentum=0.9, weight_decay=5e-4, epochs=100,
                 batch_size=128, lr_schedule="step_half", batches="random", loss="wbce",
                 eval_every=10),
    # junhyeok9712/PDS @3a73f43, pds_distill.py (lr_txt 0.2, batch_train 128, 100 epochs,
    # image_trainable False, nf_resnet50 and ViT-Tiny with their classifiers) and src/epoch.py
    # (SGD over the text projection only, momentum 0.9, weight decay 5e-4, MultiStepLR).
    "pds": dict(optimizer="sgd", lr=0.2, momentum=0.9, weight_decay=5e-4, epochs=100,
                batch_size=128, lr_schedule="step_half", batches="random", freeze_image=True,
                image_output="logits", eval_every=10),
    # ichbill/EDGE @bb18c46, evaluation/evaluation.py (SGD lr 0.1, --mom 0, --l2 0, no
    # --decay, 100 epochs, eval_freq 5), README's evaluation command (batch_size_train 64),
    # dataset/__init__.py (BLIP's train transform; the loader drops the last batch).
    "edge": dict(optimizer="sgd", lr=0.1, momentum=0.0, weight_decay=0.0, epochs=100,
                 batch_size=64, lr_schedule="constant", drop_last=True, augment="blip",
                 eval_every=5),
}

PRESETS = register_presets("protocol", Protocol, PROTOCOL_PRESETS, default=DEFAULT_PROTOCOL,
                           what="the retrieval protocol",
                           notes={"gitd": "GITD's evaluator", "mtt-vl": "MTT-VL's",
                                  "lors": "LoRS's and RepBlend's", "pds": "PDS's",
                                  "edge": "EDGE's"})
PROTOCOLS: dict[str, Protocol] = {n: Protocol(**{**PRESETS.values(n), "name": n})
                                  for n in PRESETS.names}


def get_protocol(name: str | Protocol = DEFAULT_PROTOCOL, **overrides: Any) -> Protocol:
    """The named protocol with ``overrides`` applied (``None`` values are ignored), validated."""
    if isinstance(name, Protocol):
        base = name
    else:
        if name not in PROTOCOLS:
            raise ConfigError(f"unknown protocol {name!r} (choose from {', '.join(PROTOCOLS)})")
        base = PROTOCOLS[name]
    known = {f.name for f in fields(Protocol)} - {"name"}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise ConfigError(f"unknown protocol setting(s) {', '.join(unknown)} "
                          f"(known: {', '.join(sorted(known))})")
    return validate(replace(base, **{k: v for k, v in overrides.items() if v is not None}))

