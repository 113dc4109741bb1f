"""Random-weight models at the real architectures' sizes, built from configs: for timing.

Random weights cost the same FLOPs and memory as trained ones, so these measure what a run with
the real checkpoints costs on a machine that cannot download them (``benchmarks/
bench_medoid.py``, or ``gitd distill --preset random-fast``). Their outputs are noise, and
manifests say ``"untrained": true``.

* ``random-sd15`` (kinds ``vae`` and ``img2img``): Stable Diffusion 1.5's VAE (83.7M
  parameters) and UNet (859.5M), with a CLIP ViT-L/14-sized text encoder and SD 1.5's PNDM
  scheduler settings.
* ``random-clip-b32`` (kind ``score``): CLIP ViT-B/32 (image 224 px, patch 32).
* ``random-blip-base`` (kind ``captioner``): BLIP base (ViT-B/16 at 384 px, BERT-base decoder).

The text encoders use the BERT WordPiece vocabulary of the tiny models (30,522 tokens, see
``gitd.models.tiny``) instead of CLIP's 49,408 BPE tokens, because no CLIP tokenizer ships
offline; that changes only the embedding table (14.5M fewer parameters in SD's text encoder, a
lookup, no FLOPs). BLIP-2 OPT-6.7B is not built here: 7.8B parameters need 31 GB in float32.
"""

from __future__ import annotations

import torch

from gitd.models.registry import register
from gitd.models.tiny import (BERT_VOCAB, BLIP_VOCAB, CLS_ID, PAD_ID, SEP_ID, TEXT_MAX_LENGTH,
                              place_model, make_seeded, bert_tokenizer, random_img2img)


# -- configs (plain kwargs, so tests can count parameters on the meta device) -----------------
def sd15_vae_kwargs() -> dict:
    return dict(in_channels=3, out_channels=3, latent_channels=4,
                down_block_types=("DownEncoderBlock2D",) * 4,
                up_block_types=("UpDecoderBlock2D",) * 4,
                block_out_channels=(128, 256, 512, 512), layers_per_block=2, norm_num_groups=32,
                sample_size=512, scaling_factor=0.18215)


def sd15_unet_kwargs() -> dict:
    return dict(sample_size=64, in_channels=4, out_channels=4, layers_per_block=2,
                block_out_channels=(320, 640, 1280, 1280),
                down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
                up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
                cross_attention_dim=768, attention_head_dim=8, norm_num_groups=32)


def clip_l14_text_config():
    from transformers import CLIPTextConfig

    return CLIPTextConfig(vocab_size=BERT_VOCAB, hidden_size=768, intermediate_size=3072,
                          num_hidden_layers=12, num_attention_heads=12,
                          max_position_embeddings=TEXT_MAX_LENGTH, projection_dim=768,
                          hidden_act="quick_gelu", bos_token_id=CLS_ID, eos_token_id=SEP_ID,
                          pad_token_id=PAD_ID)


def clip_b32_config():
    from transformers import CLIPConfig, CLIPTextConfig, CLIPVisionConfig

    text = CLIPTextConfig(vocab_size=BERT_VOCAB, hidden_size=512, intermediate_size=2048,
                          num_hidden_layers=12, num_attention_heads=8,
                          max_position_embeddings=TEXT_MAX_LENGTH, projection_dim=512,
                          bos_token_id=CLS_ID, eos_token_id=SEP_ID, pad_token_id=PAD_ID)
    vision = CLIPVisionConfig(hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                              num_attention_heads=12, image_size=224, patch_size=32,
                              projection_dim=512)
    return CLIPConfig(text_config=text.to_dict(), vision_config=vision.to_dict(),
                      projection_dim=512)


def blip_base_config(bos_token_id: int):
    from transformers import BlipConfig, BlipTextConfig, BlipVisionConfig

    text = BlipTextConfig(vocab_size=BLIP_VOCAB, hidden_size=768, encoder_hidden_size=768,
                          intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
                          max_position_embeddings=512, bos_token_id=bos_token_id,
                          pad_token_id=PAD_ID, sep_token_id=SEP_ID, eos_token_id=SEP_ID)
    vision = BlipVisionConfig(hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                              num_attention_heads=12, image_size=384, patch_size=16)
    return BlipConfig(text_config=text.to_dict(), vision_config=vision.to_dict(),
                      projection_dim=512)


# -- builders -------------------------------------------------------------------------------
@register("vae", "random-sd15", untrained=True)
def build_vae(name="random-sd15", *, device="cpu", dtype=torch.float32, seed=0, revision=None,
              **extra):
    from diffusers import AutoencoderKL

    return place_model(make_seeded(seed, lambda: AutoencoderKL(**sd15_vae_kwargs())), device, dtype)


@register("img2img", "random-sd15", untrained=True)
def build_img2img(name="random-sd15", *, device="cpu", dtype=torch.float32, seed=0,
                  revision=None, vae=None, **extra):
    if vae is None:
        vae = build_vae(device=device, dtype=dtype, seed=seed)
    return random_img2img(vae, sd15_unet_kwargs(), clip_l14_text_config(), device=device,
                          dtype=dtype, seed=seed)


@register("score", "random-clip-b32", untrained=True)
def build_score_model(name="random-clip-b32", *, device="cpu", dtype=torch.float32, seed=0,
                      revision=None, **extra):
    from transformers import CLIPImageProcessor, CLIPModel

    from gitd.models.scoring import ScoreModel

    model = place_model(make_seeded(seed, lambda: CLIPModel(clip_b32_config())), device, dtype)
    processor = CLIPImageProcessor(size={"shortest_edge": 224},
                                   crop_size={"height": 224, "width": 224})
    return ScoreModel(model, bert_tokenizer(), processor, name=name)


@register("captioner", "random-blip-base", untrained=True)
def build_captioner(name="random-blip-base", *, device="cpu", dtype=torch.float32, seed=0,
                    revision=None, prompt=None, **extra):
    from transformers import BlipForConditionalGeneration, BlipImageProcessor, BlipProcessor

    from gitd.models.captioner import Captioner

    tokenizer = bert_tokenizer(max_length=512, blip=True)
    model = place_model(make_seeded(seed, lambda: BlipForConditionalGeneration(
        blip_base_config(tokenizer.bos_token_id))), device, dtype)
    processor = BlipProcessor(
        image_processor=BlipImageProcessor(size={"height": 384, "width": 384}),
        tokenizer=tokenizer)
    return Captioner(model, processor, name=name, prompt=prompt)
