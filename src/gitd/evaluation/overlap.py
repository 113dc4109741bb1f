"""Does the test set share images with what the training pairs were made from?

A distilled or selected set is made from a whole source split: every image of it shaped the
medoids, the prototypes or the selection. Scoring on any of those images overstates retrieval,
so ``gitd evaluate`` compares the test set with

* the training set's own images, and
* for a gitd output (``manifest.json`` beside its ``annotations.json``), every image of the
  source split the manifest names (``source``: path, split, image root), plus each pair's
  ``source_image`` (the only evidence left when the source dataset has moved).

Two images are the same when their resolved paths are, or when their bytes are (files of equal
size are hashed; others cannot be equal), so a copied test image is caught too. A distilled
tensor file (LoRS, MTT-VL) names no images: only the validation set is checked against the test
set then, and the results say so.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from gitd.data.images import image_key, image_ref, image_sha256, image_size_mtime
from gitd.errors import DataError, GitdError
from gitd.log import get_logger
from gitd.store import read_json

log = get_logger("evaluation.overlap")


@dataclass
class Origin:
    """The images a training set was made from, and a phrase naming them for messages."""

    images: list[Path]
    what: str
    source: dict | None = None  # the manifest's source entry, for gitd outputs


@dataclass
class Overlap:
    """Images of one set found in another: (image of the checked set, its twin)."""

    pairs: list[tuple[Path, Path]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.pairs)


def training_origin(train_ds) -> Origin:
    """The training set's images plus, for a gitd output, its whole source split."""
    images = [image_ref(r.image) for r in train_ds]
    what = f"the training set {train_ds.source}"
    manifest = read_json(Path(train_ds.source).parent / "manifest.json")
    if not (isinstance(manifest, dict) and "gitd_version" in manifest
            and isinstance(manifest.get("source"), dict)):
        return Origin(images, what)
    src = manifest["source"]
    items = manifest.get("items") if isinstance(manifest.get("items"), list) else []
    images += [Path(i["source_image"]) for i in items
               if isinstance(i, dict) and isinstance(i.get("source_image"), str)]
    split = src.get("split")
    where = f"{src.get('path')}" + (f", split {split}" if split else "")
    # WebDataset shards hold their images: the recorded root is only where they were found,
    # and passing it would warn about an --images flag nobody gave.
    root = src.get("image_root") if src.get("format") != "webdataset" else None
    try:
        from gitd.data.formats import read_dataset
        source_ds, _ = read_dataset(src.get("path"), root, split, strict=False,
                                    allow_outside_root=False)
        images += [image_ref(r.image) for r in source_ds]
        what = f"the source split the training pairs were made from ({where})"
    except (GitdError, TypeError) as exc:
        log.warning("cannot re-read the training pairs' source dataset %s (%s); checking the "
                    "test set against the pairs' own source images only", where, exc)
        what = f"the source images of the training pairs (from {where})"
    return Origin(images, what, src)


def _digest(path, memo: dict[str, str | None]) -> str | None:
    key = str(path)
    if key not in memo:
        memo[key] = image_sha256(path)
    return memo[key]


def _size(path) -> int | None:
    return image_size_mtime(path)[0]


def shared_images(checked: Sequence[Path], reference: Sequence[Path]) -> Overlap:
    """Images of ``checked`` that are also in ``reference`` (same file, or same bytes)."""
    real = {image_key(p): image_ref(p) for p in reference}
    found = Overlap()
    rest = []
    for p in checked:
        twin = real.get(image_key(p))
        if twin is not None:
            found.pairs.append((image_ref(p), twin))
        else:
            rest.append(image_ref(p))
    if not rest:
        return found
    by_size: dict[int, list[Path]] = defaultdict(list)
    for p in real.values():
        size = _size(p)
        if size is not None:
            by_size[size].append(p)
    memo: dict[str, str | None] = {}
    hashes: dict[int, dict[str, Path]] = {}
    for p in rest:
        size = _size(p)
        if size is None or size not in by_size:
            continue
        if size not in hashes:
            hashes[size] = {}
            for q in by_size[size]:
                d = _digest(q, memo)
                if d is not None:
                    hashes[size].setdefault(d, q)
        d = _digest(p, memo)
        if d is not None and d in hashes[size]:
            found.pairs.append((p, hashes[size][d]))
    return found


def check_test_overlap(train_ds, test_ds, val_ds=None, *, allow: bool = False
                       ) -> dict[str, Any]:
    """Refuse (``DataError``) a test set sharing images with what the training pairs were made
    from, or with the validation set that picks the epoch; with ``allow``, return the findings
    for the results file instead."""
    from gitd.data.tensor_sets import TensorSet

    test_images = [image_ref(r.image) for r in test_ds]
    found: dict[str, Overlap] = {}
    against: dict[str, str] = {}
    report: dict[str, Any] = {"images": 0}
    if isinstance(train_ds, TensorSet):
        report["not_checked"] = (f"the training set {train_ds.source} is a {train_ds.format} "
                                 "tensor file, which names no source images")
    else:
        origin = training_origin(train_ds)
        found["source"] = shared_images(test_images, origin.images)
        against["source"] = origin.what
    if val_ds is not None:
        found["val"] = shared_images(test_images, [image_ref(r.image) for r in val_ds])
        against["val"] = f"the validation set {val_ds.source} (it picks the reported epoch)"
    report["checked_against"] = list(against.values())
    for key, hits in found.items():
        if not len(hits):
            continue
        first = hits.pairs[0]
        twin = "" if first[0] == first[1] else f" (same bytes as {first[1]})"
        message = (f"the test set {test_ds.source} shares {len(hits)} of its {len(test_images)} "
                   f"images with {against[key]}, e.g. {first[0]}{twin}")
        if not allow:
            raise DataError(f"{message}; scores on images the pairs were made from overstate "
                            "retrieval: pick a disjoint test split (--test-split), or pass "
                            "--allow-test-overlap to evaluate anyway with the results flagged")
        report["images"] = max(report["images"], len(hits))
        report.setdefault("warnings", []).append(message)
        report.setdefault("examples", []).extend(str(p) for p, _ in hits.pairs[:5])
    if report["images"]:
        report["allowed"] = True
        for message in report["warnings"]:
            log.warning("TEST OVERLAP (allowed by --allow-test-overlap): %s; these results "
                        "overstate retrieval", message)
    return report
