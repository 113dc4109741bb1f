"""What every subcommand's parser shares: one-line usage errors, and integer options whose range
``--help`` shows and parsing enforces (``--seed 2**80`` is an error here, not an overflow deep
inside numpy)."""

from __future__ import annotations

import argparse

from gitd.errors import MAX_SEED

SEED_RANGE = (0, MAX_SEED)
WORKERS_RANGE = (1, 1024)
IMAGE_SIZE_RANGE = (16, 4096)


class Parser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose usage errors are one line (the usage of a command with many
    options fills a screen and hides the message)."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def int_range(low: int, high: int):
    """An argparse ``type`` accepting a decimal integer in [low, high]."""

    def integer(text: str) -> int:
        shown = text if len(text) <= 40 else text[:37] + "..."
        try:
            value = int(text, 10)
        except ValueError:
            value = None
        if value is None or not low <= value <= high:
            raise argparse.ArgumentTypeError(f"must be an integer in [{low}, {high}], got "
                                             f"{shown!r}")
        return value

    return integer


def add_int(parser, *flags: str, range: tuple[int, int], help: str, **kwargs):
    """``parser.add_argument`` for an integer option, its range enforced and shown in help."""
    low, high = range
    return parser.add_argument(*flags, type=int_range(low, high),
                               help=f"{help} [{low}..{high}]", **kwargs)
