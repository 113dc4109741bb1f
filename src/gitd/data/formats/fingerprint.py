"""What a loaded dataset is, as cache keys see it (``dataset_fingerprint``), and what changed in
it since the last run in a work folder (``note_input_change``)."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from gitd.data.records import Dataset, Record
from gitd.log import get_logger
from gitd.store import atomic_write_json, file_fingerprint, fingerprint, read_json

log = get_logger("data.formats")


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
