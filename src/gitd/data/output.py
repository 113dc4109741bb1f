"""The one output format every method and selection writes.

``OUT/`` holds

* ``images/0000.png ...``: one file per pair. Synthetic images are PNG; a selection (``gitd
  select``, ablations without diffusion) copies the source file byte for byte and keeps its
  extension (``images/0003.jpg``).
* ``annotations.json``: a TRAINING set in the layout of BLIP's ``flickr30k_train.json`` /
  ``coco_karpathy_train.json``, which the training dataset classes of BLIP, LoRS, MTT-VL and
  EDGE read: one row per caption, ``{"image": "images/0000.png", "caption": "<string>",
  "image_id": <int>}``; an image with several captions has several rows with the same
  ``image_id``. Image paths are relative to ``OUT``, so ``OUT`` is the image root those loaders
  take. ``gitd export`` writes the file names and layouts their scripts expect.
* ``metadata.jsonl``: the same pairs as a Hugging Face imagefolder: ``file_name`` and ``text``,
  always a list of strings (one caption or several), so ``datasets`` loads any gitd output, and
  several outputs concatenated, as one ``Sequence(string)`` column. gitd reads either type back
  (outputs written before this were a string for one caption).
* ``manifest.json``: everything about the run (below).

gitd reads every one of them back (``check``, ``evaluate``, ``report``, ``select``): rows with the
same ``image`` and ``image_id`` group into one record per image.

Manifest keys every writer fills (others may be added): ``gitd_version``, ``method``, ``pairs``,
``seed``, ``created``, ``source`` ({path, format, split, image_root, fingerprint, n_records,
n_valid}), ``config``, ``skipped`` (list of Problem dicts), ``timings`` ({stage: seconds}),
``versions`` and ``items``: one dict per pair with at least ``image``, ``caption`` and, where
the pair comes from a source image, ``source_id``, ``source_image``, ``source_caption``; methods
add ``cluster_size``, ``scores`` and the like.
"""

from __future__ import annotations

import datetime as _dt
import importlib.metadata
import platform
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from gitd import __version__
from gitd.store import (atomic_copy, atomic_save_image, atomic_write_bytes, atomic_write_json,
                        atomic_write_text, to_json)

_VERSIONED = ("torch", "torchvision", "diffusers", "transformers", "accelerate", "timm",
              "kmedoids", "numpy", "pillow", "scikit-learn", "safetensors")


def package_versions() -> dict[str, str]:
    out = {"python": platform.python_version(), "gitd": __version__}
    for name in _VERSIONED:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            pass
    return out


def now_iso() -> str:
    return _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat()


@dataclass
class OutputPair:
    """One distilled pair: an in-memory PIL image or the path of a file to copy, and its caption(s)."""

    image: Any  # PIL.Image.Image, or a Path / TarMember whose bytes are copied
    captions: list[str]
    info: dict[str, Any] = field(default_factory=dict)  # merged into the manifest item


def source_block(dataset, *, n_valid: int | None = None) -> dict[str, Any]:
    """The manifest's ``source``: where the pairs came from (the same for every method)."""
    from gitd.data.formats import dataset_fingerprint

    return {"path": str(Path(dataset.source).resolve()), "format": dataset.format,
            "split": dataset.split, "image_root": str(dataset.image_root),
            "fingerprint": dataset_fingerprint(dataset),
            "n_records": len(dataset) + len(dataset.problems),
            "n_valid": len(dataset) if n_valid is None else int(n_valid)}


def image_name(i: int, suffix: str = ".png") -> str:
    return f"images/{i:04d}{suffix}"


def training_rows(image: str, captions: Sequence[str], image_id: int) -> list[dict[str, Any]]:
    """One BLIP training row per caption (string ``caption``, integer ``image_id``)."""
    return [{"image": image, "caption": str(c), "image_id": int(image_id)} for c in captions]


def write_output(out: str | Path, pairs: Sequence[OutputPair], manifest: dict[str, Any]) -> Path:
    """Write the pairs and the manifest to ``out``; every file is written atomically.

    Images given as paths are copied byte for byte (keeping their suffix); PIL images are saved
    as PNG. The manifest gets ``items``, ``pairs``, ``gitd_version``, ``versions`` and ``created``
    filled in unless the caller set them.
    """
    out = Path(out)
    (out / "images").mkdir(parents=True, exist_ok=True)
    annotations, items, meta_lines = [], [], []
    for i, pair in enumerate(pairs):
        if hasattr(pair.image, "shard"):  # an image inside a tar shard: its bytes, unchanged
            rel = image_name(i, pair.image.suffix or ".png")
            atomic_write_bytes(out / rel, pair.image.read_bytes())
        elif isinstance(pair.image, (str, Path)):
            src = Path(pair.image)
            rel = image_name(i, src.suffix.lower() or ".png")
            atomic_copy(src, out / rel)
        else:
            rel = image_name(i)
            atomic_save_image(out / rel, pair.image)
        caps = [str(c) for c in pair.captions]
        annotations.extend(training_rows(rel, caps, i))
        # Always a list: Arrow gives a column one type, so a string here and a list there
        # stops `datasets.load_dataset("imagefolder")` and `concatenate_datasets`.
        meta_lines.append(to_json({"file_name": rel, "text": caps}, indent=None))
        items.append({"image": rel, "caption": caps[0], **pair.info})
    atomic_write_json(out / "annotations.json", annotations)
    atomic_write_text(out / "metadata.jsonl", "".join(line + "\n" for line in meta_lines))
    full = {"gitd_version": __version__, "created": now_iso(), "pairs": len(items),
            "versions": package_versions(), **manifest, "items": items}
    atomic_write_json(out / "manifest.json", full)
    return out
