"""Where a dataset's annotations are: the file given, a folder holding ``annotations.json``,
``metadata.jsonl`` or ``metadata.csv``, or Hugging Face's split layout
(``DATA/train/metadata.jsonl``, ``DATA/test/metadata.jsonl``); and reading that file as text."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from gitd.errors import DataError


@dataclass
class AnnotationSource:
    file: Path          # the annotation file actually read
    shown: str          # that path as the user gave it (used in problems)
    default_root: Path  # image root when none is given
    folder_input: bool  # path was a folder
    split_folder: str | None = None  # Hugging Face layout: the split sub-folder read

FOLDER_FILES = ("annotations.json", "metadata.jsonl", "metadata.csv")
# Hugging Face names its validation split "validation"; the field's files say "val".
_SPLIT_ALIASES = {"val": "validation", "validation": "val"}


def annotation_in(folder: Path) -> Path | None:
    return next((folder / n for n in FOLDER_FILES if (folder / n).is_file()), None)


def locate(path: str | Path, split: str) -> AnnotationSource:
    p = Path(path)
    if p.is_dir():
        found = annotation_in(p)
        if found is not None:
            return AnnotationSource(found, str(found), p, True)
        # The Hugging Face split layout: DATA/train/metadata.jsonl, DATA/test/metadata.jsonl.
        try:
            subs = sorted(d.name for d in p.iterdir() if d.is_dir())
        except OSError as exc:
            raise DataError(f"{p}: cannot list folder ({exc.strerror or exc})") from None
        splits = [d for d in subs if annotation_in(p / d) is not None]
        if splits:
            name = split if split in splits else _SPLIT_ALIASES.get(split)
            if name not in splits:
                raise DataError(f"{p}: no split folder {split!r} (split folders with "
                                f"annotations: {', '.join(splits)}); pick one with --split")
            found = annotation_in(p / name)
            return AnnotationSource(found, str(found), p / name, True, split_folder=name)
        seen = f" (sub-folders: {', '.join(subs[:12])}{', ...' if len(subs) > 12 else ''})" \
            if subs else ""
        raise DataError(f"{p}: folder holds no annotations.json, metadata.jsonl or metadata.csv, "
                        f"and no split sub-folder holding one{seen}; pass the annotation file "
                        "itself")
    if not p.exists():
        raise DataError(f"{p}: annotation file not found")
    if not p.is_file():
        raise DataError(f"{p}: not a regular file")
    return AnnotationSource(p, str(p), p.parent, False)


def read_text(src: AnnotationSource) -> str:
    try:
        data = src.file.read_bytes()
    except PermissionError:
        raise DataError(f"{src.shown}: cannot read annotation file (permission denied)") from None
    except OSError as exc:
        raise DataError(f"{src.shown}: cannot read annotation file "
                        f"({exc.strerror or exc})") from None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DataError(f"{src.shown}: not a UTF-8 text file (undecodable byte at offset "
                        f"{exc.start}); expected JSON, JSONL or CSV annotations") from None
