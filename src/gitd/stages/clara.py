"""k-medoids of many rows: CLARA on FasterPAM, and random medoids (the /C ablation).

GITD picks one real image per distilled pair as the medoid of a cluster of flattened VAE latents
(4x64x64 = 16,384 values per image for SD at 512 px). A full k-medoids fit needs the n x n
distance matrix (100k images: 40 GB in float32), so this module uses CLARA (Kaufman & Rousseeuw,
*Finding Groups in Data*, 1990, ch. 3): run PAM -- here FasterPAM (Schubert & Rousseeuw 2019,
2021) -- on a few random samples, assign the whole set to each sample's medoids, and keep the
medoids of lowest total cost on the whole set. Nothing here ever holds more than one sample's
distance matrix plus one chunk of rows, so ``X`` can be a float16 ``np.memmap`` larger than RAM.

Costs are sums of plain Euclidean distances (not squared), the k-medoids objective. The cached
stage that runs this on a method's latents is ``gitd.stages.cluster``.
"""

from __future__ import annotations

import io
import math
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from gitd.errors import ConfigError
from gitd.log import get_logger, progress
from gitd.settings import Interval, check
from gitd.store import atomic_write_bytes, atomic_write_json, read_json

log = get_logger("stages.clara")

# float32 bytes of one assignment chunk (rows x d) we allow on the device; with the float16
# source rows and the chunk x k distance block this keeps a chunk near 0.5 GB at d = 16,384.
_CHUNK_BYTES = 256 << 20


MIN_SAMPLE_SIZE = 1000


def default_sample_size(k: int) -> int:
    """CLARA's sample size for ``k`` medoids: ``max(80 + 4k, 1000)``.

    Kaufman & Rousseeuw (1990) proposed 40 + 2k. Schubert & Rousseeuw ("Fast and eager
    k-medoids clustering: O(k) runtime improvement of the PAM, CLARA, and CLARANS algorithms",
    Information Systems 101, 2021, sec. 5 / FastCLARA) found that because FasterPAM is so much
    cheaper per sample, larger samples such as 80 + 4k give clearly better medoids for little
    extra time; we follow them, with a floor of 1,000 rows: on the benchmark mixture
    (n = 10,000, d = 4,096, k = 100, 3 seeds) 480-row samples left CLARA 5-6% above full
    FasterPAM's cost and 1,000-row samples 3%, for the same time (a 1,000 x 1,000 distance
    matrix is cheap next to assigning the whole set). Pass ``sample_size`` to ``clara`` to
    choose otherwise.
    """
    return max(80 + 4 * k, MIN_SAMPLE_SIZE)


@dataclass
class ClaraResult:
    """The chosen medoids and the assignment of every row.

    ``medoids``: row indices into ``X``, sorted ascending (int64); ``labels[i]`` is the position
    in ``medoids`` of row ``i``'s nearest medoid (int32); ``sizes[j]`` the number of rows
    assigned to ``medoids[j]``; ``cost`` the sum over all rows of the Euclidean distance to
    their nearest medoid; ``sample_costs`` that total for each CLARA sample's medoids and then
    for each refinement round, in the order tried (the kept medoids are those of the lowest).
    """

    medoids: np.ndarray
    labels: np.ndarray | None
    sizes: np.ndarray | None
    cost: float
    sample_costs: list[float] = field(default_factory=list)
    seed: int = 0
    method: str = "clara"
    sample_size: int | None = None
    seconds: float = 0.0

    @property
    def k(self) -> int:
        return int(len(self.medoids))

    def summary(self) -> dict[str, Any]:
        return {"method": self.method, "k": self.k, "seed": self.seed, "cost": self.cost,
                "sample_size": self.sample_size, "sample_costs": list(self.sample_costs),
                "seconds": round(self.seconds, 3), "medoids": self.medoids.tolist(),
                "sizes": None if self.sizes is None else self.sizes.tolist()}

    def save(self, folder: str | Path) -> None:
        """Write ``clusters.json`` (medoids, sizes, costs) and ``labels.npy`` atomically."""
        folder = Path(folder)
        if self.labels is not None:
            buf = io.BytesIO()
            np.save(buf, self.labels.astype(np.int32), allow_pickle=False)
            atomic_write_bytes(folder / "labels.npy", buf.getvalue())
        atomic_write_json(folder / "clusters.json", self.summary())

    @classmethod
    def load(cls, folder: str | Path) -> "ClaraResult | None":
        """The result saved in ``folder``, or ``None`` when it is missing or unreadable."""
        folder = Path(folder)
        info = read_json(folder / "clusters.json")
        if not isinstance(info, dict) or "medoids" not in info:
            return None
        labels = None
        if (folder / "labels.npy").exists():
            try:
                labels = np.load(folder / "labels.npy", allow_pickle=False)
            except (OSError, ValueError):
                return None
        sizes = info.get("sizes")
        return cls(medoids=np.asarray(info["medoids"], dtype=np.int64), labels=labels,
                   sizes=None if sizes is None else np.asarray(sizes, dtype=np.int64),
                   cost=float(info["cost"]), sample_costs=list(info.get("sample_costs", [])),
                   seed=int(info.get("seed", 0)), method=info.get("method", "clara"),
                   sample_size=info.get("sample_size"), seconds=float(info.get("seconds", 0)))


def _device(device) -> torch.device:
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def _shape(X) -> tuple[int, int]:
    shape = getattr(X, "shape", None)
    if shape is None or len(shape) != 2:
        raise ConfigError(f"clustering needs a 2-D array [n, d], got shape {shape}")
    return int(shape[0]), int(shape[1])


def _rows(X, idx: np.ndarray) -> np.ndarray:
    """Rows ``idx`` of X as float32, read in ascending order (sequential on a memmap)."""
    idx = np.asarray(idx, dtype=np.int64)
    order = np.argsort(idx, kind="stable")
    out = np.empty((len(idx), _shape(X)[1]), dtype=np.float32)
    out[order] = np.asarray(X[idx[order]], dtype=np.float32)
    return out


def _check_k(k, n: int) -> int:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)):
        raise ConfigError(f"number of pairs must be an integer, got {k!r}")
    k = int(k)
    if k < 1:
        raise ConfigError(f"asked for {k} pairs; the number of pairs must be at least 1")
    if k > n:
        raise ConfigError(f"asked for {k} pairs but only {n} valid images")
    return k


def default_chunk_size(d: int, k: int) -> int:
    return max(1, _CHUNK_BYTES // (4 * max(d, k, 1)))


def pairwise_distances(A: np.ndarray, device=None) -> np.ndarray:
    """Euclidean distance matrix of the rows of ``A`` (float32, symmetric, zero diagonal)."""
    dev = _device(device)
    a = torch.from_numpy(np.ascontiguousarray(A, dtype=np.float32)).to(dev)
    sq = (a * a).sum(1)
    # ||a||^2 + ||b||^2 - 2ab in one matmul: at d = 16,384 explicit differences would be
    # hundreds of times slower; clamp the rounding that can take it just below zero.
    d2 = (sq[:, None] + sq[None, :] - 2.0 * (a @ a.T)).clamp_min_(0)
    d = d2.sqrt_()
    d = (d + d.T) * 0.5
    d.fill_diagonal_(0)
    return d.cpu().numpy()


def _chunk_tensor(rows, dev: torch.device) -> torch.Tensor:
    arr = np.asarray(rows)
    if arr.dtype not in (np.float16, np.float32):
        arr = arr.astype(np.float32)
    with warnings.catch_warnings():
        # a read-only memmap slice: torch warns it cannot write to it, and we never do
        warnings.simplefilter("ignore", UserWarning)
        t = torch.from_numpy(arr)
    # float16 -> float32 in torch (vectorised, threaded, on the GPU when there is one) is
    # several times faster than numpy's astype, which dominated the time per chunk.
    return t.to(dev).float()


def _assign_rows(X, m: np.ndarray, a: int, b: int, chunk: int, device,
                 row_sq: np.ndarray | None = None):
    """Nearest of the medoid rows ``m`` (float32 [k, d]) for rows a..b-1 of X, chunk by chunk:
    (labels, distances, [cost of each chunk]). Top level so that a Ray task can run it."""
    dev = _device(device)
    # A copy, not from_numpy: in a Ray task ``m`` comes from the object store read-only, and
    # from_numpy of a read-only array warns (UserWarning) in every task. The medoids are few.
    mm = torch.tensor(m, dtype=torch.float32, device=dev)
    msq = (mm * mm).sum(1)
    mt = mm.T.contiguous()
    labels = np.empty(b - a, dtype=np.int32)
    dist = np.empty(b - a, dtype=np.float32)
    costs = []
    for lo in range(a, b, chunk):
        hi = min(b, lo + chunk)
        x = _chunk_tensor(X[lo:hi], dev)
        if row_sq is not None and not np.isnan(row_sq[lo:hi]).any():
            xx = torch.from_numpy(row_sq[lo:hi]).to(dev)
        else:
            xx = torch.linalg.vector_norm(x, dim=1).square_()
            if row_sq is not None:
                row_sq[lo:hi] = xx.cpu().numpy()
        # ||x||^2 is the same for every medoid: take the argmin of ||m||^2 - 2 x.m and add
        # it back once per row instead of to the whole rows x k block.
        part = torch.addmm(msq[None, :], x, mt, alpha=-2.0)
        best, arg = part.min(1)
        dd = (best + xx).clamp_min_(0).sqrt_().cpu().numpy()
        labels[lo - a:hi - a] = arg.cpu().numpy()
        dist[lo - a:hi - a] = dd
        costs.append(float(dd.astype(np.float64).sum()))
    return labels, dist, costs


# Signature of a ``mapper``: (function, X, medoid rows, [(a, b), ...], chunk, device) -> results
# of function(X, medoid rows, a, b, chunk, device) in span order (gitd.stages.ray_session.map_spans
# runs them as Ray tasks).
Mapper = Callable[..., list]


def assign(X, medoids: Sequence[int], *, device=None, chunk_size: int | None = None,
           desc: str | None = None, row_sq: np.ndarray | None = None,
           mapper: Mapper | None = None) -> tuple[np.ndarray, np.ndarray, float]:
    """Nearest medoid of every row of ``X``, read in chunks.

    Returns ``(labels int32 [n], distances float32 [n], total cost)``; ``labels`` index into
    ``medoids`` in the order given. Memory is one chunk of rows, never n x k or n x n.
    ``row_sq``: a float32 [n] buffer of squared row norms; NaN entries are computed and
    stored, others reused (CLARA assigns the same rows once per sample).
    ``mapper``: runs spans of whole chunks elsewhere (Ray tasks, each reading its own rows);
    chunk boundaries and the order in which chunk costs are added are the same as in the local
    loop, so the result is the same to the last bit.
    """
    n, d = _shape(X)
    medoids = np.asarray(medoids, dtype=np.int64)
    chunk = chunk_size or default_chunk_size(d, len(medoids))
    check("chunk_size", int(chunk), Interval(int, 1, None))
    m = _rows(X, medoids)
    if mapper is None:
        labels = np.empty(n, dtype=np.int32)
        dist = np.empty(n, dtype=np.float32)
        costs: list[float] = []
        starts = range(0, n, chunk)
        if desc:
            starts = progress(starts, desc=desc, total=math.ceil(n / chunk), unit="chunk")
        for a in starts:
            b = min(n, a + chunk)
            lab, dd, c = _assign_rows(X, m, a, b, chunk, device, row_sq)
            labels[a:b], dist[a:b] = lab, dd
            costs.extend(c)
    else:
        n_chunks = math.ceil(n / chunk)
        per_task = max(1, math.ceil(n_chunks / _SPANS))
        spans = [(a, min(n, a + per_task * chunk)) for a in range(0, n, per_task * chunk)]
        parts = mapper(_assign_rows, X, m, spans, chunk, device)
        labels = np.concatenate([p[0] for p in parts])
        dist = np.concatenate([p[1] for p in parts])
        costs = [c for p in parts for c in p[2]]
    cost = 0.0
    for c in costs:  # in chunk order, as the local loop adds them
        cost += c
    return labels, dist, cost


# Ray tasks per assignment pass: enough to spread over a cluster and to retry a lost one cheaply.
_SPANS = 64


def _finish(X, medoids: np.ndarray, *, device, chunk_size, mapper=None, **fields) -> ClaraResult:
    medoids = np.sort(np.asarray(medoids, dtype=np.int64))
    labels, _, cost = assign(X, medoids, device=device, chunk_size=chunk_size, mapper=mapper)
    sizes = np.bincount(labels, minlength=len(medoids)).astype(np.int64)
    return ClaraResult(medoids=medoids, labels=labels, sizes=sizes, cost=cost, **fields)


def refine_medoids(X, medoids: np.ndarray, labels: np.ndarray, rng: np.random.Generator, *,
                   candidates: int = 128, reference: int = 512, device=None) -> np.ndarray:
    """One alternating k-medoids update on the whole set (Park & Jun 2009, sampled).

    CLARA's medoids are the best for a sample (by default max(80 + 4k, 1000) rows); with few
    rows per cluster in the sample they can sit off-centre in the full clusters. For each
    cluster, the member (the current medoid plus up to ``candidates`` random members) with the
    smallest summed distance to up to ``reference`` random members becomes its medoid. Returns the new
    medoids (sorted); the caller keeps them only if the full-set cost drops.
    """
    dev = _device(device)
    new = np.asarray(medoids, dtype=np.int64).copy()
    order = np.argsort(labels, kind="stable")
    bounds = np.searchsorted(labels[order], np.arange(len(medoids) + 1))
    for j in range(len(medoids)):
        members = order[bounds[j]:bounds[j + 1]]
        if len(members) <= 2:
            continue
        cand = members if len(members) <= candidates else rng.choice(members, candidates,
                                                                     replace=False)
        cand = np.unique(np.concatenate([[new[j]], cand]))
        ref = members if len(members) <= reference else rng.choice(members, reference,
                                                                   replace=False)
        c = _chunk_tensor(_rows(X, cand), dev)
        r = _chunk_tensor(_rows(X, np.sort(ref)), dev)
        d2 = ((c * c).sum(1)[:, None] + (r * r).sum(1)[None, :] - 2.0 * (c @ r.T))
        total = d2.clamp_min_(0).sqrt_().sum(1)
        new[j] = cand[int(torch.argmin(total))]
    return np.sort(new)


def clara(X, k: int, *, n_samples: int = 5, sample_size: int | None = None, seed: int = 0,
          device=None, chunk_size: int | None = None, max_iter: int = 100,
          n_cpu: int = 1, refine: int = 1, mapper: Mapper | None = None) -> ClaraResult:
    """CLARA k-medoids of the rows of ``X`` ([n, d], any float dtype, memmap welcome).

    Each of ``n_samples`` samples holds the best medoids found so far plus random rows up to
    ``sample_size`` (default ``default_sample_size(k)`` = max(80 + 4k, 1000), see there);
    FasterPAM (random initialisation, ``max_iter`` passes) runs on the sample's distance matrix;
    the whole set is then assigned to the sample's medoids in chunks (on ``device``: the GPU
    when there is one), and the medoids of lowest total cost are kept. Then up to ``refine``
    rounds of ``refine_medoids`` move each medoid towards the centre of its full cluster, each
    kept only if it lowers the total cost. When ``n <= sample_size`` FasterPAM runs once on all rows.
    Same ``seed``, same result: FasterPAM runs on one thread (``n_cpu=1``) because its parallel
    version may order swaps differently from run to run.
    """
    t0 = time.perf_counter()
    n, d = _shape(X)
    k = _check_k(k, n)
    check("n_samples", n_samples, Interval(int, 1, None))
    check("max_iter", max_iter, Interval(int, 1, None))
    check("chunk_size", chunk_size, Interval(int, 1, None), optional=True)
    if sample_size is None:
        sample_size = default_sample_size(k)
    else:
        check("sample_size", sample_size, Interval(int, 1, None))
        if sample_size < k:
            raise ConfigError(f"sample_size must be at least the number of pairs ({k}), "
                              f"got {sample_size}")
    sample_size = min(sample_size, n)
    rng = np.random.default_rng(seed)

    if n <= sample_size:
        diss = pairwise_distances(_rows(X, np.arange(n)), device)
        fit = _fasterpam(diss, k, max_iter, int(rng.integers(2**31 - 1)), n_cpu)
        res = _finish(X, fit, device=device, chunk_size=chunk_size, mapper=mapper, seed=seed,
                      sample_size=n)
        res.sample_costs = [res.cost]
        res.seconds = time.perf_counter() - t0
        return res

    best: np.ndarray | None = None
    best_labels: np.ndarray | None = None
    best_cost = math.inf
    costs: list[float] = []
    row_sq = np.full(n, np.nan, dtype=np.float32)
    for s in progress(range(n_samples), desc="CLARA samples", unit="sample"):
        fresh = rng.choice(n, size=min(n, sample_size + k), replace=False)
        if best is None:
            sample = fresh[:sample_size]
        else:
            # Standard CLARA: the best medoids so far join every later sample, so a later
            # sample can only refine them or find a better set, never lose them by chance.
            fresh = fresh[~np.isin(fresh, best)]
            sample = np.concatenate([best, fresh[:sample_size - len(best)]])
        diss = pairwise_distances(_rows(X, sample), device)
        local = _fasterpam(diss, k, max_iter, int(rng.integers(2**31 - 1)), n_cpu)
        med = np.sort(sample[local])
        labels, _, cost = assign(X, med, device=device, chunk_size=chunk_size, row_sq=row_sq,
                                 mapper=mapper)
        costs.append(cost)
        log.debug("CLARA sample %d/%d: cost %.6g", s + 1, n_samples, cost)
        if cost < best_cost:
            best, best_cost, best_labels = med, cost, labels
    check("refine", refine, Interval(int, 0, None))
    for r in range(refine):
        med = refine_medoids(X, best, best_labels, rng, device=device)
        if np.array_equal(med, best):
            break
        labels, _, cost = assign(X, med, device=device, chunk_size=chunk_size, row_sq=row_sq,
                                 mapper=mapper)
        log.debug("CLARA refinement %d: cost %.6g -> %.6g", r + 1, best_cost, cost)
        costs.append(cost)
        if cost >= best_cost:
            break
        best, best_cost, best_labels = med, cost, labels
    sizes = np.bincount(best_labels, minlength=k).astype(np.int64)
    return ClaraResult(medoids=best, labels=best_labels, sizes=sizes, cost=best_cost,
                       sample_costs=costs, seed=seed, sample_size=sample_size,
                       seconds=time.perf_counter() - t0)


def _fasterpam(diss: np.ndarray, k: int, max_iter: int, random_state: int,
               n_cpu: int) -> np.ndarray:
    import kmedoids

    fit = kmedoids.fasterpam(diss, k, max_iter=max_iter, init="random",
                             random_state=random_state, n_cpu=n_cpu)
    return np.asarray(fit.medoids, dtype=np.int64)


def random_medoids(X, k: int, seed: int = 0, *, device=None,
                   chunk_size: int | None = None) -> ClaraResult:
    """``k`` distinct rows chosen uniformly at random (the /C ablation), as a ``ClaraResult``.

    ``X`` is the data (labels, sizes and cost are then computed the same way as for CLARA) or
    just the number of rows ``n`` (then only ``medoids`` is filled; cost is NaN).
    """
    t0 = time.perf_counter()
    if isinstance(X, (int, np.integer)) and not isinstance(X, bool):
        n = int(X)
        k = _check_k(k, n)
        med = np.sort(np.random.default_rng(seed).choice(n, size=k, replace=False))
        return ClaraResult(medoids=med.astype(np.int64), labels=None, sizes=None,
                           cost=float("nan"), seed=seed, method="random",
                           seconds=time.perf_counter() - t0)
    n, _ = _shape(X)
    k = _check_k(k, n)
    med = np.random.default_rng(seed).choice(n, size=k, replace=False)
    res = _finish(X, med, device=device, chunk_size=chunk_size, seed=seed, method="random")
    res.sample_costs = [res.cost]
    res.seconds = time.perf_counter() - t0
    return res
