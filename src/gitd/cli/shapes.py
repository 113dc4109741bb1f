"""`gitd shapes OUT`: write the built-in procedural stand-in dataset."""

from __future__ import annotations

from gitd.cli.options import SEED_RANGE, WORKERS_RANGE, add_int

# The line `gitd --help` shows; gitd.cli reads it without building this parser.
HELP = "write a procedural image-caption dataset (coloured shapes, 5 captions each)"


def add_parser(sub):
    from gitd.data.shapes import (DEFAULT_SIZE, DEFAULT_TEST, DEFAULT_TRAIN, MAX_IMAGES,
                                  MAX_SIZE, MIN_SIZE)

    p = sub.add_parser(
        "shapes", help=HELP,
        description="Write a compositional image-caption dataset of coloured shapes to OUT: "
                    "OUT/train.json and OUT/test.json (BLIP format), OUT/images/, "
                    "OUT/scenes.jsonl, OUT/info.json. The same settings give byte-identical "
                    "files; re-running over OUT with the same seed and size resumes.")
    p.add_argument("out", metavar="OUT", help="output folder (created if missing)")
    add_int(p, "--train", range=(1, MAX_IMAGES), default=DEFAULT_TRAIN,
            help=f"training images (default {DEFAULT_TRAIN})")
    add_int(p, "--test", range=(1, MAX_IMAGES), default=DEFAULT_TEST,
            help=f"test images (default {DEFAULT_TEST})")
    add_int(p, "--size", range=(MIN_SIZE, MAX_SIZE), default=DEFAULT_SIZE,
            help=f"image side in pixels (default {DEFAULT_SIZE})")
    add_int(p, "--seed", range=SEED_RANGE, default=0, help="random seed (default 0)")
    add_int(p, "--workers", range=WORKERS_RANGE, default=None,
            help="processes drawing images (default: one per available CPU core)")
    return p


def run(args) -> int:
    from gitd.data.shapes import make_shapes

    summary = make_shapes(args.out, train=args.train, test=args.test, size=args.size,
                          seed=args.seed, workers=args.workers)
    print(f"wrote {summary['train']} train + {summary['test']} test images "
          f"({summary['size']}px, seed {summary['seed']}) to {summary['out']}: "
          f"{summary['train_json']}, {summary['test_json']}")
    return 0
