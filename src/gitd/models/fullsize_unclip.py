"""PDS's models at their real sizes with random weights (``random-paper`` for ``--method pds``).

Like ``gitd.models.fullsize``, for timing and memory on a machine without the checkpoints; the
output is noise and manifests say ``"untrained": true``.

* ``random-sd21-unclip`` (kind ``unclip``): Stable unCLIP 2.1-small as Stability AI's
  ``configs/stable-diffusion/v2-1-stable-unclip-l-inference.yaml`` describes it: SD 2.1's UNet
  (320 channels, x[1, 2, 4, 4], 64-channel heads, linear transformer projections, 1024-d text
  context) whose class embedding projects the noised CLIP ViT-L/14 image embedding and its
  noise-level embedding (``adm_in_channels`` 1536); OpenCLIP ViT-H/14's text tower up to its
  penultimate layer (23 layers, 1024 wide) as the text encoder; CLIP ViT-L/14's vision tower
  with its 768-d projection as the image encoder; SD's VAE; v-prediction DDIM; the image
  embedding noised on a squaredcos_cap_v2 schedule.
* ``random-clip-l14`` (kind ``score``): CLIP ViT-L/14 (224 px), the score model that embeds the
  data for PDS and whose image embeddings condition the decoder.

The text encoders tokenise with CLIP's own tokenizer (49,408 BPE tokens, 77 positions,
``gitd.models.clip_tokenizer``), as OpenCLIP's and OpenAI's text towers do, and have the real
embedding tables, so every parameter count is the published one.
"""

from __future__ import annotations

import torch

from gitd.models.clip_tokenizer import clip_tokenizer
from gitd.models.fullsize import sd15_vae_kwargs
from gitd.models.registry import register
from gitd.models.tiny import (CLIP_TEXT_IDS, CLIP_VOCAB, TEXT_MAX_LENGTH, make_seeded,
                              place_model)

CLIP_L14_EMBED = 768


def sd21_unclip_unet_kwargs() -> dict:
    return dict(sample_size=96, in_channels=4, out_channels=4, layers_per_block=2,
                block_out_channels=(320, 640, 1280, 1280),
                down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
                up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
                cross_attention_dim=1024, attention_head_dim=(5, 10, 20, 20),
                use_linear_projection=True, norm_num_groups=32,
                class_embed_type="projection",
                projection_class_embeddings_input_dim=2 * CLIP_L14_EMBED)


def openclip_h14_text_config():
    """OpenCLIP ViT-H/14's text tower to its penultimate layer, as SD 2.x's text encoder."""
    from transformers import CLIPTextConfig

    return CLIPTextConfig(vocab_size=CLIP_VOCAB, hidden_size=1024, intermediate_size=4096,
                          num_hidden_layers=23, num_attention_heads=16, hidden_act="gelu",
                          max_position_embeddings=TEXT_MAX_LENGTH, projection_dim=1024,
                          **CLIP_TEXT_IDS)


def clip_l14_vision_config():
    from transformers import CLIPVisionConfig

    return CLIPVisionConfig(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24,
                            num_attention_heads=16, image_size=224, patch_size=14,
                            projection_dim=CLIP_L14_EMBED, hidden_act="quick_gelu")


def clip_l14_config():
    from transformers import CLIPConfig, CLIPTextConfig

    text = CLIPTextConfig(vocab_size=CLIP_VOCAB, hidden_size=768, intermediate_size=3072,
                          num_hidden_layers=12, num_attention_heads=12,
                          max_position_embeddings=TEXT_MAX_LENGTH, projection_dim=CLIP_L14_EMBED,
                          hidden_act="quick_gelu", **CLIP_TEXT_IDS)
    return CLIPConfig(text_config=text.to_dict(), vision_config=clip_l14_vision_config().to_dict(),
                      projection_dim=CLIP_L14_EMBED)


def _image_processor():
    from transformers import CLIPImageProcessor

    return CLIPImageProcessor(size={"shortest_edge": 224}, crop_size={"height": 224, "width": 224})


@register("unclip", "random-sd21-unclip", untrained=True)
def build_unclip(name="random-sd21-unclip", *, device="cpu", dtype=torch.float32, seed=0,
                 revision=None, **extra):
    from diffusers import (
        AutoencoderKL,
        DDIMScheduler,
        DDPMScheduler,
        StableUnCLIPImg2ImgPipeline,
        UNet2DConditionModel,
    )
    from diffusers.pipelines.stable_diffusion.stable_unclip_image_normalizer import (
        StableUnCLIPImageNormalizer,
    )
    from transformers import CLIPTextModel, CLIPVisionModelWithProjection

    def seeded(offset: int, make):
        return place_model(make_seeded(seed + offset, make), device, dtype)

    pipe = StableUnCLIPImg2ImgPipeline(
        feature_extractor=_image_processor(),
        image_encoder=seeded(3, lambda: CLIPVisionModelWithProjection(clip_l14_vision_config())),
        image_normalizer=place_model(StableUnCLIPImageNormalizer(embedding_dim=CLIP_L14_EMBED),
                                     device, dtype),
        image_noising_scheduler=DDPMScheduler(num_train_timesteps=1000,
                                              beta_schedule="squaredcos_cap_v2"),
        tokenizer=clip_tokenizer(),
        text_encoder=seeded(2, lambda: CLIPTextModel(openclip_h14_text_config())),
        unet=seeded(1, lambda: UNet2DConditionModel(**sd21_unclip_unet_kwargs())),
        scheduler=DDIMScheduler(beta_start=0.00085, beta_end=0.012,
                                beta_schedule="scaled_linear", prediction_type="v_prediction",
                                clip_sample=False, set_alpha_to_one=False, steps_offset=1),
        vae=seeded(0, lambda: AutoencoderKL(**{**sd15_vae_kwargs(), "sample_size": 768})))
    pipe.set_progress_bar_config(disable=True)
    return pipe


@register("score", "random-clip-l14", untrained=True)
def build_score_model(name="random-clip-l14", *, device="cpu", dtype=torch.float32, seed=0,
                      revision=None, **extra):
    from transformers import CLIPModel

    from gitd.models.scoring import ScoreModel

    model = place_model(make_seeded(seed, lambda: CLIPModel(clip_l14_config())), device, dtype)
    return ScoreModel(model, clip_tokenizer(), _image_processor(), name=name)

