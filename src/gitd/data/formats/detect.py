"""Which format a dataset is in, from its content (not its name), and parsing it with that
format's reader; WebDataset shards are told apart before any annotation file is looked for."""

from __future__ import annotations

import json
from pathlib import Path

from gitd.data.formats.blip import parse_blip
from gitd.data.formats.builder import RecordBuilder, describe_value, loads_annotations
from gitd.data.formats.coco import parse_coco, refuse_coco_without_annotations
from gitd.data.formats.imagefolder import csv_rows, jsonl_rows, parse_imagefolder_rows
from gitd.data.formats.karpathy import parse_karpathy
from gitd.data.formats.locate import AnnotationSource, annotation_in
from gitd.errors import DataError


def _looks_like_csv(text: str) -> bool:
    first = text.lstrip().split("\n", 1)[0]
    return not first.startswith(("[", "{")) and "file_name" in first


def _first_line_is_object(text: str) -> bool:
    for line in text.splitlines():
        if line.strip():
            try:
                return isinstance(loads_annotations(line), dict)
            except (json.JSONDecodeError, RecursionError):
                return False
    return False


def parse_any(src: AnnotationSource, text: str, b: RecordBuilder, split: str) -> str:
    """Fill ``b`` from ``text``; return the format name. Structural trouble raises DataError."""
    name = src.file.name.lower()
    if name == "metadata.csv" or (not text.lstrip().startswith(("[", "{"))
                                  and _looks_like_csv(text)):
        parse_imagefolder_rows(csv_rows(text, b), b, csv_lists=True)
        return "imagefolder"
    if not text.strip():
        raise DataError(f"{src.shown}: file is empty")
    try:
        data = loads_annotations(text)
    except json.JSONDecodeError as exc:
        if exc.msg == "Extra data" and _first_line_is_object(text):
            parse_imagefolder_rows(jsonl_rows(text, b), b, csv_lists=False)
            return "imagefolder"
        raise DataError(f"{src.shown}: not valid JSON (line {exc.lineno}, column {exc.colno}: "
                        f"{exc.msg})") from None
    except RecursionError:
        raise DataError(f"{src.shown}: JSON nested too deeply to read") from None
    if isinstance(data, list):
        if not data:
            raise DataError(f"{src.shown}: empty dataset (the JSON list has no rows)")
        parse_blip(data, b)
        return "blip"
    if isinstance(data, dict):
        if "file_name" in data:  # a one-line metadata.jsonl
            parse_imagefolder_rows([(1, data)], b, csv_lists=False)
            return "imagefolder"
        if "annotations" in data:
            if "images" not in data:
                raise DataError(f"{src.shown}: has 'annotations' but no 'images' list, so it is "
                                "not COCO captions JSON")
            parse_coco(data, b)
            return "coco"
        if "images" in data:
            refuse_coco_without_annotations(src.shown, data["images"])
            parse_karpathy(data, b, split)
            return "karpathy"
        keys = ", ".join(repr(k) for k in list(data)[:8]) or "none"
        raise DataError(f"{src.shown}: unknown annotation format: a JSON object with keys {keys}; "
                        "expected a BLIP list [{image, caption}], Karpathy {images: [...]} or "
                        "COCO {images, annotations}")
    raise DataError(f"{src.shown}: unknown annotation format: top level is "
                    f"{describe_value(data)}, expected a list or an object")


def webdataset_shards(path: str | Path) -> list[Path] | None:
    """Shards when ``path`` is WebDataset input; an annotation file in a folder wins."""
    from gitd.data.shards import shard_paths

    p = Path(path)
    if p.is_dir() and annotation_in(p) is not None:
        return None
    return shard_paths(path)
