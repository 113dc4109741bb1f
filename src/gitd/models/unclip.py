"""Stable unCLIP (image-variation) pipelines for prototype-guided synthesis, by name.

``build_unclip("stabilityai/stable-diffusion-2-1-unclip-small")`` loads the real pipeline (its
image embedder is CLIP ViT-L/14, 768-d); ``build_unclip("tiny-unclip")`` builds random-weight
components of the same classes from configs, offline, deterministic from the seed, conditioned
on ``tiny-clip``-sized (32-d) image embeddings. Registered in the model registry as kind
``unclip``.
"""

from __future__ import annotations

from typing import Any

import torch

from gitd.errors import ConfigError
from gitd.models import tiny
from gitd.models.registry import (diffusers_dtype_kwarg, build, load_pretrained, register,
                                  register_loader)


def image_embed_dim(pipe) -> int:
    """Width of the CLIP image embeddings the pipeline is conditioned on."""
    return int(pipe.image_normalizer.config.embedding_dim)


def check_embedding_match(pipe, embed_dim: int, *, score_model: str, unclip_model: str) -> None:
    """The prototypes are made of the score model's CLIP image embeddings; the unCLIP decoder
    must be conditioned on embeddings of the same CLIP."""
    want = image_embed_dim(pipe)
    if want != embed_dim:
        raise ConfigError(
            f"score model {score_model!r} gives {embed_dim}-d image embeddings but unCLIP "
            f"{unclip_model!r} is conditioned on {want}-d ones; use the CLIP its image embedder "
            "was trained with (openai/clip-vit-large-patch14 for stable-diffusion-2-1-unclip-"
            "small) as --score-model")


@register_loader("unclip")
def _load_unclip(name, *, device, dtype, seed=0, revision=None, **extra):
    from diffusers import StableUnCLIPImg2ImgPipeline

    pipe = load_pretrained(StableUnCLIPImg2ImgPipeline.from_pretrained, name,
                           what="Stable unCLIP", revision=revision,
                           **diffusers_dtype_kwarg(dtype))
    pipe = pipe.to(device)
    pipe.set_progress_bar_config(disable=True)
    return pipe


@register("unclip", "tiny-unclip", untrained=True)
def _tiny_unclip(name, *, device, dtype, seed=0, revision=None, **extra):
    from diffusers import (DDIMScheduler, DDPMScheduler, StableUnCLIPImg2ImgPipeline,
                           UNet2DConditionModel)
    from diffusers.pipelines.stable_diffusion.stable_unclip_image_normalizer import (
        StableUnCLIPImageNormalizer)
    from transformers import (CLIPImageProcessor, CLIPTextModel, CLIPVisionConfig,
                              CLIPVisionModelWithProjection)

    dim = tiny.HIDDEN  # tiny-clip's projection width

    def make_unet():
        # class_embed_type "projection": the noised image embedding ++ its noise-level
        # embedding (2 x dim) is projected and added to the time embedding, as in SD 2.1 unCLIP.
        return UNet2DConditionModel(**tiny.unet_kwargs(
            class_embed_type="projection", projection_class_embeddings_input_dim=2 * dim))

    def make_image_encoder():
        return CLIPVisionModelWithProjection(CLIPVisionConfig(
            hidden_size=tiny.HIDDEN, intermediate_size=64, num_hidden_layers=2,
            num_attention_heads=4, image_size=tiny.IMAGE_SIZE, patch_size=8, projection_dim=dim))

    place = tiny.place_model
    pipe = StableUnCLIPImg2ImgPipeline(
        feature_extractor=CLIPImageProcessor(
            size={"shortest_edge": tiny.IMAGE_SIZE},
            crop_size={"height": tiny.IMAGE_SIZE, "width": tiny.IMAGE_SIZE}),
        image_encoder=place(tiny.make_seeded(seed + 3, make_image_encoder), device, dtype),
        image_normalizer=place(StableUnCLIPImageNormalizer(embedding_dim=dim), device, dtype),
        image_noising_scheduler=DDPMScheduler(beta_schedule="squaredcos_cap_v2"),
        tokenizer=tiny.bert_tokenizer(),
        text_encoder=place(tiny.make_seeded(seed + 2, lambda: CLIPTextModel(tiny.clip_text_config())),
                           device, dtype),
        unet=place(tiny.make_seeded(seed + 1, make_unet), device, dtype),
        scheduler=DDIMScheduler(beta_start=0.00085, beta_end=0.012,
                                beta_schedule="scaled_linear", clip_sample=False,
                                set_alpha_to_one=False, steps_offset=1),
        vae=tiny.build_tiny_vae(device=device, dtype=dtype, seed=seed))
    pipe.set_progress_bar_config(disable=True)
    return pipe


def build_unclip(name: str, *, device="cpu", dtype=torch.float32, seed: int = 0,
                 revision: str | None = None) -> Any:
    """A ``diffusers.StableUnCLIPImg2ImgPipeline`` by registry name, hub id or folder."""
    return build("unclip", name, device=device, dtype=dtype, seed=seed, revision=revision)
