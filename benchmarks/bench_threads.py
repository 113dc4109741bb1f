"""Wall time of gitd's tiny commands, and of torch matrix products, at several CPU thread counts.

The measurements behind ``gitd.threads``'s rule (one thread when every model is a tiny
stand-in, torch's default otherwise). Each command runs as the user runs it, ``python -m gitd
... --threads T`` in a child process (start-up included), on the stand-in dataset:

* ``distill``: ``gitd distill --preset tiny --pairs 8`` on ``--train`` images;
* ``finetune``: ``gitd finetune --preset tiny --epochs 1`` on ``--finetune-train`` images
  (5 captions each, batch 8);
* ``evaluate``: ``gitd evaluate`` of those 8 pairs on ``--test`` images, 2 epochs, 1 seed (the
  offline EfficientNet-Lite0 and MiniLM, real sizes);
* ``matmul``: one float32 product of two N x N matrices, in this process, for N = 64, 256,
  1024 (the median of 20 products), to see where threads start to pay.

The machine's load average (other jobs) is printed beside each row: on a shared machine a
second thread that waits for a core another process holds is the main cost.

    python benchmarks/bench_threads.py --threads 1 2
    python benchmarks/bench_threads.py --what matmul --threads 1 2
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine, reproduce, table  # noqa: E402

WHAT = ("distill", "finetune", "evaluate", "matmul")


def _gitd(args: list[str], threads: int) -> float:
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS",
                                                            "MKL_NUM_THREADS")}
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "gitd", *args, "--threads", str(threads), "-q"],
                   check=True, env={**env, "HF_HUB_OFFLINE": "1"}, stdout=subprocess.DEVNULL)
    return time.perf_counter() - t0


def _matmul(n: int, threads: int) -> float:
    import torch

    torch.set_num_threads(threads)
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    times = []
    for _ in range(20):
        t0 = time.perf_counter()
        a @ b
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--what", nargs="+", choices=WHAT, default=list(WHAT))
    ap.add_argument("--train", type=int, default=400)
    ap.add_argument("--finetune-train", type=int, default=80)
    ap.add_argument("--test", type=int, default=100)
    ap.add_argument("--repeat", type=int, default=1)
    args = ap.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        if set(args.what) - {"matmul"}:
            from gitd.data.shapes import make_shapes

            make_shapes(root / "data", train=args.train, test=args.test, seed=0)
            make_shapes(root / "ft", train=args.finetune_train, test=1, seed=1)
        for what in args.what:
            for threads in args.threads:
                for r in range(args.repeat):
                    load = os.getloadavg()[0]
                    if what == "matmul":
                        for n in (64, 256, 1024):
                            rows.append([f"matmul {n}x{n}", threads, r,
                                         f"{_matmul(n, threads) * 1e3:.3f} ms", f"{load:.1f}"])
                        continue
                    out = root / f"{what}-{threads}-{r}"
                    if what == "distill":
                        cmd = ["distill", str(root / "data" / "train.json"), "--pairs", "8",
                               "--preset", "tiny", "--out", str(out)]
                    elif what == "finetune":
                        cmd = ["finetune", str(root / "ft" / "train.json"), "--out", str(out),
                               "--preset", "tiny", "--epochs", "1"]
                    else:
                        pairs = root / "pairs"
                        if not pairs.exists():
                            _gitd(["distill", str(root / "data" / "train.json"), "--pairs", "8",
                                   "--preset", "tiny", "--out", str(pairs)], 1)
                        cmd = ["evaluate", "--train", str(pairs / "annotations.json"),
                               "--test", str(root / "data" / "test.json"), "--epochs", "2",
                               "--seeds", "1", "--cache", str(out / "cache")]
                        out.mkdir()
                    rows.append([what, threads, r, f"{_gitd(cmd, threads):.1f} s",
                                 f"{load:.1f}"])
                    print(" | ".join(str(c) for c in rows[-1]), file=sys.stderr, flush=True)
    print(table(["what", "threads", "run", "wall", "load average at start"], rows))
    print(f"\n{machine()}\n{reproduce(os.path.basename(__file__), argv)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
