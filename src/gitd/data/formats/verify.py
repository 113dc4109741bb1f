"""Decoding every image of a dataset, in a process pool when there are many."""

from __future__ import annotations

import os
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Sequence

from gitd.errors import DataError
from gitd.log import progress
from gitd.workers import sigint_deferred, stop_pool

# Below this many images a process pool costs more than it saves.
_POOL_MIN_IMAGES = 64

VerifyResult = tuple[tuple[int, int] | None, str | None, str | None]


def _init_worker(max_pixels: int | None) -> None:
    from PIL import Image
    Image.MAX_IMAGE_PIXELS = max_pixels


def _verify_one(path) -> VerifyResult:
    from gitd.data.images import ImageError, open_rgb
    try:
        if isinstance(path, (str, Path)) and os.path.isfile(path) and os.path.getsize(path) == 0:
            return None, "corrupt-image", "empty file (0 bytes)"
        img = open_rgb(path)
    except ImageError as exc:
        return None, exc.kind, exc.problem
    except MemoryError:
        return None, "unreadable-image", "out of memory while decoding"
    return img.size, None, None


def _workers(workers: int | None) -> int:
    if workers is None:
        try:
            return max(1, len(os.sched_getaffinity(0)))
        except AttributeError:
            return max(1, os.cpu_count() or 1)
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise DataError(f"workers must be a positive integer, got {workers!r}")
    return workers


def verify_image_files(paths: Sequence[Path | str], *, workers: int | None = None,
                       desc: str = "verifying images") -> list[VerifyResult]:
    """Fully decode each image; return ``(size, None, None)`` or ``(None, kind, message)``.

    Uses a process pool when there are many images: decoding is CPU-bound and a decoder crash
    on a hostile file then takes down a worker, not the caller. Results keep input order.
    """
    from PIL import Image

    n = _workers(workers)
    if n == 1 or len(paths) < _POOL_MIN_IMAGES:
        return [_verify_one(p) for p in progress(paths, desc=desc, unit="img")]
    import multiprocessing as mp
    # fork, not spawn: spawn would re-import `python -m gitd`'s __main__ in every worker.
    ctx = mp.get_context("fork") if "fork" in mp.get_all_start_methods() else None
    chunk = max(1, min(256, len(paths) // (n * 8)))
    with ProcessPoolExecutor(max_workers=n, mp_context=ctx, initializer=_init_worker,
                             initargs=(Image.MAX_IMAGE_PIXELS,)) as pool:
        try:
            with sigint_deferred():  # the workers are forked here; Ctrl-C is ours to handle
                it = pool.map(_verify_one, [p if hasattr(p, "shard") else str(p) for p in paths],
                              chunksize=chunk)
            return list(progress(it, desc=desc, total=len(paths), unit="img"))
        except KeyboardInterrupt:
            stop_pool(pool)
            raise
        except BrokenProcessPool:
            raise DataError("an image decoder crashed a worker process; re-run with one worker "
                            "(--workers 1 / workers=1) to find the file") from None
