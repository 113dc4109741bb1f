"""PDS building blocks: embed, filter, prototypes (planted structure), nearest selection,
unCLIP synthesis with tiny components, and the CLIP/unCLIP mismatch error."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from gitd.data.shapes import make_shapes
from gitd.data import load_dataset
from gitd.errors import ConfigError
from gitd.models import build_score_model
from gitd.models.unclip import build_unclip, check_embedding_match, image_embed_dim
from gitd.stages.embed import EmbedStore, embed_pairs, filter_lowest
from gitd.stages.prototypes import build_prototypes, select_nearest
from gitd.stages.unclip import synthesize


def planted(k=4, per=30, d=16, seed=0):
    """k groups; image group g <-> text group perm[g]; text cluster ids differ from image ones."""
    rng = np.random.default_rng(seed)
    ci, ct = rng.normal(size=(k, d)) * 5, rng.normal(size=(k, d)) * 5
    group = np.repeat(np.arange(k), per)
    img = ci[group] + rng.normal(size=(k * per, d)) * 0.3
    txt = ct[group] + rng.normal(size=(k * per, d)) * 0.3
    return img, txt, group


def test_prototypes_recover_the_planted_correspondence():
    img, txt, group = planted()
    p = build_prototypes(img, txt, 4, seed=0)
    assert sorted(len(m) for m in p.members) == [30] * 4
    for members in p.members:
        assert len(set(group[members])) == 1          # image and text clusters matched right
    assert p.match_count.tolist() == [30] * 4
    unit = img / np.linalg.norm(img, axis=1, keepdims=True)
    for j, members in enumerate(p.members):
        np.testing.assert_allclose(p.image[j], unit[members].mean(0), rtol=1e-5, atol=1e-6)
        assert group[p.caption[j]] == group[members[0]]  # nearest caption from the same group
        assert p.norm[j] == pytest.approx(np.linalg.norm(img[members], axis=1).mean(), rel=1e-5)
    again = build_prototypes(img, txt, 4, seed=0)
    assert [m.tolist() for m in again.members] == [m.tolist() for m in p.members]


def test_select_nearest_never_repeats_an_image():
    protos = np.array([[1.0, 0.0], [0.99, 0.01], [0.0, 1.0]])
    images = np.array([[1.0, 0.0], [0.0, 1.0], [0.7, 0.7]])
    chosen = select_nearest(protos, images)
    assert sorted(chosen.tolist()) == [0, 1, 2] and chosen[2] == 1


def test_filter_removes_exactly_the_lowest_fraction():
    rng = np.random.default_rng(0)
    img = rng.normal(size=(10, 8))
    pair_image = rng.integers(0, 10, size=50)
    txt = img[pair_image] + rng.normal(size=(50, 8)) * np.linspace(0.1, 3, 50)[:, None]
    keep = filter_lowest(img, txt, pair_image, 0.2)
    assert keep.sum() == 40
    a, b = img[pair_image], txt
    cos = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    assert cos[~keep].max() <= cos[keep].min()
    assert filter_lowest(img, txt, pair_image, 0.0).all()
    assert filter_lowest(img, txt, pair_image, 0.25).sum() == 38  # floor(12.5) dropped


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    root = tmp_path_factory.mktemp("shapes")
    make_shapes(root, train=12, test=2, size=64, seed=4, workers=1)
    return load_dataset(root / "train.json")


def test_embed_is_resumable_and_records_bad_images(shapes, tmp_path):
    scorer = build_score_model("tiny-clip")
    full = embed_pairs(shapes.records, scorer, tmp_path / "a", batch_size=4)
    assert full.image_emb.shape[0] == 12 and full.text_emb.shape[0] == 60
    assert full.owner.tolist() == np.repeat(np.arange(12), 5).tolist()
    # A crash in the second batch: the first stays done; the re-run embeds only the rest.
    part = tmp_path / "b"
    real, calls = scorer.encode_images, []

    def flaky(images, **kw):
        calls.append(len(images))
        if len(calls) == 2:
            raise RuntimeError("crash")
        return real(images, **kw)

    scorer.encode_images = flaky
    with pytest.raises(RuntimeError):
        embed_pairs(shapes.records, scorer, part, batch_size=4)
    calls.clear()
    scorer.encode_images = lambda images, **kw: (calls.append(len(images)), real(images, **kw))[1]
    reopened = embed_pairs(shapes.records, scorer, part, batch_size=4)
    assert calls == [4, 4]  # batches 2 and 3 only
    np.testing.assert_allclose(reopened.image_emb, full.image_emb, rtol=1e-5, atol=1e-6)
    # A broken image becomes a problem, its row invalid.
    broken = list(shapes.records)
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not a png")
    broken[3] = type(broken[3])(broken[3].id, bad, broken[3].captions, broken[3].row)
    store = embed_pairs(broken, scorer, tmp_path / "c", batch_size=4)
    assert not store.valid[3] and store.valid.sum() == 11 and len(store.problems) == 1
    assert 3 not in store.pairs()[1].tolist()
    assert EmbedStore.open(tmp_path / "c").problems[0].kind == "corrupt-image"


def test_unclip_tiny_synthesis_and_seeds():
    pipe = build_unclip("tiny-unclip", seed=0)
    assert image_embed_dim(pipe) == 32
    emb = torch.randn(3, 32)
    kw = dict(num_inference_steps=3, guidance_scale=5.0, noise_level=10, height=64, width=64)
    a = synthesize(pipe, emb, ["a", "b", "c"], seeds=[1, 2, 3], norms=[5.0, 5.0, 5.0], **kw)
    b = synthesize(pipe, emb, ["a", "b", "c"], seeds=[1, 2, 3], norms=[5.0, 5.0, 5.0], **kw)
    c = synthesize(pipe, emb, ["a", "b", "c"], seeds=[1, 2, 4], norms=[5.0, 5.0, 5.0], **kw)
    assert len(a) == 3 and a[0].size == (64, 64)
    assert all(np.array_equal(np.asarray(x), np.asarray(y)) for x, y in zip(a, b))
    assert not np.array_equal(np.asarray(a[2]), np.asarray(c[2]))


def test_clip_unclip_mismatch_is_a_clear_error():
    pipe = build_unclip("tiny-unclip")
    check_embedding_match(pipe, 32, score_model="tiny-clip", unclip_model="tiny-unclip")
    with pytest.raises(ConfigError, match="768-d image embeddings but unCLIP 'tiny-unclip' is "
                                          "conditioned on 32-d"):
        check_embedding_match(pipe, 768, score_model="openai/clip-vit-large-patch14",
                              unclip_model="tiny-unclip")
