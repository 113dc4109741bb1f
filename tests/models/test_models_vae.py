"""The registry's VAE loader: SD's AutoencoderKL or TAESD's AutoencoderTiny, recognised from a
folder's config.json or from the hub id; TAESD as the img2img pipeline's VAE."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

diffusers = pytest.importorskip("diffusers")

from gitd.config import make_config
from gitd.models.roles import describe_roles
from gitd.registry import get_method
from gitd.errors import ConfigError, ModelUnavailableError
from gitd.models import build_img2img, build_vae
from gitd.models.registry import _vae_source


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def test_local_folders_say_their_class(tmp_path, small_tiny_vae):
    # Saved like madebyollin/taesd: config.json and weights at the top.
    small_tiny_vae().save_pretrained(tmp_path / "taesd")
    assert _vae_source(str(tmp_path / "taesd"), standalone=False) == ("AutoencoderTiny", None)
    vae = build_vae(str(tmp_path / "taesd"))
    assert isinstance(vae, diffusers.AutoencoderTiny) and not vae.training
    # A pipeline folder: its vae/ subfolder, whatever class it holds.
    pipe = build_img2img("tiny")
    pipe.save_pretrained(tmp_path / "sd")
    assert _vae_source(str(tmp_path / "sd"), standalone=True) == ("AutoencoderKL", "vae")
    assert isinstance(build_vae(str(tmp_path / "sd")), diffusers.AutoencoderKL)


def test_hub_ids_taesd_is_tiny_its_siblings_are_refused():
    assert _vae_source("madebyollin/taesd", standalone=False) == ("AutoencoderTiny", None)
    assert _vae_source("some/sd-model", standalone=False) == ("AutoencoderKL", "vae")
    assert _vae_source("stabilityai/sd-vae-ft-mse", standalone=True) == ("AutoencoderKL", None)
    for other in ("madebyollin/taesdxl", "madebyollin/taesd3", "madebyollin/taef1"):
        with pytest.raises(ConfigError, match="not SD 1.x's"):
            _vae_source(other, standalone=True)


def test_taesd_hub_id_offline_is_one_line():
    with pytest.raises(ModelUnavailableError) as err:
        build_vae("madebyollin/taesd", standalone=True)
    assert "\n" not in str(err.value) and "hf download madebyollin/taesd" in str(err.value)


def test_folders_that_are_not_an_sd1_vae_are_refused(tmp_path, small_tiny_vae):
    (tmp_path / "unet").mkdir()
    (tmp_path / "unet" / "config.json").write_text(json.dumps(
        {"_class_name": "UNet2DConditionModel"}))
    with pytest.raises(ConfigError, match="_class_name is 'UNet2DConditionModel'"):
        build_vae(str(tmp_path / "unet"))
    small_tiny_vae(latent_channels=16).save_pretrained(tmp_path / "taef1")
    with pytest.raises(ConfigError, match="16 latent channels is not TAESD for SD 1.x"):
        build_vae(str(tmp_path / "taef1"))


def test_taesd_as_the_img2img_pipelines_vae(tmp_path, small_tiny_vae):
    """diffusers takes AutoencoderTiny as the SD pipeline's VAE (its documented use): gitd's
    scaled latents go in, the pipeline decodes with TAESD."""
    from gitd.stages.img2img import generate_candidates

    small_tiny_vae().save_pretrained(tmp_path / "taesd")
    vae = build_vae(str(tmp_path / "taesd"))
    pipe = build_img2img("tiny", vae=vae)
    assert pipe.vae is vae and pipe.vae_scale_factor == 8
    out = generate_candidates(pipe, torch.zeros(1, 4, 8, 8), ["a red circle"],
                              negative_prompt=None, strength=0.5, guidance_scale=1.0,
                              num_inference_steps=2, num_candidates=1, seeds=[0])
    assert out[0][0].size == (64, 64)
    assert np.asarray(out[0][0]).std() > 0


def describe_models(settings):
    from gitd.models.roles import Models, Runtime

    cls = get_method("gitd")
    rt = Runtime.resolve("cpu", "float32")
    used = cls.plan(settings, rt).roles_used(Models(cls.roles, settings, rt.device,
                                                    rt.dtype).requires)
    return describe_roles(cls.roles, settings, used=used)


def test_describe_models_names_the_generation_and_clustering_vaes():
    cfg = make_config("tiny", vae="/some/taesd", cluster_vae="tiny-sd")
    d = describe_models(cfg)
    assert d["vae"]["name"] == "/some/taesd" and d["vae"]["used"] is True
    assert d["cluster_vae"]["name"] == "tiny-sd" and d["cluster_vae"]["untrained"] is True
    feats = describe_models(cfg.replace(cluster_space="features", diffusion=False))
    assert feats["cluster_vae"]["used"] is False and feats["vae"]["used"] is False
    same = describe_models(make_config("tiny", vae="/some/taesd", diffusion=False))
    assert same["vae"]["used"] and same["cluster_vae"]["name"] == "/some/taesd"
