import numpy as np
import pytest
import torch

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


def test_batches_random_subsets_and_drop_last(tiny_sets, tiny_text, tiny_image):
    ds, _, txt, pairs = _pairs(tiny_sets, tiny_text, tiny_image)  # 8 images
    def order(**kw):
        prot = get_protocol("gitd", image_size=32, epochs=1, **kw)
        t = Trainer(build_model(tiny_image, txt.dim, prot, seed=0), pairs, prot, seed=0)
        return [b for b in t._epoch_order(0)[0]], t.images_per_epoch()

    # LoRS / PDS: ceil(n / bs) batches, each an independent random subset of distinct images
    batches, n = order(batch_size=3, batches="random")
    assert [len(b) for b in batches] == [3, 3, 3] and n == 9
    assert all(len(set(b)) == 3 for b in batches)
    assert sorted(i for b in batches for i in b) != list(range(8))  # not a partition
    # GITD's / EDGE's loaders drop the last partial batch
    batches, n = order(batch_size=3, drop_last=True)
    assert [len(b) for b in batches] == [3, 3] and n == 6
    # ... but a set smaller than one batch still trains, as one batch
    batches, n = order(batch_size=16, drop_last=True)
    assert [len(b) for b in batches] == [8] and n == 8


def test_each_group_has_its_own_lr_and_the_schedule_scales_both(tiny_sets, tiny_text,
                                                                tiny_image):
    _, _, txt, pairs = _pairs(tiny_sets, tiny_text, tiny_image)
    prot = get_protocol("lors", image_size=32, epochs=4, batch_size=4, image_lr=0.03,
                        text_lr=0.002)
    t = Trainer(build_model(tiny_image, txt.dim, prot, seed=0), pairs, prot, seed=0)
    lrs = []
    t.fit(on_epoch_end=lambda e, tr: lrs.append([g["lr"] for g in tr.optimizer.param_groups]),
          progress_bar=False)
    assert lrs == [pytest.approx([0.03, 0.002])] * 2 + [pytest.approx([0.003, 0.0002])] * 2
    assert t.loss_name == "wbce"  # LoRS's loss, against the identity target here
    frozen = get_protocol("pds", image_size=32, epochs=1)
    model = build_model(tiny_image, txt.dim, frozen, seed=0)
    assert model.image_encoder is None  # PDS trains the text head only


def test_tensor_pairs_train_like_the_same_images_decoded(tiny_sets, tiny_text, tiny_image):
    """Float pixels on the 0-255 scale (a distilled file) and text embeddings given in place of
    the text encoder's: the same losses as the decoded uint8 images and their captions."""
    from gitd.retrieval.pairs import tensor_pairs

    _, prot, txt, pairs = _pairs(tiny_sets, tiny_text, tiny_image)
    given = tensor_pairs(pairs.images.float(), pairs.text_features, tiny_image, prot)
    assert given.n_images == 8 and given.images.dtype.is_floating_point
    runs = []
    for p in (pairs, given):
        t = Trainer(build_model(tiny_image, txt.dim, prot, seed=0), p, prot, seed=0)
        runs.append(t.fit(progress_bar=False).losses)
    np.testing.assert_allclose(runs[0], runs[1], rtol=1e-5)
    # other sizes are resized; a similarity matrix makes LoRS's loss the training loss
    big = tensor_pairs(pairs.images.float().repeat_interleave(2, -1).repeat_interleave(2, -2),
                       pairs.text_features, tiny_image, prot,
                       similarity=torch.eye(8))
    assert big.images.shape[-1] == 32 and big.similarity is not None
    t = Trainer(build_model(tiny_image, txt.dim, prot, seed=0), big, prot, seed=0)
    assert t.loss_name == "wbce"


def test_blip_augmentation_is_seeded_and_keeps_shape_and_dtype():
    from gitd.retrieval.augment import blip_augment

    x = torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8)
    torch.manual_seed(3)
    a = blip_augment(x)
    torch.manual_seed(3)
    b = blip_augment(x)
    assert a.dtype == torch.uint8 and a.shape == x.shape and torch.equal(a, b)
    assert not torch.equal(a, x)
    f = blip_augment(x.float())
    assert f.dtype == torch.float32 and f.shape == x.shape
