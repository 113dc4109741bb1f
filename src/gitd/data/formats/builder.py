"""Rows to records, shared by every annotation format: paths resolved against the image root
(and kept inside it), captions cleaned, one record per image, problems named by file and row.
Also the JSON reading every format uses (``loads_annotations``: huge integers become values,
not crashes) and the one-line rendering of a bad value (``describe_value``)."""

from __future__ import annotations

import json
import os
import posixpath
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gitd.data.records import Problem, Record
from gitd.errors import DataError


@dataclass
class ImageGroup:
    id: str
    image: Path
    row: int | None
    captions: list[str] = field(default_factory=list)
    rows: list[int | None] = field(default_factory=list)  # rows that named this image
    image_id: Any = None  # BLIP training rows: the image_id its first row gave


class RecordBuilder:
    """Turns (row, image string, raw captions) entries into grouped, validated records.

    Shared by every format so that paths, captions, grouping and duplicates behave the same.
    """

    def __init__(self, file: str, root: Path, *, strict: bool, allow_outside_root: bool):
        self.file = file
        self.root = root
        self.root_real = os.path.realpath(root)
        self._root_prefix = self.root_real.rstrip(os.sep) + os.sep
        self._resolved: dict[str, tuple] = {}
        self._real_dirs: dict[str, str] = {}
        self.strict = strict
        self.allow_outside_root = allow_outside_root
        self.problems: list[Problem] = []
        self.duplicates: list[Problem] = []
        self.groups: dict[str, ImageGroup] = {}
        self._last_id: str | None = None  # id of the previous entry, for adjacency grouping
        self._last_was_list = False
        self.seen_splits: set[str] = set()  # Karpathy: splits present, for a helpful error

    def end_run(self) -> None:
        """An entry that added nothing: the next row of the same image is not its neighbour's
        (adjacency grouping restarts)."""
        self._last_id = None

    # -- problems ---------------------------------------------------------------------------
    def problem(self, message: str, row: int | None, kind: str) -> None:
        p = Problem(file=self.file, message=message, row=row, kind=kind)
        if self.strict:
            raise DataError(str(p))
        self.problems.append(p)

    # -- paths ------------------------------------------------------------------------------
    def resolve(self, value: Any, row: int | None, field_name: str = "image"
                ) -> tuple[str, Path] | None:
        """Return (id, absolute path) for an image string, or record why it is unusable."""
        if not isinstance(value, str):
            self.problem(f"'{field_name}' must be a path string, got {describe_value(value)}", row,
                         "bad-path")
            return None
        # Train files repeat each image once per caption: resolve each string once.
        hit = self._resolved.get(value)
        if hit is None:
            hit = self._resolved[value] = self._resolve(value)
        if hit[0] is None:
            self.problem(hit[1].replace("{field}", field_name), row, hit[2])
            return None
        return hit  # type: ignore[return-value]

    def _resolve(self, value: str) -> tuple:
        if not value.strip():
            return None, "'{field}' is an empty string", "bad-path"
        if "\x00" in value:
            return None, "'{field}' contains a NUL character", "bad-path"
        bad = bad_text(value)
        if bad:
            return None, f"'{{field}}' {bad}", "bad-path"
        norm = posixpath.normpath(value)
        absolute = os.path.isabs(norm)
        escapes = absolute or norm == ".." or norm.startswith("../")
        full = os.path.abspath(norm if absolute else os.path.join(self.root, norm))
        if not escapes and not self.allow_outside_root:
            # A symlink inside the root may still point outside it.
            real = self._realpath(full)
            escapes = real != self.root_real and not real.startswith(self._root_prefix)
        if escapes and not self.allow_outside_root:
            return (None, f"image path {value!r} lies outside the image root {self.root} (pass "
                    "--allow-outside-root / allow_outside_root=True to accept it)", "outside-root")
        return norm, Path(full)

    def _realpath(self, full: str) -> str:
        """``os.path.realpath`` with the parent folders' answers cached (one lstat per file)."""
        parent, name = os.path.split(full)
        real_parent = self._real_dirs.get(parent)
        if real_parent is None:
            real_parent = self._real_dirs[parent] = os.path.realpath(parent)
        try:
            is_link = stat.S_ISLNK(os.lstat(full).st_mode)
        except (OSError, ValueError):
            is_link = False  # missing or unreadable: reported by the existence check
        return os.path.realpath(full) if is_link else os.path.join(real_parent, name)

    # -- captions ---------------------------------------------------------------------------
    def captions(self, raw: Any, row: int | None, where: str = "caption") -> tuple[list[str], bool]:
        """Valid, whitespace-collapsed captions of one entry, and whether it held a list."""
        if isinstance(raw, (list, tuple)):
            out = []
            for j, c in enumerate(raw):
                text = self._one_caption(c, row, f"{where}[{j}]")
                if text is not None:
                    out.append(text)
            if not raw:
                self.problem(f"'{where}' is an empty list", row, "empty-caption")
            return out, True
        text = self._one_caption(raw, row, where)
        return ([text] if text is not None else []), False

    def _one_caption(self, c: Any, row: int | None, where: str) -> str | None:
        if not isinstance(c, str):
            self.problem(f"'{where}' must be a string, got {describe_value(c)}", row, "bad-caption")
            return None
        text = " ".join(c.split())
        if not text:
            self.problem(f"'{where}' is empty", row, "empty-caption")
            return None
        bad = bad_text(text)
        if bad:
            self.problem(f"'{where}' {bad}", row, "bad-caption")
            return None
        return text

    # -- grouping ---------------------------------------------------------------------------
    def add(self, row: int | None, image: Any, raw_captions: Any, *, image_field: str = "image",
            caption_field: str = "caption", grouped: bool = False, image_id: Any = None) -> None:
        """Add one entry. ``grouped``: entries of one image are expected apart (COCO).
        ``image_id``: a BLIP training row's id; rows of one image with the same id are one
        image's captions wherever they stand, not a duplicate listing."""
        resolved = self.resolve(image, row, image_field)
        if resolved is None:
            self._last_id = None
            return
        rid, full = resolved
        caps, is_list = self.captions(raw_captions, row, caption_field)
        group = self.groups.get(rid)
        if group is None:
            group = self.groups[rid] = ImageGroup(rid, full, row, image_id=image_id)
        elif image_id is not None and image_id == group.image_id:
            pass
        elif not grouped and (self._last_id != rid or is_list or self._last_was_list):
            first = group.rows[0] if group.rows else group.row
            where = f"row {first}" if first is not None else "an earlier entry"
            self.duplicates.append(Problem(
                self.file, f"image {rid!r} is listed again (first at {where}); its captions "
                "are merged into one record", row, "duplicate-image"))
            caps = [c for c in caps if c not in group.captions]
        group.captions.extend(caps)
        group.rows.append(row)
        self._last_id, self._last_was_list = rid, is_list

    def records(self) -> list[Record]:
        out = []
        for g in self.groups.values():
            if not g.captions:
                self.problem(f"image {g.id!r} has no valid caption; skipped", g.row, "no-caption")
                continue
            out.append(Record(id=g.id, image=g.image, captions=tuple(g.captions), row=g.row))
        return out


class HugeNumber:
    """A JSON integer too long for Python's int-string limit (4300 digits): kept as a value of
    its own so that it becomes a per-row problem where it is used, not a crash of the parser."""

    def __init__(self, digits: str):
        self.digits = len(digits.lstrip("-"))

    def __repr__(self) -> str:
        return f"a number with {self.digits} digits"


def _parse_int(text: str) -> int | HugeNumber:
    return HugeNumber(text) if len(text) > 4000 else int(text)


def loads_annotations(text: str) -> Any:
    """``json.loads`` for annotation files: huge integers become ``HugeNumber``."""
    return json.loads(text, parse_int=_parse_int)


def bad_text(value: str) -> str | None:
    """Why a string from an annotation cannot be used as text or a path, or None. JSON escapes
    can hold lone surrogates (``"\\ud800"``), which no file name or tokenizer accepts."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        return (f"contains an invalid character (lone surrogate U+{ord(value[exc.start]):04X} "
                f"at position {exc.start})")
    return None


def describe_value(value: Any) -> str:
    """A short JSON-ish rendering of a bad value for one-line messages."""
    if value is None:
        return "null"
    if isinstance(value, HugeNumber):
        return repr(value)
    kind = {dict: "object", list: "list", str: "string", bool: "boolean", int: "integer",
            float: "number"}.get(type(value), type(value).__name__)
    text = json.dumps(value, ensure_ascii=False, default=str)
    text = text.encode("utf-8", "backslashreplace").decode("utf-8")  # lone surrogates
    if len(text) > 40:
        text = text[:37] + "..."
    return f"{kind} {text}"
