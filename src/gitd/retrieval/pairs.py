"""Image-caption pairs ready for training or scoring: ``PairSet`` and the two ways to make one.

* ``prepare_pairs(dataset, image_encoder, text_encoder, protocol, ...)``: a dataset's images
  (decoded uint8 tensors in RAM when they fit, else streamed from disk through a DataLoader with
  workers; frozen features with the protocol's ``freeze_image``) and every caption's frozen text
  features.
* ``tensor_pairs(pixels, text, image_encoder, protocol, ...)``: a set that is tensors already
  (a LoRS or MTT-VL distilled file): float pixels on the 0-255 scale and text embeddings that
  stand in for the frozen text encoder's output, one per image, with an optional learned
  similarity matrix as the training target.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from gitd.data.images import image_ref
from gitd.errors import GitdError
from gitd.log import get_logger
from gitd.models.encoders import ImageEncoder, TextEncoder
from gitd.retrieval.protocols import Protocol
from gitd.models.features import (embed_images, embed_texts, encode_image_batches, image_loader,
                                  image_preprocessing, load_images)

log = get_logger("retrieval.pairs")

PRELOAD_BYTES = 2 << 30  # decoded images kept in RAM up to this size, else streamed


@dataclass
class PairSet:
    """Images and captions ready for training or retrieval.

    Exactly one of ``images`` ([n, 3, s, s]: uint8, or float pixels on the 0-255 scale),
    ``features`` (float [n, d], frozen image features) or ``paths`` only (streamed) carries the
    images. ``similarity``: an [n, n] training target between images (a LoRS set's learned
    matrix), the identity when None.
    """

    paths: list[Path]
    text_features: torch.Tensor  # [n_txt, text_dim], frozen
    text_to_image: np.ndarray  # [n_txt] int64
    images: torch.Tensor | None = None
    features: torch.Tensor | None = None
    image_size: int = 224
    interpolation: str = "bicubic"
    captions_of: list[np.ndarray] = field(default_factory=list)  # per image: caption indices
    kept: np.ndarray | None = None   # dataset row of each image (rows that failed to decode
    problems: list = field(default_factory=list)  # are dropped and listed here)
    similarity: torch.Tensor | None = None

    def __post_init__(self):
        if not self.captions_of:
            order = np.argsort(self.text_to_image, kind="stable")
            bounds = np.searchsorted(self.text_to_image[order], np.arange(self.n_images + 1))
            self.captions_of = [order[bounds[i]:bounds[i + 1]] for i in range(self.n_images)]

    @property
    def n_images(self) -> int:
        if self.paths:
            return len(self.paths)
        held = self.images if self.images is not None else self.features
        return 0 if held is None else len(held)

    @property
    def n_texts(self) -> int:
        return len(self.text_to_image)

    def batches(self, order: Sequence[Sequence[int]], workers: int | None = None):
        """Yield ``(indices, images or features)`` for each list of image indices in ``order``."""
        held = self.features if self.features is not None else self.images
        if held is not None:
            for idx in order:
                idx = torch.as_tensor(list(idx), dtype=torch.long)
                yield idx, held[idx]
        else:
            yield from image_loader(self.paths, self.image_size, interpolation=self.interpolation,
                                    workers=workers, batches=[list(b) for b in order])


def prepare_pairs(dataset, image_encoder: ImageEncoder, text_encoder: TextEncoder,
                  protocol: Protocol, *, freeze_image: bool | None = None, device="cpu",
                  cache=None, preload_bytes: int = PRELOAD_BYTES, workers: int | None = None,
                  name: str = "images") -> PairSet:
    """A ``PairSet`` for a ``gitd.data.Dataset`` (or any sequence of records with ``.image`` and
    ``.captions``): every caption of every image, text features from the (cached) frozen text
    encoder. An image that cannot be decoded drops its row, listed in ``PairSet.problems``
    (``PairSet.kept`` maps the pairs back to the dataset's rows). ``freeze_image``: the
    protocol's unless given."""
    freeze = protocol.freeze_image if freeze_image is None else freeze_image
    records = list(dataset)
    paths = [image_ref(r.image) for r in records]
    errors: list = []
    images = features = None
    if freeze:
        features = torch.from_numpy(embed_images(
            paths, image_encoder, image_size=protocol.image_size, cache=cache, device=device,
            normalize=protocol.normalize, interpolation=protocol.interpolation,
            workers=workers, errors=errors))
    elif len(paths) * 3 * protocol.image_size ** 2 <= preload_bytes:
        images = load_images(paths, protocol.image_size, interpolation=protocol.interpolation,
                             workers=workers, desc=f"decoding {name}", errors=errors)
    else:
        log.info("%s: %d images do not fit the %.1f GiB preload budget; streaming them from disk "
                 "each epoch", name, len(paths), preload_bytes / 2**30)
        errors = _undecodable(paths, workers)
    bad = {i for i, _ in errors}
    kept = np.asarray([i for i in range(len(records)) if i not in bad], dtype=np.int64)
    problems = [exc.to_problem(getattr(records[i], "row", None))
                for i, exc in sorted(errors, key=lambda e: e[0])]
    for p in problems:
        log.warning("%s: %s (skipped)", name, p)
    if bad:
        if not len(kept):
            raise GitdError(f"none of the {len(records)} {name} could be decoded; first: "
                            f"{problems[0]}")
        records, paths = [records[i] for i in kept], [paths[i] for i in kept]
        index = torch.from_numpy(kept)
        images = images[index] if images is not None else None
        features = features[index] if features is not None else None
    texts, t2i = [], []
    for i, r in enumerate(records):
        texts.extend(r.captions)
        t2i.extend([i] * len(r.captions))
    text_feats = torch.from_numpy(embed_texts(texts, text_encoder, cache=cache, device=device))
    return PairSet(paths=paths, text_features=text_feats, text_to_image=np.asarray(t2i, np.int64),
                   images=images, features=features, image_size=protocol.image_size,
                   interpolation=protocol.interpolation, kept=kept, problems=problems)


def tensor_pairs(pixels: torch.Tensor, text: torch.Tensor, image_encoder: ImageEncoder,
                 protocol: Protocol, *, similarity: torch.Tensor | None = None,
                 device="cpu", name: str = "images") -> PairSet:
    """A ``PairSet`` for a set stored as tensors: ``pixels`` float [n, 3, H, W] on the 0-255
    scale (resized to the protocol's size, not rounded or clipped: distilled pixels may leave
    the range), ``text`` [n, d] embeddings in place of the text encoder's output, and an
    optional [n, n] ``similarity`` target."""
    import torch.nn.functional as F

    x = pixels.float()
    size = protocol.image_size
    if x.shape[-2:] != (size, size):
        mode = "bicubic" if protocol.interpolation == "bicubic" else (
            "bilinear" if protocol.interpolation == "bilinear" else "nearest")
        x = F.interpolate(x, size=(size, size), mode=mode,
                          **({} if mode == "nearest" else {"align_corners": False,
                                                            "antialias": True}))
    images = features = None
    if protocol.freeze_image:
        mean, std = image_preprocessing(image_encoder, protocol.normalize)
        order = [list(range(a, min(len(x), a + 64))) for a in range(0, len(x), 64)]
        batches = ((torch.as_tensor(idx), x[idx]) for idx in order)
        features = torch.from_numpy(encode_image_batches(
            image_encoder, batches, mean=mean, std=std, device=device, n=len(x),
            desc=f"{name}: image features"))
    else:
        images = x
    n = len(x)
    return PairSet(paths=[], text_features=text.float().cpu(),
                   text_to_image=np.arange(n, dtype=np.int64), images=images, features=features,
                   image_size=size, interpolation=protocol.interpolation,
                   kept=np.arange(n, dtype=np.int64),
                   similarity=similarity.float().cpu() if similarity is not None else None)


def _undecodable(paths: list[Path], workers: int | None) -> list:
    """(index, ImageError) of every image that does not decode, found in a process pool before
    streaming (a streamed epoch must not meet a bad file half way)."""
    from gitd.data import verify_image_files
    from gitd.data.images import ImageError

    results = verify_image_files(paths, workers=workers or None, desc="checking images")
    return [(i, ImageError(paths[i], message, kind))
            for i, (size, kind, message) in enumerate(results) if size is None]
