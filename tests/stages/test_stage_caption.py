"""caption_images on the tiny BLIP captioner and tiny CLIP score model (CPU, offline)."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from gitd.errors import ConfigError
from gitd.models import build_captioner, build_score_model
from gitd.stages.caption import CaptionResult, caption_images

KW = dict(num_captions=4, temperature=0.7, top_p=0.9, max_new_tokens=6)


@pytest.fixture(scope="module")
def models():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield build_captioner("tiny", seed=0), build_score_model("tiny", seed=0)
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def images():
    return [Image.new("RGB", (64, 64), c) for c in ("red", "green", "blue")]


def test_captions_and_best_by_score(models, images):
    cap, sm = models
    res = caption_images(cap, sm, images, seeds=[1, 2, 3], **KW)
    assert len(res) == 3 and all(isinstance(r, CaptionResult) for r in res)
    for img, r in zip(images, res):
        assert len(r.candidates) == 4 and all(c.strip() for c in r.candidates)
        sims = sm.similarity([img], r.candidates)[0]
        assert r.scores == pytest.approx(sims.tolist(), abs=1e-5)
        assert r.index == int(sims.argmax()) and r.best == r.candidates[r.index]


def test_deterministic_per_seed_and_batch_independent(models, images):
    cap, sm = models
    a = caption_images(cap, sm, images, seeds=[1, 2, 3], **KW)
    alone = caption_images(cap, sm, images[2:], seeds=[3], **KW)
    assert alone[0].candidates == a[2].candidates and alone[0].best == a[2].best
    other = caption_images(cap, sm, images[2:], seeds=[4], **KW)
    assert other[0].candidates != a[2].candidates


def test_use_score_false_keeps_first_but_records_scores(models, images):
    cap, sm = models
    res = caption_images(cap, sm, images[:1], seeds=[1], use_score=False, **KW)[0]
    assert res.index == 0 and res.best == res.candidates[0] and len(res.scores) == 4
    bare = caption_images(cap, None, images[:1], seeds=[1], use_score=False, **KW)[0]
    assert bare.best == res.best and bare.scores == []


def test_empty_sample_is_replaced_and_flagged(images):
    class Blank:
        def generate(self, imgs, **kw):
            return [["", " "] for _ in imgs]

    res = caption_images(Blank(), None, images[:1], num_captions=2, temperature=1.0, top_p=1.0,
                         max_new_tokens=4, seeds=[0], use_score=False)[0]
    assert res.best.strip() and res.fallback


def test_bad_settings(models, images):
    cap, sm = models
    with pytest.raises(ConfigError, match="top_p"):
        caption_images(cap, sm, images, seeds=[1, 2, 3], **{**KW, "top_p": 0})
    with pytest.raises(ConfigError, match="num_captions"):
        caption_images(cap, sm, images, seeds=[1, 2, 3], **{**KW, "num_captions": 0})
    with pytest.raises(ValueError, match="one seed per image"):
        caption_images(cap, sm, images, seeds=[1], **KW)
