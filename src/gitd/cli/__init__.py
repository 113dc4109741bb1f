"""Command line: argument parsing only. Each subcommand lives in its own module under
``gitd.cli`` with ``add_parser(subparsers)`` and ``run(args) -> int`` and calls one public
library function; no pipeline logic lives here.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from gitd import __version__
from gitd.errors import GitdError
from gitd.log import setup_logging

# Module names under gitd.cli, in the order `gitd --help` lists them.
COMMANDS = ("shapes", "check", "distill", "select", "evaluate", "report", "export")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gitd",
        description="Distil an image-caption dataset into a few synthetic pairs that still train "
                    "a retrieval model, and evaluate the result honestly.",
        epilog="Run 'gitd COMMAND --help' for a command's options. Typical flow: gitd shapes data/ "
               "&& gitd check data/train.json && gitd distill data/train.json --pairs 8 --preset "
               "tiny --out out/ && gitd evaluate --train out/annotations.json --test data/test.json",
    )
    parser.add_argument("--version", action="version", version=f"gitd {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        module = importlib.import_module(f"gitd.cli.{name}")
        p = module.add_parser(sub)
        p.add_argument("-q", "--quiet", action="store_true",
                       help="no progress bars or info logs (warnings and errors still go to stderr)")
        p.add_argument("-v", "--verbose", action="store_true", help="debug logs")
        p.set_defaults(_run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "_run", None):
        parser.print_help()
        return 2
    setup_logging(quiet=getattr(args, "quiet", False), verbose=getattr(args, "verbose", False))
    try:
        return int(args._run(args) or 0)
    except GitdError as exc:
        print(f"gitd {args.command}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print(f"gitd {args.command}: interrupted; finished work is kept, re-run the same "
              "command to resume", file=sys.stderr)
        return 130
