"""Chance level of the retrieval metrics: what a random ranking scores on a given test set.

With few test images, recall@K is high by construction (4 images: IR@5 and IR@10 are 100 for
any model, and a random ranking's r_mean is about 73), so a result means something only beside
the chance level of its own test set. A random ranking is a uniformly random order of the
candidates (no ties), scored as ``gitd.retrieval.metrics`` scores a model:

* TR@K (image -> captions): image i, with c_i of the N_t captions, is a hit when any of its
  captions is among the first K, so P(hit) = 1 - C(N_t - c_i, K) / C(N_t, K);
* IR@K (caption -> images): one right image among N, so P(hit) = min(K, N) / N;
* r_mean: the mean of the six.

``chance_noise`` is the standard deviation of each metric over random rankings (queries taken
as independent), the scale below which a result cannot be told from chance. Both the report and
``gitd evaluate``'s table use these functions. Pure Python: no numpy, no torch.
"""

from __future__ import annotations

import math
from typing import Sequence

KS = (1, 5, 10)


def counts_from_totals(images: int, captions: int) -> list[int]:
    """Captions per image when only the totals are known: spread as evenly as possible (exact
    for the usual test sets, where every image has the same number, e.g. 5)."""
    if images <= 0 or captions < images:
        raise ValueError(f"need at least one caption per image, got {images} images and "
                         f"{captions} captions")
    base, extra = divmod(captions, images)
    return [base + 1] * extra + [base] * (images - extra)


def _tr_hit(n_texts: int, own: int, k: int) -> float:
    """P(at least one of ``own`` right captions among the first ``k`` of ``n_texts``)."""
    if k >= n_texts - own + 1:
        return 1.0
    miss = 1.0
    for j in range(own):  # C(N - c, K) / C(N, K) = prod_j (N - K - j) / (N - j)
        miss *= (n_texts - k - j) / (n_texts - j)
    return 1.0 - miss


def _check(captions_per_image: Sequence[int]) -> list[int]:
    counts = [int(c) for c in captions_per_image]
    if not counts or min(counts) < 1:
        raise ValueError("every test image needs at least one caption")
    return counts


def chance_recall(captions_per_image: Sequence[int], ks: Sequence[int] = KS) -> dict[str, float]:
    """Expected TR@K, IR@K and r_mean of a random ranking, in percent, for a test set whose
    images have ``captions_per_image`` captions each."""
    counts = _check(captions_per_image)
    n_img, n_txt = len(counts), sum(counts)
    out = {f"TR@{k}": 100.0 * sum(_tr_hit(n_txt, c, k) for c in counts) / n_img for k in ks}
    out.update({f"IR@{k}": 100.0 * min(k, n_img) / n_img for k in ks})
    out["r_mean"] = sum(out[f"{d}@{k}"] for d in ("TR", "IR") for k in ks) / (2 * len(ks))
    return out


def chance_noise(captions_per_image: Sequence[int], ks: Sequence[int] = KS) -> dict[str, float]:
    """Standard deviation of each metric (percent) over random rankings; for r_mean the mean of
    the six (an upper bound: the six are positively correlated)."""
    counts = _check(captions_per_image)
    n_img, n_txt = len(counts), sum(counts)
    out = {}
    for k in ks:
        var = sum(p * (1 - p) for p in (_tr_hit(n_txt, c, k) for c in counts)) / n_img ** 2
        out[f"TR@{k}"] = 100.0 * math.sqrt(var)
    for k in ks:
        p = min(k, n_img) / n_img
        out[f"IR@{k}"] = 100.0 * math.sqrt(p * (1 - p) / n_txt)
    out["r_mean"] = sum(out[f"{d}@{k}"] for d in ("TR", "IR") for k in ks) / (2 * len(ks))
    return out


def trivial_recalls(captions_per_image: Sequence[int], ks: Sequence[int] = KS) -> list[str]:
    """One warning per K that the test set is too small for: K at least the number of test
    images (IR@K is 100 for any model) or of captions (TR@K likewise)."""
    counts = _check(captions_per_image)
    n_img, n_txt = len(counts), sum(counts)
    out = []
    for k in ks:
        if k >= n_img:
            out.append(f"K={k} >= {n_img} test images: IR@{k} is 100 for any model, a random "
                       "ranking included")
        if k >= n_txt:
            out.append(f"K={k} >= {n_txt} test captions: TR@{k} is 100 for any model")
    return out


def at_chance(mean: float, std: float, chance: float, noise: float) -> bool:
    """Whether an r_mean of ``mean`` ± ``std`` (over seeds) is within noise of ``chance``: no
    more than two standard deviations above it, taking the larger of the seeds' spread and a
    random ranking's."""
    return mean <= chance + 2.0 * max(std, noise)
