import json
import os

import numpy as np
import pytest
import torch
from PIL import Image

from gitd.data import load_dataset
from gitd.data.images import ImageError
from gitd.evaluation.encoders import build_image_encoder, build_text_encoder
from gitd.evaluation.features import embed_images, embed_texts, load_images
from gitd.evaluation.protocols import get_protocol
from gitd.evaluation.train import Trainer, build_model, prepare_pairs, train


@pytest.fixture(scope="module")
def tiny_image():
    return build_image_encoder("timm:resnet10t", pretrained=False)


def test_embed_texts_is_cached_and_keyed_by_texts(tiny_text, tmp_path, monkeypatch):
    enc = build_text_encoder(tiny_text)
    a = embed_texts(["red", "blue"], enc, cache=tmp_path)
    assert len(list((tmp_path / "features").glob("text-*.npy"))) == 1

    def boom(*a, **k):
        raise AssertionError("recomputed")
    monkeypatch.setattr(enc, "encode", boom)
    np.testing.assert_array_equal(embed_texts(["red", "blue"], enc, cache=tmp_path), a)
    with pytest.raises(AssertionError, match="recomputed"):
        embed_texts(["red", "green"], enc, cache=tmp_path)


def test_embed_texts_env_cache(tiny_text, tmp_path, monkeypatch):
    monkeypatch.setenv("GITD_CACHE", str(tmp_path / "envcache"))
    embed_texts(["x"], tiny_text)
    assert list((tmp_path / "envcache" / "features").glob("text-*.npy"))


def test_embed_images_cache_follows_file_changes(tmp_path, monkeypatch):
    enc = build_image_encoder("efficientnet_lite0", image_size=32)
    paths = []
    for i, c in enumerate([(255, 0, 0), (0, 0, 255)]):
        p = tmp_path / f"{i}.png"
        Image.new("RGB", (20, 30), c).save(p)
        paths.append(p)
    a = embed_images(paths, enc, image_size=32, cache=tmp_path / "c")
    assert a.shape == (2, 1280) and a.dtype == np.float32 and not np.allclose(a[0], a[1])
    np.testing.assert_array_equal(embed_images(paths, enc, image_size=32, cache=tmp_path / "c"), a)
    Image.new("RGB", (20, 30), (0, 255, 0)).save(paths[0])
    os.utime(paths[0], ns=(1, 1))  # a different mtime even on coarse clocks
    b = embed_images(paths, enc, image_size=32, cache=tmp_path / "c")
    assert not np.allclose(a[0], b[0])
    np.testing.assert_allclose(a[1], b[1], atol=1e-5)
    assert len(list((tmp_path / "c" / "features").glob("image-*.npy"))) == 2


def test_bad_image_is_one_image_error_even_through_workers(tmp_path):
    paths = []
    for i in range(17):  # >= 16 so that the loader really uses worker processes
        p = tmp_path / f"{i}.png"
        Image.new("RGB", (8, 8), (i, i, i)).save(p)
        paths.append(p)
    paths[9].write_bytes(b"not a png")
    with pytest.raises(ImageError, match="9.png"):
        load_images(paths, 32, workers=2)
    ok = load_images(paths[:9], 32, workers=0)
    assert ok.shape == (9, 3, 32, 32) and ok.dtype == torch.uint8


def _pairs(tiny_sets, tiny_text, tiny_image, **kw):
    train_path, _ = tiny_sets
    ds = load_dataset(train_path)
    prot = get_protocol("gitd", image_size=32, batch_size=4, epochs=3, lr=1e-3)
    txt = build_text_encoder(tiny_text)
    return ds, prot, txt, prepare_pairs(ds, tiny_image, txt, prot, cache=False, **kw)


def test_training_is_seeded_and_streaming_equals_preloaded(tiny_sets, tiny_text, tiny_image):
    ds, prot, txt, pre = _pairs(tiny_sets, tiny_text, tiny_image)
    _, _, _, stream = _pairs(tiny_sets, tiny_text, tiny_image, preload_bytes=0, workers=0)
    assert pre.images is not None and stream.images is None
    runs = []
    for pairs, seed in ((pre, 1), (stream, 1), (pre, 2)):
        t = Trainer(build_model(tiny_image, txt.dim, prot, seed=seed), pairs, prot, seed=seed)
        epochs = []
        t.fit(on_epoch_end=lambda e, tr: epochs.append(e), progress_bar=False)
        assert epochs == [1, 2, 3]
        runs.append(t.losses)
    np.testing.assert_allclose(runs[0], runs[1], rtol=1e-4)
    assert not np.allclose(runs[0], runs[2])
    # The base encoder is copied per seed, never trained in place.
    assert all(not p.grad is not None for p in tiny_image.parameters())


def test_frozen_features_training_learns_pairs(tiny_sets, tiny_text, tmp_path):
    enc = build_image_encoder("efficientnet_lite0", image_size=64)
    train_path, _ = tiny_sets
    seen = []
    t = train(train_path, protocol="gitd", epochs=60, image_size=64, batch_size=8, lr=3e-3,
              freeze_image=True, image_model=enc, text_model=tiny_text + "@mean", cache=tmp_path / "c",
              on_epoch_end=lambda e, tr: seen.append(tr.learned().mean()) if e in (1, 60) else None)
    assert t.pairs.features is not None and t.pairs.features.shape == (8, 1280)
    assert t.losses[-1] < t.losses[0] * 0.5
    assert seen[-1] >= 0.75 and seen[-1] > seen[0]
    img, txt = t.embed()
    assert img.shape == (8, 1280) and txt.shape == (8, 1280)
    np.testing.assert_allclose(np.linalg.norm(img, axis=1), 1, atol=1e-5)


def test_multi_caption_policy_one_random_caption_per_image(tmp_path, tiny_text, tiny_image,
                                                           set_writer):
    path = set_writer(tmp_path, ["red", "blue", "green"], captions_per_image=3)
    ds = load_dataset(path)
    prot = get_protocol("gitd", image_size=32, batch_size=2, epochs=1)
    pairs = prepare_pairs(ds, tiny_image, build_text_encoder(tiny_text), prot, cache=False)
    assert pairs.n_images == 3 and pairs.n_texts == 9
    t = Trainer(build_model(tiny_image, 32, prot, seed=0), pairs, prot, seed=0)
    chosen = set()
    for epoch in range(12):
        order, caption = t._epoch_order(epoch)
        assert sorted(i for b in order for i in b) == [0, 1, 2]  # one pass over the images
        assert all(pairs.text_to_image[caption[i]] == i for i in range(3))
        chosen.update(caption.tolist())
    assert chosen == set(range(9))
