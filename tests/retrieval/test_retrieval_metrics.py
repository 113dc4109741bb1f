import numpy as np
import pytest

from gitd.retrieval.metrics import retrieval_metrics, retrieval_ranks

# Two images, three captions: image 0 has two captions (t0, t1), image 1 has one (t2).
IMG = np.array([[1.0, 0.0], [0.0, 1.0]], np.float32)
TXT = np.array([[0.2, 1.0],   # t0 (image 0) scores 0.2 vs image 0, 1.0 vs image 1
                [1.0, 0.1],   # t1 (image 0): 1.0 vs 0.1
                [0.9, 0.5]],  # t2 (image 1): 0.9 vs image 0, 0.5 vs image 1
               np.float32)
T2I = np.array([0, 0, 1])


def test_hand_computed_case():
    m = retrieval_metrics(IMG, TXT, T2I)
    # TR: image 0's best caption t1 (1.0) beats the wrong t2 (0.9) -> rank 0; image 1's caption
    # t2 (0.5) is beaten by the wrong t0 (1.0) -> rank 1.
    assert m["TR@1"] == pytest.approx(50.0)
    assert m["TR@5"] == m["TR@10"] == pytest.approx(100.0)
    # IR: t0 ranks its image second, t1 first, t2 second.
    assert m["IR@1"] == pytest.approx(100 / 3)
    assert m["IR@5"] == m["IR@10"] == pytest.approx(100.0)
    assert m["r_mean"] == pytest.approx((50 + 100 + 100 + 100 / 3 + 100 + 100) / 6)


def test_any_caption_counts_not_only_the_first():
    tr, _ = retrieval_ranks(IMG, TXT, T2I)
    # With only the first caption (t0, 0.2) image 0 would rank behind t2 (0.9).
    assert tr[0] == 0


def test_tr_and_ir_are_not_swapped():
    tr, ir = retrieval_ranks(IMG, TXT, T2I)
    assert tr.shape == (2,) and ir.shape == (3,)
    assert list(tr) == [0, 1]
    assert list(ir) == [1, 0, 1]


def test_ties_count_against():
    img = np.ones((3, 4), np.float32)
    txt = np.ones((6, 4), np.float32)
    t2i = np.array([0, 0, 1, 1, 2, 2])
    tr, ir = retrieval_ranks(img, txt, t2i)
    assert list(tr) == [4, 4, 4]  # every wrong caption ties with the right ones
    assert list(ir) == [2] * 6  # both wrong images tie
    m = retrieval_metrics(img, txt, t2i)
    assert m["TR@1"] == m["IR@1"] == 0.0
    assert m["TR@5"] == m["IR@5"] == 100.0


def _reference(img, txt, t2i):
    """The papers' argsort formulation (valid without ties)."""
    s = img @ txt.T
    tr = []
    for i in range(len(img)):
        order = np.argsort(-s[i])
        tr.append(min(np.where(order == t)[0][0] for t in np.where(t2i == i)[0]))
    ir = []
    for t in range(len(txt)):
        order = np.argsort(-s[:, t])
        ir.append(np.where(order == t2i[t])[0][0])
    return np.array(tr), np.array(ir)


def test_matches_argsort_reference_with_unequal_caption_counts_and_tiny_chunks():
    rng = np.random.default_rng(0)
    img = rng.normal(size=(40, 8)).astype(np.float32)
    t2i = np.concatenate([np.arange(40), rng.integers(0, 40, 70)])
    txt = (img[t2i] + rng.normal(scale=1.5, size=(len(t2i), 8))).astype(np.float32)
    ref_tr, ref_ir = _reference(img, txt, t2i)
    for chunk in (1, 4 * 8 * 40 * 3, 1 << 26):
        tr, ir = retrieval_ranks(img, txt, t2i, chunk_bytes=chunk)
        np.testing.assert_array_equal(tr, ref_tr)
        np.testing.assert_array_equal(ir, ref_ir)
    m = retrieval_metrics(img, txt, t2i)
    for k in (1, 5, 10):
        assert m[f"TR@{k}"] == pytest.approx((ref_tr < k).mean() * 100)
        assert m[f"IR@{k}"] == pytest.approx((ref_ir < k).mean() * 100)
    assert 0 < m["TR@1"] < m["TR@5"] < m["TR@10"] < 100


@pytest.mark.parametrize("img,txt,t2i,match", [
    (IMG, TXT[:, :1], T2I, "embeddings must be"),
    (IMG, TXT, np.array([0, 0]), "text_to_image"),
    (IMG, TXT, np.array([0, 0, 0]), "has no caption"),
    (IMG, TXT, np.array([0, 0, 2]), r"values must be in \[0, 2\)"),
    (IMG * np.nan, TXT, T2I, "NaN"),
])
def test_bad_inputs(img, txt, t2i, match):
    with pytest.raises(ValueError, match=match):
        retrieval_metrics(img, txt, t2i)
