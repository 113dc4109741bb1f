"""Logging and progress bars.

Logs and progress go to stderr; results go to stdout. ``set_quiet(True)`` (the CLI's ``--quiet``)
silences progress bars and info logs, leaving warnings and errors.
"""

from __future__ import annotations

import logging
import sys
from typing import Iterable, Iterator, TypeVar

from tqdm.auto import tqdm

T = TypeVar("T")

logger = logging.getLogger("gitd")
_quiet = False


def get_logger(name: str | None = None) -> logging.Logger:
    return logger if not name else logger.getChild(name.removeprefix("gitd."))


def setup_logging(quiet: bool = False, verbose: bool = False) -> None:
    global _quiet
    _quiet = quiet
    level = logging.WARNING if quiet else (logging.DEBUG if verbose else logging.INFO)
    logger.setLevel(level)
    if not any(isinstance(h, _StderrHandler) for h in logger.handlers):
        handler = _StderrHandler()
        handler.setFormatter(logging.Formatter("gitd: %(message)s"))
        logger.addHandler(handler)
    logger.propagate = False


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is at emit time, not at set-up time, so a handler made
    once keeps working when stderr is swapped (pytest's capture, a notebook, redirect_stderr)."""

    def __init__(self):
        super().__init__(sys.stderr)

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value):
        pass


def is_quiet() -> bool:
    return _quiet


def progress(iterable: Iterable[T] | None = None, *, desc: str = "", total: int | None = None,
             unit: str = "it", leave: bool = False) -> Iterator[T] | tqdm:
    """A tqdm bar on stderr, hidden when quiet (or when stderr is not a terminal and short)."""
    return tqdm(iterable, desc=desc, total=total, unit=unit, leave=leave,
                disable=_quiet, file=sys.stderr, dynamic_ncols=True)


def close_bars() -> None:
    """Close every progress bar still open (a run stopped by an error or Ctrl-C), so the line
    that says why starts on a clean line of its own."""
    for bar in list(getattr(tqdm, "_instances", ())):
        try:
            bar.close()
        except Exception:  # a bar half torn down by the interrupt: nothing left to clean
            pass
