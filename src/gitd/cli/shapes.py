"""`gitd shapes OUT`: write the built-in procedural stand-in dataset."""

from __future__ import annotations

from gitd.data.shapes import DEFAULT_SIZE, DEFAULT_TEST, DEFAULT_TRAIN, MIN_SIZE, make_shapes


def add_parser(sub):
    p = sub.add_parser(
        "shapes", help="write a procedural image-caption dataset (coloured shapes, 5 captions each)",
        description="Write a compositional image-caption dataset of coloured shapes to OUT: "
                    "OUT/train.json and OUT/test.json (BLIP format), OUT/images/, "
                    "OUT/scenes.jsonl, OUT/info.json. The same settings give byte-identical "
                    "files; re-running over OUT with the same seed and size resumes.")
    p.add_argument("out", metavar="OUT", help="output folder (created if missing)")
    p.add_argument("--train", type=int, default=DEFAULT_TRAIN,
                   help=f"training images (default {DEFAULT_TRAIN})")
    p.add_argument("--test", type=int, default=DEFAULT_TEST,
                   help=f"test images (default {DEFAULT_TEST})")
    p.add_argument("--size", type=int, default=DEFAULT_SIZE,
                   help=f"image side in pixels, >= {MIN_SIZE} (default {DEFAULT_SIZE})")
    p.add_argument("--seed", type=int, default=0, help="random seed, >= 0 (default 0)")
    p.add_argument("--workers", type=int, default=None,
                   help="processes drawing images (default: one per available CPU core)")
    return p


def run(args) -> int:
    summary = make_shapes(args.out, train=args.train, test=args.test, size=args.size,
                          seed=args.seed, workers=args.workers)
    print(f"wrote {summary['train']} train + {summary['test']} test images "
          f"({summary['size']}px, seed {summary['seed']}) to {summary['out']}: "
          f"{summary['train_json']}, {summary['test_json']}")
    return 0
