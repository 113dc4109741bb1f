"""`gitd select DATA --method M --pairs K --out OUT`: coreset baselines in gitd's output format.

The selections and their flags come from the registry (``gitd.registry``, kind ``select``).
"""

from __future__ import annotations

import argparse

# The line `gitd --help` shows; gitd.cli reads it without building this parser.
HELP = "pick K real pairs with a coreset baseline (random, herding, ...)"


def add_parser(sub):
    from gitd.registry import get_method, list_methods
    from gitd.methods.coreset import SelectSettings
    from gitd.settings import add_argument_for, add_arguments

    methods = list_methods("select")
    listing = "; ".join(get_method(m, "select").summary().rstrip(".") for m in methods)
    p = sub.add_parser(
        "select", help=HELP,
        description="Select K real image-caption pairs of DATA and write them to OUT in the same "
                    "format as 'gitd distill' (images copied, annotations.json, metadata.jsonl, "
                    f"manifest.json). {listing}. Features are L2-normalised image ++ text "
                    "features of the evaluation encoders (cached). See docs/coresets.md.",
        argument_default=argparse.SUPPRESS)
    p.add_argument("data", help="annotation file or folder (any format gitd reads)")
    # Not argparse choices: an unknown method is the registry's one-line error (exit 2).
    p.add_argument("--method", "-m", required=True, metavar="{" + ",".join(methods) + "}",
                   help="selection method")
    add_argument_for(p, SelectSettings, "pairs", help="number of pairs (not needed for full)")
    p.add_argument("--out", "-o", required=True, help="output folder")
    p.add_argument("--images", metavar="ROOT", help="image root for relative paths")
    p.add_argument("--split", help="split of a Karpathy file (default train, which includes "
                                   "restval) or sub-folder of a Hugging Face split layout "
                                   "(DATA/train/metadata.jsonl)")
    p.add_argument("--strict", action="store_true", help="stop at the first bad input row")
    p.add_argument("--allow-outside-root", action="store_true",
                   help="follow image paths that resolve outside the image root")
    add_arguments(p, [(m, get_method(m, "select").Settings) for m in methods],
                  defaults={m: get_method(m, "select").configure() for m in methods})
    return p


_LOADING = {"data", "out", "method", "pairs", "images", "split", "strict", "allow_outside_root",
            "command", "quiet", "verbose", "_run"}


def run(args) -> int:
    from gitd.methods.coreset import select_coreset

    given = vars(args)
    settings = {k: v for k, v in given.items() if k not in _LOADING}
    out = select_coreset(args.data, args.method, given.get("pairs"), args.out,
                         images=given.get("images"), split=given.get("split", "train"),
                         strict=given.get("strict", False),
                         allow_outside_root=given.get("allow_outside_root", False), **settings)
    print(out)
    return 0
