"""BLIP/LoRS annotation JSON: ``[{"image": ..., "caption": str | [str, ...], "image_id"?}, ...]``.

The training layout (one row per caption, rows of one image sharing an ``image_id``; gitd's own
``OUT/annotations.json``) and the test layout (a caption list per image) both group into one
record per image."""

from __future__ import annotations

import posixpath
from typing import Any

from gitd.data.formats.builder import RecordBuilder, describe_value
from gitd.data.records import Problem


def parse_blip(data: list, b: RecordBuilder) -> None:
    owners: dict[Any, tuple[int, Any]] = {}  # image_id -> (first row, its image string)
    for i, row in enumerate(data):
        if not isinstance(row, dict):
            b.problem("row must be an object with 'image' and 'caption', got "
                      f"{describe_value(row)}", i, "bad-row")
            b.end_run()
            continue
        missing = [k for k in ("image", "caption") if k not in row]
        if missing:
            b.problem(f"row has no {' or '.join(repr(k) for k in missing)} key", i, "missing-field")
            b.end_run()
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
