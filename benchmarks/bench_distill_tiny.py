"""Per-stage wall time of `gitd distill --preset tiny` on the stand-in dataset (CPU).

Each repeat distils into a fresh output and work folder (nothing cached), in this process, and
reads the per-stage seconds from the manifest. Prints medians over repeats for each torch
thread count asked for, and the command that reproduces the table.

    python benchmarks/bench_distill_tiny.py --train 400 --pairs 8 --repeat 3 --threads 1 2
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

from gitd.config import make_config
from gitd.data.shapes import make_shapes
from gitd.log import setup_logging
from gitd.methods import distill
from gitd.threads import request_threads

STAGES = ("load", "encode", "cluster", "img2img", "caption", "output")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--train", type=int, default=400)
    ap.add_argument("--pairs", type=int, default=8)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--batches", type=int, nargs="+", default=[0],
                    help="medoids per img2img call and images per captioner call; 0 = the "
                         "preset's (4 and 8); 1 = unbatched")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--preset", default="tiny", help="tiny (offline); paper or fast need the "
                                                       "real weights on disk")
    ap.add_argument("--device", default="cpu", help="cpu, cuda, ...")
    args = ap.parse_args(argv)
    setup_logging(quiet=True)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"
        make_shapes(data, train=args.train, test=1, seed=args.seed)
        for threads, batch in [(t, b) for t in args.threads for b in args.batches]:
            # As --threads does: gitd would otherwise choose one thread for the tiny models.
            request_threads(threads)
            runs = []
            extra = {"generate_batch_size": batch, "caption_batch_size": batch} if batch else {}
            for r in range(args.repeat):
                out = Path(tmp) / f"out-{threads}-{batch}-{r}"
                t0 = time.perf_counter()
                distill(data / "train.json", out,
                        make_config(args.preset, pairs=args.pairs,
                                                  seed=args.seed, device=args.device, **extra))
                total = time.perf_counter() - t0
                timings = json.loads((out / "manifest.json").read_text())["timings"]
                runs.append({**{s: timings.get(s, 0.0) for s in STAGES}, "total": total})
            med = {k: statistics.median(run[k] for run in runs) for k in (*STAGES, "total")}
            rows.append((threads, batch or "preset (4 / 8)", med))
    print(f"| torch threads | batch | {' | '.join(STAGES)} | total (s) | per pair (s) |")
    print("|---" * (len(STAGES) + 4) + "|")
    for threads, batch, med in rows:
        cells = " | ".join(f"{med[s]:.2f}" for s in STAGES)
        print(f"| {threads} | {batch} | {cells} | {med['total']:.2f} | "
              f"{med['total'] / args.pairs:.2f} |")
    print(f"\n{args.train} stand-in images, {args.pairs} pairs, median of "
          f"{args.repeat} runs each, preset {args.preset} on {args.device}.\ncommand: python benchmarks/bench_distill_tiny.py "
          + " ".join(sys.argv[1:]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
