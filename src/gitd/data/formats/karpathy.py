"""Karpathy split files:
``{"images": [{"filename", "filepath"?, "split", "sentences": [...]}]}``."""

from __future__ import annotations

from typing import Any

from gitd.data.formats.builder import RecordBuilder, describe_value
from gitd.errors import DataError

# Karpathy's COCO split puts 30k val images in "restval"; every paper trains on train+restval.
TRAIN_SPLITS = ("train", "restval")


def karpathy_wanted(entry_split: Any, split: str) -> bool:
    if split == "all":
        return True
    if split == "train":
        return entry_split in TRAIN_SPLITS
    return entry_split == split


def parse_karpathy(data: dict, b: RecordBuilder, split: str) -> None:
    images = data["images"]
    if not isinstance(images, list):
        raise DataError(f"{b.file}: 'images' must be a list, got {describe_value(images)}")
    for i, entry in enumerate(images):
        if not isinstance(entry, dict):
            b.problem(f"images entry must be an object, got {describe_value(entry)}", i, "bad-row")
            continue
        entry_split = entry.get("split")
        if entry_split is None:
            if split != "all":
                b.problem("images entry has no 'split' key (use split='all' to take it)", i,
                          "missing-field")
                continue
        else:
            b.seen_splits.add(str(entry_split))
        if not karpathy_wanted(entry_split, split):
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
