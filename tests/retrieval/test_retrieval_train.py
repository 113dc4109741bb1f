import numpy as np
import pytest

from gitd.data import load_dataset
from gitd.models.encoders import build_image_encoder, build_text_encoder
from gitd.retrieval.protocols import get_protocol
from gitd.retrieval.train import Trainer, build_model, prepare_pairs, train


@pytest.fixture(scope="module")
def tiny_image():
    return build_image_encoder("timm:resnet10t", pretrained=False)


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
