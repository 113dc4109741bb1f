"""`gitd evaluate`: train a retrieval model on a training set and score it on a test set.

Every setting flag is generated from the declared settings of the protocol
(``gitd.retrieval.protocols.Protocol``) and of the run (``gitd.evaluation.settings``);
``--protocol`` picks the preset the protocol starts from. The sets and the results file are the
command's own arguments.
"""

from __future__ import annotations

import argparse

_SETS = {"train", "test", "val", "images", "test_images", "val_images", "train_split",
         "test_split", "val_split", "out", "protocol"}

# The line `gitd --help` shows; gitd.cli reads it without building this parser.
HELP = "train a retrieval model on a (distilled) set and score it on a test set"


def add_parser(sub):
    from gitd.cli._splits import add_split_options
    from gitd.evaluation.settings import EvaluateSettings
    from gitd.retrieval.protocols import DEFAULT_PROTOCOL, PROTOCOL_PRESETS, Protocol
    from gitd.settings import add_arguments

    p = sub.add_parser(
        "evaluate", help=HELP,
        description="Train the retrieval model (image encoder, frozen text encoder + projection "
                    "head) on --train under a paper's evaluation protocol and report image-text "
                    "retrieval on --test: TR@1/5/10, IR@1/5/10 and r_mean, mean ± sample std over "
                    "seeds, from the LAST epoch (or the epoch chosen on --val). --train may be a "
                    "LoRS / RepBlend distilled_N.pt or an MTT-VL images_best.pt + labels_best.pt. "
                    "Comma-separated --image-model / --text-model lists evaluate every encoder "
                    "pair and their mean. Results table on stdout, logs on stderr.",
        epilog="CPU: use --epochs 5 --image-size 128, e.g. gitd evaluate --train "
               "out/annotations.json --test data/test.json --epochs 5 --image-size 128 (or "
               "--freeze-image --epochs 50). See docs/evaluation.md.",
        argument_default=argparse.SUPPRESS)
    p.add_argument("--train", required=True, metavar="T",
                   help="training set: annotation file or folder (e.g. gitd's OUT), or a LoRS / "
                        "RepBlend distilled_N.pt, or an MTT-VL images_best.pt (with its "
                        "labels_best.pt) or their folder")
    p.add_argument("--test", required=True, metavar="S", help="test set annotation file or folder")
    p.add_argument("--val", metavar="V", help="validation set: picks the reported epoch")
    add_split_options(p, ("train", "test", "val"))
    p.add_argument("--images", metavar="ROOT", help="image root of --train (default: its folder)")
    p.add_argument("--test-images", metavar="ROOT",
                   help="image root of --test (default: its folder, or the root the training "
                        "pairs' manifest records for that file)")
    p.add_argument("--val-images", metavar="ROOT", help="image root of --val (as --test-images)")
    p.add_argument("--protocol", choices=list(PROTOCOL_PRESETS),
                   help=f"the paper whose evaluator to follow (default: {DEFAULT_PROTOCOL}); "
                        "the flags below override its settings")
    p.add_argument("--out", metavar="results.json",
                   help="write every seed's per-epoch metrics, the config and the summary here")
    add_arguments(p, [("protocol", Protocol), ("evaluate", EvaluateSettings)])
    return p


def run(args: argparse.Namespace) -> int:
    from gitd.evaluation.evaluate import evaluate, format_table

    given = vars(args)
    settings = {k: v for k, v in given.items()
                if k not in _SETS and k not in ("command", "quiet", "verbose", "_run")}
    results = evaluate(
        args.train, args.test, val=given.get("val"), images=given.get("images"),
        test_images=given.get("test_images"), val_images=given.get("val_images"),
        train_split=given.get("train_split"), test_split=given.get("test_split"),
        val_split=given.get("val_split"), out=given.get("out"),
        protocol=given.get("protocol", "gitd"), **settings)
    print(format_table(results))
    if given.get("out"):
        print(f"results: {given['out']}")
    return 0
