"""Text-to-image sampling (EDGE) on the tiny SD pipeline, and EDGE's random prompt choice."""

from __future__ import annotations

import numpy as np
import pytest

from gitd.errors import ConfigError
from gitd.models import build, build_img2img
from gitd.models.registry import text2img_pipeline
from gitd.stages.text2image import random_prompts, sample_images

KW = dict(guidance_scale=7.5, num_inference_steps=3, resolution=64)


@pytest.fixture(scope="module")
def pipe():
    return build("text2img", "tiny", seed=0)


def arr(im):
    return np.asarray(im, dtype=np.int16)


def test_text2img_shares_the_components(pipe):
    from diffusers import StableDiffusionPipeline

    base = build_img2img("tiny", seed=0)
    t2i = text2img_pipeline(base)
    assert isinstance(t2i, StableDiffusionPipeline) and t2i.unet is base.unet
    assert text2img_pipeline(t2i) is t2i
    # The registry's text2img kind is that pipeline over the img2img model's own weights.
    assert isinstance(pipe, StableDiffusionPipeline)
    for a, b in zip(pipe.unet.state_dict().values(), base.unet.state_dict().values()):
        assert a.equal(b)


def test_one_image_per_prompt_each_from_its_seed(pipe):
    prompts = ["a red circle", "a blue square", "two green triangles"]
    images = sample_images(pipe, prompts, seeds=[1, 2, 3], **KW)
    assert len(images) == 3 and all(im.size == (64, 64) for im in images)
    again = sample_images(pipe, prompts, seeds=[1, 2, 3], **KW)
    assert all(np.array_equal(arr(a), arr(b)) for a, b in zip(images, again))
    # An image depends on its own prompt and seed, not on its batch (up to rounding).
    alone = sample_images(pipe, prompts[1:2], seeds=[2], **KW)[0]
    assert np.abs(arr(alone) - arr(images[1])).max() <= 2
    other = sample_images(pipe, prompts[1:2], seeds=[9], **KW)[0]
    assert np.abs(arr(other) - arr(images[1])).max() > 10


def test_random_prompts_are_seeded_and_distinct():
    caps = [["a", "b"], ["c"], ["d", "e", "f"]]
    picks = random_prompts(caps, 4, seed=0)
    assert picks == random_prompts(caps, 4, seed=0) and len(set(picks)) == 4
    assert all(0 <= c < len(caps[r]) for r, c in picks)
    assert picks != random_prompts(caps, 4, seed=1)
    with pytest.raises(ConfigError, match="only 6 captions"):
        random_prompts(caps, 7, seed=0)
