"""Training the retrieval model on image-caption pairs, and embedding pairs with it.

Public API (also used by coreset selection's forgetting score):

* ``prepare_pairs(dataset, image_encoder, text_encoder, protocol, ...) -> PairSet``: a dataset's
  images (decoded uint8 tensors in RAM when they fit, else streamed from disk through a
  DataLoader with workers; frozen features with ``freeze_image``) and its frozen text features.
* ``Trainer(model, pairs, protocol, seed=..)``: ``fit(on_epoch_end=callback(epoch, trainer))``,
  ``embed(pairs)``, ``learned()`` (which training pairs the current model gets right) and
  ``batch_correct`` (which images were right within their mini-batch in the last epoch).
* ``train(train, *, protocol, epochs, seed, image_model, text_model, ..., on_epoch_end)``: all
  of the above in one call, returning the fitted ``Trainer``.

Multi-caption training sets: each epoch is one pass over the IMAGES, each paired with one of
its captions drawn at random (seeded); so an epoch costs the same whatever the caption count, and
a distilled set (one caption per image) trains on exactly its pairs.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from gitd.data.images import image_ref
from gitd.errors import GitdError
from gitd.models.encoders import (ImageEncoder, TextEncoder, build_image_encoder,
                                      build_text_encoder, resolve_device)
from gitd.models.features import (embed_images, embed_texts, image_loader,
                                      image_preprocessing, load_images)
from gitd.retrieval.losses import in_batch_correct, info_nce
from gitd.retrieval.model import RetrievalModel
from gitd.retrieval.protocols import Protocol, get_protocol
from gitd.log import get_logger

log = get_logger("retrieval.train")

PRELOAD_BYTES = 2 << 30  # decoded images kept in RAM up to this size, else streamed


@dataclass
class PairSet:
    """Images and captions ready for training or retrieval.

    Exactly one of ``images`` (uint8 [n, 3, s, s], preloaded), ``features`` (float [n, d],
    frozen image features) or ``paths`` only (streamed) carries the images.
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

    def __post_init__(self):
        if not self.captions_of:
            order = np.argsort(self.text_to_image, kind="stable")
            bounds = np.searchsorted(self.text_to_image[order], np.arange(len(self.paths) + 1))
            self.captions_of = [order[bounds[i]:bounds[i + 1]] for i in range(len(self.paths))]

    @property
    def n_images(self) -> int:
        return len(self.paths)

    @property
    def n_texts(self) -> int:
        return len(self.text_to_image)

    def batches(self, order: Sequence[Sequence[int]], workers: int | None = None):
        """Yield ``(indices, images or features)`` for each list of image indices in ``order``."""
        if self.features is not None:
            for idx in order:
                idx = torch.as_tensor(list(idx), dtype=torch.long)
                yield idx, self.features[idx]
        elif self.images is not None:
            for idx in order:
                idx = torch.as_tensor(list(idx), dtype=torch.long)
                yield idx, self.images[idx]
        else:
            yield from image_loader(self.paths, self.image_size, interpolation=self.interpolation,
                                    workers=workers, batches=[list(b) for b in order])


def prepare_pairs(dataset, image_encoder: ImageEncoder, text_encoder: TextEncoder,
                  protocol: Protocol, *, freeze_image: bool = False, device="cpu", cache=None,
                  preload_bytes: int = PRELOAD_BYTES, workers: int | None = None,
                  name: str = "images") -> PairSet:
    """A ``PairSet`` for a ``gitd.data.Dataset`` (or any sequence of records with ``.image`` and
    ``.captions``): every caption of every image, text features from the (cached) frozen text
    encoder. An image that cannot be decoded drops its row, listed in ``PairSet.problems``
    (``PairSet.kept`` maps the pairs back to the dataset's rows)."""
    records = list(dataset)
    paths = [image_ref(r.image) for r in records]
    errors: list = []
    images = features = None
    if freeze_image:
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


def _undecodable(paths: list[Path], workers: int | None) -> list:
    """(index, ImageError) of every image that does not decode, found in a process pool before
    streaming (a streamed epoch must not meet a bad file half way)."""
    from gitd.data import verify_image_files
    from gitd.data.images import ImageError

    results = verify_image_files(paths, workers=workers or None, desc="checking images")
    return [(i, ImageError(paths[i], message, kind))
            for i, (size, kind, message) in enumerate(results) if size is None]


def build_model(image_encoder: ImageEncoder, text_dim: int, protocol: Protocol, *, seed: int,
                freeze_image: bool = False) -> RetrievalModel:
    """A fresh model: a COPY of ``image_encoder`` (so every seed starts from the same weights)
    and a projection head initialised from ``seed``."""
    torch.manual_seed(seed)
    mean, std = image_preprocessing(image_encoder, protocol.normalize)
    encoder = None if freeze_image else copy.deepcopy(image_encoder)
    if encoder is not None:
        for p in encoder.parameters():
            p.requires_grad_(True)
    return RetrievalModel(text_dim, image_encoder.dim, encoder, mean=mean, std=std,
                          dropout=protocol.head_dropout, freeze_bn=protocol.freeze_bn)


class Trainer:
    """Trains ``model`` on ``pairs`` under ``protocol``; ``seed`` fixes data order, caption
    choice and dropout (the head's initialisation is fixed by ``build_model``'s seed)."""

    def __init__(self, model: RetrievalModel, pairs: PairSet, protocol: Protocol, *, seed: int = 0,
                 device="cpu", workers: int | None = None, desc: str = "training"):
        self.model = model
        self.pairs = pairs
        self.protocol = protocol
        self.seed = seed
        self.device = torch.device(device)
        self.workers = workers
        self.desc = desc
        self.epoch = 0
        self.losses: list[float] = []
        # Per image, whether its pair was retrieved correctly, in both directions, within its
        # mini-batch when it was last presented (Toneva et al.'s "presentation accuracy").
        self.batch_correct = np.zeros(pairs.n_images, dtype=bool)
        params = model.trainable_parameters()
        if protocol.optimizer == "sgd":
            self.optimizer = torch.optim.SGD(params, lr=protocol.lr, momentum=protocol.momentum,
                                             weight_decay=protocol.weight_decay)
        else:
            self.optimizer = torch.optim.AdamW(params, lr=protocol.lr,
                                               weight_decay=protocol.weight_decay)
        self.model.to(self.device)

    def _epoch_order(self, epoch: int) -> tuple[list[list[int]], np.ndarray]:
        rng = np.random.default_rng([self.seed, epoch])
        perm = rng.permutation(self.pairs.n_images)
        caption = np.array([c[rng.integers(len(c))] for c in self.pairs.captions_of],
                           dtype=np.int64)
        bs = self.protocol.batch_size
        return [perm[a:a + bs].tolist() for a in range(0, len(perm), bs)], caption

    def train_epoch(self, bar=None) -> float:
        """One epoch; returns the mean loss. Raises GitdError if the loss is not finite.
        ``bar``: a ``gitd.log.progress`` advanced by the images of each batch."""
        p = self.protocol
        for group in self.optimizer.param_groups:
            group["lr"] = p.lr_at(self.epoch)
        torch.manual_seed(self.seed * 100003 + self.epoch)  # dropout
        order, caption = self._epoch_order(self.epoch)
        self.model.train()
        total, count = 0.0, 0
        for idx, x in self.pairs.batches(order, self.workers):
            img = self.model.encode_images(x.to(self.device))
            txt = self.model.encode_texts(
                self.pairs.text_features[caption[idx.numpy()]].to(self.device))
            loss = info_nce(img, txt, p.temperature)
            self.batch_correct[idx.numpy()] = in_batch_correct(img, txt).cpu().numpy()
            if not torch.isfinite(loss):
                raise GitdError(f"training diverged (loss {loss.item()}) in epoch {self.epoch + 1}"
                                f", seed {self.seed}; lower the learning rate (--lr, now {p.lr})")
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            total += loss.item() * len(idx)
            count += len(idx)
            if bar is not None:
                bar.update(len(idx))
        self.epoch += 1
        mean = total / max(count, 1)
        self.losses.append(mean)
        return mean

    def fit(self, epochs: int | None = None,
            on_epoch_end: Callable[[int, "Trainer"], None] | None = None,
            progress_bar: bool = True) -> "Trainer":
        """Train ``epochs`` more epochs (default: the protocol's); after each, call
        ``on_epoch_end(epoch, trainer)`` with the 1-based number of epochs done."""
        from gitd.log import progress
        epochs = self.protocol.epochs if epochs is None else epochs
        # Counted in images, not epochs: an epoch of a large set takes minutes to hours, and
        # the bar (or log line) then shows the batches moving and the images per second.
        bar = (progress(total=epochs * self.pairs.n_images, desc=self.desc, unit="img")
               if progress_bar else None)
        first = self.epoch
        try:
            for _ in range(epochs):
                if bar is not None:
                    bar.set_postfix(epoch=f"{self.epoch + 1}/{first + epochs}",
                                    **({"loss": f"{self.losses[-1]:.3f}"} if self.losses else {}))
                self.train_epoch(bar)
                if on_epoch_end is not None:
                    on_epoch_end(self.epoch, self)
        finally:
            if bar is not None:
                bar.close()
        return self

    @torch.no_grad()
    def embed(self, pairs: PairSet | None = None, *, batch_size: int = 64,
              desc: str | None = None) -> tuple[np.ndarray, np.ndarray]:
        """L2-normalised (image [n_images, d], text [n_texts, d]) embeddings of ``pairs``
        (default: the training pairs) with the current model, in eval mode; ``desc`` names a
        progress bar over the images."""
        from gitd.log import progress
        pairs = self.pairs if pairs is None else pairs
        was_training = self.model.training
        self.model.eval()
        order = [list(range(a, min(pairs.n_images, a + batch_size)))
                 for a in range(0, pairs.n_images, batch_size)]
        img = np.zeros((pairs.n_images, self.model.head.fc1.out_features), dtype=np.float32)
        bar = progress(total=pairs.n_images, desc=desc, unit="img") if desc else None
        for idx, x in pairs.batches(order, self.workers):
            img[idx.numpy()] = self.model.encode_images(x.to(self.device)).cpu().numpy()
            if bar is not None:
                bar.update(len(idx))
        if bar is not None:
            bar.close()
        txt = np.concatenate([
            self.model.encode_texts(pairs.text_features[a:a + 4096].to(self.device)).cpu().numpy()
            for a in range(0, pairs.n_texts, 4096)]) if pairs.n_texts else np.zeros((0, img.shape[1]))
        self.model.train(was_training)
        return img, txt.astype(np.float32)

    def evaluate(self, pairs: PairSet, desc: str | None = None) -> dict[str, float]:
        """Retrieval metrics (``gitd.retrieval.metrics``) of the current model on ``pairs``."""
        from gitd.retrieval.metrics import retrieval_metrics
        img, txt = self.embed(pairs, desc=desc)
        try:
            return retrieval_metrics(img, txt, pairs.text_to_image)
        except ValueError as exc:
            raise GitdError(f"evaluation failed after epoch {self.epoch}, seed {self.seed}: "
                            f"{exc}") from None

    def learned(self, pairs: PairSet | None = None) -> np.ndarray:
        """bool [n_texts]: caption t is "learned" when, among the training set, its own image is
        the top-1 image for t (IR rank 0) AND t outranks every caption of other images for that
        image. Ties count as not learned. This is the per-example "correct" for forgetting
        events (a forgetting event: learned after one epoch, not after the next)."""
        pairs = self.pairs if pairs is None else pairs
        img, txt = self.embed(pairs)
        t2i = pairs.text_to_image
        scores = txt @ img.T  # [n_txt, n_img]; training sets are small enough
        own = scores[np.arange(len(t2i)), t2i]
        ir_ok = (scores >= own[:, None]).sum(1) == 1
        other = t2i[None, :] != t2i[:, None]  # [n_txt, n_txt]: caption j belongs elsewhere
        img_scores = scores.T[t2i]  # row t: image t2i[t] scored against every caption
        tr_ok = ~((img_scores >= own[:, None]) & other).any(1)
        return ir_ok & tr_ok


def train(train_set, *, protocol: str | Protocol = "gitd", epochs: int | None = None,
          seed: int = 0, image_model="auto", text_model="auto", freeze_image: bool = False,
          pretrained: bool = True, image_size: int | None = None, batch_size: int | None = None,
          lr: float | None = None, device="auto", cache=None, images=None,
          workers: int | None = None,
          on_epoch_end: Callable[[int, Trainer], None] | None = None) -> Trainer:
    """Train a retrieval model on ``train_set`` (a path, loaded with ``gitd.data.load_dataset``,
    or a ``Dataset``) and return the ``Trainer``; ``on_epoch_end(epoch, trainer)`` runs after
    every epoch (e.g. ``trainer.learned()`` for forgetting events)."""
    from gitd.data import load_dataset
    if isinstance(train_set, (str, Path)):
        train_set = load_dataset(train_set, images)
    prot = get_protocol(protocol, epochs=epochs, image_size=image_size, batch_size=batch_size,
                        lr=lr)
    dev = resolve_device(device)
    img_enc = image_model if isinstance(image_model, ImageEncoder) else build_image_encoder(
        image_model, image_size=prot.image_size, pretrained=pretrained)
    txt_enc = text_model if isinstance(text_model, TextEncoder) else build_text_encoder(text_model)
    pairs = prepare_pairs(train_set, img_enc, txt_enc, prot, freeze_image=freeze_image,
                          device=dev, cache=cache, workers=workers, name="train images")
    model = build_model(img_enc, txt_enc.dim, prot, seed=seed, freeze_image=freeze_image)
    trainer = Trainer(model, pairs, prot, seed=seed, device=dev, workers=workers)
    return trainer.fit(on_epoch_end=on_epoch_end)
