"""Worker processes (DataLoader workers, process pools) that stay quiet on Ctrl-C.

A terminal sends SIGINT to every process of the foreground group, workers included, and Python
may raise the ``KeyboardInterrupt`` anywhere: inside a fork hook, where it prints "Exception
ignored ..." tracebacks, or in a worker, which prints its own. So workers are forked while
Ctrl-C is deferred (``sigint_deferred``): they inherit a handler that only takes note, the main
process raises the interrupt once the fork is done, prints the one line, and stops them.
"""

from __future__ import annotations

import signal
import threading
from contextlib import contextmanager
from typing import Iterable, Iterator, TypeVar

from gitd.errors import GitdError

T = TypeVar("T")


@contextmanager
def sigint_deferred() -> Iterator[None]:
    """Fork worker processes in here: a Ctrl-C meanwhile is raised when the block ends, and
    the processes forked keep a SIGINT handler that does nothing (their parent stops them)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: caught.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if caught and callable(previous):
        previous(signal.SIGINT, None)  # raises KeyboardInterrupt, now, in plain code


def stop_pool(pool) -> None:
    """Stop a ``ProcessPoolExecutor`` on Ctrl-C: queued tasks are cancelled, running ones
    (one chunk per worker: seconds) finish, and the workers exit. Its workers ignore SIGINT;
    killing them instead races Python's own exit hook into printing a traceback."""
    pool.shutdown(wait=True, cancel_futures=True)


def loader_batches(loader: Iterable[T], hint: str) -> Iterator[T]:
    """Iterate a DataLoader whose workers are forked with Ctrl-C deferred, turning the death of
    a worker (a decoder that crashed the interpreter, the out-of-memory killer) into one
    ``GitdError`` that ends with ``hint``."""
    with sigint_deferred():
        batches = iter(loader)  # forks the workers
    try:
        yield from batches
    except RuntimeError as exc:
        if "DataLoader worker" not in str(exc):
            raise
        text = " ".join(str(exc).split())[:200]
        raise GitdError(f"a process decoding images died ({text}); finished work is kept; "
                        f"{hint}") from None
