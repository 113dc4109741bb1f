"""Settings that several methods share, declared once as field groups.

A method's settings class lists the groups it uses (``class PdsSettings(ScoreFields,
GenerationFields, ..., DistillSettings)``), so a rule, a help line and a flag are written in
one place. Where a method's paper uses another default, it takes the group's field with that
default (``gitd.settings.inherit``): the rule and the help stay the group's. Each group also
builds the settings of the stage it configures, so the methods build them the same way. The
captioner's group is ``gitd.stages.caption.CaptionerFields``, the caption synthesis's
``gitd.stages.caption_synthesis.CaptionSynthesisFields``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from gitd.settings import Boolean, Interval, Text, setting


@dataclass(frozen=True)
class ScoreFields:
    """The CLIP-style score model (GITD, PDS, EDGE)."""

    score_model: str = setting("openai/clip-vit-base-patch32", Text(),
                               "CLIP id or folder, or tiny-clip: scores images against texts "
                               "(gitd: picks candidates and captions) and embeds the pairs "
                               "(pds; edge --prompts prototype)")
    score_revision: str | None = setting(None, Text(), "revision (commit/tag) of the score "
                                         "model", optional=True, metavar="REV")


@dataclass(frozen=True)
class DiffusionModelFields:
    """The Stable Diffusion model: VAE, UNet and text encoder (GITD, EDGE)."""

    diffusion_model: str = setting("stable-diffusion-v1-5/stable-diffusion-v1-5", Text(),
                                   "Stable Diffusion id or folder (VAE + UNet + text encoder), "
                                   "or tiny-sd")
    diffusion_revision: str | None = setting(None, Text(), "revision (commit/tag) of the "
                                             "diffusion model", optional=True, metavar="REV")


@dataclass(frozen=True)
class GenerationFields:
    """The image generator's sampling (GITD's img2img, PDS's unCLIP, EDGE's text-to-image)."""

    resolution: int = setting(512, Interval(int, 8, 4096, multiple_of=8),
                              "side of the square images in pixels, encoded and generated (the "
                              "VAE downsamples by 8)")
    guidance_scale: float = setting(8.0, Interval(float, 0, None),
                                    "classifier-free guidance scale")
    num_inference_steps: int = setting(50, Interval(int, 1, 1000), "scheduler steps (img2img "
                                       "runs about strength x steps)")
    negative_prompt: str = setting("cartoon, anime, painting", Text(empty=True),
                                   "negative prompt of the generator ('' for none)")
    # Part of the cache key: batch composition can change low-order bits of the images.
    generate_batch_size: int = setting(2, Interval(int, 1, 1024), "images per generator call "
                                       "(medoids, prototypes or prompts)")


@dataclass(frozen=True)
class DiffusionSwitch:
    """The generator-free ablation (GITD's /D, PDS's variant)."""

    diffusion: bool = setting(True, Boolean(), "generate images; --no-diffusion: real images "
                              "instead (gitd: each medoid's own, the paper's /D; pds: the one "
                              "nearest each prototype)", flags=("--diffusion", "--no-diffusion"))


@dataclass(frozen=True)
class EncodeFields:
    """VAE encoding of every image (GITD; EDGE's --prompts clara)."""

    encode_batch_size: int = setting(16, Interval(int, 1, 4096), "images per VAE batch")
    encode_workers: int = setting(2, Interval(int, 0, 256), "DataLoader processes that decode "
                                  "images for encoding (decoding is exact, so not part of any "
                                  "key)", affects_results=False)

    def encode_settings(self, vae, resolution: int, runtime, *, sample: bool = False,
                        **where: Any):
        """The encode stage's settings: ``vae`` a ``ModelRef``, ``where`` how it runs
        (``workers``, ``ray``, ``ray_workers``: none of them in the key)."""
        from gitd.stages.encode import EncodeSettings

        return EncodeSettings(vae=vae, resolution=resolution, sample=sample,
                              seed=self.seed if sample else None,
                              batch_size=self.encode_batch_size, dtype=runtime.dtype_name,
                              device=runtime.device_type, **where)


@dataclass(frozen=True)
class ClaraFields:
    """CLARA's draws (GITD; EDGE's --prompts clara)."""

    clara_samples: int | None = setting(None, Interval(int, 1, 1000), "CLARA: number of random "
                                        "samples (default 5)", optional=True)
    clara_sample_size: int | None = setting(None, Interval(int, 1, 100_000_000),
                                            "CLARA: rows per sample (default max(80 + 4k, 1000))",
                                            optional=True)

    def cluster_settings(self, runtime, *, method: str = "clara", ray: str | None = None):
        """The cluster stage's settings: ``pairs`` medoids by ``method`` (clara, or random for
        the /C ablation)."""
        from gitd.stages.cluster import ClusterSettings

        return ClusterSettings(k=self.pairs, method=method, n_samples=self.clara_samples,
                               sample_size=self.clara_sample_size, seed=self.seed,
                               device=runtime.device_type, ray=ray)


@dataclass(frozen=True)
class PrototypeFields:
    """PDS's prototypes (PDS; EDGE's --prompts prototype)."""

    filter_fraction: float = setting(0.2, Interval(float, 0, 1, closed="left"),
                                     "fraction of pairs with the lowest image-text cosine "
                                     "dropped before clustering")

    def prototype_settings(self):
        from gitd.stages.prototypes import PrototypeSettings

        return PrototypeSettings(k=self.pairs, filter_fraction=self.filter_fraction,
                                 seed=self.seed)
