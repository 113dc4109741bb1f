"""Model registry: build every component gitd uses by name (see ``gitd.models.registry``)."""

from gitd.models.registry import (KINDS, build, build_captioner, build_img2img,
                                  build_score_model, build_vae, describe_model,
                                  hub_offline, is_untrained, list_models, load_pretrained,
                                  register, register_loader, resolve_device, resolve_dtype)
from gitd.models import unclip as _unclip  # noqa: F401  (registers the unclip kind)
from gitd.models import fullsize as _fullsize  # noqa: F401  (registers the random-* models)

__all__ = ["KINDS", "build", "build_captioner", "build_img2img", "build_score_model",
           "build_vae", "describe_model", "hub_offline", "is_untrained",
           "list_models", "load_pretrained", "register", "register_loader", "resolve_device",
           "resolve_dtype"]
