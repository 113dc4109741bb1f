"""What each selected training set of bench_retrieval.py contains, from the stand-in's ground truth.

For every ``METHOD-K`` folder under the benchmark's work folder, reads the selected images
(``manifest.json`` items) and their scenes (``data/scenes.jsonl``, written by ``gitd shapes``)
and prints a markdown table: objects per image (the whole training set averages about 2.1),
distinct (shape, colour) objects covered (100 exist) and distinct background colours.

    python benchmarks/selection_coverage.py                      # runs/bench-retrieval
    python benchmarks/selection_coverage.py --work runs/bench-retrieval --sizes 50 100
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import table  # noqa: E402


def scenes_of(data: Path) -> dict[str, dict]:
    out = {}
    with open(data / "scenes.jsonl", encoding="utf-8") as f:
        for line in f:
            row = json.loads(line)
            if row["split"] == "train":
                out[row["image"]] = row["scene"]
    return out


def coverage(scenes: list[dict]) -> tuple[float, int, int]:
    objects = [o for s in scenes for o in s["objects"]]
    return (len(objects) / len(scenes), len({(o["shape"], o["colour"]) for o in objects}),
            len({s["background"]["colour"] for s in scenes}))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", type=Path, default=ROOT / "runs" / "bench-retrieval")
    ap.add_argument("--sizes", type=int, nargs="+", default=[50, 100, 200])
    args = ap.parse_args(argv)
    scenes = scenes_of(args.work / "data")
    mean, pairs, backgrounds = coverage(list(scenes.values()))
    rows = [["whole training set", len(scenes), f"{mean:.2f}", pairs, backgrounds]]
    for k in args.sizes:
        for manifest in sorted(args.work.glob(f"*-{k}/manifest.json")):
            items = json.loads(manifest.read_text())["items"]
            mean, pairs, backgrounds = coverage([scenes[i["source_id"]] for i in items])
            rows.append([manifest.parent.name.removesuffix(f"-{k}"), k, f"{mean:.2f}", pairs,
                         backgrounds])
    print(table(["training set", "images", "objects per image", "distinct (shape, colour)",
                 "background colours"], rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
