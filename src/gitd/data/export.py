"""``gitd export OUT --to lors|mtt-vl|blip|edge DEST``: a dataset in the file layout the field's
training scripts open.

Their training dataset classes (``flickr30k_train`` / ``coco_train``) take an annotation folder
(``ann_root``) and an image root, open one fixed file name in the folder, and join the image root
with each row's ``image``:

* BLIP, LoRS and MTT-VL: ``ann_root/flickr30k_train.json`` (``coco_karpathy_train.json`` for COCO)
  with the image root given separately; here both are ``DEST``, images in ``DEST/images/``. Their
  scripts build the val and test sets from the same two folders (``flickr30k_val.json``,
  ``flickr30k_test.json``, a caption list per image); ``--test``/``--val`` write those too, with
  absolute image paths (``os.path.join`` of a root and an absolute path is that path), so the
  test images stay where they are.
* EDGE: ``--distill_ann DEST``, and its evaluation takes ``DEST/images`` itself as the image root,
  so rows name ``0000.png``; the file is ``flickr30k_train.json`` (``coco_train.json`` for COCO).

Rows are BLIP training rows (``gitd.data.output.training_rows``). ``DEST`` may already hold other
files (say the field's own val/test files), but gitd never overwrites a file it did not write:
``DEST/.gitd-export.json`` lists what an export wrote, and only those files are replaced, or
removed when a later export no longer writes them. ``DEST`` may not overlap the data read.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gitd.data.formats import load_dataset
from gitd.data.output import image_name, training_rows
from gitd.data.records import Dataset
from gitd.errors import ConfigError, DataError
from gitd.log import get_logger, progress
from gitd.outdir import Inputs
from gitd.store import atomic_copy, atomic_write_json, read_json

log = get_logger("data.export")

TARGETS = ("lors", "mtt-vl", "blip", "edge")
NAMES = ("flickr30k", "coco")
MARKER = ".gitd-export.json"

_TRAIN_FILE = {"flickr30k": "flickr30k_train.json", "coco": "coco_karpathy_train.json"}
_EDGE_TRAIN_FILE = {"flickr30k": "flickr30k_train.json", "coco": "coco_train.json"}
_EVAL_FILE = {"flickr30k": "flickr30k_{split}.json", "coco": "coco_karpathy_{split}.json"}


@dataclass
class Export:
    """What ``export`` wrote: the folder, its files (relative to it) and how to point the
    target's script at it."""

    dest: Path
    target: str
    train_file: str
    files: list[str] = field(default_factory=list)
    usage: str = ""


def _check_no_overlap(dest: Path, sets: list[Dataset]) -> None:
    """The output-safety rule of every gitd output (``gitd.outdir``): not the folder of, nor
    inside, nor around any annotation file, image root or image read."""
    inputs = Inputs()
    for ds in sets:
        inputs.dataset(ds)
    how = inputs.overlap(os.path.realpath(dest), as_folder=True)
    if how:
        raise ConfigError(f"export folder {dest} overlaps the data read: it {how}; choose a "
                          "folder outside it")


def _owned(dest: Path) -> set[str]:
    marker = read_json(dest / MARKER)
    if isinstance(marker, dict) and isinstance(marker.get("files"), list):
        return {f for f in marker["files"] if isinstance(f, str)}
    return set()


def _eval_rows(ds: Dataset) -> list[dict[str, Any]]:
    # The field's test layout: a caption list per image; absolute paths so that the image root
    # given for the training images does not matter.
    return [{"image": str(Path(r.image).resolve()), "caption": list(r.captions)} for r in ds]


def export(out: str | Path, to: str, dest: str | Path, *, name: str = "flickr30k",
           test: str | Path | Dataset | None = None, val: str | Path | Dataset | None = None,
           test_split: str | None = None, val_split: str | None = None,
           test_images: str | Path | None = None, val_images: str | Path | None = None
           ) -> Export:
    """Write the dataset at ``out`` (a gitd output folder, or any set gitd reads) to ``dest`` in
    the layout of ``to``'s training script, for ``name`` (flickr30k or coco file names).
    ``test``/``val``: sets (any format, with their split, default test/val) written as the
    script's eval files; not for EDGE, whose evaluation reads them from its own data folder."""
    if to not in TARGETS:
        raise ConfigError(f"--to must be one of {', '.join(TARGETS)}; got {to!r}")
    if name not in NAMES:
        raise ConfigError(f"--name must be one of {', '.join(NAMES)}; got {name!r}")
    if to == "edge" and (test is not None or val is not None):
        raise ConfigError("EDGE's evaluation reads its val and test sets from its own "
                          "--ann_root; export only the training set for --to edge")
    ds = load_dataset(out, strict=True)
    evals: dict[str, Dataset] = {}
    for split, data, chosen, images in (("test", test, test_split, test_images),
                                        ("val", val, val_split, val_images)):
        if isinstance(data, Dataset):
            evals[split] = data
        elif data is not None:
            evals[split] = load_dataset(data, images, split=chosen, default_split=split)
    dest = Path(os.path.abspath(dest))
    if dest.exists() and not dest.is_dir():
        raise ConfigError(f"export folder {dest} exists and is not a folder")
    _check_no_overlap(dest, [ds, *evals.values()])

    edge = to == "edge"
    train_file = (_EDGE_TRAIN_FILE if edge else _TRAIN_FILE)[name]
    copies: list[tuple[Path, str]] = []
    rows: list[dict[str, Any]] = []
    for i, r in enumerate(ds):
        rel = image_name(i, Path(r.image).suffix.lower() or ".png")
        copies.append((Path(r.image), rel))
        # EDGE joins DEST/images with the row's path; the others join DEST.
        rows.extend(training_rows(rel.removeprefix("images/") if edge else rel, r.captions, i))
    jsons = {train_file: rows}
    for split, e in evals.items():
        jsons[_EVAL_FILE[name].format(split=split)] = _eval_rows(e)
    planned = [rel for _, rel in copies] + list(jsons)

    owned = _owned(dest) if dest.is_dir() else set()
    foreign = [f for f in planned if (dest / f).exists() and f not in owned]
    if foreign:
        more = f" and {len(foreign) - 1} more" if len(foreign) > 1 else ""
        raise DataError(f"{dest / foreign[0]}{more} already exist(s) and were not written by "
                        "gitd export; choose another folder or move them away")
    # The marker lists every file before any is written, so a crash leaves nothing unclaimed.
    atomic_write_json(dest / MARKER, {"files": sorted(owned | set(planned)), "target": to,
                                      "source": str(Path(ds.source).resolve())})
    for src, rel in progress(copies, desc="export", unit="img"):
        atomic_copy(src, dest / rel)
    for fname, data in jsons.items():
        atomic_write_json(dest / fname, data)
    for stale in sorted(owned - set(planned)):
        path = dest / stale
        if path.is_file() and not path.is_symlink():
            path.unlink()
    atomic_write_json(dest / MARKER, {"files": sorted(planned), "target": to,
                                      "source": str(Path(ds.source).resolve())})
    if edge:
        usage = (f"EDGE: evaluation.py --dataset {'flickr' if name == 'flickr30k' else name} "
                 f"--distill_ann {dest} (it reads {train_file} and images from {dest}/images)")
    else:
        usage = (f"{to}: image_root {dest}, ann_root {dest} (reads {train_file}"
                 + (f", {', '.join(f for f in jsons if f != train_file)}" if evals else
                    "; put the val/test files there, or pass --test/--val") + ")")
    log.info("exported %d images, %d caption rows to %s", len(copies), len(rows), dest)
    return Export(dest=dest, target=to, train_file=train_file, files=planned, usage=usage)
