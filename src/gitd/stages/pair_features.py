"""The ``features`` stage (``cluster_space: features``): every pair as L2(image feature) ++
L2(mean of its captions' L2 text features) from the evaluation encoders, the space the coreset
selections herding and k-center also use (``gitd.methods.coreset``), so that image and text
weigh the same.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from gitd.data.records import Dataset
from gitd.store import atomic_write_bytes, require


def l2_rows(x: np.ndarray) -> np.ndarray:
    """Each row of ``x`` scaled to unit length (float32; a zero row stays zero)."""
    x = np.asarray(x, dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def pair_features(dataset: Dataset, *, image_model="auto", text_model="auto",
                  image_size: int = 224, cache=None, device="auto",
                  errors: list | None = None) -> np.ndarray:
    """[n_images, d_img + d_txt]: L2(image feature) ++ L2(mean of L2(caption features)).
    ``errors``: as ``embed_images`` (rows of images that do not decode are listed there)."""
    # Here, not at the top: the coreset selections import this module, and random or full
    # selection must not load torch.
    from gitd.models.features import embed_images, embed_texts

    img = l2_rows(embed_images([r.image for r in dataset], image_model, image_size=image_size,
                               cache=cache, device=device, errors=errors))
    texts = [c for r in dataset for c in r.captions]
    owner = np.repeat(np.arange(len(dataset)), [len(r.captions) for r in dataset])
    txt = l2_rows(embed_texts(texts, text_model, cache=cache, device=device))
    mean = np.zeros((len(dataset), txt.shape[1]), dtype=np.float32)
    np.add.at(mean, owner, txt)
    return np.concatenate([img, l2_rows(mean)], axis=1)


@dataclass(frozen=True)
class FeatureSettings:
    """The key of the ``features`` stage (``cluster_space: features``): the coreset baselines'
    L2(image feature) ++ L2(mean caption feature) of every pair (``pair_features``)."""

    version: ClassVar[int] = 1  # bump when a change alters the features this stage writes

    image_model: str
    text_model: str
    # What "auto" resolves to here (the papers' encoders when cached, else the offline ones),
    # found without building them: a machine with other encoders computes other features.
    image_identity: str
    text_identity: str
    image_size: int
    device: str


def features_stage(call) -> np.ndarray:
    """The ``features`` stage (``call``: its ``gitd.plan.StageCall``): ``pair_features`` of
    every pair of ``call.dataset``, one row per image, as ``features.npy`` in the stage folder."""
    st: FeatureSettings = call.settings
    dataset = call.dataset

    def path(stage):
        return stage.path / "features.npy"

    def compute(stage) -> None:
        feats = pair_features(dataset, image_model=st.image_model, text_model=st.text_model,
                              image_size=st.image_size, cache=False, device=call.device)
        buf = io.BytesIO()
        np.save(buf, np.asarray(feats, dtype=np.float32), allow_pickle=False)
        atomic_write_bytes(path(stage), buf.getvalue())

    def load(stage):
        feats = np.load(path(stage), allow_pickle=False)
        require(feats.ndim == 2 and len(feats) == len(dataset),
                f"features.npy holds {feats.shape}, not one row per image ({len(dataset)})")
        return feats

    return call.whole(compute, load)
