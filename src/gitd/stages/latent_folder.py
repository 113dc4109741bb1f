"""The encoded-latents folder: what the encode stage writes, whichever encoder wrote it
(``gitd.stages.encode`` in this process, ``gitd.stages.ray_encode`` on Ray), and how it is
read back (``LatentStore``).

Single-file layout (the in-process encoder)::

    latents.npy     float16 [n, C, h, w], row i = records[i]; already on SD's scaled latent
                    range (``gitd.stages.vae_encoding.latent_scale``), so a row can go straight
                    into img2img
    index.json      ids in order, shape, dtype, scaling factor and the settings that made it
    progress.json   rows finished so far, which of them are valid, and the problems found

Sharded layout (the Ray encoder): ``parts/index.json`` (the same, plus ``shard_rows``),
``parts/NNNNN.npy`` (rows ``[s * shard_rows, ...)``) and ``parts/NNNNN.json`` (its invalid rows
and problems; written last, it marks the part done).

A missing, truncated or mismatched file or an inconsistent ``progress.json`` is encoded again
(``LatentStore.check`` says what is wrong), never trusted.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np

from gitd.data.records import Problem
from gitd.errors import DataError
from gitd.log import get_logger
from gitd.stages.arrays import RowSubset, ShardedRows, npy_header
from gitd.store import Damaged, fingerprint, read_json, require

log = get_logger("stages.encode")

LATENTS = "latents.npy"
INDEX = "index.json"
PROGRESS = "progress.json"
PARTS = "parts"


def part_path(folder: Path, s: int, suffix: str) -> Path:
    return Path(folder) / PARTS / f"{s:05d}{suffix}"


def part_files(folder: Path, index: dict[str, Any]) -> list[Path]:
    n, rows = len(index["ids"]), int(index["shard_rows"])
    return [part_path(folder, s, ".npy") for s in range(-(-n // rows))]


def part_done(folder: Path, index: dict[str, Any], s: int) -> dict[str, Any] | None:
    """Part ``s``'s record (its ``.json``) when the part is finished and whole: the record
    reads, and the ``.npy`` header and size say exactly its rows. A damaged part is not done
    (it is encoded again), never trusted."""
    n, rows = len(index["ids"]), int(index["shard_rows"])
    meta = read_json(part_path(folder, s, ".json"))
    if not isinstance(meta, dict):
        return None
    want = (min(rows, n - s * rows), *index["shape"][1:])
    try:
        head = npy_header(part_path(folder, s, ".npy"))
    except (OSError, ValueError):
        return None
    if (head.shape != want or head.dtype != np.float16
            or head.file_bytes != head.offset + head.data_bytes):
        return None
    return meta


def parts_state(folder: Path, index: dict[str, Any]) -> dict[str, Any]:
    """What the finished parts say, in the shape of the single-file ``progress.json``: rows
    done (the finished prefix), invalid rows and problems (in row order)."""
    n, rows = len(index["ids"]), int(index["shard_rows"])
    done, invalid, problems = 0, [], []
    for s in range(-(-n // rows)):
        meta = part_done(folder, index, s)
        if meta is None:
            break
        done = min(n, (s + 1) * rows)
        invalid.extend(meta.get("invalid", []))
        problems.extend(meta.get("problems", []))
    return {"rows_done": done, "invalid": invalid, "problems": problems}


class NotEncoded(DataError, Damaged):
    """A folder that does not hold encoded latents (a stage folder left damaged: recomputed)."""


class LatentStore:
    """An encode output folder: ``latents`` (read-only memmap), ``ids``, ``valid`` (bool mask),
    ``problems`` and ``scaling_factor``; ``flat()`` gives rows ready for clustering."""

    def __init__(self, folder: str | Path, index: dict[str, Any], state: dict[str, Any]):
        self.folder = Path(folder)
        self.index = index
        self.ids: list[str] = list(index["ids"])
        self.shape = tuple(index["shape"])
        self.scaling_factor = float(index["scaling_factor"])
        self.rows_done = int(state.get("rows_done", 0))
        self.valid = np.zeros(len(self.ids), dtype=bool)
        self.valid[: self.rows_done] = True
        invalid = np.asarray(state.get("invalid", []), dtype=np.int64)
        self.valid[invalid] = False
        self.problems = [Problem(p["file"], p["problem"], p.get("row"), p.get("kind", "error"))
                         for p in state.get("problems", [])]
        self._latents: np.ndarray | None = None

    @classmethod
    def open(cls, folder: str | Path) -> "LatentStore":
        folder = Path(folder)
        # One stage folder may hold both layouts (a run with --ray resumed without it, or the
        # other way round): the complete one is the result.
        found = []
        parts = read_json(folder / PARTS / INDEX)
        if isinstance(parts, dict) and "ids" in parts and "shard_rows" in parts:
            found.append(cls(folder, parts, parts_state(folder, parts)))
        index = read_json(folder / INDEX)
        if isinstance(index, dict) and "ids" in index and (folder / LATENTS).exists():
            found.append(cls(folder, index, read_json(folder / PROGRESS, {}) or {}))
        if not found:
            raise NotEncoded(f"{folder}: not an encoded-latents folder (no {INDEX} or {LATENTS}); "
                            "run the encode stage first")
        return next((s for s in found if s.complete), found[0])

    def check(self, ids: Sequence[str]) -> "LatentStore":
        """Validate a finished folder against the records it should hold; raise ``Damaged``
        saying what is wrong (the stage is then encoded again). Returns self."""
        require(self.ids == list(ids), f"{INDEX} lists other images than the dataset's")
        try:
            lat = self.latents  # a truncated or rewritten file fails here
        except DataError as exc:  # a part whose header disagrees with the others
            raise Damaged(str(exc)) from None
        require(lat.shape == self.shape and lat.dtype == np.float16,
                f"{LATENTS} holds {lat.dtype} {lat.shape}, {INDEX} says float16 {self.shape}")
        require(self.complete, f"{PROGRESS} says {self.rows_done} of {len(self.ids)} rows done")
        return self

    @property
    def complete(self) -> bool:
        return self.rows_done >= len(self.ids)

    @property
    def sharded(self) -> bool:
        return "shard_rows" in self.index

    @property
    def latents(self):
        """[n, C, h, w] float16: a read-only memmap, or for the sharded layout (``--ray``) a
        ``ShardedRows`` over ``parts/*.npy`` that indexes the same way."""
        if self._latents is None:
            if self.sharded:
                self._latents = ShardedRows(part_files(self.folder, self.index))
            else:
                self._latents = np.load(self.folder / LATENTS, mmap_mode="r")
        return self._latents

    @property
    def valid_indices(self) -> np.ndarray:
        return np.flatnonzero(self.valid)

    def __len__(self) -> int:
        return len(self.ids)

    def matrix(self, valid_only: bool = True, files: bool = False):
        """The latents as a 2-D [rows, C*h*w] float16 view without copying (valid rows only by
        default, as a ``RowSubset``): pass this to ``clara`` when n is large. ``files``: read
        through ``ShardedRows`` even for the single-file layout, so that the view pickles to
        file names (for Ray tasks), not to its rows."""
        latents = self.latents
        if files and not self.sharded:
            latents = ShardedRows([self.folder / LATENTS])
        flat = latents.reshape(len(self.ids), -1)
        return RowSubset(flat, self.valid_indices) if valid_only else flat

    def flat(self, indices: Sequence[int] | None = None, *, chunk: int = 1024) -> np.ndarray:
        """Rows ``indices`` (default: every valid row) as float32 [m, C*h*w], converted a chunk
        at a time so the float16 -> float32 copy needs no second full-size buffer."""
        idx = self.valid_indices if indices is None else np.asarray(indices, dtype=np.int64)
        flat = self.latents.reshape(len(self.ids), -1)
        out = np.empty((len(idx), flat.shape[1]), dtype=np.float32)
        for a in range(0, len(idx), chunk):
            part = idx[a:a + chunk]
            order = np.argsort(part, kind="stable")
            out[a + order] = flat[part[order]]
        return out


def index_settings(records, vae, resolution, sample, seed, shape) -> dict[str, Any]:
    """What ``index.json``'s ``settings`` records: a folder whose settings differ holds other
    latents and is encoded again (by either encoder)."""
    cfg = vae.config
    return {"ids_fingerprint": fingerprint([r.id for r in records]),
            "vae": {"class": type(vae).__name__,
                    "name": getattr(cfg, "_name_or_path", "") or "",
                    "config": fingerprint({k: v for k, v in dict(cfg).items()
                                           if not k.startswith("_")})},
            "resolution": resolution, "sample": bool(sample), "seed": int(seed),
            "shape": list(shape)}


def read_progress(path: Path, n: int) -> dict[str, Any]:
    """``progress.json`` if it is consistent, else ``{}`` (encoding restarts at row 0 into the
    same file: a damaged progress file costs time, never a wrong latent)."""
    state = read_json(path)
    if state is None:
        if path.exists():
            log.warning("encode: %s is damaged; encoding every image again", path)
        return {}
    try:
        rows = state["rows_done"]
        ok = (isinstance(rows, int) and 0 <= rows <= n
              and all(isinstance(i, int) and 0 <= i < rows for i in state.get("invalid", []))
              and all(isinstance(p, dict) and "file" in p and "problem" in p
                      for p in state.get("problems", [])))
    except (TypeError, KeyError, AttributeError):
        ok = False
    if not ok:
        log.warning("encode: %s is inconsistent; encoding every image again", path)
        return {}
    return state
