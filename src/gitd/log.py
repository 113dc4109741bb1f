"""Logging and progress.

Logs and progress go to stderr; results go to stdout. ``setup_logging(quiet=True)`` (the CLI's
``--quiet``) silences progress and info logs, leaving warnings and errors.

``progress`` draws a tqdm bar when stderr is a terminal. When it is not (a log file, CI, a pipe),
carriage-return bars would pile up as one endless line, so it writes a plain log line instead,
at most every ``GITD_PROGRESS_SECONDS`` seconds (default 10): done/total, percent, rate, ETA.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from typing import Any, Iterable, Iterator, TypeVar

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


DEFAULT_LOG_SECONDS = 10.0


def _log_seconds() -> float:
    try:
        return max(0.0, float(os.environ.get("GITD_PROGRESS_SECONDS", DEFAULT_LOG_SECONDS)))
    except ValueError:
        return DEFAULT_LOG_SECONDS


def _short(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


class LogProgress:
    """Progress as log lines (stderr not a terminal): the subset of tqdm's interface gitd uses
    (iteration, ``update``, ``set_postfix``, ``close``, ``with``)."""

    def __init__(self, iterable: Iterable[T] | None = None, *, desc: str = "",
                 total: int | None = None, unit: str = "it", interval: float | None = None,
                 clock=time.monotonic, warmup: bool = False):
        self.iterable = iterable
        self.desc = desc
        if total is None and iterable is not None and hasattr(iterable, "__len__"):
            total = len(iterable)  # type: ignore[arg-type]
        self.total = total
        self.unit = unit
        self.interval = _log_seconds() if interval is None else interval
        self.clock = clock
        self.n = 0
        self.postfix = ""
        self.start = self.last = clock()
        # (time, count) the rate and the time left are measured from; None: not yet known
        # (``warmup``: the first batch carries one-off costs, see ``end_warmup``).
        self.rate_from: tuple[float, int] | None = None if warmup else (self.start, 0)
        self.lines = 0
        self.shown = -1  # self.n when the last line was written
        self.closed = False

    def __iter__(self) -> Iterator[T]:
        for item in self.iterable if self.iterable is not None else ():
            yield item
            self.update(1)
        self.close()

    def __enter__(self) -> "LogProgress":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def set_postfix(self, ordered_dict: dict | None = None, refresh: bool = True,
                    **kwargs: Any) -> None:
        items = {**(ordered_dict or {}), **kwargs}
        self.postfix = ", ".join(f"{k} {v}" for k, v in items.items())

    def update(self, n: int = 1) -> None:
        self.n += n
        now = self.clock()
        if now - self.last >= self.interval:
            self.last = now
            self._emit(now)

    def end_warmup(self) -> None:
        """The first batch is done: measure the rate, and so the time left, from here."""
        self.rate_from = (self.clock(), self.n)

    def line(self, now: float | None = None) -> str:
        now = self.clock() if now is None else now
        elapsed = max(now - self.start, 1e-9)
        rate = None
        if self.rate_from is not None and self.n > self.rate_from[1]:
            rate = (self.n - self.rate_from[1]) / max(now - self.rate_from[0], 1e-9)
        head = f"{self.desc}: " if self.desc else ""
        if self.total:
            done = f"{self.n}/{self.total} {self.unit} ({100 * self.n / self.total:.0f}%)"
        else:
            done = f"{self.n} {self.unit}"
        text = f"{head}{done}, {rate or self.n / elapsed:.3g} {self.unit}/s, " \
               f"{_short(elapsed)} elapsed"
        if self.total and 0 < self.n < self.total and rate:
            text += f", ~{_short((self.total - self.n) / rate)} left"
        return text + (f" [{self.postfix}]" if self.postfix else "")

    def _emit(self, now: float) -> None:
        self.lines += 1
        self.shown = self.n
        logger.info("%s", self.line(now))

    def close(self) -> None:
        # A run that logged progress also logs where it ended (unless its last line said so);
        # a short one stays silent.
        if not self.closed and self.lines and self.shown != self.n:
            self._emit(self.clock())
        self.closed = True


def progress(iterable: Iterable[T] | None = None, *, desc: str = "", total: int | None = None,
             unit: str = "it", leave: bool = False,
             warmup: bool = False) -> Iterator[T] | tqdm | LogProgress:
    """Progress on stderr: a tqdm bar on a terminal, periodic log lines elsewhere; nothing when
    quiet. ``warmup``: the first batch carries one-off costs that later ones do not (a model's
    first call: weights paged in from disk, kernels chosen), so log lines give no time left
    until ``end_warmup(bar)`` has been called after it, and then leave it out."""
    stream = sys.stderr
    terminal = hasattr(stream, "isatty") and stream.isatty()
    # A notebook's stderr is no terminal, but tqdm.auto draws a widget there.
    if not _quiet and not terminal and "ipykernel" not in sys.modules:
        return LogProgress(iterable, desc=desc, total=total, unit=unit, warmup=warmup)
    return tqdm(iterable, desc=desc, total=total, unit=unit, leave=leave,
                disable=_quiet, file=stream, dynamic_ncols=True)


def end_warmup(bar: Any) -> None:
    """After the first batch of a ``progress(..., warmup=True)`` bar: measure the rate and the
    time left from now on."""
    if isinstance(bar, LogProgress):
        bar.end_warmup()
    elif isinstance(bar, tqdm) and not bar.disable:
        # tqdm measures from its start (and smooths from its first update): restart its clock
        # with the count kept as the starting point.
        n = bar.n
        bar.reset(total=bar.total)
        bar.initial = bar.n = bar.last_print_n = n
        bar.refresh()


def close_bars() -> None:
    """Close every terminal progress bar still open (a run stopped by an error or Ctrl-C), so
    the line that says why starts on a clean line of its own."""
    for bar in list(getattr(tqdm, "_instances", ())):
        try:
            bar.close()
        except Exception:  # a bar half torn down by the interrupt: nothing left to clean
            pass
