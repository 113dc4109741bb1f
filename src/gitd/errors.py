"""User-facing errors.

Anything a user can cause (bad path, bad setting, missing model) raises a ``GitdError``; the CLI
prints its message as one line and exits with its ``exit_code``, never a traceback. Bugs stay
ordinary exceptions so they do show a traceback.
"""

from __future__ import annotations


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


def check_positive_int(name: str, value, *, minimum: int = 1) -> int:
    """Validate an integer setting where work starts (scikit-learn style), naming the bad value."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{name} must be an integer, got {value!r}")
    if value < minimum:
        raise ConfigError(f"{name} must be >= {minimum}, got {value}")
    return value
