"""`gitd check DATA`: validate a dataset and list every problem, one line each."""

from __future__ import annotations

from gitd.cli.options import WORKERS_RANGE, add_int

# The line `gitd --help` shows; gitd.cli reads it without building this parser.
HELP = "validate a dataset: every row, every caption, every image decoded"


def add_parser(sub):
    p = sub.add_parser(
        "check", help=HELP,
        description="Validate an image-caption dataset (BLIP/LoRS JSON, Karpathy split file, "
                    "COCO captions JSON, Hugging Face imagefolder, or a gitd output folder). "
                    "Prints a summary, then one line per problem. Exit status: 0 clean, "
                    "1 problems found, 2 dataset unreadable.")
    p.add_argument("data", metavar="DATA",
                   help="annotation file, or a folder with annotations.json / metadata.jsonl / "
                        "metadata.csv")
    p.add_argument("--images", metavar="ROOT", default=None,
                   help="image root (default: the annotation file's folder)")
    p.add_argument("--split", default="train",
                   help="split to check: of a Karpathy file ('train', the default, includes "
                        "'restval'; 'all' takes all) or the sub-folder of a Hugging Face split "
                        "layout (DATA/train/metadata.jsonl)")
    p.add_argument("--allow-outside-root", action="store_true",
                   help="accept image paths outside the image root (.., absolute, symlinks)")
    add_int(p, "--workers", range=WORKERS_RANGE, default=None,
            help="processes that decode images (default: all CPUs)")
    p.add_argument("--json", action="store_true", help="print the summary and problems as JSON")
    return p


def run(args) -> int:
    from gitd.data.check import check_dataset

    report = check_dataset(args.data, args.images, split=args.split,
                           allow_outside_root=args.allow_outside_root, workers=args.workers)
    print(report.to_json() if args.json else report.format_text())
    return report.exit_code
