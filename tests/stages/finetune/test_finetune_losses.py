"""EDGE's loss terms against values computed by hand, and the pieces of the forward pass."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from PIL import Image

from gitd.stages.finetune.losses import contrastive_loss, diversity_loss, loss_terms
from gitd.stages.finetune.objective import clip_pixels, draw_noise, is_trainable

IMAGE = [[0.3, -1.2, 0.5, 2.0], [1.1, 0.4, -0.7, 0.2], [-0.6, 0.9, 1.5, -0.3]]
TEXT = [[0.8, -0.5, 0.1, 1.4], [0.2, 1.3, -1.0, 0.6], [-1.1, 0.7, 0.9, 0.4]]


def _unit(v):
    n = math.sqrt(sum(x * x for x in v))
    return [x / n for x in v]


def _dot(a, b):
    return sum(x * y for x, y in zip(a, b))


def hand_contrastive(image, text, tau):
    img, txt = [_unit(v) for v in image], [_unit(v) for v in text]
    n = len(img)
    logits = [[_dot(img[i], txt[j]) / tau for j in range(n)] for i in range(n)]
    image_to_text = sum(-logits[i][i] + math.log(sum(math.exp(logits[i][j]) for j in range(n)))
                        for i in range(n)) / n
    text_to_image = sum(-logits[j][j] + math.log(sum(math.exp(logits[i][j]) for i in range(n)))
                        for j in range(n)) / n
    return (image_to_text + text_to_image) / 2


def hand_diversity(image, text):
    joint = [_unit(list(a) + list(b)) for a, b in zip(image, text)]
    n = len(joint)
    total = sum(_dot(joint[i], joint[j]) for i in range(n) for j in range(n) if i != j)
    return total / (n * (n - 1))


def t(x):
    return torch.tensor(x, dtype=torch.float64)


@pytest.mark.parametrize("tau", [0.1, 0.5])
def test_contrastive_matches_hand_computation(tau):
    got = float(contrastive_loss(t(IMAGE), t(TEXT), tau))
    assert got == pytest.approx(hand_contrastive(IMAGE, TEXT, tau), rel=1e-6)
    # Scale-free: the features are normalised first.
    assert float(contrastive_loss(3 * t(IMAGE), 0.5 * t(TEXT), tau)) == pytest.approx(got,
                                                                                      rel=1e-6)


def test_diversity_matches_hand_computation():
    got = float(diversity_loss(t(IMAGE), t(TEXT)))
    assert got == pytest.approx(hand_diversity(IMAGE, TEXT), rel=1e-6)
    # Identical pairs are as alike as can be: the term is 1.
    same = [IMAGE[0]] * 3, [TEXT[0]] * 3
    assert float(diversity_loss(t(same[0]), t(same[1]))) == pytest.approx(1.0, abs=1e-6)


def test_loss_terms_weights_and_denoise():
    mse = t([0.5, 1.0, 1.5])
    terms = loss_terms(t(IMAGE), t(TEXT), mse, contrastive_weight=2.0, diversity_weight=0.5,
                       denoise_weight=3.0, temperature=0.1)
    want = (2.0 * hand_contrastive(IMAGE, TEXT, 0.1) + 0.5 * hand_diversity(IMAGE, TEXT)
            + 3.0 * 1.0)
    assert float(terms["loss"]) == pytest.approx(want, rel=1e-6)
    assert float(terms["denoise"]) == pytest.approx(1.0)


def test_bad_shapes_are_refused():
    with pytest.raises(ValueError):
        contrastive_loss(t(IMAGE), t(TEXT)[:2])
    with pytest.raises(ValueError):
        diversity_loss(t(IMAGE)[:1], t(TEXT)[:1])


def test_difffit_rule():
    assert is_trainable("down_blocks.0.resnets.0.norm1.weight")
    assert is_trainable("conv_in.bias")
    assert is_trainable("down_blocks.0.attentions.0.transformer_blocks.0.norm3.bias")
    assert not is_trainable("conv_in.weight")
    assert not is_trainable("down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q.weight")


def test_noise_depends_only_on_the_pair_seed():
    a = draw_noise([11, 12, 13], (4, 2, 2), 1000)
    b = draw_noise([12], (4, 2, 2), 1000)
    assert torch.equal(a.noise[1], b.noise[0]) and torch.equal(a.posterior[1], b.posterior[0])
    assert int(a.timesteps[1]) == int(b.timesteps[0])
    assert 0 <= int(a.timesteps.min()) and int(a.timesteps.max()) < 1000


class _Processor:
    image_mean = [0.48145466, 0.4578275, 0.40821073]
    image_std = [0.26862954, 0.26130258, 0.27577711]

    def __init__(self, size):
        self.size = {"shortest_edge": size}
        self.crop_size = {"height": size, "width": size}


@pytest.mark.parametrize("side,clip_size,tol", [(32, 32, 1e-5), (64, 32, 0.08)])
def test_clip_pixels_match_clips_own_processor(side, clip_size, tol):
    """Decoded [-1, 1] images get CLIP's preprocessing: the same numbers as transformers'
    CLIPImageProcessor on the saved image (resizing: bicubic in torch vs PIL, hence the
    tolerance when the size changes)."""
    from transformers import CLIPImageProcessor

    rng = np.random.default_rng(0)
    arr = rng.integers(0, 256, (side, side, 3), dtype=np.uint8)
    decoded = torch.from_numpy(arr).permute(2, 0, 1)[None].float() / 127.5 - 1.0
    proc = _Processor(clip_size)
    ours = clip_pixels(decoded, proc)[0]
    ref = CLIPImageProcessor(size={"shortest_edge": clip_size},
                             crop_size={"height": clip_size, "width": clip_size})(
        images=[Image.fromarray(arr)], return_tensors="pt")["pixel_values"][0]
    assert ours.shape == ref.shape
    assert float((ours - ref).abs().mean()) < tol


def test_clip_pixels_out_of_range_is_clamped():
    proc = _Processor(8)
    x = torch.full((1, 3, 8, 8), 3.0)
    got = clip_pixels(x, proc)
    want = (1.0 - torch.tensor(proc.image_mean)) / torch.tensor(proc.image_std)
    assert torch.allclose(got[0, :, 0, 0], want)
