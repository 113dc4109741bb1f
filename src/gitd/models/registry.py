"""One place that knows every model name (timm-style).

Each *kind* of component (``vae``, ``img2img``, ``text2img``, ``score``, ``captioner``; later
``unclip`` and others) has

* named builders, registered with ``@register(kind, "name", ...)``: the tiny offline models live
  here, and a method can add its own (e.g. a PDS unCLIP decoder under kind ``"unclip"``);
* one default loader, registered with ``@register_loader(kind)``, used for any other name: a
  Hugging Face id or a local folder, loaded with ``from_pretrained``.

``text2img`` has neither: it is *derived* from ``img2img`` (``DERIVED``), the same components
under diffusers' text-to-image pipeline, so every name that builds an img2img pipeline builds
one, from the same weights, and is untrained where that one is.

Every builder is called as ``builder(name, *, device, dtype, seed, revision, **extra)`` and
``build(kind, name, ...)`` dispatches. Real weights load through ``load_pretrained``
(``gitd.models.loading``): ``trust_remote_code=False`` (there is no switch to turn it on); a hub
id is read from its snapshot in the local cache, brought up to the hub's current commit first
when online; a model that cannot be had is a one-line ``ModelUnavailableError`` naming the cause
and its fix. A loader also says which files it reads (``register_loader(kind, layout=...)``,
``model_layout``, ``model_need``), which is what ``gitd fetch`` downloads.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

import torch

from gitd.errors import ConfigError
from gitd.models import files, hub
from gitd.models.files import TRANSFORMERS, Layout
from gitd.models.hub import Need, hub_offline  # noqa: F401  (re-exported)
from gitd.models.loading import load_pretrained

Builder = Callable[..., Any]

KINDS = ("vae", "img2img", "text2img", "score", "captioner")
# kind -> (the kind whose builders make its model, the conversion); text2img's is set below.
DERIVED: dict[str, tuple[str, Callable[[Any], Any]]] = {}
_BUILDERS: dict[str, dict[str, Builder]] = {kind: {} for kind in KINDS if kind != "text2img"}
_LOADERS: dict[str, Builder] = {}
_LAYOUTS: dict[str, Callable[..., Layout]] = {}
# What each kind is called in messages.
WHAT = {"vae": "VAE", "img2img": "Stable Diffusion", "score": "score", "captioner": "captioner",
        "unclip": "Stable unCLIP"}
_UNTRAINED: set[tuple[str, str]] = set()


def base_kind(kind: str) -> str:
    """The kind whose builders make a ``kind`` model: itself, or what a derived kind is from."""
    return DERIVED[kind][0] if kind in DERIVED else kind


def register(kind: str, *names: str, untrained: bool = False) -> Callable[[Builder], Builder]:
    """Register ``builder`` under ``names`` for ``kind`` (a new kind is created on first use).

    ``untrained=True`` marks random-weight models, so manifests say their output is noise.
    """
    if not names:
        raise ValueError("register() needs at least one name")
    if kind in DERIVED:
        raise ValueError(f"{kind} models are built from {DERIVED[kind][0]} models: register "
                         "the name there")

    def deco(builder: Builder) -> Builder:
        table = _BUILDERS.setdefault(kind, {})
        for name in names:
            table[name] = builder
            if untrained:
                _UNTRAINED.add((kind, name))
        return builder

    return deco


def register_loader(kind: str, *, layout: Callable[..., Layout] | None = None
                    ) -> Callable[[Builder], Builder]:
    """Register the loader used for names of ``kind`` that no builder claims (hub ids, folders).
    ``layout(name, **options)``: the files it reads (default: a transformers model's), which
    ``gitd fetch`` downloads."""

    def deco(loader: Builder) -> Builder:
        _BUILDERS.setdefault(kind, {})
        _LOADERS[kind] = loader
        if layout is not None:
            _LAYOUTS[kind] = layout
        return loader

    return deco


def list_models(kind: str | None = None) -> dict[str, list[str]] | list[str]:
    """Registered names, per kind (or for one kind)."""
    if kind is not None:
        return sorted(_BUILDERS.get(base_kind(kind), {}))
    return {k: list_models(k) for k in [*_BUILDERS, *DERIVED]}


def is_untrained(kind: str, name: str) -> bool:
    return (base_kind(kind), name) in _UNTRAINED


def build(kind: str, name: str, *, device: torch.device | str = "cpu",
          dtype: torch.dtype | str = torch.float32, seed: int = 0, revision: str | None = None,
          **extra: Any) -> Any:
    """Build the ``kind`` component called ``name`` on ``device`` in ``dtype``."""
    if kind in DERIVED:
        base, convert = DERIVED[kind]
        return convert(build(base, name, device=device, dtype=dtype, seed=seed,
                             revision=revision, **extra))
    if kind not in _BUILDERS:
        raise ConfigError(f"unknown model kind {kind!r}; known: "
                          f"{', '.join([*_BUILDERS, *DERIVED])}")
    if not isinstance(name, str) or not name.strip():
        raise ConfigError(f"{kind} model name must be a non-empty string, got {name!r}")
    device = resolve_device(device) if isinstance(device, str) else device
    dtype = resolve_dtype(dtype, device)
    if name not in _BUILDERS[kind]:
        name = hub.resolve_alias(name)
    builder = _BUILDERS[kind].get(name) or _LOADERS.get(kind)
    if builder is None:
        raise ConfigError(f"unknown {kind} model {name!r}; registered: "
                          f"{', '.join(sorted(_BUILDERS[kind])) or 'none'}")
    return builder(name, device=device, dtype=dtype, seed=seed, revision=revision, **extra)


# -- device and dtype ------------------------------------------------------------------------
def resolve_device(name: str | torch.device = "auto") -> torch.device:
    """``auto``: cuda, else mps, else cpu. A requested device that is absent is a ConfigError."""
    if isinstance(name, torch.device):
        return name
    text = str(name).strip().lower()
    if text == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(text)
    except (RuntimeError, ValueError):
        raise ConfigError(f"device must be auto, cpu, cuda, cuda:N or mps; got {name!r}") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"device {name!r} requested but CUDA is not available "
                              "(use --device cpu or auto)")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ConfigError(f"device {name!r} requested but only {torch.cuda.device_count()} "
                              "CUDA device(s) exist")
    elif device.type == "mps":
        if not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
            raise ConfigError(f"device {name!r} requested but MPS is not available")
    elif device.type != "cpu":
        raise ConfigError(f"device must be auto, cpu, cuda, cuda:N or mps; got {name!r}")
    return device


_DTYPES = {"float32": torch.float32, "fp32": torch.float32, "float16": torch.float16,
           "fp16": torch.float16, "half": torch.float16, "bfloat16": torch.bfloat16,
           "bf16": torch.bfloat16}


def resolve_dtype(dtype: str | torch.dtype = "auto",
                  device: torch.device | str = "cpu") -> torch.dtype:
    """``auto``: float16 on CUDA (what the paper ran), float32 elsewhere."""
    if isinstance(dtype, torch.dtype):
        return dtype
    device = torch.device(device) if isinstance(device, str) else device
    text = str(dtype).strip().lower().removeprefix("torch.")
    if text == "auto":
        return torch.float16 if device.type == "cuda" else torch.float32
    if text not in _DTYPES:
        raise ConfigError(f"dtype must be auto, float32, float16 or bfloat16; got {dtype!r}")
    return _DTYPES[text]


# -- loading real weights ----------------------------------------------------------------------
# ``load_pretrained`` (gitd.models.loading) and ``hub_offline`` (gitd.models.hub) are re-exported
# here, where model code has always imported them from.
def model_layout(kind: str, name: str, **options: Any) -> Layout:
    """The files the ``kind`` loader reads from model ``name`` (``gitd.models.files``)."""
    rule = _LAYOUTS.get(base_kind(kind))
    return rule(name, **options) if rule is not None else TRANSFORMERS


def model_need(kind: str, name: str, revision: str | None = None,
               **options: Any) -> Need | None:
    """The hub repository the ``kind`` model ``name`` is read from, and which of its files;
    None for a registered name (tiny, random weights) or a local folder."""
    kind = base_kind(kind)  # a text2img model is read from its img2img pipeline's files
    if name in _BUILDERS.get(kind, {}) or not hub.is_repo_id(name):
        return None
    name = hub.resolve_alias(name)
    return Need(kind, name, revision, model_layout(kind, name, **options), WHAT.get(kind, kind))


def diffusers_dtype_kwarg(dtype: torch.dtype) -> dict[str, Any]:
    # diffusers renamed torch_dtype to dtype and warns on the old name; older releases
    # (pyproject allows >= 0.30) know only torch_dtype. The helper below came with the rename.
    try:
        from diffusers.utils.deprecation_utils import _resolve_dtype  # noqa: F401
    except ImportError:
        return {"torch_dtype": dtype}
    return {"dtype": dtype}


# Hub ids whose VAE is TAESD for SD 1.x/2.x (``AutoencoderTiny``, latent space of SD 1.x's VAE).
# Its siblings (taesdxl, taesd3, taef1, ...) reproduce other models' latent spaces, which gitd's
# SD 1.x img2img pipeline and its SD-latent clustering do not use, so they are refused by name.
TAESD_IDS = ("madebyollin/taesd",)
VAE_CLASSES = ("AutoencoderKL", "AutoencoderTiny")


def _vae_source(model_id: str, standalone: bool) -> tuple[str, str | None]:
    """(diffusers class name, subfolder) of the VAE that ``model_id`` names.

    A local folder says what it holds: ``config.json`` at its top (a VAE by itself) or under
    ``vae/`` (a pipeline), with ``_class_name`` AutoencoderKL or AutoencoderTiny. A hub id is a
    pipeline (its ``vae`` subfolder) unless ``standalone`` (given as a VAE by itself:
    ``--vae``/``--cluster-vae``) or a known TAESD id.
    """
    local = Path(model_id).expanduser()
    if local.is_dir():
        sub = None if (local / "config.json").is_file() and not (local / "vae").is_dir() else "vae"
        cfg_path = local / (sub or "") / "config.json"
        try:
            cfg = json.loads(cfg_path.read_text(encoding="utf-8")) if cfg_path.is_file() else {}
        except (OSError, ValueError) as exc:
            raise ConfigError(f"{cfg_path}: unreadable VAE config ({exc})") from None
        cls = cfg.get("_class_name", "AutoencoderKL") if isinstance(cfg, dict) else None
        if cls not in VAE_CLASSES:
            raise ConfigError(f"{cfg_path}: _class_name is {cls!r}; gitd encodes with "
                              f"{' or '.join(VAE_CLASSES)}")
        if cls == "AutoencoderTiny" and cfg.get("latent_channels", 4) != 4:
            raise ConfigError(f"{cfg_path}: AutoencoderTiny with {cfg.get('latent_channels')} "
                              "latent channels is not TAESD for SD 1.x (4 channels); use the "
                              "madebyollin/taesd weights")
        return cls, sub
    if model_id in TAESD_IDS:
        return "AutoencoderTiny", None
    owner, _, repo = model_id.partition("/")
    if owner == "madebyollin" and repo.startswith("tae"):
        raise ConfigError(f"VAE {model_id!r} reproduces another model's latent space, not SD "
                          f"1.x's; gitd's img2img is SD 1.x, whose TAESD is "
                          f"{' or '.join(TAESD_IDS)}")
    return "AutoencoderKL", None if standalone else "vae"


def _vae_layout(name: str, standalone: bool = False, **options: Any) -> Layout:
    _, sub = _vae_source(name, standalone)
    return files.subfolder(sub) if sub else files.Layout(diffusers=True)


@register_loader("vae", layout=_vae_layout)
def _load_vae(name, *, device, dtype, seed=0, revision=None, standalone=False, **extra):
    """``AutoencoderKL`` (SD's VAE) or ``AutoencoderTiny`` (TAESD), by ``_vae_source``."""
    import diffusers

    cls, sub = _vae_source(name, standalone)
    kwargs = diffusers_dtype_kwarg(dtype)
    if sub:
        kwargs["subfolder"] = sub
    # A pipeline's vae/ is fetched with the pipeline ('gitd fetch --model img2img=ID').
    vae = load_pretrained(getattr(diffusers, cls).from_pretrained, name, what="VAE",
                          kind="img2img" if sub else "vae", revision=revision,
                          layout=_vae_layout(name, standalone), **kwargs)
    return vae.to(device).eval()


def _img2img_layout(name: str, **options: Any) -> Layout:
    from diffusers import StableDiffusionImg2ImgPipeline

    # The safety checker is passed as None, so its folder (1.2 GB for SD 1.5) is never read.
    return files.pipeline(StableDiffusionImg2ImgPipeline, skip=("safety_checker",))


@register_loader("img2img", layout=_img2img_layout)
def _load_img2img(name, *, device, dtype, seed=0, revision=None, vae=None, **extra):
    from diffusers import StableDiffusionImg2ImgPipeline

    kwargs: dict[str, Any] = {**diffusers_dtype_kwarg(dtype), "safety_checker": None,
                              "requires_safety_checker": False}
    if vae is not None:
        kwargs["vae"] = vae
    pipe = load_pretrained(StableDiffusionImg2ImgPipeline.from_pretrained, name,
                           what="Stable Diffusion", kind="img2img", revision=revision,
                           layout=_img2img_layout(name), **kwargs)
    pipe = pipe.to(device)
    # gitd draws its own per-batch progress bar; diffusers' per-step bars would interleave.
    pipe.set_progress_bar_config(disable=True)
    return pipe


def text2img_pipeline(pipe):
    """A ``StableDiffusionPipeline`` sharing ``pipe``'s VAE, UNet, text encoder, tokenizer and
    scheduler (no safety checker, as EDGE samples); ``pipe`` itself if it is one already."""
    from diffusers import StableDiffusionPipeline

    if isinstance(pipe, StableDiffusionPipeline):
        return pipe
    out = StableDiffusionPipeline(
        vae=pipe.vae, text_encoder=pipe.text_encoder, tokenizer=pipe.tokenizer, unet=pipe.unet,
        scheduler=pipe.scheduler, safety_checker=None, feature_extractor=None,
        requires_safety_checker=False)
    out.set_progress_bar_config(disable=True)
    return out


DERIVED["text2img"] = ("img2img", text2img_pipeline)


@register_loader("score")
def _load_score(name, *, device, dtype, seed=0, revision=None, **extra):
    from transformers import AutoModel, AutoProcessor

    from gitd.models.scoring import ScoreModel

    processor = load_pretrained(AutoProcessor.from_pretrained, name, what="score", kind="score",
                                revision=revision)
    model = load_pretrained(AutoModel.from_pretrained, name, what="score", kind="score",
                            revision=revision, dtype=dtype)
    if not (hasattr(model, "get_image_features") and hasattr(model, "get_text_features")):
        raise ConfigError(f"score model {name!r} ({type(model).__name__}) has no image and text "
                          "embeddings; use a CLIP-style model such as openai/clip-vit-base-patch32")
    return ScoreModel(model.to(device).eval(), processor.tokenizer, processor.image_processor,
                      name=name)


@register_loader("captioner")
def _load_captioner(name, *, device, dtype, seed=0, revision=None, prompt=None, **extra):
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from gitd.models.captioner import Captioner
    from gitd.models.diagnose import check_outdated
    from gitd.models.loading import refresh_hint

    processor = load_pretrained(AutoProcessor.from_pretrained, name, what="captioner",
                                kind="captioner", revision=revision)
    model = load_pretrained(AutoModelForImageTextToText.from_pretrained, name, what="captioner",
                            kind="captioner", revision=revision, dtype=dtype)
    # A snapshot cached before the hub's processor updates loads, then crashes in generate.
    source = getattr(model, "name_or_path", "") or name
    check_outdated(model, processor, name=name, what="captioner", source=f"{source}",
                   refresh=refresh_hint("captioner", name, revision))
    return Captioner(model.to(device).eval(), processor, name=name, prompt=prompt)


# -- tiny offline models ---------------------------------------------------------------------
@register("vae", "tiny", "tiny-sd", untrained=True)
def _tiny_vae(name, *, device, dtype, seed=0, revision=None, **extra):
    from gitd.models import tiny

    return tiny.build_tiny_vae(device=device, dtype=dtype, seed=seed)


@register("img2img", "tiny", "tiny-sd", untrained=True)
def _tiny_img2img(name, *, device, dtype, seed=0, revision=None, vae=None, **extra):
    from gitd.models import tiny

    return tiny.build_tiny_img2img(device=device, dtype=dtype, seed=seed, vae=vae)


@register("score", "tiny", "tiny-clip", untrained=True)
def _tiny_score(name, *, device, dtype, seed=0, revision=None, **extra):
    from gitd.models import tiny

    return tiny.build_tiny_score_model(device=device, dtype=dtype, seed=seed, name=name)


@register("captioner", "tiny", "tiny-blip", untrained=True)
def _tiny_captioner(name, *, device, dtype, seed=0, revision=None, **extra):
    from gitd.models import tiny

    return tiny.build_tiny_captioner(device=device, dtype=dtype, seed=seed, name=name)


@register("captioner", "tiny-llava", untrained=True)
def _tiny_llava(name, *, device, dtype, seed=0, revision=None, prompt=None, **extra):
    from gitd.models import tiny

    return tiny.build_tiny_llava(device=device, dtype=dtype, seed=seed, name=name, prompt=prompt)


# -- public builders ---------------------------------------------------------------------------
def build_vae(name: str, *, device="cpu", dtype=torch.float32, seed: int = 0,
              revision: str | None = None, standalone: bool = False):
    """``diffusers.AutoencoderKL`` or ``AutoencoderTiny`` (TAESD). A real SD id loads its ``vae``
    subfolder; with ``standalone`` a hub id names a VAE repo by itself (``--vae``); a local
    folder or ``madebyollin/taesd`` is recognised either way (``_vae_source``)."""
    return build("vae", name, device=device, dtype=dtype, seed=seed, revision=revision,
                 standalone=standalone)


def build_img2img(name: str, *, device="cpu", dtype=torch.float32, seed: int = 0, vae=None,
                  revision: str | None = None):
    """``diffusers.StableDiffusionImg2ImgPipeline`` without safety checker; pass ``vae`` to share
    the one already built for encoding."""
    return build("img2img", name, device=device, dtype=dtype, seed=seed, revision=revision,
                 vae=vae)


def build_score_model(name: str, *, device="cpu", dtype=torch.float32, seed: int = 0,
                      revision: str | None = None):
    """A ``ScoreModel`` (CLIP-style image/text cosine)."""
    return build("score", name, device=device, dtype=dtype, seed=seed, revision=revision)


def build_captioner(name: str, *, device="cpu", dtype=torch.float32, seed: int = 0,
                    revision: str | None = None, prompt: str | None = None):
    """A ``Captioner`` over any transformers image-to-text model (BLIP, BLIP-2, ...)."""
    return build("captioner", name, device=device, dtype=dtype, seed=seed, revision=revision,
                 prompt=prompt)


def describe_model(kind: str, name: str, revision: str | None = None) -> dict[str, Any]:
    local = Path(name).expanduser()
    info: dict[str, Any] = {"kind": kind, "name": name, "revision": revision}
    if name in _BUILDERS.get(base_kind(kind), {}):
        info["source"] = "registry"
    elif local.is_dir():
        info["source"] = "local"
        info["path"] = str(local.resolve())
    else:
        info["source"] = "huggingface"
        resolved = hub.WITHDRAWN.get(name)
        if resolved:
            info["resolved"] = resolved  # a withdrawn id, loaded from its mirror
    info["untrained"] = is_untrained(kind, name)
    return info
