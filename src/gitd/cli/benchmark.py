"""`gitd benchmark DATA --test T --methods M,... --pairs K,... --out BENCH`: every method's set at
every size, evaluated the same way; one folder with the table and its costs.

The set-making flags come from ``gitd.benchmark.spec.BenchmarkSettings``, the evaluation's from
the same declarations as ``gitd evaluate``'s.
"""

from __future__ import annotations

import argparse

_OWN = {"data", "test", "out", "extra", "images", "split", "test_images", "test_split",
        "protocol", "command", "quiet", "verbose", "_run"}

# The line `gitd --help` shows; gitd.cli reads it without building this parser.
HELP = "make every method's set at every size and evaluate each the same way"


def add_parser(sub):
    from gitd.benchmark.spec import BenchmarkSettings
    from gitd.evaluation.settings import EvaluateSettings
    from gitd.retrieval.protocols import DEFAULT_PROTOCOL, PROTOCOL_PRESETS, Protocol
    from gitd.settings import add_arguments

    p = sub.add_parser(
        "benchmark", help=HELP,
        description="Make a set with each --methods entry (gitd select or gitd distill) at each "
                    "--pairs size from DATA, add --extra sets made elsewhere (a LoRS .pt, an "
                    "MTT-VL pair, a gitd output), evaluate every set with the same protocol and "
                    "seeds on --test, and write BENCH: the sets, their results, each cell's cost "
                    "(wall time, device) and table.md. Re-running resumes cell by cell. "
                    "'gitd report BENCH' renders the table and the recall-versus-pairs plot.",
        epilog="The stand-in on a CPU: gitd shapes data --train 2000 --test 300 --size 128 && "
               "gitd benchmark data/train.json --test data/test.json --methods random,herding "
               "--pairs 50,100 --epochs 100 --image-size 128 --freeze-image --out bench",
        argument_default=argparse.SUPPRESS)
    p.add_argument("data", metavar="DATA", help="the training data the sets are made from")
    p.add_argument("--test", required=True, metavar="T", help="the test set every set is "
                                                              "evaluated on")
    p.add_argument("--out", "-o", required=True, metavar="BENCH", help="the benchmark folder")
    p.add_argument("--extra", action="append", metavar="NAME=PATH",
                   help="a set made elsewhere (repeat the flag for several)")
    p.add_argument("--images", metavar="ROOT", help="image root of DATA")
    p.add_argument("--split", help="split of DATA where it holds several (default train)")
    p.add_argument("--test-images", metavar="ROOT", help="image root of --test")
    p.add_argument("--test-split", metavar="SPLIT", help="split of --test (default test)")
    p.add_argument("--protocol", choices=list(PROTOCOL_PRESETS),
                   help=f"evaluation protocol of every cell (default {DEFAULT_PROTOCOL})")
    add_arguments(p, [("benchmark", BenchmarkSettings)])
    add_arguments(p, [("protocol", Protocol), ("evaluate", EvaluateSettings)])
    return p


def run(args) -> int:
    from gitd.benchmark.run import run_benchmark

    given = vars(args)
    evaluation = {k: v for k, v in given.items() if k not in _OWN
                  and k not in ("methods", "pairs", "set_seed", "preset", "config")}
    result = run_benchmark(
        args.data, args.test, args.out, extras=given.get("extra") or [],
        **{k: given[k] for k in ("methods", "pairs", "set_seed", "preset", "config")
           if k in given},
        images=given.get("images"), split=given.get("split"),
        test_images=given.get("test_images"), test_split=given.get("test_split"),
        protocol=given.get("protocol", "gitd"), **evaluation)
    print(result["table"])
    print(f"benchmark: {result['out']} (gitd report {result['out']} renders it)")
    return 0
