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
import re
import shutil
import tempfile
import time
from dataclasses import asdict, is_dataclass
from pathlib import Path
from typing import Any, Callable

from gitd.errors import GitdError, environment_error
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


def derive_seed(seed: int, *parts: Any) -> int:
    """A 31-bit seed for one unit of work, independent of which other units run beside it."""
    blob = ":".join(str(p) for p in (seed, *parts)).encode()
    return int.from_bytes(hashlib.sha256(blob).digest()[:4], "little") & 0x7FFFFFFF


def file_fingerprint(path: str | Path, length: int = 16) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:length]


def _disk_error(path: Path, exc: OSError) -> GitdError:
    # The target, not the temporary file the error may name.
    exc.filename = None
    return environment_error(path, exc)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_FILE_MODE = 0o666 & ~_umask()  # what open() would give; mkstemp alone gives 0600


# Temporary files of atomic writes: ``.NAME.PID-RANDOM.tmp`` beside their target. The pid lets a
# later run remove the leftovers of a killed one (``stale_temp_files``) and only those.
TEMP_FILE_RE = re.compile(r"^\..+\.(\d+)-[A-Za-z0-9_]+\.tmp$")


def temp_prefix(path: Path) -> str:
    return f".{path.name}.{os.getpid()}-"


def pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # EPERM: alive, someone else's
        return True
    return True


def stale_temp_files(folder: str | Path) -> list[Path]:
    """gitd's own temporary files under ``folder`` whose writer is no longer running (left by a
    SIGKILL between creating and renaming them)."""
    found = []
    for root, _, names in os.walk(folder):
        for name in names:
            m = TEMP_FILE_RE.match(name)
            if m and not pid_alive(int(m.group(1))):
                found.append(Path(root) / name)
    return found


def remove_stale_temp_files(folder: str | Path) -> int:
    """Delete ``stale_temp_files(folder)``; returns how many went."""
    if not Path(folder).is_dir():
        return 0
    gone = 0
    for path in stale_temp_files(folder):
        try:
            path.unlink()
            gone += 1
        except OSError:
            pass
    if gone:
        log.info("removed %d temporary file(s) left in %s by an interrupted run", gone, folder)
    return gone


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=temp_prefix(path), suffix=".tmp")
    except OSError as exc:
        raise _disk_error(path, exc) from exc
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
    # A lone surrogate from a JSON escape in the input is written back as that escape.
    atomic_write_bytes(path, text.encode("utf-8", "backslashreplace"))


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
    try:
        dst.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=dst.parent, prefix=temp_prefix(dst), suffix=".tmp")
    except OSError as exc:
        raise _disk_error(dst, exc) from exc
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


class Damaged(Exception):
    """A cached file that exists but cannot be used: unreadable, incomplete or inconsistent.
    Never shown to the user: the stage or unit is recomputed instead (``Stage.cached``,
    ``run_units``)."""


# What loading a damaged cache raises: JSON, numpy and PIL errors, missing keys and files.
_DAMAGE = (Damaged, GitdError, OSError, ValueError, KeyError, TypeError, IndexError, AttributeError,
           EOFError)


def require(condition: Any, problem: str) -> None:
    """Raise ``Damaged(problem)`` unless ``condition``: one-line validation of cached files."""
    if not condition:
        raise Damaged(problem)


class Stage:
    """A cached stage folder ``WORK/<name>-<fingerprint>/``.

    ``settings`` must hold every setting and upstream fingerprint the stage's output depends on.
    ``done`` marks a stage finished as a whole; ``cached(load, compute)`` returns a finished
    stage's result and recomputes one whose files fail to load. Per-unit stages write each unit
    atomically into ``path`` through ``run_units``, which recomputes damaged units only.
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
        try:
            previous = pointer.read_text(encoding="utf-8").strip() if pointer.exists() else None
        except (OSError, ValueError):
            previous = None  # a damaged pointer only loses the log line below
        if previous and previous != stage.key:
            old = read_json(stage.work / f"{name}-{previous}" / "settings.json", {}) or {}
            old = old if isinstance(old, dict) else {}
            changed = _changed(old, settings)
            log.info("%s: settings changed (%s), recomputing this stage and those after it",
                     name, ", ".join(changed) or "upstream")
        try:
            stage.path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise environment_error(stage.path, exc, action="create the stage folder") from None
        if not isinstance(read_json(stage.path / "settings.json"), dict):
            atomic_write_json(stage.path / "settings.json", settings)
        atomic_write_text(pointer, stage.key + "\n")
        return stage

    def cached(self, load: Callable[[], Any], compute: Callable[[], Any]) -> Any:
        """The stage's result. A finished stage (``DONE``) gives ``load()``; one whose files
        fail to load (missing, truncated, inconsistent: ``load`` raises) is recomputed from its
        inputs with a warning, as is an unfinished one: ``compute()`` writes the files (resuming
        what it can), then ``load()`` reads them back and the stage is marked done."""
        if self.done:
            try:
                value = load()
            except _DAMAGE as exc:
                log.warning("%s: the cached stage in %s is damaged (%s); recomputing it from its "
                            "inputs", self.name, self.path, _oneline(exc))
                (self.path / "DONE").unlink(missing_ok=True)
            else:
                log.info("%s: cached (%s)", self.name, self.path.name)
                return value
        clock = StageTimer(self)
        compute()
        value = load()  # what compute just wrote must load; if not, that is a bug: raise
        clock.save()
        self.mark_done({"seconds": round(clock.total(), 3)})
        return value

    @property
    def done(self) -> bool:
        return (self.path / "DONE").exists()

    def mark_done(self, summary: dict[str, Any] | None = None) -> None:
        atomic_write_json(self.path / "DONE", summary or {})

    def summary(self) -> dict[str, Any]:
        return read_json(self.path / "DONE", {}) or {}


def _changed(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """Names of what differs between two stage payloads: the settings fields by name, the
    rest (``version``, ``upstream``, ...) by key."""
    out = set()
    for k in set(old) | set(new):
        a, b = old.get(k), new.get(k)
        if a == b:
            continue
        if k == "settings" and isinstance(a, dict) and isinstance(b, dict):
            out.update(f for f in set(a) | set(b) if a.get(f) != b.get(f))
        else:
            out.add(k)
    return sorted(out)


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


def _oneline(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= 200 else text[:197] + "..."


def unit_json(stage: Stage, j: int, *keys: str) -> dict[str, Any]:
    """Unit ``j``'s ``.json`` as a dict holding ``keys``, or ``Damaged`` saying what is wrong."""
    path = unit_path(stage, j)
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except ValueError as exc:
        raise Damaged(f"{path.name} is not valid JSON ({_oneline(exc)})") from None
    require(isinstance(data, dict), f"{path.name} is not a JSON object")
    missing = [k for k in keys if k not in data]
    require(not missing, f"{path.name} has no {', '.join(repr(k) for k in missing)}")
    return data


def run_units(stage: Stage, n: int, batch_size: int, compute: Callable[[range], list],
              write: Callable[[int, Any], None], load: Callable[[int], Any], *,
              noun: str = "unit", on_written: Callable[[int], None] | None = None) -> list:
    """Finish units ``0..n-1`` of ``stage`` in fixed chunks of ``batch_size``; returns
    ``load(j)`` for every unit.

    ``compute(chunk)`` returns one result per index of the chunk; ``write(j, result)`` writes
    unit ``j`` atomically, its ``.json`` last; ``load(j)`` reads a unit back and validates it
    (``unit_json``, ``require``, ``gitd.stages.unit_image``). A unit is finished when its ``.json`` exists
    and it loads; one that exists but fails to load (a deleted or truncated image, an emptied
    JSON) is computed again, with a warning naming it, and finished units are kept. A chunk
    whose units are all finished is skipped. A partly finished chunk is computed again whole,
    because batch composition can change the low-order bits of model outputs: the same chunk
    gives the same numbers as an uninterrupted run, and only its missing units are written.
    """
    from gitd.log import end_warmup, progress

    loaded: dict[int, Any] = {}

    def done(j: int) -> bool:
        if j in loaded:
            return True
        if not unit_path(stage, j).exists():
            return False
        try:
            loaded[j] = load(j)
        except _DAMAGE as exc:
            log.warning("%s: %s %d in %s is damaged (%s); computing it again", stage.name, noun,
                        j, stage.path, _oneline(exc))
            unit_path(stage, j).unlink(missing_ok=True)  # gitd's own; the .json marks done
            return False
        return True

    chunks = [range(a, min(a + batch_size, n)) for a in range(0, n, batch_size)]
    todo = [ch for ch in chunks if not all(done(j) for j in ch)]
    finished = sum(done(j) for j in range(n))
    if finished:
        log.info("%s: %d of %d %ss already done, not redone", stage.name, finished, n, noun)
    if todo:
        # The first chunk's time includes the models' first call, which is no guide to the
        # rest: the time left is estimated from the chunks after it.
        bar = progress(total=sum(not done(j) for ch in todo for j in ch), desc=stage.name,
                       unit=noun, warmup=len(todo) > 1)
        try:
            for i, ch in enumerate(todo):
                if i == 1:
                    end_warmup(bar)
                missing = [j for j in ch if not done(j)]
                if len(missing) < len(ch):
                    log.info("%s: batch %d-%d partly done; computing it whole so that %s %s "
                             "match an uninterrupted run", stage.name, ch[0], ch[-1], noun,
                             missing)
                for j, result in zip(ch, compute(ch)):
                    if done(j):
                        continue
                    write(j, result)
                    loaded[j] = load(j)  # what was just written must load; if not, raise
                    bar.update(1)
                    if on_written:
                        on_written(j)
        finally:
            bar.close()
    return [loaded[j] for j in range(n)]
