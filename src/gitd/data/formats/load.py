"""Loading a dataset in any format: locate the annotations, detect and parse the format, check
that each image exists (one stat, no decoding), and optionally decode every image."""

from __future__ import annotations

import dataclasses
import os
import stat
from pathlib import Path

from gitd.data.formats.builder import RecordBuilder
from gitd.data.formats.detect import parse_any, webdataset_shards
from gitd.data.formats.karpathy import karpathy_wanted
from gitd.data.formats.locate import AnnotationSource, locate, read_text
from gitd.data.formats.verify import verify_image_files
from gitd.data.records import Dataset, Record
from gitd.errors import DataError
from gitd.log import get_logger

log = get_logger("data.formats")


def _image_root(images: str | Path | None, src: AnnotationSource) -> Path:
    root = Path(images) if images is not None else src.default_root
    if not root.is_dir():
        what = "image root" if images is not None else "annotation file's folder"
        raise DataError(f"{root}: {what} is not an existing folder")
    return Path(os.path.abspath(root))


def _check_files(records: list[Record], b: RecordBuilder) -> list[Record]:
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


def read_dataset(path: str | Path, images: str | Path | None, split: str | None, strict: bool,
                 allow_outside_root: bool, default_split: str = "train"
                 ) -> tuple[Dataset, RecordBuilder]:
    """The dataset and the builder that read it (its ``duplicates`` for ``gitd check``),
    without ``load_dataset``'s last steps: no decoding, no error for a dataset left empty, no
    log line about skipped rows."""
    if split is not None and (not isinstance(split, str) or not split):
        raise DataError(f"split must be a non-empty string, got {split!r}")
    wanted = split if split is not None else default_split
    shards = webdataset_shards(path)
    if shards is not None:
        from gitd.data.shards import load_shards

        if images is not None:
            log.warning("%s: WebDataset shards hold their images; --images is ignored", path)
        ds = load_shards(path, shards, strict=strict)
        b = RecordBuilder(str(path), ds.image_root, strict=strict, allow_outside_root=True)
        b.problems = ds.problems
        return ds, b
    src = locate(path, wanted)
    root = _image_root(images, src)
    b = RecordBuilder(src.shown, root, strict=strict, allow_outside_root=allow_outside_root)
    text = read_text(src)
    fmt = parse_any(src, text, b, "all" if src.split_folder else wanted)
    records = b.records()
    if fmt == "karpathy" and not src.split_folder and not b.groups:
        seen = sorted(b.seen_splits)
        if seen and not any(karpathy_wanted(s, wanted) for s in seen):
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
    ds, b = read_dataset(path, images, split, strict, allow_outside_root, default_split)
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
