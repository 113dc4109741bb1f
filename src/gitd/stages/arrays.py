"""Array files that stages fill in place, a batch at a time (latents, embeddings)."""

from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path

import numpy as np

from gitd.errors import GitdError, environment_error, human_bytes

# Left free beside an array file: the manifest, unit files and logs still need room.
HEADROOM = 64 << 20


def npy_ok(path: Path, dtype, shape: tuple[int, ...]) -> bool:
    """Whether ``path`` is a whole .npy file of ``dtype`` and ``shape`` (header and length: a
    truncated file does not map)."""
    try:
        mm = np.load(path, mmap_mode="r")
    except (OSError, ValueError):
        return False
    ok = mm.shape == tuple(shape) and mm.dtype == np.dtype(dtype)
    del mm
    return ok


def create_array_file(path: Path, dtype, shape: tuple[int, ...]) -> None:
    """Create a zero .npy file of ``shape`` to be filled in place, its disk space checked and
    reserved first: writing a memory-mapped page of a sparse file on a full disk kills the
    process with SIGBUS, with no message, so a full disk must fail here, in one line."""
    nbytes = int(np.prod(shape)) * np.dtype(dtype).itemsize
    try:
        path.unlink(missing_ok=True)  # an old file's space is free space for the new one
        free = shutil.disk_usage(path.parent).free
    except OSError:
        free = None
    if free is not None and free < nbytes + HEADROOM:
        raise GitdError(f"{path}: needs {human_bytes(nbytes)}, and gitd keeps "
                        f"{human_bytes(HEADROOM)} more free for everything else, but only "
                        f"{human_bytes(free)} is free on that disk; free some space or pass "
                        "--work on a larger disk, then re-run")
    try:
        mm = np.lib.format.open_memmap(path, mode="w+", dtype=dtype, shape=shape)
        offset = int(mm.offset)
        del mm
        if hasattr(os, "posix_fallocate") and nbytes:
            fd = os.open(path, os.O_RDWR)
            try:
                os.posix_fallocate(fd, offset, nbytes)
            except OSError as exc:
                if exc.errno not in (errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
                    raise
            finally:
                os.close(fd)
    except OSError as exc:
        try:
            path.unlink()
        except OSError:
            pass
        raise environment_error(path, exc) from None
