"""Array files that stages fill in place, a batch at a time (latents, embeddings), and views
that read rows of them without loading them: ``RowSubset`` (some rows of one array) and
``ShardedRows`` (the rows of several ``.npy`` files as one array). ``npy_header`` is the one
reader of a ``.npy`` header."""

from __future__ import annotations

import copy
import errno
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from gitd.errors import ConfigError, DataError, GitdError, environment_error, human_bytes

# Left free beside an array file: the manifest, unit files and logs still need room.
HEADROOM = 64 << 20


@dataclass(frozen=True)
class NpyHeader:
    """What a ``.npy`` file's header says, and how long the file is."""

    shape: tuple[int, ...]
    fortran_order: bool
    dtype: np.dtype
    offset: int  # where the data starts
    file_bytes: int

    @property
    def data_bytes(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) * self.dtype.itemsize


def npy_header(path: str | Path) -> NpyHeader:
    """The header of the ``.npy`` file ``path`` (format 1.0 or 2.0), without reading its data.
    Raises ``OSError`` (unreadable) or ``ValueError`` (not a ``.npy`` header)."""
    with open(path, "rb") as f:
        version = np.lib.format.read_magic(f)
        read = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                else np.lib.format.read_array_header_2_0)
        shape, fortran, dtype = read(f)
        return NpyHeader(tuple(int(s) for s in shape), bool(fortran), np.dtype(dtype), f.tell(),
                         os.fstat(f.fileno()).st_size)


def npy_ok(path: Path, dtype, shape: tuple[int, ...]) -> bool:
    """Whether ``path`` is a whole .npy file of ``dtype`` and ``shape`` (header and length: a
    truncated file is not)."""
    try:
        head = npy_header(path)
    except (OSError, ValueError):
        return False
    return (head.shape == tuple(shape) and head.dtype == np.dtype(dtype)
            and head.file_bytes >= head.offset + head.data_bytes)


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


class RowSubset:
    """Rows ``rows`` of a 2-D array, indexable like one (``len``, ``shape``, slices, index
    arrays) without copying: lets ``clara`` run on the valid rows of a latent memmap."""

    def __init__(self, X, rows: Sequence[int]):
        self.X = X
        self.rows = np.asarray(rows, dtype=np.int64)

    @property
    def shape(self) -> tuple[int, int]:
        return (len(self.rows), int(self.X.shape[1]))

    @property
    def dtype(self):
        return self.X.dtype

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, key):
        idx = self.rows[key]
        if np.ndim(idx) == 0:
            return np.asarray(self.X[int(idx)])
        if len(idx) and np.all(np.diff(idx) == 1):
            return np.asarray(self.X[int(idx[0]):int(idx[-1]) + 1])
        return np.asarray(self.X[idx])


class ShardedRows:
    """The rows of several ``.npy`` files (same dtype and row shape, C order) as one array
    ``[n, *row_shape]``, indexable like one (``len``, ``shape``, slices, index arrays).

    A slice within one file is a read-only memory map of just those rows, made for the call and
    unmapped when the caller drops it (zero-copy, as fast as rows in RAM once the pages are
    cached); other reads (index arrays, slices across files) copy the rows with ``os.pread``.
    Nothing stays mapped between calls, so resident memory is what the caller holds, whatever
    n is. Picklable (paths and offsets only), so Ray tasks can read their own rows.
    """

    def __init__(self, files: Sequence[str | Path], *, flat: bool = False):
        self.files = [str(f) for f in files]
        if not self.files:
            raise ConfigError("ShardedRows needs at least one file")
        counts, offsets, row_shape, dtype = [], [], None, None
        for f in self.files:
            head = npy_header(f)
            shape, fortran, dt = head.shape, head.fortran_order, head.dtype
            offsets.append(head.offset)
            if fortran or not shape:
                raise DataError(f"{f}: expected a C-order array with rows")
            if row_shape is None:
                row_shape, dtype = tuple(shape[1:]), np.dtype(dt)
            elif tuple(shape[1:]) != row_shape or np.dtype(dt) != dtype:
                raise DataError(f"{f}: rows of shape {tuple(shape[1:])} {dt}, expected "
                                f"{row_shape} {dtype} as in {self.files[0]}")
            counts.append(int(shape[0]))
        self.counts = np.asarray(counts, dtype=np.int64)
        self.starts = np.concatenate([[0], np.cumsum(self.counts)])
        self.offsets = offsets
        self.row_shape = row_shape
        self.dtype = dtype
        self.flat = flat
        self.row_bytes = int(np.prod(row_shape, dtype=np.int64)) * dtype.itemsize

    @property
    def shape(self) -> tuple[int, ...]:
        n = int(self.starts[-1])
        if self.flat:
            return (n, int(np.prod(self.row_shape, dtype=np.int64)))
        return (n, *self.row_shape)

    def __len__(self) -> int:
        return int(self.starts[-1])

    def reshape(self, n: int, d: int = -1) -> "ShardedRows":
        """``reshape(n, -1)``: the same rows flattened to 2-D (no copy, no reading)."""
        if n != len(self) or d not in (-1, self.shape[1] if self.flat else
                                        int(np.prod(self.row_shape, dtype=np.int64))):
            raise ValueError(f"cannot reshape {self.shape} to ({n}, {d})")
        out = copy.copy(self)
        out.flat = True
        return out

    def _read(self, a: int, b: int, out: np.ndarray) -> None:
        """Rows a..b-1 into ``out`` (a C-contiguous buffer of b - a rows)."""
        buf = out.reshape(-1).view(np.uint8)
        pos = 0
        s = int(np.searchsorted(self.starts, a, side="right")) - 1
        while a < b:
            stop = min(b, int(self.starts[s + 1]))
            nbytes = (stop - a) * self.row_bytes
            with open(self.files[s], "rb") as f:
                got = os.preadv(f.fileno(), [memoryview(buf[pos:pos + nbytes])],
                                self.offsets[s] + (a - int(self.starts[s])) * self.row_bytes)
            if got != nbytes:
                raise DataError(f"{self.files[s]}: file is shorter than its header says")
            pos += nbytes
            a = stop
            s += 1

    def _rows_shape(self, m: int) -> tuple[int, ...]:
        return (m, self.shape[1]) if self.flat else (m, *self.row_shape)

    def __getitem__(self, key):
        n = len(self)
        if isinstance(key, (int, np.integer)):
            i = int(key) + (n if key < 0 else 0)
            if not 0 <= i < n:
                raise IndexError(f"row {key} out of range for {n} rows")
            out = np.empty(self._rows_shape(1), dtype=self.dtype)
            self._read(i, i + 1, out)
            return out[0]
        if isinstance(key, slice):
            a, b, step = key.indices(n)
            if step != 1:
                return self[np.arange(a, b, step)]
            s = int(np.searchsorted(self.starts, a, side="right")) - 1
            if b > a and b <= int(self.starts[s + 1]):
                return np.memmap(self.files[s], dtype=self.dtype, mode="r",
                                 offset=self.offsets[s] + (a - int(self.starts[s])) *
                                 self.row_bytes, shape=self._rows_shape(b - a))
            out = np.empty(self._rows_shape(max(0, b - a)), dtype=self.dtype)
            if b > a:
                self._read(a, b, out)
            return out
        idx = np.asarray(key, dtype=np.int64).reshape(-1)
        idx = np.where(idx < 0, idx + n, idx)
        if len(idx) and (idx.min() < 0 or idx.max() >= n):
            raise IndexError(f"row index out of range for {n} rows")
        out = np.empty(self._rows_shape(len(idx)), dtype=self.dtype)
        order = np.argsort(idx, kind="stable")
        sorted_idx = idx[order]
        # Runs of consecutive rows are read in one call each.
        breaks = np.flatnonzero(np.diff(sorted_idx) != 1) + 1
        tmp = np.empty_like(out)
        for lo, hi in zip(np.concatenate([[0], breaks]), np.concatenate([breaks, [len(idx)]])):
            if hi > lo:
                self._read(int(sorted_idx[lo]), int(sorted_idx[hi - 1]) + 1, tmp[lo:hi])
        out[order] = tmp
        return out
