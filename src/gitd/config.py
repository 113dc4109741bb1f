"""Every setting of ``gitd distill``, its presets, and config files (YAML or JSON).

Precedence, lowest first: preset < config file < explicit CLI flags. A config file may name a
preset (``preset: fast``) and override any field; a ``--preset`` flag given on the command line
beats the file's. Field names are the CLI names with ``-`` for ``_`` (``num_candidates`` is
``--num-candidates``).

Constructors only store values; ``validate()`` (called where work starts) checks them and raises
a one-line ``ConfigError`` naming the field and the bad value.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from gitd.errors import ConfigError

METHODS = ("gitd", "pds")
PROMPT_CHOICES = ("longest", "first")
CLUSTER_SPACES = ("latents", "features")
DTYPES = ("auto", "float32", "float16", "bfloat16")


@dataclass
class DistillConfig:
    """Settings of one distillation run; defaults are the ``paper`` preset."""

    method: str = "gitd"
    preset: str = "paper"
    pairs: int = 100
    seed: int = 0
    device: str = "auto"
    dtype: str = "auto"
    resolution: int = 512
    # Models, by registry name or Hugging Face id; a revision pins a commit/tag of a real id.
    diffusion_model: str = "stable-diffusion-v1-5/stable-diffusion-v1-5"
    diffusion_revision: str | None = None
    score_model: str = "openai/clip-vit-base-patch32"
    score_revision: str | None = None
    captioner: str = "Salesforce/blip2-opt-6.7b-coco"
    captioner_revision: str | None = None
    # Image generation (img2img from each medoid's latent).
    strength: float = 0.7
    guidance_scale: float = 8.0
    num_inference_steps: int = 50
    num_candidates: int = 4
    negative_prompt: str = "cartoon, anime, painting"
    prompt: str = "longest"
    # Captioning.
    num_captions: int = 5
    temperature: float = 0.7
    top_p: float = 0.9
    max_new_tokens: int = 30
    # Encoding and clustering.
    encode_batch_size: int = 16
    encode_workers: int = 2
    sample_latents: bool = False
    clara_samples: int | None = None
    clara_sample_size: int | None = None
    # VAEs by registry name, Hugging Face id or folder (SD's AutoencoderKL or TAESD's
    # AutoencoderTiny). ``vae`` encodes the latents img2img starts from and is the pipeline's
    # decoder (None: the diffusion model's own); ``cluster_vae`` makes the latents CLARA
    # clusters (None: the same as ``vae``, as in the paper), after which only the k medoids are
    # encoded with ``vae``. ``cluster_space: features`` clusters the evaluation encoders' image
    # and text features (the coreset baselines' space, at ``feature_image_size`` px) instead.
    vae: str | None = None
    cluster_vae: str | None = None
    cluster_space: str = "latents"
    feature_image_size: int = 224
    # Batching: medoids per img2img call, images per captioner call. Part of the cache key,
    # because batch composition can change low-order bits of GPU results.
    generate_batch_size: int = 2
    caption_batch_size: int = 8
    # Ablation switches (paper: /C, /D, /T, /S when False).
    cluster: bool = True
    diffusion: bool = True
    captioner_on: bool = True
    score: bool = True
    work: str | None = None
    # Prototype-guided synthesis (``method: pds``): unCLIP decoder, its noise level, the fraction
    # of lowest image-text cosine pairs dropped before clustering, and optional re-captioning.
    unclip_model: str = "stabilityai/stable-diffusion-2-1-unclip-small"
    unclip_revision: str | None = None
    noise_level: int = 10
    filter_fraction: float = 0.2
    recaption: bool = False

    # -- construction ------------------------------------------------------------------------
    @classmethod
    def from_preset(cls, name: str = "paper", **overrides: Any) -> "DistillConfig":
        if name not in PRESETS:
            raise ConfigError(f"unknown preset {name!r}; choose one of: {', '.join(PRESETS)}")
        values = {**PRESETS[name], "preset": name}
        _check_keys(overrides, "override")
        method = overrides.get("method", "gitd")
        if name.startswith("random-") and method != "gitd":
            raise ConfigError(f"preset {name!r} builds GITD's models only (there is no "
                              f"full-size random-weight unCLIP); for --method {method} use "
                              "--preset tiny, fast or paper")
        # A method may differ from GITD in a preset's settings (PDS: unCLIP steps, CFG, CLIP
        # ViT-L/14); explicit overrides still win.
        values.update(METHOD_PRESETS.get(method, {}).get(name, {}))
        values.update(overrides)
        return cls(**values)

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, source: str = "config") -> "DistillConfig":
        """A preset (``data['preset']``, default ``paper``) overridden by the rest of ``data``."""
        if not isinstance(data, dict):
            raise ConfigError(f"{source}: expected a mapping of settings, got "
                              f"{type(data).__name__}")
        _check_keys(data, source)
        data = dict(data)
        preset = data.pop("preset", None) or "paper"
        return cls.from_preset(preset, **data)

    def replace(self, **changes: Any) -> "DistillConfig":
        _check_keys(changes, "override")
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def vae_source(self, role: str = "generate") -> tuple[str, str | None, bool]:
        """(name, revision, standalone) of the VAE for ``role``: ``generate`` (img2img's latents
        and decoder) or ``cluster``. ``standalone``: named by itself, not a pipeline's vae/."""
        name = self.vae
        if role == "cluster" and self.cluster_vae is not None:
            name = self.cluster_vae
        elif role not in ("generate", "cluster"):
            raise ValueError(f"role must be generate or cluster, got {role!r}")
        if name is None or name == self.diffusion_model:
            return self.diffusion_model, self.diffusion_revision, False
        return name, None, True

    # -- validation --------------------------------------------------------------------------
    def validate(self) -> "DistillConfig":
        """Check every field; raise ``ConfigError`` naming the first bad one. Returns self."""
        _choice("method", self.method, METHODS)
        _choice("preset", self.preset, tuple(PRESETS))
        _choice("prompt", self.prompt, PROMPT_CHOICES)
        _choice("dtype", self.dtype, DTYPES)
        _string("device", self.device)
        for name in ("diffusion_model", "score_model", "captioner"):
            _string(name, getattr(self, name))
        _choice("cluster_space", self.cluster_space, CLUSTER_SPACES)
        if self.method != "gitd" and (self.vae or self.cluster_vae
                                      or self.cluster_space != "latents"):
            raise ConfigError(f"vae, cluster_vae and cluster_space are settings of method gitd; "
                              f"method {self.method} encodes no latents")
        for name in ("diffusion_revision", "score_revision", "captioner_revision", "work", "vae",
                     "cluster_vae"):
            if getattr(self, name) is not None:
                _string(name, getattr(self, name))
        if not isinstance(self.negative_prompt, str):
            raise ConfigError(f"negative_prompt must be a string, got {self.negative_prompt!r}")
        for name in ("pairs", "num_inference_steps", "num_candidates", "num_captions",
                     "max_new_tokens", "encode_batch_size", "generate_batch_size",
                     "caption_batch_size"):
            _int(name, getattr(self, name), 1)
        _int("seed", self.seed, 0)
        _int("encode_workers", self.encode_workers, 0)
        _int("resolution", self.resolution, 8)
        _int("feature_image_size", self.feature_image_size, 16)
        if self.resolution % 8:
            raise ConfigError(f"resolution must be a multiple of 8 (the VAE downsamples by 8), "
                              f"got {self.resolution}")
        for name in ("clara_samples", "clara_sample_size"):
            if getattr(self, name) is not None:
                _int(name, getattr(self, name), 1)
        _number("strength", self.strength, 0.0, 1.0, low_open=True)
        _number("guidance_scale", self.guidance_scale, 0.0, math.inf)
        _number("temperature", self.temperature, 0.0, math.inf, low_open=True)
        _number("top_p", self.top_p, 0.0, 1.0, low_open=True)
        _string("unclip_model", self.unclip_model)
        if self.unclip_revision is not None:
            _string("unclip_revision", self.unclip_revision)
        _int("noise_level", self.noise_level, 0)
        _number("filter_fraction", self.filter_fraction, 0.0, 1.0)
        if self.filter_fraction >= 1.0:
            raise ConfigError(f"filter_fraction must be below 1 (it drops that fraction of "
                              f"pairs), got {self.filter_fraction!r}")
        for name in ("sample_latents", "cluster", "diffusion", "captioner_on", "score",
                     "recaption"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"{name} must be true or false, got {getattr(self, name)!r}")
        return self


# Presets hold only what differs from the field defaults' meaning; each is complete anyway so that
# reading one tells the whole story.
PRESETS: dict[str, dict[str, Any]] = {
    # The published GITD setting (one 12 GB GPU in fp16).
    "paper": {
        "resolution": 512,
        "diffusion_model": "stable-diffusion-v1-5/stable-diffusion-v1-5",
        "score_model": "openai/clip-vit-base-patch32",
        "captioner": "Salesforce/blip2-opt-6.7b-coco",
        "strength": 0.7, "guidance_scale": 8.0, "num_inference_steps": 50,
        "num_candidates": 4, "num_captions": 5, "temperature": 0.7, "top_p": 0.9,
        "max_new_tokens": 30, "negative_prompt": "cartoon, anime, painting", "prompt": "longest",
        "generate_batch_size": 2, "caption_batch_size": 8,
    },
    # Real models, about 6x less compute: SD 1.5 at 384 px (latent 4x48x48) with 25 steps and 2
    # candidates, and BLIP-base (0.25B) instead of BLIP-2 OPT-6.7B. Fits a 6-8 GB GPU; runs on a
    # CPU at some minutes per pair.
    "fast": {
        "resolution": 384,
        "diffusion_model": "stable-diffusion-v1-5/stable-diffusion-v1-5",
        "score_model": "openai/clip-vit-base-patch32",
        "captioner": "Salesforce/blip-image-captioning-base",
        "strength": 0.7, "guidance_scale": 8.0, "num_inference_steps": 25,
        "num_candidates": 2, "num_captions": 3, "temperature": 0.7, "top_p": 0.9,
        "max_new_tokens": 30, "negative_prompt": "cartoon, anime, painting", "prompt": "longest",
        "generate_batch_size": 4, "caption_batch_size": 8,
    },
    # Tiny random-weight models of the same classes (gitd.models.tiny): fully offline and
    # deterministic, for tests and for trying the pipeline end to end. Output is noise.
    "tiny": {
        "resolution": 64,
        "diffusion_model": "tiny-sd",
        "score_model": "tiny-clip",
        "captioner": "tiny-blip",
        "strength": 0.7, "guidance_scale": 8.0, "num_inference_steps": 4,
        "num_candidates": 2, "num_captions": 2, "temperature": 0.7, "top_p": 0.9,
        "max_new_tokens": 8, "negative_prompt": "cartoon, anime, painting", "prompt": "longest",
        "encode_batch_size": 8, "encode_workers": 0,
        "generate_batch_size": 4, "caption_batch_size": 8,
    },
}
# The real presets' architectures and settings with random weights (gitd.models.fullsize): they
# cost what the real runs cost, offline, so a machine without the checkpoints can time them.
# BLIP-2 OPT-6.7B is not built (31 GB in float32); both use BLIP base as the captioner.
_RANDOM_MODELS = {"diffusion_model": "random-sd15", "score_model": "random-clip-b32",
                  "captioner": "random-blip-base"}
PRESETS["random-paper"] = {**PRESETS["paper"], **_RANDOM_MODELS}
PRESETS["random-fast"] = {**PRESETS["fast"], **_RANDOM_MODELS}

# Per-method preset differences, applied over PRESETS when ``method`` is given.
METHOD_PRESETS: dict[str, dict[str, dict[str, Any]]] = {
    # PDS (ICLR 2026): unCLIP-small is conditioned on CLIP ViT-L/14 image embeddings, so the
    # score model that embeds the data must be ViT-L/14; 100 steps, CFG 5, noise level 10.
    "pds": {
        "paper": {"unclip_model": "stabilityai/stable-diffusion-2-1-unclip-small",
                  "score_model": "openai/clip-vit-large-patch14", "resolution": 768,
                  "num_inference_steps": 100, "guidance_scale": 5.0, "noise_level": 10,
                  "negative_prompt": "text, watermark", "filter_fraction": 0.2},
        "fast": {"unclip_model": "stabilityai/stable-diffusion-2-1-unclip-small",
                 "score_model": "openai/clip-vit-large-patch14", "resolution": 512,
                 "num_inference_steps": 30, "guidance_scale": 5.0, "noise_level": 10,
                 "negative_prompt": "text, watermark", "filter_fraction": 0.2},
        "tiny": {"unclip_model": "tiny-unclip", "score_model": "tiny-clip", "resolution": 64,
                 "num_inference_steps": 4, "guidance_scale": 5.0, "noise_level": 10,
                 "negative_prompt": "text, watermark", "filter_fraction": 0.2},
    },
}

FIELD_NAMES = tuple(f.name for f in fields(DistillConfig))


def _check_keys(data: dict[str, Any], source: str) -> None:
    unknown = sorted(set(data) - set(FIELD_NAMES))
    if unknown:
        raise ConfigError(f"{source}: unknown setting(s) {', '.join(unknown)}; known settings: "
                          f"{', '.join(FIELD_NAMES)}")


def _choice(name: str, value: Any, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ConfigError(f"{name} must be one of {', '.join(choices)}; got {value!r}")


def _string(name: str, value: Any) -> None:
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"{name} must be a non-empty string, got {value!r}")


def _int(name: str, value: Any, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{name} must be an integer, got {value!r}")
    if value < minimum:
        raise ConfigError(f"{name} must be >= {minimum}, got {value}")


def _number(name: str, value: Any, low: float, high: float, *, low_open: bool = False) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
        raise ConfigError(f"{name} must be a number, got {value!r}")
    if (value <= low if low_open else value < low) or value > high:
        lo = "(" if low_open else "["
        hi = "inf)" if math.isinf(high) else f"{high:g}]"
        raise ConfigError(f"{name} must be in {lo}{low:g}, {hi}, got {value!r}")


# -- files ---------------------------------------------------------------------------------------
def _is_yaml(path: Path) -> bool:
    return path.suffix.lower() in (".yaml", ".yml")


def read_config_file(path: str | Path) -> dict[str, Any]:
    """The raw mapping in a YAML or JSON config file (keys checked, values not yet)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read config file ({exc})") from None
    try:
        if _is_yaml(path):
            import yaml

            data = yaml.safe_load(text)
        else:
            data = json.loads(text)
    except Exception as exc:  # yaml and json raise different types; both mean a bad file
        msg = str(exc).replace("\n", " ")
        raise ConfigError(f"{path}: not valid {'YAML' if _is_yaml(path) else 'JSON'} ({msg})") \
            from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of settings, got {type(data).__name__}")
    _check_keys(data, str(path))
    return data


def load_config(path: str | Path, **overrides: Any) -> DistillConfig:
    """Config from a file (its ``preset`` then its fields), then ``overrides`` on top."""
    return make_config(config_file=path, **overrides)


def make_config(preset: str | None = None, config_file: str | Path | None = None,
                **overrides: Any) -> DistillConfig:
    """preset < config file < overrides. ``preset`` (an explicit CLI flag) beats the file's.

    Pass in ``overrides`` only the settings the user actually gave.
    """
    data: dict[str, Any] = read_config_file(config_file) if config_file is not None else {}
    _check_keys(overrides, "override")
    chosen = preset or data.pop("preset", None) or "paper"
    data.pop("preset", None)
    return DistillConfig.from_preset(chosen, **{**data, **overrides})


def save_config(cfg: DistillConfig, path: str | Path) -> None:
    """Write every field (YAML for .yaml/.yml, JSON otherwise), atomically."""
    from gitd.store import atomic_write_text

    path = Path(path)
    if _is_yaml(path):
        import yaml

        text = yaml.safe_dump(cfg.to_dict(), sort_keys=False)
    else:
        text = json.dumps(cfg.to_dict(), indent=2) + "\n"
    atomic_write_text(path, text)


__all__ = ["DistillConfig", "PRESETS", "FIELD_NAMES", "load_config", "make_config",
           "read_config_file", "save_config"]
