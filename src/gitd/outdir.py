"""Where gitd may write: outputs that never overlap an input and never replace what is not gitd's.

Every command that writes goes through here before it starts work:

* ``Inputs`` collects every path the command reads (annotation files, image roots, the folder of
  every image, config files). ``OutputFolder.prepare`` and ``check_output_file`` refuse, with one
  line, an output that is, contains or lies inside any of them, so ``gitd distill DATA --out
  DATA`` or ``gitd select ... --out .`` can no longer overwrite the user's own pairs.
* An output folder carries a marker, ``.gitd-output.json``, naming the command that wrote it and
  every file in it. gitd writes into or replaces only an empty folder or one with a marker of the
  same kind, and refuses a folder holding anything the marker does not list.
* ``OutputFolder.replace()`` builds the new result in a hidden sibling folder and swaps it in,
  so an output folder always holds exactly one result: re-running with fewer pairs leaves no old
  images, and an old ``results.json`` or ``report.html`` goes with the result it described. The
  work folder (``OUT/work`` by default) moves across with it. A run killed during the swap is
  repaired by the next ``prepare`` of the same folder (its pid is in the sibling's name).
* Single files (``evaluate --out``, ``report --out``) are written only where no input lies and
  over nothing but an earlier file of the same kind written by gitd (``check_output_file``); a
  file written into a marked folder is added to its marker (``claim``).
"""

from __future__ import annotations

import json
import os
import re
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterable, Iterator

from gitd import __version__
from gitd.errors import GitdError, environment_error
from gitd.log import get_logger
from gitd.store import TEMP_FILE_RE, pid_alive, atomic_write_json, remove_stale_temp_files

log = get_logger("outdir")

MARKER = ".gitd-output.json"
# Output folders of these commands hold the same format and may replace one another.
KINDS = {"distill": "pairs", "select": "pairs", "caption": "pairs", "shapes": "shapes"}
_REPLACED = {"pairs"}  # kinds replaced as a whole; shapes resumes in place
_SIBLING_RE = re.compile(r"^\.(?P<name>.+)\.gitd-(?P<role>new|old)-(?P<pid>\d+)$")


def _real(path: str | Path) -> str:
    return os.path.realpath(os.path.abspath(os.fspath(path)))


def _inside(child: str, parent: str) -> bool:
    """``child`` lies strictly inside ``parent`` (both real paths)."""
    parent = parent.rstrip(os.sep) + os.sep
    return child.startswith(parent)


class Inputs:
    """Every path a command reads, as real paths: files, and folders (whose whole subtree is an
    input). ``dataset`` adds an annotation file, its image root and the folder of every image."""

    def __init__(self) -> None:
        self.files: dict[str, str] = {}    # real path -> what it is, for messages
        self.folders: dict[str, str] = {}
        self._dir_real: dict[str, str] = {}

    def file(self, path: str | Path | None, what: str) -> "Inputs":
        if path is not None:
            self.files.setdefault(_real(path), what)
        return self

    def folder(self, path: str | Path | None, what: str) -> "Inputs":
        if path is not None:
            self.folders.setdefault(_real(path), what)
        return self

    def dataset(self, ds, what: str = "dataset") -> "Inputs":
        """An annotation file, its image root and every image (with the image's folder)."""
        source = Path(ds.source)
        self.file(source, f"{what} annotation file")
        self.folder(ds.image_root, f"{what} image root")
        shards: set = set()
        for rec in ds.records:
            if hasattr(rec.image, "shard"):  # an image inside a tar shard: the shard is the input
                if rec.image.shard not in shards:
                    shards.add(rec.image.shard)
                    self.files.setdefault(_real(rec.image.shard), f"{what} shard")
                continue
            image = os.fspath(rec.image)
            parent, name = os.path.split(os.path.abspath(image))
            real_parent = self._dir_real.get(parent)
            if real_parent is None:
                real_parent = self._dir_real[parent] = _real(parent)
                self.folders.setdefault(real_parent, f"{what} image folder")
            real = os.path.join(real_parent, name)
            if os.path.islink(real):  # a symlinked image: its target is the input
                target = _real(real)
                self.files.setdefault(target, f"{what} image")
                self.folders.setdefault(os.path.dirname(target), f"{what} image folder")
            self.files.setdefault(real, f"{what} image")
        return self

    def overlap(self, target: str, *, as_folder: bool) -> str | None:
        """How ``target`` (a real path) overlaps an input, as words, or None."""
        for path, what in (*self.files.items(), *(self.folders.items() if as_folder else ())):
            if path == target:
                return f"is the {what} {path}"
        if not as_folder:
            return None
        for path, what in self.folders.items():
            if _inside(target, path):
                return f"lies inside the {what} {path}"
        for path, what in (*self.folders.items(), *self.files.items()):
            if _inside(path, target):
                return f"contains the {what} {path}"
        return None


def refuse_overlap(out: str | Path, inputs: Inputs, what: str, *, as_folder: bool = True) -> None:
    """One line (exit 2) when ``out`` is, contains or lies inside any of ``inputs``."""
    _refuse_overlap(Path(out), _real(out), inputs, what, as_folder=as_folder)


def _refuse_overlap(out: Path, real: str, inputs: Inputs, what: str, *, as_folder: bool) -> None:
    how = inputs.overlap(real, as_folder=as_folder)
    if how:
        raise GitdError(f"{out}: the {what} {how}; gitd never writes over its inputs, choose "
                        f"a {'folder' if as_folder else 'file'} outside them")


def read_marker(folder: str | Path) -> dict | None:
    """The marker of ``folder``: a dict, ``{}`` when present but unreadable, None when absent."""
    path = Path(folder) / MARKER
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _marker(command: str, files: Iterable[str], *, complete: bool) -> dict:
    return {"written_by": f"gitd {command}", "kind": KINDS.get(command, command),
            "gitd_version": __version__, "complete": complete, "files": sorted(files)}


def _files_under(folder: Path, skip: Iterable[str] = ()) -> list[str]:
    """Relative posix paths of every file under ``folder`` (not following links), except the
    top-level entries ``skip``, the marker and gitd's own temporary files."""
    skip = set(skip)
    out = []
    for root, dirs, names in os.walk(folder):
        rel_root = Path(root).relative_to(folder)
        if rel_root == Path("."):
            dirs[:] = [d for d in dirs if d not in skip]
            names = [n for n in names if n != MARKER and n not in skip]
        for name in names:
            if not TEMP_FILE_RE.match(name):
                out.append((rel_root / name).as_posix())
        for d in list(dirs):  # links to folders are listed as entries, never followed
            if os.path.islink(os.path.join(root, d)):
                out.append((rel_root / d).as_posix())
    return out


def _foreign(folder: Path, marker: dict, skip: Iterable[str]) -> list[str]:
    listed = set(marker.get("files") or [])
    return [f for f in _files_under(folder, skip) if f not in listed]


def _work_folders(folder: Path) -> set[str]:
    """Top-level entries of an output folder that are gitd work folders (stage pointers or the
    input record inside): cache to keep, whichever --work the current run uses."""
    found = set()
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return found
    for e in entries:
        if e.is_dir(follow_symlinks=False) and (
                os.path.isfile(os.path.join(e.path, "inputs.json"))
                or any(n.endswith(".current") for n in os.listdir(e.path))):
            found.add(e.name)
    return found


def _describe(paths: list[str]) -> str:
    shown = ", ".join(paths[:3])
    return shown + (f" and {len(paths) - 3} more" if len(paths) > 3 else "")


class OutputFolder:
    """An output folder gitd owns (see the module docstring); make one with ``prepare``."""

    def __init__(self, path: Path, shown: Path, command: str, carry: set[str]):
        self.path = path        # real path
        self.shown = shown      # as the user gave it
        self.command = command
        self.carry = carry      # top-level work folders, moved across on swap

    @classmethod
    def prepare(cls, out: str | Path, *, command: str, inputs: Inputs,
                work: str | Path | None = None) -> "OutputFolder":
        """Check ``out`` (and ``work``) against ``inputs`` and ownership, repair what a killed
        run left, create ``out`` with its marker if needed. Raises ``GitdError`` (one line)."""
        shown = Path(out)
        if shown.exists() and not shown.is_dir():
            raise GitdError(f"{shown}: --out names an existing file; an output is a folder, "
                            "choose a folder name")
        real = _real(shown)
        _refuse_overlap(shown, real, inputs, "output folder", as_folder=True)
        carry: set[str] = set()
        inside = False
        if work is not None:
            work_real = _real(work)
            _refuse_overlap(Path(work), work_real, inputs, "work folder", as_folder=True)
            if work_real == real:
                raise GitdError(f"{work}: the work folder cannot be the output folder itself; "
                                "leave --work out (default OUT/work) or name another folder")
            inside = _inside(work_real, real)
            if inside:
                carry.add(Path(work_real).relative_to(real).parts[0])
                if MARKER in carry:
                    raise GitdError(f"{work}: not a usable work folder name")
        if os.path.isdir(real) and read_marker(real) is not None:
            carry |= _work_folders(Path(real))
        folder = cls(Path(real), shown, command, carry)
        folder._repair_siblings()
        folder._claim_or_create()
        remove_stale_temp_files(folder.path)
        if work is not None and not inside:
            remove_stale_temp_files(work)
        return folder

    # -- ownership -------------------------------------------------------------------------
    def _claim_or_create(self) -> None:
        path, shown = self.path, self.shown
        kind = KINDS.get(self.command, self.command)
        if path.is_dir():
            marker = read_marker(path)
            if marker is None:
                if any(e for e in os.listdir(path) if e not in self.carry):
                    raise GitdError(f"{shown}: folder is not empty and was not written by gitd "
                                    f"(no {MARKER}); gitd never writes over files it did not "
                                    "create, choose a new or empty folder")
                self._write_marker(path, [], complete=False)
                return
            if marker.get("kind") != kind:
                by = marker.get("written_by") or "an unreadable marker"
                raise GitdError(f"{shown}: folder holds the output of {by}, not of gitd "
                                f"{self.command}; choose another folder")
            # Only a folder that will be replaced as a whole must hold nothing else.
            foreign = _foreign(path, marker, self.carry) if kind in _REPLACED else []
            if foreign:
                raise GitdError(f"{shown}: folder holds files gitd did not write "
                                f"({_describe(foreign)}); move them away or choose another "
                                "folder")
            return
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise environment_error(shown, exc, action="create the output folder") from None
        self._write_marker(path, [], complete=False, created=True)

    def record_files(self) -> None:
        """Mark an output written in place (not through ``replace``) complete, listing its
        files."""
        self._write_marker(self.path, _files_under(self.path, self.carry), complete=True)

    def _write_marker(self, folder: Path, files: Iterable[str], *, complete: bool,
                      created: bool = False) -> None:
        marker = _marker(self.command, files, complete=complete)
        if created:
            marker["created"] = True  # gitd made the folder itself: it may remove it
        atomic_write_json(folder / MARKER, marker)

    @staticmethod
    def discard_unused(out: str | Path) -> None:
        """After a run that failed before doing any work (a model that cannot be loaded, a bad
        setting found late): remove what ``prepare`` put there, leaving nothing behind. A
        folder with a result or with stage folders (work to resume) is kept as it is."""
        path = Path(_real(out))
        marker = read_marker(path)
        if not marker or marker.get("complete") or marker.get("files"):
            return
        ours = []
        for rel in _files_under(path):
            parts = Path(rel).parts
            if not (len(parts) == 2 and parts[1] == "inputs.json"):
                return  # real work: keep it for the next run
            ours.append(path / rel)
        for p in [*ours, path / MARKER]:
            p.unlink(missing_ok=True)
        for root, _, _ in sorted(os.walk(path), key=lambda w: -len(w[0])):
            if root != str(path) or marker.get("created"):
                try:
                    os.rmdir(root)
                except OSError:
                    pass

    # -- repair ----------------------------------------------------------------------------
    def _siblings(self) -> Iterator[tuple[Path, str]]:
        parent = self.path.parent
        try:
            names = os.listdir(parent)
        except OSError:
            return
        for name in names:
            m = _SIBLING_RE.match(name)
            if m and m.group("name") == self.path.name and not pid_alive(int(m.group("pid"))):
                sib = parent / name
                if read_marker(sib) is not None:  # only gitd's own half-built folders
                    yield sib, m.group("role")

    def _repair_siblings(self) -> None:
        """Finish or undo a swap a killed run left half done; keep its work folder."""
        for sib, role in sorted(self._siblings(), key=lambda s: s[1] != "new"):
            marker = read_marker(sib) or {}
            if not self.path.exists() and (role == "old" or marker.get("complete")):
                log.warning("%s: restoring the output an interrupted run left in %s",
                            self.shown, sib.name)
                os.rename(sib, self.path)
                continue
            self._take_back_work(sib)
            log.info("%s: removing %s, left half-built by an interrupted run", self.shown,
                     sib.name)
            # A half-built result is gitd's whole; an old one only as far as its marker says.
            _remove_owned(sib, marker if role == "old" else {"files": _files_under(sib)})

    def _take_back_work(self, sib: Path) -> None:
        for name in self.carry | _work_folders(sib):
            if (sib / name).is_dir() and self.path.is_dir() and not (self.path / name).exists():
                os.rename(sib / name, self.path / name)

    # -- replace as a whole ----------------------------------------------------------------
    @contextmanager
    def replace(self) -> Iterator[Path]:
        """Yield a fresh hidden sibling folder to write the whole new result into; on success
        swap it in for the folder's old result (work folder kept), on failure remove it."""
        staging = self.path.parent / f".{self.path.name}.gitd-new-{os.getpid()}"
        if staging.exists():
            _remove_owned(staging, read_marker(staging) or {})
        try:
            staging.mkdir()
        except OSError as exc:
            raise environment_error(staging, exc, action="create a folder beside the output"
                                    ) from None
        try:
            self._write_marker(staging, [], complete=False)
            yield staging
            self._swap(staging)
        except BaseException:
            if staging.exists():
                self._take_back_work(staging)
                _remove_owned(staging, {"files": _files_under(staging)})
            raise

    def _swap(self, staging: Path) -> None:
        clash = sorted(n for n in self.carry if (staging / n).exists())
        if clash:
            raise GitdError(f"{self.shown}: the work folder's name {clash[0]!r} is also a "
                            "name in the output; choose another --work")
        self._write_marker(staging, _files_under(staging), complete=True)
        if not self.path.exists():
            os.rename(staging, self.path)
            return
        old_marker = read_marker(self.path) or {}
        foreign = _foreign(self.path, old_marker, self.carry)
        if foreign:
            raise GitdError(f"{self.shown}: files gitd did not write appeared during the run "
                            f"({_describe(foreign)}); the new result was not written, move "
                            "them away and re-run")
        old = self.path.parent / f".{self.path.name}.gitd-old-{os.getpid()}"
        try:
            for name in sorted(self.carry):
                if (self.path / name).exists():
                    os.rename(self.path / name, staging / name)
            os.rename(self.path, old)
            try:
                os.rename(staging, self.path)
            except OSError:
                os.rename(old, self.path)
                raise
        except OSError as exc:
            raise environment_error(self.shown, exc, action="replace the output folder"
                                    ) from None
        if old_marker.get("files"):
            log.info("%s: replaced the previous result (%d files) as a whole", self.shown,
                     len(old_marker["files"]))
        _remove_owned(old, old_marker)


def _remove_owned(folder: Path, marker: dict) -> None:
    """Delete the files ``marker`` lists (and gitd's temporary files) under ``folder``, then the
    folders left empty; anything else stays where it is, with a warning."""
    for rel in marker.get("files") or []:
        p = folder / rel
        try:
            if p.is_symlink() or p.is_file():
                p.unlink()
        except OSError:
            pass
    for root, dirs, names in os.walk(folder, topdown=False):
        for name in names:
            if name == MARKER or TEMP_FILE_RE.match(name):
                try:
                    os.unlink(os.path.join(root, name))
                except OSError:
                    pass
        try:
            os.rmdir(root)
        except OSError:
            pass
    if folder.exists():
        left = _files_under(folder)
        log.warning("%s: kept %s (not written by gitd)", folder, _describe(left) or "it")


# -- single output files ---------------------------------------------------------------------

def marked_folder(path: Path) -> Path | None:
    """The nearest folder at or above ``path``'s folder that carries a marker."""
    for folder in [path.parent, *path.parent.parents]:
        if (folder / MARKER).is_file():
            return folder
    return None


def check_output_file(out: str | Path, inputs: Inputs, *, what: str,
                      owned: Callable[[Path], bool], create_parent: bool = False) -> Path:
    """Check that ``out`` may be written: its folder exists (or is created, with
    ``create_parent``), it is not an input (it may lie in an input's folder, as
    ``OUT/results.json`` does), and an existing file there is one gitd wrote (``owned``: a check
    of its content, or a marker listing it). Returns ``out``."""
    out = Path(out)
    if out.is_dir():
        raise GitdError(f"{out}: is a folder; give a file name for the {what}, e.g. "
                        f"{out / ('results.json' if 'result' in what else 'report.html')}")
    parent = out.parent
    if create_parent and not parent.exists():
        try:
            parent.mkdir(parents=True)
        except OSError as exc:
            raise environment_error(parent, exc, action="create the folder") from None
    if not parent.is_dir():
        what_is = "is not a folder" if parent.exists() else "does not exist"
        raise GitdError(f"{out}: {parent} {what_is}; create the folder first or choose another "
                        f"place for the {what}")
    _refuse_overlap(out, _real(out), inputs, what, as_folder=False)
    if out.exists() or out.is_symlink():
        folder = marked_folder(Path(_real(out)))
        rel = Path(_real(out)).relative_to(folder).as_posix() if folder else None
        listed = folder is not None and rel in set((read_marker(folder) or {}).get("files") or [])
        if not (listed or (out.is_file() and not out.is_symlink() and owned(out))):
            raise GitdError(f"{out}: exists and was not written by gitd; gitd never overwrites "
                            f"files it did not create, choose another file name for the {what}")
    return out


def claim(path: str | Path) -> None:
    """Record ``path`` (just written by gitd) in the marker of the output folder it lies in, so
    that replacing that output later removes it with the result it belongs to."""
    real = Path(_real(path))
    folder = marked_folder(real)
    if folder is None:
        return
    marker = read_marker(folder)
    if not marker:
        return
    rel = real.relative_to(folder).as_posix()
    files = list(marker.get("files") or [])
    if rel not in files:
        files.append(rel)
        marker["files"] = sorted(files)
        atomic_write_json(folder / MARKER, marker)


def release(path: str | Path) -> None:
    """Forget ``path`` (just deleted by gitd) in its output folder's marker."""
    real = Path(_real(path))
    folder = marked_folder(real)
    marker = read_marker(folder) if folder is not None else None
    if not marker:
        return
    rel = real.relative_to(folder).as_posix()
    files = [f for f in marker.get("files") or [] if f != rel]
    if len(files) != len(marker.get("files") or []):
        marker["files"] = files
        atomic_write_json(folder / MARKER, marker)


def file_starts_with(path: Path, *needles: bytes, limit: int = 1 << 16) -> bool:
    """Whether the first ``limit`` bytes of ``path`` contain every one of ``needles``."""
    try:
        with open(path, "rb") as f:
            head = f.read(limit)
    except OSError:
        return False
    return all(n in head for n in needles)
