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
``build(kind, name, ...)`` dispatches. Real weights load with ``trust_remote_code=False`` (there is
no switch to turn it on), from the local cache first, and from the hub only when it is not there
(and ``HF_HUB_OFFLINE`` is not set); a model that is neither on disk nor reachable is a one-line
``ModelUnavailableError``, quickly and without the hub libraries' warnings.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import warnings
from pathlib import Path
from typing import Any, Callable

import torch

from gitd.errors import ConfigError, GitdError, ModelUnavailableError
from gitd.log import is_quiet

Builder = Callable[..., Any]

KINDS = ("vae", "img2img", "text2img", "score", "captioner")
# kind -> (the kind whose builders make its model, the conversion); text2img's is set below.
DERIVED: dict[str, tuple[str, Callable[[Any], Any]]] = {}
_BUILDERS: dict[str, dict[str, Builder]] = {kind: {} for kind in KINDS if kind != "text2img"}
_LOADERS: dict[str, Builder] = {}
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


def register_loader(kind: str) -> Callable[[Builder], Builder]:
    """Register the loader used for names of ``kind`` that no builder claims (hub ids, folders)."""

    def deco(loader: Builder) -> Builder:
        _BUILDERS.setdefault(kind, {})
        _LOADERS[kind] = loader
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
def hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def _unavailable(model_id: str, what: str, why: BaseException | str) -> ModelUnavailableError:
    if isinstance(why, BaseException):
        reason = "HF_HUB_OFFLINE is set" if hub_offline() else "not reachable"
        detail = " ".join(str(why).split()) or type(why).__name__
        if len(detail) > 140:
            detail = detail[:137].rsplit(" ", 1)[0] + "..."
        why = f"{reason}: {detail}"
    return ModelUnavailableError(
        f"{what} model {model_id!r} is not on disk and cannot be downloaded ({why}); "
        f"fetch it on a connected machine with 'hf download {model_id}' and copy the cache here "
        f"(or set HF_HOME to it), or pass a local folder; '--preset tiny' runs fully offline",
        exit_code=3)


def _quiet_loading_bars() -> None:
    # --quiet hides progress bars; the libraries draw their own while loading weights.
    import diffusers.utils.logging as dlog
    import transformers.utils.logging as tlog

    tlog.disable_progress_bar()
    dlog.disable_progress_bar()


HUB_LOGGERS = ("huggingface_hub", "transformers", "diffusers")
# Seconds to wait for the hub to answer before calling it unreachable (env GITD_HUB_TIMEOUT).
HUB_TIMEOUT = 5.0


class _Held(logging.Handler):
    def __init__(self):
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@contextlib.contextmanager
def _held_library_output():
    """Hold the hub libraries' log records and Python warnings while a model loads: a load that
    fails becomes gitd's one line without them (retry notices, deprecations); a load that works
    lets them through afterwards, as they were."""
    held = _Held()
    saved = []
    for name in HUB_LOGGERS:
        lg = logging.getLogger(name)
        saved.append((lg, lg.handlers[:], lg.propagate))
        lg.handlers = [held]
        lg.propagate = False
    ok = False
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("default")
            yield
        ok = True
    finally:
        for lg, handlers, propagate in saved:
            # A library imported during the load set up its own handler: keep that one.
            added = [h for h in lg.handlers if h is not held and h not in handlers]
            lg.handlers = handlers + added
            if not added:
                lg.propagate = propagate
        if ok:
            for record in held.records:
                target = logging.getLogger(record.name)
                if record.levelno >= target.getEffectiveLevel():
                    target.handle(record)
            for w in caught:
                warnings.showwarning(w.message, w.category, w.filename, w.lineno)


def _hub_unreachable() -> str | None:
    """None when the hub endpoint answers at all; otherwise why it does not. One request with a
    short timeout and no retries: the hub libraries retry a dead connection for half a minute."""
    import urllib.error
    import urllib.request

    from huggingface_hub import constants

    endpoint = constants.ENDPOINT
    try:
        timeout = float(os.environ.get("GITD_HUB_TIMEOUT", HUB_TIMEOUT))
    except ValueError:
        timeout = HUB_TIMEOUT
    try:
        urllib.request.urlopen(urllib.request.Request(endpoint, method="HEAD"), timeout=timeout)
    except urllib.error.HTTPError:
        return None  # an HTTP answer, even an error, means the hub is there
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        return f"the hub {endpoint} is not reachable: {' '.join(str(reason).split())[:100]}"
    return None


def _call(load: Callable[..., Any], source: str, model_id: str, what: str,
          kwargs: dict[str, Any]) -> Any:
    try:
        return load(source, **kwargs)
    except GitdError:
        raise
    except (OSError, ValueError, ImportError, KeyError) as exc:
        # from_pretrained reports missing files, an offline hub, a bad id and a folder without
        # weights through these types; all mean "this model cannot be had here".
        raise _unavailable(model_id, what, exc) from None
    except Exception as exc:  # huggingface_hub's HTTP errors do not share a base with the above
        if type(exc).__module__.startswith(("huggingface_hub", "requests", "httpx", "urllib3")):
            raise _unavailable(model_id, what, exc) from None
        raise


def load_pretrained(load: Callable[..., Any], model_id: str, *, what: str,
                    revision: str | None = None, **kwargs: Any) -> Any:
    """``load(model_id, ...)`` (a ``from_pretrained``) with gitd's safety and offline rules.

    A hub id is looked up in the local cache first (``local_files_only``: no network); only
    when it is not there, and ``HF_HUB_OFFLINE`` is not set, is the hub asked, after one quick
    check that it answers at all. A model that cannot be had is one ``ModelUnavailableError``
    line, with none of the libraries' warnings before it.
    """
    local = Path(model_id).expanduser()
    source = str(local) if local.is_dir() else model_id
    if not local.is_dir() and (model_id.startswith((".", "~", os.sep)) or local.exists()):
        # A path, not a hub id: suggesting 'hf download /some/path' would only confuse.
        raise ModelUnavailableError(f"{what} model folder {model_id} does not exist or is not a "
                                    "folder; '--preset tiny' runs fully offline", exit_code=3)
    kwargs.setdefault("trust_remote_code", False)
    if kwargs["trust_remote_code"]:
        raise ConfigError("trust_remote_code is not allowed for models loaded by gitd")
    if revision is not None and not local.is_dir():
        kwargs["revision"] = revision
    if is_quiet():
        _quiet_loading_bars()
    with _held_library_output():
        if local.is_dir() or hub_offline():
            return _call(load, source, model_id, what, {**kwargs, "local_files_only": True})
        try:
            return _call(load, source, model_id, what, {**kwargs, "local_files_only": True})
        except ModelUnavailableError:
            pass  # not in the local cache: ask the hub
        why = _hub_unreachable()
        if why is not None:
            raise _unavailable(model_id, what, why)
        return _call(load, source, model_id, what, kwargs)


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


@register_loader("vae")
def _load_vae(name, *, device, dtype, seed=0, revision=None, standalone=False, **extra):
    """``AutoencoderKL`` (SD's VAE) or ``AutoencoderTiny`` (TAESD), by ``_vae_source``."""
    import diffusers

    cls, sub = _vae_source(name, standalone)
    kwargs = diffusers_dtype_kwarg(dtype)
    if sub:
        kwargs["subfolder"] = sub
    vae = load_pretrained(getattr(diffusers, cls).from_pretrained, name, what="VAE",
                          revision=revision, **kwargs)
    return vae.to(device).eval()


@register_loader("img2img")
def _load_img2img(name, *, device, dtype, seed=0, revision=None, vae=None, **extra):
    from diffusers import StableDiffusionImg2ImgPipeline

    kwargs: dict[str, Any] = {**diffusers_dtype_kwarg(dtype), "safety_checker": None,
                              "requires_safety_checker": False}
    if vae is not None:
        kwargs["vae"] = vae
    pipe = load_pretrained(StableDiffusionImg2ImgPipeline.from_pretrained, name,
                           what="Stable Diffusion img2img", revision=revision, **kwargs)
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

    processor = load_pretrained(AutoProcessor.from_pretrained, name, what="score",
                                revision=revision)
    model = load_pretrained(AutoModel.from_pretrained, name, what="score", revision=revision,
                            dtype=dtype)
    if not (hasattr(model, "get_image_features") and hasattr(model, "get_text_features")):
        raise ConfigError(f"score model {name!r} ({type(model).__name__}) has no image and text "
                          "embeddings; use a CLIP-style model such as openai/clip-vit-base-patch32")
    return ScoreModel(model.to(device).eval(), processor.tokenizer, processor.image_processor,
                      name=name)


@register_loader("captioner")
def _load_captioner(name, *, device, dtype, seed=0, revision=None, prompt=None, **extra):
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from gitd.models.captioner import Captioner

    processor = load_pretrained(AutoProcessor.from_pretrained, name, what="captioner",
                                revision=revision)
    model = load_pretrained(AutoModelForImageTextToText.from_pretrained, name, what="captioner",
                            revision=revision, dtype=dtype)
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
    info["untrained"] = is_untrained(kind, name)
    return info
