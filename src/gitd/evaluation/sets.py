"""The three sets of an evaluation (train, test, val): loaded once, described once, fingerprinted.

A set is an annotation file or folder in any format ``gitd.data.load_dataset`` reads, a
``Dataset`` already loaded, or (training only) a distilled tensor file of another method
(``gitd.data.tensor_sets``). A gitd output's ``manifest.json`` records the image root its
pairs' source was read with: a test or validation set that is that same source file is read
with that root unless one is given, so ``--test dataset_flickr30k.json`` works wherever the
images live once ``distill`` was told.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gitd.data.images import image_sha256, image_size_mtime
from gitd.errors import ConfigError, DataError
from gitd.data.tensor_sets import TensorSet, is_tensor_set, load_tensor_set
from gitd.log import get_logger
from gitd.store import file_fingerprint, fingerprint, read_json

log = get_logger("evaluation.sets")

HASH_LIMIT = 1 << 30  # sets up to this many image bytes are fingerprinted by content
ROLES = {"train": "train", "test": "test", "val": "val"}


@dataclass
class EvalSet:
    """One set of an evaluation: its data, what it is (``info``, for the results file) and a
    fingerprint of what its evaluation depends on (``content``, for the cache key)."""

    role: str
    data: Any  # a gitd.data.Dataset or a TensorSet
    info: dict[str, Any] = field(default_factory=dict)
    content: dict[str, Any] = field(default_factory=dict)

    @property
    def is_tensors(self) -> bool:
        return isinstance(self.data, TensorSet)

    @property
    def source(self):
        return getattr(self.data, "source", None)

    def line(self) -> str:
        return set_line(self.role, self.info)


def set_line(name: str, info: dict[str, Any]) -> str:
    split = f", split {info['split']}" if info.get("split") else ""
    what = (f"{info.get('images')} images, {info.get('captions')} captions"
            if not info.get("tensors") else
            f"{info.get('images')} images, {info.get('captions')} text embeddings, "
            f"{info['tensors']['format']} file")
    return f"{name}: {info.get('path')}{split} ({what})"


def set_fingerprint(ds, *, hash_limit: int = HASH_LIMIT) -> dict[str, Any]:
    """What a set's evaluation depends on: its rows (image ids, captions, in order) and its
    images' bytes (sha256) when they total at most ``hash_limit`` bytes, else their sizes and
    modification times. A distilled set is rewritten with new times but the same bytes on every
    re-run; a full training set is too big to hash each time. A tensor set: its files' bytes."""
    if isinstance(ds, TensorSet):
        return {"files": [file_fingerprint(f) for f in ds.files],
                "normalisation": ds.normalisation}
    rows = fingerprint([[r.id, list(r.captions)] for r in ds], 32)
    stats = [image_size_mtime(r.image) for r in ds]
    if sum(size or 0 for size, _ in stats) <= hash_limit:
        images = fingerprint([image_sha256(r.image) for r in ds], 32)
        mode = "sha256"
    else:
        images = fingerprint(stats, 32)
        mode = "size+mtime"
    return {"rows": rows, "images": images, "image_identity": mode}


def describe_set(ds) -> dict[str, Any]:
    """Path, format, split, sizes and the annotation file's fingerprint, for the results."""
    src = getattr(ds, "source", None)
    if isinstance(ds, TensorSet):
        return {"path": str(src), "format": ds.format, "split": None, "images": len(ds),
                "captions": ds.n_captions, "tensors": ds.describe(),
                "fingerprint": file_fingerprint(src)}
    info: dict[str, Any] = {"path": str(src) if src else None,
                            "format": getattr(ds, "format", None),
                            "split": getattr(ds, "split", None),
                            "images": len(ds), "captions": sum(len(r.captions) for r in ds)}
    if src and Path(src).is_file():
        info["fingerprint"] = file_fingerprint(src)
    return info


def recorded_source(train) -> dict[str, Any] | None:
    """The ``source`` block of the manifest beside a gitd output's annotations, or None."""
    if isinstance(train, TensorSet) or getattr(train, "source", None) is None:
        return None
    manifest = read_json(Path(train.source).parent / "manifest.json")
    if isinstance(manifest, dict) and "gitd_version" in manifest and \
            isinstance(manifest.get("source"), dict):
        return manifest["source"]
    return None


def _same_file(a, b) -> bool:
    try:
        return Path(a).resolve() == Path(b).resolve()
    except (OSError, TypeError, ValueError):
        return False


def _recorded_root(path, source: dict[str, Any] | None, role: str):
    """The image root the pairs' manifest recorded, when ``path`` is the file it names."""
    if source is None or source.get("format") == "webdataset" or not source.get("image_root"):
        return None
    target = Path(path)
    candidates = [target] + ([target / "annotations.json"] if target.is_dir() else [])
    if not any(_same_file(c, source.get("path")) for c in candidates):
        return None
    root = Path(source["image_root"])
    if not root.is_dir():
        return None
    log.info("%s set: reading images from %s, the image root the training pairs' manifest "
             "records for %s (--%s-images overrides it)", role, root, path, role)
    return root


def load_set(value, role: str, *, images=None, split: str | None = None,
             source: dict[str, Any] | None = None, normalisation: str = "clip") -> EvalSet:
    """Load one set for ``role`` (train, test or val) and describe it."""
    from gitd.data import load_dataset

    if value is None:
        raise ConfigError(f"no {role} set given")
    if isinstance(value, (str, Path)):
        if is_tensor_set(value):
            if role != "train":
                raise DataError(f"{value}: a distilled tensor file can only be the training "
                                f"set (--train); the {role} set needs images and captions")
            if images is not None:
                log.warning("%s: a tensor file holds its images; --images is ignored", value)
            data = load_tensor_set(value, normalisation=normalisation)
        else:
            if images is None and role != "train":
                images = _recorded_root(value, source, role)
            data = load_dataset(value, images, split=split, default_split=ROLES[role])
    else:
        data = value
    return EvalSet(role, data, describe_set(data), set_fingerprint(data))
