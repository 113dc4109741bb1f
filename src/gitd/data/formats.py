"""Reading image-caption datasets in the formats users already have.

``load_dataset`` detects the format from the file's content (not its name):

* BLIP/LoRS annotation JSON: ``[{"image": ..., "caption": str | [str, ...], "image_id"?}, ...]``:
  the training layout (one row per caption, rows of one image sharing an ``image_id``; gitd's own
  ``OUT/annotations.json``) and the test layout (a caption list per image) both group into one
  record per image.
* Karpathy split files: ``{"images": [{"filename", "filepath"?, "split", "sentences": [...]}]}``.
* COCO captions: ``{"images": [{"id", "file_name"}], "annotations": [{"image_id", "caption"}]}``.
* Hugging Face imagefolder: a folder with ``metadata.jsonl`` or ``metadata.csv`` (``file_name``
  plus a text column), or such a file itself.
* WebDataset: a tar shard, a folder of ``*.tar`` shards or a brace pattern
  (``data/{00000..00331}.tar``) of ``KEY.jpg|png|webp`` + ``KEY.txt`` samples
  (``gitd.data.shards``); records' images are ``TarMember``s, read by offset.

Rows that cannot be used become ``Problem``s on the returned ``Dataset`` (or raise ``DataError``
with ``strict=True``); a file that cannot be read at all raises ``DataError`` naming the file.
Images are not opened unless ``verify_images=True``.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import io
import json
import os
import posixpath
import stat
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from gitd.data.records import Dataset, Problem, Record
from gitd.errors import DataError
from gitd.log import get_logger, progress
from gitd.store import atomic_write_json, file_fingerprint, fingerprint, read_json
from gitd.workers import sigint_deferred, stop_pool

log = get_logger("data.formats")

FORMATS = ("blip", "karpathy", "coco", "imagefolder", "webdataset")
TEXT_COLUMNS = ("text", "caption", "captions")
# Karpathy's COCO split puts 30k val images in "restval"; every paper trains on train+restval.
TRAIN_SPLITS = ("train", "restval")
# Below this many images a process pool costs more than it saves.
_POOL_MIN_IMAGES = 64


# --------------------------------------------------------------------------------------------
# Rows -> records


@dataclass
class _Group:
    id: str
    image: Path
    row: int | None
    captions: list[str] = field(default_factory=list)
    rows: list[int | None] = field(default_factory=list)  # rows that named this image
    image_id: Any = None  # BLIP training rows: the image_id its first row gave


class _Builder:
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
        self.groups: dict[str, _Group] = {}
        self._last_id: str | None = None  # id of the previous entry, for adjacency grouping
        self._last_was_list = False
        self.seen_splits: set[str] = set()  # Karpathy: splits present, for a helpful error

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
            self.problem(f"'{field_name}' must be a path string, got {_describe(value)}", row,
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
        bad = _bad_text(value)
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
            self.problem(f"'{where}' must be a string, got {_describe(c)}", row, "bad-caption")
            return None
        text = " ".join(c.split())
        if not text:
            self.problem(f"'{where}' is empty", row, "empty-caption")
            return None
        bad = _bad_text(text)
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
            group = self.groups[rid] = _Group(rid, full, row, image_id=image_id)
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


def _loads(text: str) -> Any:
    """``json.loads`` for annotation files: huge integers become ``HugeNumber``."""
    return json.loads(text, parse_int=_parse_int)


def _bad_text(value: str) -> str | None:
    """Why a string from an annotation cannot be used as text or a path, or None. JSON escapes
    can hold lone surrogates (``"\\ud800"``), which no file name or tokenizer accepts."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        return (f"contains an invalid character (lone surrogate U+{ord(value[exc.start]):04X} "
                f"at position {exc.start})")
    return None


def _describe(value: Any) -> str:
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


# --------------------------------------------------------------------------------------------
# Formats


def _parse_blip(data: list, b: _Builder) -> None:
    owners: dict[Any, tuple[int, Any]] = {}  # image_id -> (first row, its image string)
    for i, row in enumerate(data):
        if not isinstance(row, dict):
            b.problem(f"row must be an object with 'image' and 'caption', got {_describe(row)}",
                      i, "bad-row")
            b._last_id = None
            continue
        missing = [k for k in ("image", "caption") if k not in row]
        if missing:
            b.problem(f"row has no {' or '.join(repr(k) for k in missing)} key", i, "missing-field")
            b._last_id = None
            continue
        image_id = row.get("image_id")
        if isinstance(image_id, bool) or not isinstance(image_id, (int, str)):
            image_id = None
        elif image_id in owners:
            first_row, first_image = owners[image_id]
            if _same_path_string(first_image, row["image"]) is False:
                b.duplicates.append(Problem(
                    b.file, f"image_id {image_id!r} already names image {first_image!r} (row "
                    f"{first_row}); training loaders would treat the two as one image",
                    i, "duplicate-id"))
        else:
            owners[image_id] = (i, row["image"])
        b.add(i, row["image"], row["caption"], image_id=image_id)


def _same_path_string(a: Any, b: Any) -> bool | None:
    if not (isinstance(a, str) and isinstance(b, str)):
        return None
    return posixpath.normpath(a) == posixpath.normpath(b)


def _karpathy_wanted(entry_split: Any, split: str) -> bool:
    if split == "all":
        return True
    if split == "train":
        return entry_split in TRAIN_SPLITS
    return entry_split == split


def _parse_karpathy(data: dict, b: _Builder, split: str) -> None:
    images = data["images"]
    if not isinstance(images, list):
        raise DataError(f"{b.file}: 'images' must be a list, got {_describe(images)}")
    for i, entry in enumerate(images):
        if not isinstance(entry, dict):
            b.problem(f"images entry must be an object, got {_describe(entry)}", i, "bad-row")
            continue
        entry_split = entry.get("split")
        if entry_split is None:
            if split != "all":
                b.problem("images entry has no 'split' key (use split='all' to take it)", i,
                          "missing-field")
                continue
        else:
            b.seen_splits.add(str(entry_split))
        if not _karpathy_wanted(entry_split, split):
            continue
        if "filename" not in entry:
            b.problem("images entry has no 'filename' key", i, "missing-field")
            continue
        if "sentences" not in entry:
            b.problem("images entry has no 'sentences' key", i, "missing-field")
            continue
        name = entry["filename"]
        fp = entry.get("filepath")
        if isinstance(name, str) and isinstance(fp, str) and fp:
            name = f"{fp}/{name}"
        sentences = entry["sentences"]
        if isinstance(sentences, list):
            raw = [s.get("raw") if isinstance(s, dict) else s for s in sentences]
        else:
            raw = sentences
        b.add(i, name, raw, image_field="filename", caption_field="sentences.raw")


def _parse_coco(data: dict, b: _Builder) -> None:
    images, annotations = data.get("images"), data["annotations"]
    if not isinstance(images, list):
        raise DataError(f"{b.file}: 'images' must be a list, got {_describe(images)}")
    if not isinstance(annotations, list):
        raise DataError(f"{b.file}: 'annotations' must be a list, got {_describe(annotations)}")
    by_id: dict[Any, tuple[int, Any]] = {}
    by_name: dict[str, int] = {}
    for i, img in enumerate(images):
        if not isinstance(img, dict) or "id" not in img or "file_name" not in img:
            b.problem(f"images[{i}] must be an object with 'id' and 'file_name', got "
                      f"{_describe(img)}", None, "bad-row")
            continue
        key = img["id"]
        if not isinstance(key, (int, str)) or isinstance(key, bool):
            b.problem(f"images[{i}]: 'id' must be an integer or string, got {_describe(key)}",
                      None, "bad-row")
            continue
        if key in by_id:
            b.problem(f"images[{i}]: id {key!r} already used by images[{by_id[key][0]}]; "
                      "the first is kept", None, "duplicate-id")
            continue
        name = img["file_name"]
        if isinstance(name, str) and name in by_name:
            b.duplicates.append(Problem(
                b.file, f"images[{i}]: file {name!r} already listed as images[{by_name[name]}]; "
                "their captions are merged", None, "duplicate-image"))
        elif isinstance(name, str):
            by_name[name] = i
        by_id[key] = (i, name)
    # Records follow the order of 'images'; captions follow the order of 'annotations'.
    caps: dict[Any, list[tuple[int, Any]]] = {k: [] for k in by_id}
    for j, ann in enumerate(annotations):
        if not isinstance(ann, dict):
            b.problem(f"annotation must be an object, got {_describe(ann)}", j, "bad-row")
            continue
        missing = [k for k in ("image_id", "caption") if k not in ann]
        if missing:
            b.problem(f"annotation has no {' or '.join(repr(k) for k in missing)} key", j,
                      "missing-field")
            continue
        key = ann["image_id"]
        if not isinstance(key, (int, str)) or isinstance(key, bool) or key not in caps:
            b.problem(f"annotation's image_id {key!r} matches no entry of 'images'", j,
                      "unknown-image-id")
            continue
        caps[key].append((j, ann["caption"]))
    for key, (i, name) in by_id.items():
        entries = caps[key]
        if not entries:
            resolved = b.resolve(name, None, f"images[{i}].file_name")
            if resolved is not None:
                b.problem(f"image {resolved[0]!r} (images[{i}]) has no caption annotation; "
                          "skipped", None, "no-caption")
            continue
        for j, cap in entries:
            b.add(j, name, cap, image_field=f"images[{i}].file_name", grouped=True)


def _is_number(value: Any) -> bool:
    try:
        float(value)
    except (TypeError, ValueError):
        return False
    return True


def _pick_text_column(columns: Sequence[str], sample: dict, file: str) -> str:
    for name in TEXT_COLUMNS:
        if name in columns:
            return name
    # CSV has no types; like Hugging Face's loader, a column of numbers is not text.
    others = [c for c in columns if c != "file_name"
              and isinstance(sample.get(c), (str, list)) and not _is_number(sample.get(c))]
    if len(others) == 1:
        return others[0]
    raise DataError(f"{file}: cannot tell which column holds the captions (none of "
                    f"{', '.join(TEXT_COLUMNS)}; string columns: {', '.join(others) or 'none'})")


def _parse_imagefolder_rows(rows: list[tuple[int, dict]], b: _Builder, *, csv_lists: bool) -> None:
    if not rows:
        return
    columns: list[str] = []
    for _, r in rows:
        for k in r:
            if k not in columns:
                columns.append(k)
    if "file_name" not in columns:
        raise DataError(f"{b.file}: no 'file_name' column (columns: {', '.join(columns)})")
    text = _pick_text_column(columns, rows[0][1], b.file)
    for line, r in rows:
        if r.get("file_name") in (None, ""):
            b.problem("row has no 'file_name'", line, "missing-field")
            b._last_id = None
            continue
        if r.get(text) is None:
            b.problem(f"row has no {text!r} value", line, "missing-field")
            b._last_id = None
            continue
        raw = r[text]
        if csv_lists and isinstance(raw, str) and raw.lstrip().startswith("["):
            try:
                parsed = _loads(raw)
            except json.JSONDecodeError:
                parsed = None
            if isinstance(parsed, list):
                raw = parsed
        b.add(line, r["file_name"], raw, image_field="file_name", caption_field=text)


def _jsonl_rows(text: str, b: _Builder) -> list[tuple[int, dict]]:
    rows = []
    for n, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            obj = _loads(line)
        except json.JSONDecodeError as exc:
            b.problem(f"not valid JSON (column {exc.colno}: {exc.msg})", n, "json")
            continue
        except RecursionError:
            b.problem("JSON nested too deeply", n, "json")
            continue
        if not isinstance(obj, dict):
            b.problem(f"line must be a JSON object, got {_describe(obj)}", n, "bad-row")
            continue
        rows.append((n, obj))
    return rows


def _csv_rows(text: str, b: _Builder) -> list[tuple[int, dict]]:
    # The csv module stops the whole file at a field over its size limit; a field that long is
    # one bad row, so the reader takes any length and rows over the usual limit are problems.
    limit = csv.field_size_limit()
    csv.field_size_limit(max(limit, min(len(text) + 1, 2**31 - 1)))
    try:
        reader = csv.DictReader(io.StringIO(text, newline=""))
        header = reader.fieldnames
        if not header:
            raise DataError(f"{b.file}: CSV file has no header row")
        if any(len(h or "") > limit for h in header):
            raise DataError(f"{b.file}: CSV header has a field over {limit} characters")
        rows = []
        for r in reader:
            # line_num counts physical lines, so quoted multi-line fields keep the right line.
            line = reader.line_num
            extra = r.pop(None, None)
            if extra:
                b.problem(f"row has {len(extra)} more field(s) than the header", line, "bad-row")
                continue
            long = [k for k, v in r.items() if isinstance(v, str) and len(v) > limit]
            if long:
                b.problem(f"field {long[0]!r} is {len(r[long[0]]):,} characters long, over the "
                          f"limit of {limit:,}", line, "bad-row")
                continue
            rows.append((line, {k: v for k, v in r.items() if k is not None}))
        return rows
    except csv.Error as exc:
        raise DataError(f"{b.file}: not a readable CSV file ({exc})") from None
    finally:
        csv.field_size_limit(limit)


# --------------------------------------------------------------------------------------------
# Detection and loading


@dataclass
class _Source:
    file: Path          # the annotation file actually read
    shown: str          # that path as the user gave it (used in problems)
    default_root: Path  # image root when none is given
    folder_input: bool  # path was a folder
    split_folder: str | None = None  # Hugging Face layout: the split sub-folder read


_FOLDER_FILES = ("annotations.json", "metadata.jsonl", "metadata.csv")
# Hugging Face names its validation split "validation"; the field's files say "val".
_SPLIT_ALIASES = {"val": "validation", "validation": "val"}


def _annotation_in(folder: Path) -> Path | None:
    return next((folder / n for n in _FOLDER_FILES if (folder / n).is_file()), None)


def _locate(path: str | Path, split: str) -> _Source:
    p = Path(path)
    if p.is_dir():
        found = _annotation_in(p)
        if found is not None:
            return _Source(found, str(found), p, True)
        # The Hugging Face split layout: DATA/train/metadata.jsonl, DATA/test/metadata.jsonl.
        try:
            subs = sorted(d.name for d in p.iterdir() if d.is_dir())
        except OSError as exc:
            raise DataError(f"{p}: cannot list folder ({exc.strerror or exc})") from None
        splits = [d for d in subs if _annotation_in(p / d) is not None]
        if splits:
            name = split if split in splits else _SPLIT_ALIASES.get(split)
            if name not in splits:
                raise DataError(f"{p}: no split folder {split!r} (split folders with "
                                f"annotations: {', '.join(splits)}); pick one with --split")
            found = _annotation_in(p / name)
            return _Source(found, str(found), p / name, True, split_folder=name)
        seen = f" (sub-folders: {', '.join(subs[:12])}{', ...' if len(subs) > 12 else ''})" \
            if subs else ""
        raise DataError(f"{p}: folder holds no annotations.json, metadata.jsonl or metadata.csv, "
                        f"and no split sub-folder holding one{seen}; pass the annotation file "
                        "itself")
    if not p.exists():
        raise DataError(f"{p}: annotation file not found")
    if not p.is_file():
        raise DataError(f"{p}: not a regular file")
    return _Source(p, str(p), p.parent, False)


def _read_text(src: _Source) -> str:
    try:
        data = src.file.read_bytes()
    except PermissionError:
        raise DataError(f"{src.shown}: cannot read annotation file (permission denied)") from None
    except OSError as exc:
        raise DataError(f"{src.shown}: cannot read annotation file ({exc.strerror or exc})") from None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DataError(f"{src.shown}: not a UTF-8 text file (undecodable byte at offset "
                        f"{exc.start}); expected JSON, JSONL or CSV annotations") from None


def _looks_like_csv(text: str) -> bool:
    first = text.lstrip().split("\n", 1)[0]
    return not first.startswith(("[", "{")) and "file_name" in first


def _first_line_is_object(text: str) -> bool:
    for line in text.splitlines():
        if line.strip():
            try:
                return isinstance(_loads(line), dict)
            except (json.JSONDecodeError, RecursionError):
                return False
    return False


def _parse_any(src: _Source, text: str, b: _Builder, split: str) -> str:
    """Fill ``b`` from ``text``; return the format name. Structural trouble raises DataError."""
    name = src.file.name.lower()
    if name == "metadata.csv" or (not text.lstrip().startswith(("[", "{")) and _looks_like_csv(text)):
        _parse_imagefolder_rows(_csv_rows(text, b), b, csv_lists=True)
        return "imagefolder"
    if not text.strip():
        raise DataError(f"{src.shown}: file is empty")
    try:
        data = _loads(text)
    except json.JSONDecodeError as exc:
        if exc.msg == "Extra data" and _first_line_is_object(text):
            _parse_imagefolder_rows(_jsonl_rows(text, b), b, csv_lists=False)
            return "imagefolder"
        raise DataError(f"{src.shown}: not valid JSON (line {exc.lineno}, column {exc.colno}: "
                        f"{exc.msg})") from None
    except RecursionError:
        raise DataError(f"{src.shown}: JSON nested too deeply to read") from None
    if isinstance(data, list):
        if not data:
            raise DataError(f"{src.shown}: empty dataset (the JSON list has no rows)")
        _parse_blip(data, b)
        return "blip"
    if isinstance(data, dict):
        if "file_name" in data:  # a one-line metadata.jsonl
            _parse_imagefolder_rows([(1, data)], b, csv_lists=False)
            return "imagefolder"
        if "annotations" in data:
            if "images" not in data:
                raise DataError(f"{src.shown}: has 'annotations' but no 'images' list, so it is "
                                "not COCO captions JSON")
            _parse_coco(data, b)
            return "coco"
        if "images" in data:
            _refuse_coco_without_annotations(src, data["images"])
            _parse_karpathy(data, b, split)
            return "karpathy"
        keys = ", ".join(repr(k) for k in list(data)[:8]) or "none"
        raise DataError(f"{src.shown}: unknown annotation format: a JSON object with keys {keys}; "
                        "expected a BLIP list [{image, caption}], Karpathy {images: [...]} or "
                        "COCO {images, annotations}")
    raise DataError(f"{src.shown}: unknown annotation format: top level is "
                    f"{_describe(data)}, expected a list or an object")


def _refuse_coco_without_annotations(src: _Source, images: Any) -> None:
    """A COCO file cut before its captions would otherwise read as a Karpathy file whose every
    entry lacks a split; say what it is instead."""
    first = next((e for e in images if isinstance(e, dict)), None) \
        if isinstance(images, list) else None
    if first is not None and "file_name" in first and not {"filename", "sentences"} & set(first):
        raise DataError(f"{src.shown}: looks like COCO captions JSON ('images' entries have "
                        "'file_name') but has no 'annotations' list, so there are no captions")


def _image_root(images: str | Path | None, src: _Source) -> Path:
    root = Path(images) if images is not None else src.default_root
    if not root.is_dir():
        what = "image root" if images is not None else "annotation file's folder"
        raise DataError(f"{root}: {what} is not an existing folder")
    return Path(os.path.abspath(root))


def _check_files(records: list[Record], b: _Builder) -> list[Record]:
    """Cheap existence check: one stat per image, no decoding."""
    kept = []
    for r in records:
        try:
            st = os.stat(r.image)
        except FileNotFoundError:
            b.problem(f"image {r.id!r} not found ({r.image})", r.row, "missing-image")
            continue
        except OSError as exc:
            b.problem(f"image {r.id!r} cannot be read ({exc.strerror or exc})", r.row,
                      "unreadable-image")
            continue
        if not stat.S_ISREG(st.st_mode):
            b.problem(f"image {r.id!r} is not a file ({r.image})", r.row, "bad-image")
            continue
        kept.append(dataclasses.replace(r, stamp=(st.st_size, st.st_mtime_ns)))
    return kept


# Formats whose image paths are relative to an image folder that usually lies elsewhere than
# the annotation file (dataset_flickr30k.json beside flickr30k-images/, COCO's annotations/
# beside train2014/).
_ROOT_ELSEWHERE = ("karpathy", "coco")


def missing_images_hint(ds: Dataset, images: str | Path | None) -> str | None:
    """When most images of a Karpathy or COCO file were not found under the default image root
    (the annotation file's folder), a sentence saying to pass ``--images``; else None."""
    if images is not None or ds.format not in _ROOT_ELSEWHERE:
        return None
    missing = sum(p.kind == "missing-image" for p in ds.problems)
    if not missing or missing < len(ds.records):
        return None
    return (f"{missing} of {missing + len(ds.records)} images were not found under "
            f"{ds.image_root}, the annotation file's folder: {ds.format} files name their "
            "images relative to the image folder (e.g. flickr30k-images/, COCO's train2014/ "
            "and val2014/ parent), so pass --images FOLDER")


def _webdataset_shards(path: str | Path) -> list[Path] | None:
    """Shards when ``path`` is WebDataset input; an annotation file in a folder wins."""
    from gitd.data.shards import shard_paths

    p = Path(path)
    if p.is_dir() and _annotation_in(p) is not None:
        return None
    return shard_paths(path)


def _load(path: str | Path, images: str | Path | None, split: str | None, strict: bool,
          allow_outside_root: bool, default_split: str = "train") -> tuple[Dataset, _Builder]:
    if split is not None and (not isinstance(split, str) or not split):
        raise DataError(f"split must be a non-empty string, got {split!r}")
    wanted = split if split is not None else default_split
    shards = _webdataset_shards(path)
    if shards is not None:
        from gitd.data.shards import load_shards

        if images is not None:
            log.warning("%s: WebDataset shards hold their images; --images is ignored", path)
        ds = load_shards(path, shards, strict=strict)
        b = _Builder(str(path), ds.image_root, strict=strict, allow_outside_root=True)
        b.problems = ds.problems
        return ds, b
    src = _locate(path, wanted)
    root = _image_root(images, src)
    b = _Builder(src.shown, root, strict=strict, allow_outside_root=allow_outside_root)
    text = _read_text(src)
    fmt = _parse_any(src, text, b, "all" if src.split_folder else wanted)
    records = b.records()
    if fmt == "karpathy" and not src.split_folder and not b.groups:
        seen = sorted(b.seen_splits)
        if seen and not any(_karpathy_wanted(s, wanted) for s in seen):
            raise DataError(f"{src.shown}: no images in split {wanted!r} (splits present: "
                            f"{', '.join(seen)}; 'train' also takes 'restval', 'all' takes all)")
    has_splits = fmt == "karpathy" or src.split_folder is not None
    if not has_splits and split is not None and split not in ("train", "all"):
        log.warning("%s: %s annotations have no splits; split=%r is ignored", src.shown, fmt,
                    split)
    records = _check_files(records, b)
    used = src.split_folder or (wanted if fmt == "karpathy" else None)
    ds = Dataset(records=records, source=src.file, format=fmt, image_root=root,
                 problems=b.problems, split=used)
    return ds, b


def load_dataset(path: str | Path, images: str | Path | None = None, *,
                 split: str | None = "train", strict: bool = False,
                 allow_outside_root: bool = False, verify_images: bool = False,
                 workers: int | None = None, default_split: str = "train") -> Dataset:
    """Load an image-caption dataset in any supported format.

    ``path``: an annotation file, or a folder holding ``annotations.json`` (gitd's output) or
    ``metadata.jsonl``/``metadata.csv`` (imagefolder), or a folder of split sub-folders each
    holding one (the Hugging Face layout ``DATA/train/metadata.jsonl``,
    ``DATA/test/metadata.jsonl``). ``images``: the image root (default: the annotation file's
    folder). ``split`` picks a Karpathy file's entries (``"train"`` also takes ``"restval"``,
    ``"all"`` takes every entry) or the split sub-folder (``"val"`` and ``"validation"`` stand
    for each other); ``None`` means ``default_split`` where the data holds splits, and nothing
    (silently) where it does not. ``Dataset.split`` records the split read. Unusable rows are
    skipped and listed in ``Dataset.problems`` (``strict=True`` raises ``DataError`` on the
    first). ``verify_images`` decodes every image in a process pool of ``workers`` (default:
    all CPUs) and skips those that fail.
    """
    ds, b = _load(path, images, split, strict, allow_outside_root, default_split)
    if verify_images and ds.records:
        results = verify_image_files([r.image for r in ds.records], workers=workers)
        kept = []
        for r, (size, kind, message) in zip(ds.records, results):
            if size is None:
                b.problem(f"image {r.id!r}: {message}", r.row, kind or "bad-image")
            else:
                kept.append(r)
        ds.records = kept
    hint = missing_images_hint(ds, images)
    if not ds.records:
        if not ds.problems:
            raise DataError(f"{b.file}: empty dataset (no image-caption rows)")
        raise DataError(f"{b.file}: no usable image-caption pairs ({len(ds.problems)} "
                        f"problem(s); first: {ds.problems[0]})" + (f"; {hint}" if hint else ""))
    if ds.problems:
        log.warning("%s: skipped %d problem row(s)/image(s); run 'gitd check %s' for the list",
                    b.file, len(ds.problems), path)
    if hint:
        log.warning("%s: %s", b.file, hint)
    return ds


def _stamp(record: Record) -> tuple[int, int] | None:
    if record.stamp is not None:
        return record.stamp
    try:
        st = os.stat(record.image)
    except OSError:
        return None
    return st.st_size, st.st_mtime_ns


def _source_fingerprint(ds: Dataset) -> str:
    """The annotation file's bytes; for WebDataset input, every shard's path, size and time."""
    if ds.format != "webdataset":
        return file_fingerprint(ds.source)
    from gitd.data.shards import shards_of

    stamps = []
    for s in shards_of(ds):
        st = os.stat(s)
        stamps.append((str(s), st.st_size, st.st_mtime_ns))
    return fingerprint(stamps)


def images_fingerprint(ds: Dataset) -> str:
    """A hash of every image's id, size and modification time (taken when the dataset was
    loaded): cheap, and any replaced, rewritten or touched image changes it."""
    h = hashlib.sha256()
    for r in ds.records:
        h.update(json.dumps([r.id, _stamp(r)]).encode("utf-8", "surrogatepass"))
        h.update(b"\n")
    return h.hexdigest()[:16]


def dataset_fingerprint(ds: Dataset) -> str:
    """A fingerprint of what the stages read: annotation bytes, split, image root, and each
    image's size and modification time (``images_fingerprint``); for WebDataset shards, each
    shard's path, size and modification time (a member cannot change without its shard)."""
    if ds.format == "webdataset":
        return fingerprint({"shards": _source_fingerprint(ds), "format": ds.format,
                            "ids": len(ds.records)})
    return fingerprint({"annotations": file_fingerprint(ds.source), "format": ds.format,
                        "split": ds.split, "image_root": str(ds.image_root),
                        "images": images_fingerprint(ds)})


# Beyond this many images the per-image list is not kept: the log then says only that images
# changed, not which.
_INPUTS_LISTED = 200_000


def note_input_change(work: str | Path, ds: Dataset, key: str) -> None:
    """Say in the log what changed in the input since the last run that used ``work`` (the
    stage keys make the recomputation happen; this says why), and remember this input."""
    path = Path(work) / "inputs.json"
    previous = read_json(path)
    if isinstance(previous, dict) and previous.get("key") == key:
        return
    images = ({r.id: list(_stamp(r) or ()) for r in ds.records}
              if len(ds) <= _INPUTS_LISTED else None)
    annotations = _source_fingerprint(ds)
    if isinstance(previous, dict) and previous.get("key"):
        what = []
        if previous.get("annotations") != annotations:
            what.append(f"annotation file {ds.source}")
        before = previous.get("images")
        if isinstance(before, dict) and images is not None:
            changed = [i for i in images if i in before and before[i] != images[i]]
            added = [i for i in images if i not in before]
            removed = [i for i in before if i not in images]
            for n, verb, ids in ((len(changed), "changed", changed), (len(added), "added", added),
                                 (len(removed), "gone", removed)):
                if n:
                    shown = ", ".join(ids[:3]) + (f" and {n - 3} more" if n > 3 else "")
                    what.append(f"{n} image(s) {verb} ({shown})")
        if not what:
            what.append("image files or image root")
        log.info("input data changed since the last run in %s: %s; recomputing the stages that "
                 "read it", work, "; ".join(what))
    atomic_write_json(path, {"key": key, "annotations": annotations, "images": images})


# --------------------------------------------------------------------------------------------
# Decoding images in parallel

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
