"""What every subcommand's parser shares: one-line usage errors, and integer options whose range
``--help`` shows and parsing enforces (``--seed 2**80`` is an error here, not an overflow deep
inside numpy). Options that are declared settings get the same from ``gitd.settings``; these
helpers serve the commands' own options, with the same parsing (``Interval.arg_type``)."""

from __future__ import annotations

import argparse

from gitd.errors import MAX_SEED
from gitd.settings import Interval

SEED_RANGE = (0, MAX_SEED)
WORKERS_RANGE = (1, 1024)
IMAGE_SIZE_RANGE = (16, 4096)
THREADS_RANGE = (1, 1024)


class Parser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose usage errors are one line (the usage of a command with many
    options fills a screen and hides the message) and that takes no abbreviated option: by
    default argparse reads ``--pair 8`` as ``--pairs 8`` and reports a misspelt ``--ouput`` as
    a missing ``--out``, and an abbreviation that works today breaks when a flag is added.
    Subcommand parsers are made with this class too (argparse passes it on)."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def parse_known_args(self, args=None, namespace=None):
        # argparse reports a missing required option before an unknown one, so a misspelt
        # `--ouput DIR` read as "the following arguments are required: --out"; name it first.
        # (A command's parser; the top-level one hands its words to the command's.)
        if args is not None and self._subparsers is None:
            words = list(args)
            words = words[:words.index("--")] if "--" in words else words
            unknown = [w.split("=", 1)[0] for w in words if w.startswith("--")
                       and w.split("=", 1)[0] not in self._option_string_actions]
            if unknown:
                import difflib

                close = difflib.get_close_matches(unknown[0], list(self._option_string_actions),
                                                  n=1)
                hint = f" (did you mean {close[0]}?)" if close else ""
                self.error(f"unrecognized arguments: {' '.join(unknown)}{hint}")
        return super().parse_known_args(args, namespace)

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def add_threads(parser) -> None:
    """``--threads N``, for the commands that run models (``gitd.threads``)."""
    add_int(parser, "--threads", range=THREADS_RANGE, metavar="N", default=argparse.SUPPRESS,
            help="CPU threads for torch (default: 1 when every model is a tiny stand-in, where "
                 "more threads only slow the small matrix products down, else torch's default, "
                 "one per core); on a CPU the count changes the last bits of results, so it is "
                 "part of the cache keys")


def add_int(parser, *flags: str, range: tuple[int, int], help: str, **kwargs):
    """``parser.add_argument`` for an integer option, its range enforced and shown in help."""
    low, high = range
    return parser.add_argument(*flags, type=Interval(int, low, high).arg_type(),
                               help=f"{help} [{low}..{high}]", **kwargs)
