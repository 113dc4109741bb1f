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


class Parser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose usage errors are one line (the usage of a command with many
    options fills a screen and hides the message)."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def add_int(parser, *flags: str, range: tuple[int, int], help: str, **kwargs):
    """``parser.add_argument`` for an integer option, its range enforced and shown in help."""
    low, high = range
    return parser.add_argument(*flags, type=Interval(int, low, high).arg_type(),
                               help=f"{help} [{low}..{high}]", **kwargs)
