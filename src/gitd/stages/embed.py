"""embed: CLIP image and text embeddings of every training pair, cached and resumable.

Written to ``out_dir``: ``images.npy`` (float32 [n_records, d], memory-mapped, the raw projected
CLIP image embeddings, not normalised: their norm is what an unCLIP decoder expects),
``texts.npy`` (float32 [n_captions, d], L2-normalised), ``index.json`` (ids, caption owners) and
``progress.json`` (rows done, bad images), replaced atomically after each flushed batch, so a
killed run resumes from the last finished batch. Memory: one batch of images.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, Sequence

import numpy as np

from gitd.data.images import ImageError, open_rgb
from gitd.data.records import Problem, Record
from gitd.log import get_logger, progress
from gitd.models.roles import ModelRef
from gitd.stages.arrays import create_array_file, npy_ok
from gitd.store import atomic_write_bytes, atomic_write_json, fingerprint, read_json, require

log = get_logger("stages.embed")


@dataclass
class EmbedStore:
    folder: Path
    image_emb: np.ndarray          # [n_records, d], rows of bad images are zero
    text_emb: np.ndarray           # [n_captions, d]
    owner: np.ndarray              # [n_captions] record index of each caption
    valid: np.ndarray              # [n_records] bool
    problems: list[Problem] = field(default_factory=list)

    @classmethod
    def open(cls, folder: str | Path, records: Sequence[Record] | None = None) -> "EmbedStore":
        """The folder's arrays; with ``records``, checked to be complete and to hold exactly
        those records (``Damaged`` says what is wrong)."""
        folder = Path(folder)
        index = read_json(folder / "index.json")
        state = read_json(folder / "progress.json", {}) or {}
        require(isinstance(index, dict) and isinstance(state, dict),
                "index.json or progress.json is missing or damaged")
        n = len(index["ids"])
        valid = np.ones(n, dtype=bool)
        valid[list(state.get("bad", []))] = False
        store = cls(folder, np.load(folder / "images.npy", mmap_mode="r"),
                    np.load(folder / "texts.npy"), np.asarray(index["owner"], dtype=np.int64),
                    valid, [Problem(**p) for p in state.get("problems", [])])
        if records is not None:
            require(index["ids"] == [r.id for r in records], "index.json lists other images")
            require(state.get("rows_done") == n, f"progress.json says {state.get('rows_done')} "
                    f"of {n} images done")
            require(store.image_emb.shape[0] == n and len(store.text_emb) == len(store.owner)
                    == sum(len(r.captions) for r in records), "arrays of the wrong length")
        return store

    def pairs(self) -> tuple[np.ndarray, np.ndarray]:
        """(caption indices, record indices) of every pair whose image could be read."""
        keep = self.valid[self.owner]
        captions = np.flatnonzero(keep)
        return captions, self.owner[captions]


def _save_npy(path: Path, arr: np.ndarray) -> None:
    buf = io.BytesIO()
    np.save(buf, arr, allow_pickle=False)
    atomic_write_bytes(path, buf.getvalue())


def embed_pairs(records: Sequence[Record], score_model, out_dir: str | Path, *,
                batch_size: int = 64) -> EmbedStore:
    """Embed every record's image and every caption with ``score_model`` (a registry
    ``ScoreModel``); a bad image becomes a Problem and its row invalid, never a crash."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    ids = [r.id for r in records]
    key = fingerprint({"ids": ids, "model": getattr(score_model, "name", repr(score_model))})
    index = read_json(out / "index.json")
    state = read_json(out / "progress.json", {}) or {}
    texts = [c for r in records for c in r.captions]
    owner = np.repeat(np.arange(len(records)), [len(r.captions) for r in records])
    resumable = (isinstance(index, dict) and index.get("key") == key and isinstance(state, dict)
                 and isinstance(state.get("rows_done"), int)
                 and npy_ok(out / "texts.npy", np.float32, (len(texts), index.get("dim")))
                 and npy_ok(out / "images.npy", np.float32, (len(records), index.get("dim"))))
    if not resumable:
        if isinstance(index, dict) and index.get("key") == key:
            log.warning("embed: the files in %s are damaged; embedding again", out)
        txt = np.concatenate([score_model.encode_texts(texts[a:a + 256]).float().cpu().numpy()
                              for a in range(0, len(texts), 256)]).astype(np.float32)
        dim = txt.shape[1]
        _save_npy(out / "texts.npy", txt)
        create_array_file(out / "images.npy", np.float32, (len(records), dim))
        atomic_write_json(out / "index.json", {"key": key, "ids": ids, "owner": owner.tolist(),
                                               "dim": dim})
        state = {"rows_done": 0, "bad": [], "problems": []}
        atomic_write_json(out / "progress.json", state)
    start = int(state["rows_done"])
    if start:
        log.info("embed: %d of %d images already embedded, not redone", start, len(records))
    images = np.load(out / "images.npy", mmap_mode="r+")
    bar = progress(range(start, len(records), batch_size), desc="embed", unit="batch")
    for a in bar:
        batch = records[a:a + batch_size]
        pics, rows = [], []
        for j, rec in enumerate(batch):
            try:
                pics.append(open_rgb(rec.image))
                rows.append(a + j)
            except ImageError as exc:
                state["bad"].append(a + j)
                state["problems"].append(Problem(str(rec.image), exc.problem, rec.row,
                                                 exc.kind).__dict__)
                log.warning("embed: %s (skipped)", exc)
        if pics:
            images[rows] = score_model.encode_images(pics, normalize=False).float().cpu().numpy()
            images.flush()
        state["rows_done"] = min(a + batch_size, len(records))
        atomic_write_json(out / "progress.json", state)
    del images
    return EmbedStore.open(out, records)


def filter_lowest(image_emb: np.ndarray, text_emb: np.ndarray, pair_image: np.ndarray,
                  fraction: float = 0.2) -> np.ndarray:
    """bool keep-mask over pairs (caption i with image ``pair_image[i]``) dropping the
    ``floor(fraction * n_pairs)`` pairs of lowest image-text cosine (ties: the later pair goes
    first). ``fraction`` 0 keeps every pair."""
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"fraction must be in [0, 1), got {fraction}")
    img = np.asarray(image_emb, dtype=np.float32)[pair_image]
    txt = np.asarray(text_emb, dtype=np.float32)
    cos = (img * txt).sum(1) / np.maximum(
        np.linalg.norm(img, axis=1) * np.linalg.norm(txt, axis=1), 1e-12)
    drop = int(np.floor(fraction * len(cos)))
    keep = np.ones(len(cos), dtype=bool)
    if drop:
        order = np.lexsort((-np.arange(len(cos)), cos))  # lowest cosine first
        keep[order[:drop]] = False
    return keep


# -- as a stage of a method run ------------------------------------------------------------------
@dataclass(frozen=True)
class EmbedSettings:
    """Everything the embeddings depend on besides the data (the ``embed`` key)."""

    version: ClassVar[int] = 1  # bump when a change alters the embeddings this stage writes

    score: ModelRef
    dtype: str
    device: str


def embed_stage(call, records: Sequence[Record]) -> EmbedStore:
    """Run (or reuse) an embed stage (``call``: its ``gitd.plan.StageCall``, with model
    ``score``)."""
    return call.whole(lambda stage: embed_pairs(records, call.model("score"), stage.path),
                      lambda stage: EmbedStore.open(stage.path, records))
