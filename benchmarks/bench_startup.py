"""Start-up time of the CLI: ``gitd --help`` and ``gitd check`` on 8 images, as child processes.

``--src DIR ...`` compares source trees (e.g. another checkout's ``src``); the runs alternate
between them so that the machine's load falls on each alike. Prints the median wall time.

    python benchmarks/bench_startup.py --src src ../main/src --repeat 7
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


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--src", nargs="+", default=[str(Path(__file__).resolve().parents[1] / "src")])
    ap.add_argument("--repeat", type=int, default=7)
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        from gitd.data.shapes import make_shapes

        make_shapes(Path(tmp) / "data", train=8, test=1, size=32, seed=0, workers=1)
        commands = {"gitd --help": ["--help"],
                    "gitd check (8 images)": ["check", str(Path(tmp) / "data" / "train.json")]}
        times: dict[tuple[str, str], list[float]] = {}
        loads = []
        for _ in range(args.repeat):
            for label, cmd in commands.items():
                for src in args.src:
                    loads.append(os.getloadavg()[0])
                    env = {**os.environ, "PYTHONPATH": str(Path(src).resolve())}
                    t0 = time.perf_counter()
                    subprocess.run([sys.executable, "-m", "gitd", *cmd], env=env, check=False,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                    times.setdefault((label, src), []).append(time.perf_counter() - t0)
    rows = [[label, src, f"{statistics.median(t):.2f} s", f"{min(t):.2f}-{max(t):.2f} s"]
            for (label, src), t in times.items()]
    print(table(["command", "sources", f"median of {args.repeat}", "range"], rows))
    print(f"\nload average during the runs: {min(loads):.1f}-{max(loads):.1f}\n{machine()}\n"
          f"{reproduce(os.path.basename(__file__), argv)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
