"""Image-text retrieval metrics: TR@K and IR@K in percent, computed in chunks.

Scores are plain dot products of the embeddings given (pass L2-normalised embeddings for cosine
similarity). The full image x text score matrix is never held: images (for TR) and captions (for
IR) are scored a chunk at a time, so a COCO-size test (5,000 images x 25,000 captions) needs only
the embeddings plus one chunk (about 256 MB by default).

Rank and ties. The rank of the right answer is the number of WRONG candidates whose score is
greater than OR EQUAL to the right answer's score; a hit at K means rank < K. A tie therefore
counts against the model (pessimistic), so a model that scores everything equally gets 0 at
R@1 rather than a lucky 100.

* TR (text retrieval, image -> captions): an image is a hit at K if ANY of its captions ranks
  < K among all captions, i.e. if fewer than K wrong captions score >= its best right caption.
* IR (image retrieval, caption -> images): a caption is a hit at K if its one image ranks < K
  among all images.
"""

from __future__ import annotations

import numpy as np

KS = (1, 5, 10)
METRIC_NAMES = ("TR@1", "TR@5", "TR@10", "IR@1", "IR@5", "IR@10", "r_mean")
_CHUNK_BYTES = 256 << 20


def _check(image_emb, text_emb, text_to_image):
    img = np.asarray(image_emb, dtype=np.float32)
    txt = np.asarray(text_emb, dtype=np.float32)
    t2i = np.asarray(text_to_image)
    if img.ndim != 2 or txt.ndim != 2 or img.shape[1] != txt.shape[1]:
        raise ValueError(f"embeddings must be [N_img, d] and [N_txt, d], got {img.shape} and "
                         f"{txt.shape}")
    if t2i.shape != (txt.shape[0],) or not np.issubdtype(t2i.dtype, np.integer):
        raise ValueError(f"text_to_image must be an integer array of shape ({txt.shape[0]},), "
                         f"got {t2i.dtype} {t2i.shape}")
    if len(img) == 0 or len(txt) == 0:
        raise ValueError("retrieval needs at least one image and one caption")
    if t2i.min() < 0 or t2i.max() >= len(img):
        raise ValueError(f"text_to_image values must be in [0, {len(img)}), got "
                         f"[{t2i.min()}, {t2i.max()}]")
    counts = np.bincount(t2i, minlength=len(img))
    if (counts == 0).any():
        raise ValueError(f"image {int(np.argmin(counts))} has no caption (every test image needs "
                         "at least one)")
    # NaN scores compare False with everything and would rank as perfect hits.
    if not (np.isfinite(img).all() and np.isfinite(txt).all()):
        raise ValueError("embeddings contain NaN or inf (did training diverge?)")
    return img, txt, t2i.astype(np.int64)


def retrieval_ranks(image_emb, text_emb, text_to_image, *, chunk_bytes: int = _CHUNK_BYTES
                    ) -> tuple[np.ndarray, np.ndarray]:
    """(TR rank per image [N_img], IR rank per caption [N_txt]); see the module doc for ranks."""
    img, txt, t2i = _check(image_emb, text_emb, text_to_image)
    n_img, n_txt = len(img), len(txt)
    tr = np.empty(n_img, dtype=np.int64)
    step = max(1, chunk_bytes // (4 * n_txt * 2))  # scores + mask
    for a in range(0, n_img, step):
        b = min(n_img, a + step)
        scores = img[a:b] @ txt.T  # [c, N_txt]
        right = t2i[None, :] == np.arange(a, b)[:, None]
        best = np.where(right, scores, -np.inf).max(axis=1)
        tr[a:b] = ((scores >= best[:, None]) & ~right).sum(axis=1)
    ir = np.empty(n_txt, dtype=np.int64)
    step = max(1, chunk_bytes // (4 * n_img * 2))
    for a in range(0, n_txt, step):
        b = min(n_txt, a + step)
        scores = txt[a:b] @ img.T  # [c, N_img]
        own = scores[np.arange(b - a), t2i[a:b]]
        # Minus one: the right image itself always scores >= itself.
        ir[a:b] = (scores >= own[:, None]).sum(axis=1) - 1
    return tr, ir


def retrieval_metrics(image_emb, text_emb, text_to_image, *, chunk_bytes: int = _CHUNK_BYTES
                      ) -> dict[str, float]:
    """TR@1/5/10, IR@1/5/10 and r_mean (their mean), in percent.

    ``image_emb``: [N_img, d]; ``text_emb``: [N_txt, d]; ``text_to_image``: [N_txt] ints, the
    image index of each caption (images may have different numbers of captions; each needs at
    least one). Raises ValueError on mismatched shapes or non-finite embeddings.
    """
    tr, ir = retrieval_ranks(image_emb, text_emb, text_to_image, chunk_bytes=chunk_bytes)
    out = {}
    for k in KS:
        out[f"TR@{k}"] = float((tr < k).mean() * 100.0)
    for k in KS:
        out[f"IR@{k}"] = float((ir < k).mean() * 100.0)
    out["r_mean"] = float(np.mean([out[f"TR@{k}"] for k in KS] + [out[f"IR@{k}"] for k in KS]))
    return out
