"""COCO captions:
``{"images": [{"id", "file_name"}], "annotations": [{"image_id", "caption"}]}``."""

from __future__ import annotations

from typing import Any

from gitd.data.formats.builder import RecordBuilder, describe_value
from gitd.data.records import Problem
from gitd.errors import DataError


def parse_coco(data: dict, b: RecordBuilder) -> None:
    images, annotations = data.get("images"), data["annotations"]
    if not isinstance(images, list):
        raise DataError(f"{b.file}: 'images' must be a list, got {describe_value(images)}")
    if not isinstance(annotations, list):
        raise DataError(f"{b.file}: 'annotations' must be a list, got "
                        f"{describe_value(annotations)}")
    by_id: dict[Any, tuple[int, Any]] = {}
    by_name: dict[str, int] = {}
    for i, img in enumerate(images):
        if not isinstance(img, dict) or "id" not in img or "file_name" not in img:
            b.problem(f"images[{i}] must be an object with 'id' and 'file_name', got "
                      f"{describe_value(img)}", None, "bad-row")
            continue
        key = img["id"]
        if not isinstance(key, (int, str)) or isinstance(key, bool):
            b.problem(f"images[{i}]: 'id' must be an integer or string, got {describe_value(key)}",
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
            b.problem(f"annotation must be an object, got {describe_value(ann)}", j, "bad-row")
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


def refuse_coco_without_annotations(shown: str, images: Any) -> None:
    """A COCO file cut before its captions would otherwise read as a Karpathy file whose every
    entry lacks a split; say what it is instead."""
    first = next((e for e in images if isinstance(e, dict)), None) \
        if isinstance(images, list) else None
    if first is not None and "file_name" in first and not {"filename", "sentences"} & set(first):
        raise DataError(f"{shown}: looks like COCO captions JSON ('images' entries have "
                        "'file_name') but has no 'annotations' list, so there are no captions")
