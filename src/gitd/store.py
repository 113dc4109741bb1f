"""The work directory: atomic writes, fingerprints and cached stage folders.

Every long run writes each finished unit with ``atomic_*`` (write to a temporary file in the
same folder, fsync, ``os.replace``), so a crash or SIGKILL leaves either the old file or the new
one, never half of one. A stage's folder is named by a fingerprint of everything that produced
it (its settings and the fingerprints of the stages before it), so a changed setting lands in a
new folder and recomputes exactly what depends on it; ``Stage.open`` logs when that happens.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import tempfile
import time
from dataclasses import asdict, is_dataclass
from pathlib import Path
from typing import Any, Callable

from gitd.errors import GitdError
from gitd.log import get_logger

log = get_logger("store")


def _json_default(obj: Any):
    if is_dataclass(obj) and not isinstance(obj, type):
        return asdict(obj)
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "tolist"):  # numpy scalars and arrays
        return obj.tolist()
    if isinstance(obj, (set, frozenset)):
        return sorted(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def to_json(obj: Any, *, indent: int | None = 2) -> str:
    return json.dumps(obj, indent=indent, ensure_ascii=False, default=_json_default)


def fingerprint(obj: Any, length: int = 16) -> str:
    """A short stable hash of a JSON-able object (dict keys sorted)."""
    blob = json.dumps(obj, sort_keys=True, ensure_ascii=False, default=_json_default)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:length]


def file_fingerprint(path: str | Path, length: int = 16) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:length]


def _disk_error(path: Path, exc: OSError) -> GitdError:
    return GitdError(f"{path}: cannot write ({exc.strerror or exc}); finished work is kept, "
                     "free some space and re-run the same command to resume")


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_FILE_MODE = 0o666 & ~_umask()  # what open() would give; mkstemp alone gives 0600


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, _FILE_MODE)
        os.replace(tmp, path)
    except OSError as exc:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise _disk_error(path, exc) from exc
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | Path, obj: Any) -> None:
    atomic_write_text(path, to_json(obj) + "\n")


def atomic_save_image(path: str | Path, image) -> None:
    """Save a PIL image atomically; the format follows the suffix (PNG by default)."""
    buf = io.BytesIO()
    fmt = {".jpg": "JPEG", ".jpeg": "JPEG", ".webp": "WEBP"}.get(Path(path).suffix.lower(), "PNG")
    image.save(buf, format=fmt)
    atomic_write_bytes(path, buf.getvalue())


def atomic_copy(src: str | Path, dst: str | Path) -> None:
    dst = Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dst.parent, prefix=f".{dst.name}.", suffix=".tmp")
    os.close(fd)
    try:
        shutil.copyfile(src, tmp)
        os.chmod(tmp, _FILE_MODE)
        os.replace(tmp, dst)
    except OSError as exc:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise _disk_error(dst, exc) from exc


def read_json(path: str | Path, default: Any = None) -> Any:
    """Read JSON written by this module; a missing or unreadable file gives ``default``."""
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError):
        return default


class Stage:
    """A cached stage folder ``WORK/<name>-<fingerprint>/``.

    ``settings`` must hold every setting and upstream fingerprint the stage's output depends on.
    ``done`` marks a stage finished as a whole; per-unit resume is up to the stage (it writes
    each unit atomically into ``path`` and skips units already there).
    """

    def __init__(self, work: str | Path, name: str, settings: dict[str, Any]):
        self.work = Path(work)
        self.name = name
        self.settings = settings
        self.key = fingerprint(settings)
        self.path = self.work / f"{name}-{self.key}"

    @classmethod
    def open(cls, work: str | Path, name: str, settings: dict[str, Any], *,
             prepare: Callable[[], Any] | None = None) -> "Stage":
        """The stage's folder, created (with its ``settings.json``) if new. ``prepare`` (the
        models the stage needs) runs first unless the stage is done, so a model that cannot
        be had fails before anything is created on disk."""
        stage = cls(work, name, settings)
        if prepare is not None and not stage.done:
            prepare()
        pointer = stage.work / f"{name}.current"
        previous = pointer.read_text().strip() if pointer.exists() else None
        if previous and previous != stage.key:
            old = read_json(stage.work / f"{name}-{previous}" / "settings.json", {}) or {}
            changed = sorted(k for k in set(old) | set(settings) if old.get(k) != settings.get(k))
            log.info("%s: settings changed (%s), recomputing this stage and those after it",
                     name, ", ".join(changed) or "upstream")
        stage.path.mkdir(parents=True, exist_ok=True)
        if not (stage.path / "settings.json").exists():
            atomic_write_json(stage.path / "settings.json", settings)
        atomic_write_text(pointer, stage.key + "\n")
        return stage

    @property
    def done(self) -> bool:
        return (self.path / "DONE").exists()

    def mark_done(self, summary: dict[str, Any] | None = None) -> None:
        atomic_write_json(self.path / "DONE", summary or {})

    def summary(self) -> dict[str, Any]:
        return read_json(self.path / "DONE", {}) or {}


class StageTimer:
    """Seconds a stage spent across runs: a resumed stage adds to what earlier runs recorded
    (``elapsed.json`` in the stage folder, saved after each finished unit)."""

    def __init__(self, stage: Stage):
        self.path = stage.path / "elapsed.json"
        self.before = float((read_json(self.path, {}) or {}).get("seconds", 0.0))
        self.start = time.perf_counter()

    def total(self) -> float:
        return self.before + time.perf_counter() - self.start

    def save(self) -> None:
        atomic_write_json(self.path, {"seconds": round(self.total(), 3)})


def unit_path(stage: Stage, j: int, suffix: str = ".json") -> Path:
    """The file of unit ``j`` of a per-unit stage; its ``.json`` is written last and marks the
    unit finished."""
    return stage.path / f"{j:04d}{suffix}"


def run_units(stage: Stage, n: int, batch_size: int, compute: Callable[[range], list],
              write: Callable[[int, Any], None], *, noun: str = "unit",
              on_written: Callable[[int], None] | None = None) -> int:
    """Finish units ``0..n-1`` of ``stage`` in fixed chunks of ``batch_size``; returns how many
    were computed now.

    ``compute(chunk)`` returns one result per index of the chunk; ``write(j, result)`` writes
    unit ``j`` atomically, its ``.json`` last. A chunk whose units all exist is skipped. A partly
    finished chunk (a crash between two writes) is computed again whole, because batch
    composition can change the low-order bits of model outputs: the same chunk gives the same
    numbers as an uninterrupted run, and only its missing units are written.
    """
    from gitd.log import progress

    def done(j: int) -> bool:
        return unit_path(stage, j).exists()

    chunks = [range(a, min(a + batch_size, n)) for a in range(0, n, batch_size)]
    todo = [ch for ch in chunks if not all(done(j) for j in ch)]
    finished = sum(done(j) for j in range(n))
    if finished:
        log.info("%s: %d of %d %ss already done, not redone", stage.name, finished, n, noun)
    written = 0
    if not todo:
        return written
    bar = progress(total=sum(not done(j) for ch in todo for j in ch), desc=stage.name, unit=noun)
    try:
        for ch in todo:
            missing = [j for j in ch if not done(j)]
            if len(missing) < len(ch):
                log.info("%s: batch %d-%d partly done; computing it whole so that %s %s match "
                         "an uninterrupted run", stage.name, ch[0], ch[-1], noun, missing)
            for j, result in zip(ch, compute(ch)):
                if done(j):
                    continue
                write(j, result)
                written += 1
                bar.update(1)
                if on_written:
                    on_written(j)
    finally:
        bar.close()
    return written
