"""generate_candidates and select_best on the tiny img2img pipeline (CPU, offline)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from gitd.models import build_img2img, build_score_model, build_vae
from gitd.stages.img2img import candidate_seed, generate_candidates, select_best

KW = dict(negative_prompt="cartoon, anime, painting", strength=0.7, guidance_scale=8.0,
          num_inference_steps=5, num_candidates=3)
PROMPTS = ["a cat on a red mat", "two dogs", "a ball"]


@pytest.fixture(scope="module")
def models():
    n = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny models: thread start-up dominates on a loaded 2-core box
    vae = build_vae("tiny", seed=0)
    yield build_img2img("tiny", vae=vae, seed=0), build_score_model("tiny", seed=0)
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def latents():
    return torch.randn(3, 4, 8, 8, generator=torch.Generator().manual_seed(0))


@pytest.fixture(scope="module")
def batch(models, latents):
    return generate_candidates(models[0], latents, PROMPTS, seeds=[5, 6, 7], **KW)


def arr(img):
    return np.asarray(img, dtype=np.int16)


def test_shapes_and_candidates_differ(batch):
    assert [len(c) for c in batch] == [3, 3, 3]
    assert all(im.size == (64, 64) and im.mode == "RGB" for c in batch for im in c)
    # Different generators: the candidates of one medoid are not copies of each other.
    assert np.abs(arr(batch[0][0]) - arr(batch[0][1])).max() > 10


def test_same_seed_same_images_other_seed_differs(models, latents, batch):
    again = generate_candidates(models[0], latents, PROMPTS, seeds=[5, 6, 7], **KW)
    assert all(np.array_equal(arr(a), arr(b)) for x, y in zip(batch, again) for a, b in zip(x, y))
    other = generate_candidates(models[0], latents[:1], PROMPTS[:1], seeds=[99], **KW)
    assert np.abs(arr(other[0][0]) - arr(batch[0][0])).max() > 10


def test_medoid_alone_matches_medoid_in_batch(models, latents, batch):
    """Each medoid's candidates depend only on its own latent, prompt and seed. CPU matmuls
    may round differently with another batch size, so pixels may differ by a level or two
    (exactness is kept by the orchestrator, which never changes batch composition)."""
    alone = generate_candidates(models[0], latents[1:2], PROMPTS[1:2], seeds=[6], **KW)[0]
    for a, b in zip(alone, batch[1]):
        diff = np.abs(arr(a) - arr(b))
        assert diff.max() <= 3 and diff.mean() < 0.05


def test_uses_the_given_latent_not_an_encoded_image(models, latents):
    """At low strength the output stays near the decoded init latent: the latent is used as is
    (no VAE encode, no second scaling)."""
    pipe = models[0]
    out = generate_candidates(pipe, latents[:1], ["x"], negative_prompt=None, strength=0.05,
                              guidance_scale=1.0, num_inference_steps=20, num_candidates=1,
                              seeds=[1])[0][0]
    with torch.no_grad():
        ref = pipe.vae.decode(latents[:1] / pipe.vae.config.scaling_factor).sample
    ref = ((ref[0].clamp(-1, 1) + 1) * 127.5).round().permute(1, 2, 0).numpy()
    wrong = pipe.vae.decode(latents[:1]).sample  # as if scaled twice
    wrong = ((wrong[0].detach().clamp(-1, 1) + 1) * 127.5).round().permute(1, 2, 0).numpy()
    err = np.abs(arr(out) - ref).mean()
    assert err < np.abs(arr(out) - wrong).mean() and err < 20


def test_candidate_seeds_do_not_collide():
    seeds = {candidate_seed(s, c) for s in range(50) for c in range(8)}
    assert len(seeds) == 400


def test_bad_inputs(models, latents):
    with pytest.raises(ValueError, match="one prompt and one seed"):
        generate_candidates(models[0], latents, PROMPTS[:2], seeds=[1, 2, 3], **KW)
    with pytest.raises(ValueError, match=r"\[B, 4, h, w\]"):
        generate_candidates(models[0], latents[:, :3], PROMPTS, seeds=[1, 2, 3], **KW)


class FakeScorer:
    def __init__(self, scores):
        self.scores = scores

    def similarity(self, images, texts):
        assert len(texts) == 1
        return torch.tensor(self.scores[:len(images)])[:, None]


def test_select_best_argmax_and_first():
    cands = ["a", "b", "c", "d"]
    idx, scores = select_best(FakeScorer([0.1, 0.5, 0.3, 0.5]), cands, "p")
    assert idx == 1 and scores == pytest.approx([0.1, 0.5, 0.3, 0.5])  # ties: the first
    assert select_best(FakeScorer([0.1, 0.2, 0.9, 0.5]), cands, "p")[0] == 2
    idx, scores = select_best(FakeScorer([0.1, 0.5, 0.3, 0.2]), cands, "p", use_score=False)
    assert idx == 0 and scores == pytest.approx([0.1, 0.5, 0.3, 0.2])
    assert select_best(None, cands, "p", use_score=False) == (0, [])


def test_select_best_with_tiny_clip(models, batch):
    sm = models[1]
    idx, scores = select_best(sm, batch[0], PROMPTS[0])
    expected = sm.similarity(batch[0], [PROMPTS[0]])[:, 0]
    assert idx == int(expected.argmax()) and scores == pytest.approx(expected.tolist(), abs=1e-5)
