"""The random-weight full-size models: real architectures at the published sizes."""

import pytest
import torch
from diffusers import AutoencoderKL, UNet2DConditionModel
from PIL import Image
from transformers import BlipForConditionalGeneration, CLIPModel, CLIPTextModel

from gitd.config import make_config
from gitd.errors import ConfigError
from gitd.models import build_captioner, build_score_model, build_vae, is_untrained, list_models
from gitd.models import fullsize


def millions(model) -> float:
    return sum(p.numel() for p in model.parameters()) / 1e6


def test_architectures_have_the_published_sizes():
    # Counted on the meta device: no memory, no init. Published: SD 1.5 UNet 859.52M, VAE
    # 83.65M, text encoder (CLIP ViT-L/14 text) 123.06M; CLIP ViT-B/32 151.28M; BLIP base 224M.
    with torch.device("meta"):
        assert millions(UNet2DConditionModel(**fullsize.sd15_unet_kwargs())) == \
            pytest.approx(859.52, abs=0.01)
        assert millions(AutoencoderKL(**fullsize.sd15_vae_kwargs())) == \
            pytest.approx(83.65, abs=0.01)
        # CLIP's own 49,408-token vocabulary: the published counts exactly
        assert millions(CLIPTextModel(fullsize.clip_l14_text_config())) == \
            pytest.approx(123.06, abs=0.01)
        assert millions(CLIPModel(fullsize.clip_b32_config())) == pytest.approx(151.28, abs=0.01)
        assert millions(BlipForConditionalGeneration(fullsize.blip_base_config(30522))) == \
            pytest.approx(224.0, abs=0.5)


def test_registered_untrained_and_in_presets():
    names = list_models()
    assert "random-sd15" in names["vae"] and "random-sd15" in names["img2img"]
    assert "random-clip-b32" in names["score"] and "random-blip-base" in names["captioner"]
    assert is_untrained("img2img", "random-sd15") and is_untrained("captioner", "random-blip-base")
    for name, real in (("random-fast", "fast"), ("random-paper", "paper")):
        cfg = make_config(name).validate()
        ref = make_config(real)
        assert (cfg.resolution, cfg.num_inference_steps, cfg.num_candidates, cfg.num_captions,
                cfg.strength, cfg.guidance_scale) == (ref.resolution, ref.num_inference_steps,
                                                      ref.num_candidates, ref.num_captions,
                                                      ref.strength, ref.guidance_scale)
        assert cfg.diffusion_model == "random-sd15" and cfg.captioner == "random-blip-base"
    # PDS has random-paper (gitd.models.fullsize_unclip), not random-fast.
    with pytest.raises(ConfigError, match="unknown preset 'random-fast' for method pds"):
        make_config("random-fast", method="pds")


def test_random_paper_text_encoders_use_clips_tokenizer():
    from transformers import CLIPTokenizer

    score = build_score_model("random-clip-b32", seed=0)
    assert isinstance(score.tokenizer, CLIPTokenizer) and len(score.tokenizer) == 49408
    assert score.model.config.text_config.vocab_size == 49408
    assert fullsize.clip_l14_text_config().vocab_size == 49408  # SD 1.5's text encoder


def test_small_full_size_components_build_and_run():
    # The VAE, CLIP B/32 and BLIP base are cheap enough to build here (the UNet, 3.4 GB in
    # float32, is left to benchmarks/bench_medoid.py).
    vae = build_vae("random-sd15", seed=0)
    assert isinstance(vae, AutoencoderKL) and vae.config.block_out_channels == (128, 256, 512, 512)
    with torch.no_grad():
        lat = vae.encode(torch.zeros(1, 3, 64, 64)).latent_dist.mean
    assert lat.shape == (1, 4, 8, 8)
    img = Image.new("RGB", (96, 80), (200, 30, 30))
    score = build_score_model("random-clip-b32", seed=0)
    sims = score.similarity([img], ["a red square", "a blue circle"])
    assert tuple(sims.shape) == (1, 2) and torch.isfinite(torch.as_tensor(sims)).all()
    cap = build_captioner("random-blip-base", seed=0)
    out = cap.generate([img], num_captions=2, temperature=0.7, top_p=0.9, max_new_tokens=3,
                       seeds=[0])
    assert len(out) == 1 and len(out[0]) == 2 and all(isinstance(c, str) and c for c in out[0])


def test_pds_random_paper_has_the_unclip_and_clip_l14_of_the_real_sizes():
    # Published: SD 2.1 UNet 865.9M (+3.6M of unCLIP's class-embedding projection), OpenCLIP
    # ViT-H/14 text to its penultimate layer 340.4M, CLIP ViT-L/14 vision with projection
    # 304.0M, CLIP ViT-L/14 427.6M: exactly, now that the vocabulary is CLIP's.
    from diffusers import UNet2DConditionModel
    from transformers import CLIPVisionModelWithProjection

    from gitd.models import fullsize_unclip as fu

    with torch.device("meta"):
        assert millions(UNet2DConditionModel(**fu.sd21_unclip_unet_kwargs())) == \
            pytest.approx(869.52, abs=0.01)
        assert millions(CLIPTextModel(fu.openclip_h14_text_config())) == \
            pytest.approx(340.39, abs=0.01)
        assert millions(CLIPVisionModelWithProjection(fu.clip_l14_vision_config())) == \
            pytest.approx(303.97, abs=0.01)
        assert millions(CLIPModel(fu.clip_l14_config())) == pytest.approx(427.62, abs=0.01)
    assert fu.openclip_h14_text_config().vocab_size == 49408
    assert fu.clip_l14_config().text_config.vocab_size == 49408
    names = list_models()
    assert "random-sd21-unclip" in names["unclip"] and "random-clip-l14" in names["score"]
    assert is_untrained("unclip", "random-sd21-unclip")
    cfg = make_config("random-paper", method="pds").validate()
    ref = make_config("paper", method="pds")
    assert (cfg.unclip_model, cfg.score_model) == ("random-sd21-unclip", "random-clip-l14")
    assert (cfg.resolution, cfg.num_inference_steps, cfg.guidance_scale, cfg.noise_level) == \
        (ref.resolution, ref.num_inference_steps, ref.guidance_scale, ref.noise_level)
