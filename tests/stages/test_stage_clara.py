import numpy as np
import pytest

kmedoids = pytest.importorskip("kmedoids")

from gitd.errors import ConfigError
from gitd.stages.arrays import RowSubset
from gitd.stages.clara import (ClaraResult, assign, clara, default_sample_size, pairwise_distances,
                               random_medoids)


def blobs(n=2000, d=64, centres=5, spread=0.3, seed=0):
    rng = np.random.default_rng(seed)
    c = rng.normal(size=(centres, d)) * 10.0
    truth = rng.integers(centres, size=n)
    return (c[truth] + rng.normal(size=(n, d)) * spread).astype(np.float32), truth


def mixture(n=1500, d=64, centres=40, seed=1):
    rng = np.random.default_rng(seed)
    c = rng.normal(size=(centres, d))
    return (c[rng.integers(centres, size=n)] + rng.normal(size=(n, d)) * 0.8).astype(np.float32)


def brute_cost(X, medoids):
    D = np.linalg.norm(X[:, None, :].astype(np.float64) - X[None, medoids, :], axis=2)
    return D.argmin(1), D.min(1).sum()


def test_planted_blobs_each_get_one_medoid():
    X, truth = blobs()
    res = clara(X, 5, seed=0)
    assert res.medoids.dtype == np.int64 and res.labels.dtype == np.int32
    assert list(res.medoids) == sorted(res.medoids)
    assert sorted(truth[res.medoids]) == [0, 1, 2, 3, 4]  # one medoid inside every blob
    # labels equal the planted ones up to a permutation
    mapping = {int(truth[m]): j for j, m in enumerate(res.medoids)}
    assert np.array_equal(res.labels, np.array([mapping[t] for t in truth]))
    assert np.array_equal(res.sizes, np.bincount(truth, minlength=5)[truth[res.medoids]])
    assert res.sizes.sum() == len(X)
    assert len(res.sample_costs) == 5 and res.cost == pytest.approx(min(res.sample_costs))


def test_cost_and_labels_match_brute_force():
    X = mixture(n=400, d=16)
    res = clara(X, 7, seed=3, sample_size=50)
    labels, cost = brute_cost(X, res.medoids)
    assert np.array_equal(res.labels, labels)
    assert res.cost == pytest.approx(cost, rel=1e-5)


def test_close_to_full_fasterpam_and_better_than_random():
    X = mixture()
    full = kmedoids.fasterpam(pairwise_distances(X), 5, random_state=0, n_cpu=1)
    _, full_cost = brute_cost(X, np.asarray(full.medoids))
    # The literature's 80 + 4k rows (below the default floor), so that this is a real sample.
    runs = [clara(X, 5, seed=s, sample_size=100) for s in range(5)]
    assert runs[0].sample_size == 100 and default_sample_size(5) == 1000
    ratios = np.array([r.cost for r in runs]) / full_cost
    assert ratios.mean() <= 1.03 and ratios.max() <= 1.05, ratios
    rand = np.mean([random_medoids(X, 5, seed=s).cost for s in range(5)])
    assert max(r.cost for r in runs) < rand * 0.97
    # a bigger sample gets closer to the full fit
    big = clara(X, 5, seed=0, sample_size=600)
    assert big.cost <= full_cost * 1.01


def test_refinement_never_raises_the_cost_and_usually_lowers_it():
    X = mixture(n=3000)
    plain = [clara(X, 8, seed=s, sample_size=112, refine=0) for s in range(4)]
    refined = [clara(X, 8, seed=s, sample_size=112, refine=2) for s in range(4)]
    for p, r in zip(plain, refined):
        assert r.cost <= p.cost
        assert r.sample_costs[:len(p.sample_costs)] == p.sample_costs
        assert r.cost == pytest.approx(brute_cost(X, r.medoids)[1], rel=1e-5)
    assert sum(r.cost for r in refined) < sum(p.cost for p in plain)


def test_small_n_runs_fasterpam_on_everything():
    X = mixture(n=60, d=8)
    res = clara(X, 4, seed=0)
    assert res.sample_size == 60 and len(res.sample_costs) == 1
    full = kmedoids.fasterpam(pairwise_distances(X), 4, random_state=0, n_cpu=1)
    assert res.cost <= brute_cost(X, np.asarray(full.medoids))[1] * 1.02


def test_best_medoids_join_later_samples_so_costs_never_regress():
    X = mixture(n=1200)
    res = clara(X, 8, seed=5, n_samples=6)
    assert res.cost == pytest.approx(min(res.sample_costs))
    # the kept result is at least as good as the first sample
    assert res.cost <= res.sample_costs[0]


def test_chunked_assignment_equals_unchunked():
    X = mixture(n=1000, d=32)
    med = np.array([3, 100, 511, 900])
    l1, d1, c1 = assign(X, med, chunk_size=1000)
    l2, d2, c2 = assign(X, med, chunk_size=7)
    assert np.array_equal(l1, l2)
    np.testing.assert_allclose(d1, d2, rtol=1e-5, atol=1e-5)
    assert c1 == pytest.approx(c2, rel=1e-6)
    cache = np.full(len(X), np.nan, dtype=np.float32)
    l3, d3, c3 = assign(X, med, chunk_size=64, row_sq=cache)
    assert not np.isnan(cache).any()
    l4, d4, c4 = assign(X, med, chunk_size=64, row_sq=cache)  # reuses the cached norms
    assert np.array_equal(l3, l1) and np.array_equal(l4, l1) and c4 == c3
    np.testing.assert_allclose(d4, d1, rtol=1e-5, atol=1e-5)
    a = clara(X, 6, seed=1, chunk_size=97)
    b = clara(X, 6, seed=1)
    assert np.array_equal(a.medoids, b.medoids) and np.array_equal(a.labels, b.labels)


def test_float16_memmap_input(tmp_path):
    X, truth = blobs(n=1500, d=32)
    mm = np.lib.format.open_memmap(tmp_path / "x.npy", mode="w+", dtype=np.float16, shape=X.shape)
    mm[:] = X
    mm.flush()
    ro = np.load(tmp_path / "x.npy", mmap_mode="r")
    res = clara(ro, 5, seed=0, chunk_size=128)
    assert sorted(truth[res.medoids]) == [0, 1, 2, 3, 4]
    ref = clara(X.astype(np.float16).astype(np.float32), 5, seed=0)
    assert np.array_equal(res.medoids, ref.medoids)


def test_row_subset_view_of_memmap(tmp_path):
    X, truth = blobs(n=900, d=16, centres=3)
    mm = np.lib.format.open_memmap(tmp_path / "x.npy", mode="w+", dtype=np.float16, shape=X.shape)
    mm[:] = X
    rows = np.arange(0, 900, 2)
    res = clara(RowSubset(mm, rows), 3, seed=0)
    assert len(res.labels) == len(rows)
    assert sorted(truth[rows[res.medoids]]) == [0, 1, 2]


def test_seeded():
    X = mixture(n=800)
    a, b = clara(X, 6, seed=11, sample_size=104), clara(X, 6, seed=11, sample_size=104)
    assert np.array_equal(a.medoids, b.medoids) and a.cost == b.cost
    assert a.sample_costs == b.sample_costs
    c = clara(X, 6, seed=12, sample_size=104)
    assert c.sample_costs != a.sample_costs
    assert np.array_equal(random_medoids(X, 6, seed=4).medoids, random_medoids(800, 6, 4).medoids)


def test_random_medoids():
    X = mixture(n=300, d=8)
    r = random_medoids(X, 10, seed=2)
    assert r.method == "random" and len(set(r.medoids.tolist())) == 10
    assert r.cost == pytest.approx(brute_cost(X, r.medoids)[1], rel=1e-5)
    only = random_medoids(300, 10, seed=2)
    assert only.labels is None and np.isnan(only.cost)


@pytest.mark.parametrize("k", [0, -1, 11])
def test_bad_k_is_one_clear_line(k):
    X = mixture(n=10, d=4)
    with pytest.raises(ConfigError) as e:
        clara(X, k)
    msg = str(e.value)
    assert "\n" not in msg and f"asked for {k} pairs" in msg
    if k > 10:
        assert "only 10 valid images" in msg
    with pytest.raises(ConfigError):
        random_medoids(X, k)


def test_bad_settings():
    X = mixture(n=50, d=4)
    with pytest.raises(ConfigError, match="sample_size"):
        clara(X, 5, sample_size=3)
    with pytest.raises(ConfigError, match="n_samples"):
        clara(X, 5, n_samples=0)
    with pytest.raises(ConfigError, match="2-D"):
        clara(np.zeros(5), 2)


def test_save_load_roundtrip(tmp_path):
    X = mixture(n=200, d=8)
    res = clara(X, 4, seed=0)
    res.save(tmp_path)
    back = ClaraResult.load(tmp_path)
    assert np.array_equal(back.medoids, res.medoids) and np.array_equal(back.labels, res.labels)
    assert back.cost == pytest.approx(res.cost) and back.sample_costs == res.sample_costs
    assert ClaraResult.load(tmp_path / "missing") is None


def test_docstrings_state_the_default_sample_size():
    from gitd.stages.clara import refine_medoids
    assert default_sample_size(5) == 1000 and default_sample_size(300) == 1280
    for doc in (clara.__doc__, default_sample_size.__doc__, refine_medoids.__doc__):
        assert "max(80 + 4k, 1000)" in " ".join(doc.split())


def test_assignment_takes_read_only_medoids_without_a_warning():
    """Issue 20, item 13: in a Ray task the medoid rows come from the object store read-only,
    and torch.from_numpy of them raised a non-writable-array UserWarning in every task."""
    import warnings

    from gitd.stages.clara import _assign_rows

    rng = np.random.default_rng(0)
    X = rng.normal(size=(50, 8)).astype(np.float32)
    m = X[[3, 17, 40]].copy()
    m.flags.writeable = False
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        labels, dist, _ = _assign_rows(X, m, 0, 50, 16, "cpu")
    assert labels[[3, 17, 40]].tolist() == [0, 1, 2] and np.allclose(dist[[3, 17, 40]], 0)
