"""Benchmark gitd's CLARA against full FasterPAM, scikit-learn KMeans and a naive CLARA.

Data: a synthetic Gaussian mixture shaped like flattened SD latents (float16 memmap [n, d],
300 centres with uneven weights, unit-variance centres, within-cluster sd 0.5), cached under
--data-dir. Every method runs in its own child process (see _common.py for what the memory
columns mean) and its medoids are scored with the same chunked Euclidean assignment, so the
cost column compares like with like (KMeans: the cost of its centroids, which are not data
points -- shown for reference only).

Methods
  gitd    gitd.stages.clara.clara (5 samples of 80+4k, FasterPAM, best medoids carried into
          later samples, chunked torch assignment straight from the float16 memmap)
  full    kmedoids.fasterpam on the full n x n float32 distance matrix (only n <= --full-max-n)
  kmeans  sklearn.cluster.KMeans(k, n_init=1) on a float32 copy (speed reference)
  naive   a plain sampled-PAM loop: 5 independent samples of 40+2k, numpy distance matrices,
          kmedoids.pam (BUILD+SWAP), whole-set assignment as one unchunked float32 n x k matrix

Usage
  python benchmarks/bench_cluster.py --quick
  python benchmarks/bench_cluster.py --n 10000 29000 --d 16384 --k 100
  python benchmarks/bench_cluster.py            # the whole grid (hours on 2 cores)
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import PeakMemory, emit, fmt, machine, run_child, table  # noqa: E402

METHODS = ("gitd", "full", "kmeans", "naive")
CENTRES = 300


def data_path(data_dir: Path, n: int, d: int, seed: int) -> Path:
    return data_dir / f"mixture-n{n}-d{d}-c{CENTRES}-s{seed}.npy"


def make_data(data_dir: Path, n: int, d: int, seed: int = 0) -> Path:
    """Write the mixture once, a block of rows at a time (never n x d float32 in RAM)."""
    path = data_path(data_dir, n, d, seed)
    done = path.with_suffix(".done")
    if path.exists() and done.exists():
        return path
    data_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((CENTRES, d), dtype=np.float32)
    weights = rng.dirichlet(np.full(CENTRES, 2.0))
    mm = np.lib.format.open_memmap(path, mode="w+", dtype=np.float16, shape=(n, d))
    block = max(1, (64 << 20) // (4 * d))
    for a in range(0, n, block):
        b = min(n, a + block)
        which = rng.choice(CENTRES, size=b - a, p=weights)
        noise = rng.standard_normal((b - a, d), dtype=np.float32)
        noise *= 0.5
        noise += centres[which]
        mm[a:b] = noise
    mm.flush()
    del mm
    done.write_text("ok\n")
    return path


def _centre_cost(X, C: np.ndarray, chunk: int = 2048) -> float:
    import torch
    c = torch.from_numpy(np.ascontiguousarray(C, dtype=np.float32))
    csq = (c * c).sum(1)
    total = 0.0
    for a in range(0, X.shape[0], chunk):
        x = torch.from_numpy(np.asarray(X[a:a + chunk], dtype=np.float32))
        d2 = ((x * x).sum(1)[:, None] + csq[None, :] - 2 * x @ c.T).clamp_min_(0)
        total += float(d2.min(1).values.sqrt().double().sum())
    return total


def _naive_clara(X, k: int, seed: int, n_samples: int = 5):
    import kmedoids
    rng = np.random.default_rng(seed)
    n = X.shape[0]
    Xf = np.asarray(X, dtype=np.float32)  # the naive way: the whole set as float32 in RAM
    sq = (Xf * Xf).sum(1)
    best, best_cost = None, np.inf
    size = min(n, 40 + 2 * k)
    for _ in range(n_samples):
        s = np.sort(rng.choice(n, size=size, replace=False))
        S = Xf[s]
        D = np.sqrt(np.maximum(sq[s, None] + sq[None, s] - 2 * S @ S.T, 0))
        np.fill_diagonal(D, 0)
        med = s[np.asarray(kmedoids.pam(D, k, random_state=int(rng.integers(2**31))).medoids)]
        M = Xf[med]
        full = np.sqrt(np.maximum(sq[:, None] + sq[None, med] - 2 * Xf @ M.T, 0))  # n x k
        cost = float(full.min(1).astype(np.float64).sum())
        if cost < best_cost:
            best, best_cost = med, cost
    return np.sort(best)


def worker(args) -> None:
    import torch
    torch.set_num_threads(args.threads)
    from gitd.stages.clara import assign, clara, pairwise_distances

    X = np.load(args.data, mmap_mode="r")
    n, _ = X.shape
    with PeakMemory() as mem:
        t0 = time.perf_counter()
        if args.worker == "gitd":
            medoids = clara(X, args.k, seed=args.seed, device="cpu").medoids
        elif args.worker == "full":
            import kmedoids
            D = pairwise_distances(np.asarray(X, dtype=np.float32), "cpu")
            medoids = np.asarray(kmedoids.fasterpam(D, args.k, random_state=args.seed,
                                                    n_cpu=args.threads).medoids)
            del D
        elif args.worker == "kmeans":
            from sklearn.cluster import KMeans
            km = KMeans(args.k, n_init=1, random_state=args.seed).fit(
                np.asarray(X, dtype=np.float32))
            medoids = None
        elif args.worker == "naive":
            medoids = _naive_clara(X, args.k, args.seed)
        else:
            raise SystemExit(f"unknown method {args.worker}")
        seconds = time.perf_counter() - t0
    if medoids is None:
        cost = _centre_cost(X, km.cluster_centers_)
    else:
        cost = assign(X, medoids, device="cpu")[2]
    emit({"seconds": seconds, "cost": cost, **mem.report()})


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, nargs="+", default=[10_000, 30_000, 100_000])
    p.add_argument("--d", type=int, nargs="+", default=[4096, 16384])
    p.add_argument("--k", type=int, nargs="+", default=[100, 1000])
    p.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    p.add_argument("--quick", action="store_true", help="n=10000, d=4096, k=100 only")
    p.add_argument("--full-max-n", type=int, default=10_000,
                   help="run full FasterPAM only up to this n (it needs n^2 floats)")
    p.add_argument("--repeat", type=int, default=1, help="runs per cell; the median is shown")
    p.add_argument("--timeout", type=float, default=900, help="seconds per method run")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data-dir", type=Path, default=Path("/tmp/gitd-bench-data"))
    p.add_argument("--json", type=Path, help="also write every result here")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    p.add_argument("--data", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        args.k = args.k[0]
        worker(args)
        return 0
    if args.quick:
        args.n, args.d, args.k = [10_000], [4096], [100]

    print(f"machine: {machine()}", file=sys.stderr)
    rows, results = [], []
    for d in args.d:
        for n in args.n:
            path = make_data(args.data_dir, n, d, args.seed)
            for k in args.k:
                cell = {}
                for m in args.methods:
                    if m == "full" and n > args.full_max_n:
                        continue
                    runs = []
                    for r in range(args.repeat):
                        res = run_child([__file__, "--worker", m, "--data", str(path),
                                         "--k", str(k), "--seed", str(args.seed + r),
                                         "--threads", str(args.threads)], args.timeout)
                        runs.append(res)
                        print(f"n={n} d={d} k={k} {m} run {r + 1}: {json.dumps(res)}",
                              file=sys.stderr, flush=True)
                        if "error" in res:
                            break
                    ok = [x for x in runs if "error" not in x]
                    if ok:
                        med = {key: float(np.median([x[key] for x in ok])) for key in ok[0]}
                        med["runs"] = len(ok)
                    else:
                        med = {"error": runs[-1]["error"]}
                    cell[m] = med
                    results.append({"n": n, "d": d, "k": k, "method": m, **med})
                ref = cell.get("full", {}).get("cost")
                for m, res in cell.items():
                    if "error" in res:
                        rows.append([n, d, k, m, res["error"], "-", "-", "-", "-"])
                        continue
                    ratio = fmt(res["cost"] / ref, ".4f") if ref else "-"
                    rows.append([n, d, k, m + (" (centroids)" if m == "kmeans" else ""),
                                 fmt(res["seconds"]), fmt(res["peak_private_mib"], ".0f"),
                                 fmt(res["peak_rss_mib"], ".0f"), fmt(res["cost"], ".5g"),
                                 ratio])
    if args.json:
        args.json.write_text(json.dumps(results, indent=1) + "\n")
    print(table(["n", "d", "k", "method", "time s", "peak private MiB", "peak RSS MiB",
                 "cost", "cost / full"], rows))
    print()
    print(f"machine: {machine()}; runs per cell: {args.repeat} (median)")
    cmd = [Path(sys.executable).name, "benchmarks/bench_cluster.py",
           *(sys.argv[1:] if argv is None else argv)]
    print("reproduce: " + " ".join(shlex.quote(c) for c in cmd))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
