"""The chance level of the retrieval metrics (issue 20, item 2): exact against every ranking of a
small test set, and against gitd's own metrics on random embeddings."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from gitd.retrieval.chance import (at_chance, chance_noise, chance_recall, counts_from_totals,
                                   trivial_recalls)
from gitd.retrieval.metrics import METRIC_NAMES, retrieval_metrics


def exhaustive(counts: list[int]) -> dict[str, float]:
    """The mean of each metric over every ordering of the captions (for TR) and of the images
    (for IR): what a uniformly random ranking scores, by brute force."""
    owner = [i for i, c in enumerate(counts) for _ in range(c)]
    n_img, n_txt = len(counts), len(owner)
    out = {}
    for k in (1, 5, 10):
        hits = total = 0
        for order in itertools.permutations(range(n_txt)):
            for i in range(n_img):
                hits += any(owner[t] == i for t in order[:k])
                total += 1
        out[f"TR@{k}"] = 100 * hits / total
        out[f"IR@{k}"] = 100 * min(k, n_img) / n_img  # every image equally likely at each place
    out["r_mean"] = np.mean([out[m] for m in METRIC_NAMES if m != "r_mean"])
    return out


@pytest.mark.parametrize("counts", [[1, 1, 1], [2, 1, 1, 2], [3, 1, 2], [1] * 7])
def test_chance_is_the_mean_over_every_ranking(counts):
    exact = chance_recall(counts)
    brute = exhaustive(counts)
    for name in METRIC_NAMES:
        assert exact[name] == pytest.approx(brute[name], abs=1e-9), name


def test_chance_matches_gitds_metrics_on_random_embeddings():
    counts = [5] * 30 + [3] * 10
    owner = np.repeat(np.arange(len(counts)), counts)
    rng = np.random.default_rng(0)
    runs = [retrieval_metrics(rng.normal(size=(len(counts), 16)),
                              rng.normal(size=(len(owner), 16)), owner) for _ in range(400)]
    exact, noise = chance_recall(counts), chance_noise(counts)
    for name in ("TR@1", "TR@5", "TR@10", "IR@1", "IR@5", "IR@10"):
        values = np.array([r[name] for r in runs])
        # the mean of 400 random rankings is within 4 standard errors of the exact value
        assert abs(values.mean() - exact[name]) < 4 * noise[name] / np.sqrt(len(runs)), name
        # and the spread of one ranking is what chance_noise says (queries near independent)
        assert values.std() == pytest.approx(noise[name], rel=0.25), name


def test_the_papers_test_sets_and_the_demo():
    # The demo's test set (100 images x 5 captions): chance r_mean about 5.3 (issue 20).
    assert chance_recall([5] * 100)["r_mean"] == pytest.approx(5.26, abs=0.01)
    # Four test images: IR@5 and IR@10 are 100 for any model.
    four = chance_recall([5] * 4)
    assert four["IR@5"] == four["IR@10"] == 100 and four["r_mean"] > 70
    # Flickr30K's 1K test: chance is below one percent at R@1.
    assert chance_recall([5] * 1000)["IR@1"] == pytest.approx(0.1)


def test_k_too_large_for_the_test_set_is_named():
    assert trivial_recalls([5] * 100) == []
    warnings = trivial_recalls([1] * 4)
    assert any("K=5 >= 4 test images: IR@5 is 100" in w for w in warnings)
    assert any("K=10 >= 4 test captions: TR@10 is 100" in w for w in warnings)
    assert not any("K=1 " in w for w in warnings)


def test_counts_from_totals_and_at_chance():
    assert counts_from_totals(4, 20) == [5, 5, 5, 5]
    assert sorted(counts_from_totals(3, 7)) == [2, 2, 3]
    with pytest.raises(ValueError):
        counts_from_totals(4, 3)
    level, noise = chance_recall([5] * 100)["r_mean"], chance_noise([5] * 100)["r_mean"]
    assert at_chance(4.93, 0.3, level, noise)           # the demo's headline
    assert not at_chance(25.0, 1.0, level, noise)
