"""Training the retrieval model on image-caption pairs, and embedding pairs with it.

Public API (also used by coreset selection's forgetting score):

* ``prepare_pairs`` (``gitd.retrieval.pairs``, also importable from here): a dataset's pairs.
* ``Trainer(model, pairs, protocol, seed=..)``: ``fit(on_epoch_end=callback(epoch, trainer))``,
  ``embed(pairs)``, ``learned()`` (which training pairs the current model gets right) and
  ``batch_correct`` (which images were right within their mini-batch in the last epoch).
* ``train(train, *, protocol, epochs, seed, image_model, text_model, ..., on_epoch_end)``: all
  of the above in one call, returning the fitted ``Trainer``.

Multi-caption training sets: each epoch is one pass over the IMAGES, each paired with one of
its captions drawn at random (seeded); so an epoch costs the same whatever the caption count, and
a distilled set (one caption per image) trains on exactly its pairs. The protocol decides the
rest: the optimiser (one parameter group for the image encoder, one for the text head, each with
its own lr), how batches are drawn, the loss and its target, and the augmentation.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from gitd.errors import GitdError
from gitd.log import get_logger
from gitd.models.encoders import (ImageEncoder, TextEncoder, build_image_encoder,
                                  build_text_encoder, resolve_device)
from gitd.retrieval.losses import in_batch_correct, loss_function
from gitd.retrieval.model import RetrievalModel
from gitd.retrieval.pairs import PairSet, prepare_pairs
from gitd.retrieval.protocols import Protocol, get_protocol
from gitd.models.features import image_preprocessing

log = get_logger("retrieval.train")


def build_model(image_encoder: ImageEncoder, text_dim: int, protocol: Protocol, *, seed: int,
                freeze_image: bool | None = None) -> RetrievalModel:
    """A fresh model: a COPY of ``image_encoder`` (so every seed starts from the same weights)
    and a projection head initialised from ``seed``. ``freeze_image``: the protocol's unless
    given (frozen: images arrive as precomputed features)."""
    torch.manual_seed(seed)
    freeze = protocol.freeze_image if freeze_image is None else freeze_image
    mean, std = image_preprocessing(image_encoder, protocol.normalize)
    encoder = None if freeze else copy.deepcopy(image_encoder)
    if encoder is not None:
        for p in encoder.parameters():
            p.requires_grad_(True)
    return RetrievalModel(text_dim, image_encoder.dim, encoder, mean=mean, std=std,
                          dropout=protocol.head_dropout, freeze_bn=protocol.freeze_bn)


class Trainer:
    """Trains ``model`` on ``pairs`` under ``protocol``; ``seed`` fixes data order, caption
    choice, augmentation and dropout (the head's initialisation is fixed by ``build_model``'s
    seed)."""

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
        # A set's learned similarity matrix is trained on with the loss it was learned for.
        self.loss_name = "wbce" if pairs.similarity is not None else protocol.loss
        self.loss = loss_function(self.loss_name)
        groups = []
        if model.image_encoder is not None:
            groups.append({"params": [p for p in model.image_encoder.parameters()
                                      if p.requires_grad],
                           "base_lr": protocol.image_lr or protocol.lr})
        groups.append({"params": [p for p in model.head.parameters() if p.requires_grad],
                       "base_lr": protocol.text_lr or protocol.lr})
        for g in groups:
            g["lr"] = g["base_lr"]
        if protocol.optimizer == "sgd":
            self.optimizer = torch.optim.SGD(groups, lr=protocol.lr, momentum=protocol.momentum,
                                             weight_decay=protocol.weight_decay)
        else:
            self.optimizer = torch.optim.AdamW(groups, lr=protocol.lr,
                                               weight_decay=protocol.weight_decay)
        self.model.to(self.device)

    def _epoch_order(self, epoch: int) -> tuple[list[list[int]], np.ndarray]:
        """This epoch's batches (lists of image indices) and each image's caption."""
        rng = np.random.default_rng([self.seed, epoch])
        n, bs = self.pairs.n_images, self.protocol.batch_size
        if self.protocol.batches == "random":
            # Each batch an independent random subset (LoRS's SimilarityDataloader).
            order = [rng.permutation(n)[:bs].tolist() for _ in range(-(-n // bs))]
        else:
            perm = rng.permutation(n)
            order = [perm[a:a + bs].tolist() for a in range(0, n, bs)]
        if self.protocol.drop_last and len(order) > 1 and len(order[-1]) < bs:
            order.pop()  # a set smaller than one batch still trains, as one batch
        caption = np.array([c[rng.integers(len(c))] for c in self.pairs.captions_of],
                           dtype=np.int64)
        return order, caption

    def train_epoch(self, bar=None) -> float:
        """One epoch; returns the mean loss. Raises GitdError if the loss is not finite.
        ``bar``: a ``gitd.log.progress`` advanced by the images of each batch."""
        p = self.protocol
        for group in self.optimizer.param_groups:
            group["lr"] = p.lr_at(self.epoch, group["base_lr"])
        torch.manual_seed(self.seed * 100003 + self.epoch)  # dropout and augmentation
        order, caption = self._epoch_order(self.epoch)
        self.model.train()
        total, count = 0.0, 0
        for idx, x in self.pairs.batches(order, self.workers):
            if p.augment == "blip" and self.model.image_encoder is not None:
                from gitd.retrieval.augment import blip_augment
                x = blip_augment(x)
            img = self.model.encode_images(x.to(self.device))
            txt = self.model.encode_texts(
                self.pairs.text_features[caption[idx.numpy()]].to(self.device))
            target = None
            if self.pairs.similarity is not None:
                target = self.pairs.similarity[idx][:, idx].to(self.device)
            loss = self.loss(img, txt, p.temperature, target)
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

    def images_per_epoch(self) -> int:
        """Images one epoch trains on (fewer than the set when the last batch is dropped)."""
        return sum(len(b) for b in self._epoch_order(0)[0])

    def fit(self, epochs: int | None = None,
            on_epoch_end: Callable[[int, "Trainer"], None] | None = None,
            progress_bar: bool = True, bar=None) -> "Trainer":
        """Train ``epochs`` more epochs (default: the protocol's); after each, call
        ``on_epoch_end(epoch, trainer)`` with the 1-based number of epochs done. ``bar``: a
        progress bar the caller owns (e.g. one over every seed of a run), advanced here and
        not closed; otherwise one of this fit's own unless ``progress_bar`` is False."""
        from gitd.log import progress
        epochs = self.protocol.epochs if epochs is None else epochs
        own = bar is None and progress_bar
        # Counted in images, not epochs: an epoch of a large set takes minutes to hours, and
        # the bar (or log line) then shows the batches moving and the images per second.
        if own:
            bar = progress(total=epochs * self.images_per_epoch(), desc=self.desc, unit="img")
        first = self.epoch
        try:
            for _ in range(epochs):
                if bar is not None:
                    bar.set_postfix(**({} if own else {"seed": self.seed}),
                                    epoch=f"{self.epoch + 1}/{first + epochs}",
                                    **({"loss": f"{self.losses[-1]:.3f}"} if self.losses else {}))
                self.train_epoch(bar)
                if on_epoch_end is not None:
                    on_epoch_end(self.epoch, self)
        finally:
            if own and bar is not None:
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
          seed: int = 0, image_model="auto", text_model="auto", freeze_image: bool | None = None,
          pretrained: bool = True, image_size: int | None = None, batch_size: int | None = None,
          lr: float | None = None, device="auto", cache=None, images=None,
          workers: int | None = None,
          on_epoch_end: Callable[[int, Trainer], None] | None = None) -> Trainer:
    """Train a retrieval model on ``train_set`` (a path, loaded with ``gitd.data.load_dataset``,
    or a ``Dataset``) and return the ``Trainer``; ``on_epoch_end(epoch, trainer)`` runs after
    every epoch (e.g. ``trainer.learned()`` for forgetting events). ``None`` settings are the
    protocol's."""
    from gitd.data import load_dataset
    if isinstance(train_set, (str, Path)):
        train_set = load_dataset(train_set, images)
    prot = get_protocol(protocol, epochs=epochs, image_size=image_size, batch_size=batch_size,
                        lr=lr, freeze_image=freeze_image)
    dev = resolve_device(device)
    img_enc = image_model if isinstance(image_model, ImageEncoder) else build_image_encoder(
        image_model, image_size=prot.image_size, pretrained=pretrained, output=prot.image_output)
    txt_enc = text_model if isinstance(text_model, TextEncoder) else build_text_encoder(text_model)
    pairs = prepare_pairs(train_set, img_enc, txt_enc, prot, device=dev, cache=cache,
                          workers=workers, name="train images")
    model = build_model(img_enc, txt_enc.dim, prot, seed=seed)
    trainer = Trainer(model, pairs, prot, seed=seed, device=dev, workers=workers)
    return trainer.fit(on_epoch_end=on_epoch_end)
