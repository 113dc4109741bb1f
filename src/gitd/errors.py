"""User-facing errors.

Anything a user can cause (bad path, bad setting, missing model) raises a ``GitdError``; the CLI
prints its message as one line and exits with its ``exit_code``, never a traceback. Bugs stay
ordinary exceptions so they do show a traceback.
"""

from __future__ import annotations

import errno as _errno
import os


class GitdError(Exception):
    """An error caused by input or environment, reported to the user as one line."""

    exit_code = 2

    def __init__(self, message: str, *, exit_code: int | None = None):
        super().__init__(message)
        if exit_code is not None:
            self.exit_code = exit_code


class DataError(GitdError):
    """The dataset cannot be read at all (missing/unparsable annotation file, unknown format)."""


class ConfigError(GitdError):
    """A setting has a bad value; the message names the setting and the value."""


class ModelUnavailableError(GitdError):
    """A named model is neither on disk nor reachable."""


_ADVICE = {
    _errno.ENOSPC: "the disk is full: free some space",
    _errno.EDQUOT: "the disk quota is exhausted: free some space",
    _errno.EROFS: "the file system is read-only: choose a writable folder",
    _errno.EACCES: "permission denied: choose a folder you can write to",
    _errno.EPERM: "operation not permitted: choose a folder you can write to",
}


def human_bytes(n: float) -> str:
    """A size for a message, in the binary unit that fits: ``812 bytes``, ``1.5 KiB``,
    ``64 MiB``, ``3.27 GiB`` (three significant digits)."""
    n = float(n)
    if abs(n) < 1024:
        return f"{int(n)} byte{'s' if int(n) != 1 else ''}"
    for unit in ("KiB", "MiB", "GiB", "TiB"):
        n /= 1024
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.3g} {unit}" if abs(n) < 1000 else f"{n:.0f} {unit}"
    raise AssertionError("unreachable")


def environment_error(path, exc: OSError, *, action: str = "write") -> GitdError:
    """One line for an operating-system failure (full disk, read-only or forbidden folder, ...)
    naming the path; finished units are on disk already, so the same command resumes."""
    where = exc.filename if exc.filename is not None else path
    reason = exc.strerror or str(exc) or type(exc).__name__
    advice = _ADVICE.get(exc.errno)
    tail = f"; {advice}" if advice else ""
    return GitdError(f"{os.fsdecode(where) if isinstance(where, bytes) else where}: cannot "
                     f"{action} ({reason}){tail}; finished work is kept, re-run the same command "
                     "to resume")


# Seeds feed numpy and torch generators, which take at most 32 (numpy) or 64 bits.
MAX_SEED = 2**32 - 1


def short_value(value) -> str:
    """A value for a one-line message (a 5000-digit number is not one line)."""
    text = repr(value) if not isinstance(value, int) or abs(value) < 10**30 else \
        f"a {len(str(abs(value))) if abs(value) < 10**4000 else 'huge'}-digit number"
    return text if len(text) <= 60 else text[:57] + "..."

