import os

import numpy as np
import pytest
import torch
from PIL import Image

from gitd.data.images import ImageError
from gitd.models.encoders import build_image_encoder, build_text_encoder
from gitd.models.features import embed_images, embed_texts, load_images


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
