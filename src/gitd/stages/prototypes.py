"""prototypes: matched image/text cluster prototypes (prototype-guided synthesis, PDS).

Mini-batch k-means with ``k`` clusters runs separately on the pairs' image embeddings and on
their text embeddings; image clusters are matched one-to-one to text clusters by the Hungarian
algorithm on co-membership counts (how many pairs fall in image cluster i AND text cluster j).
Prototype j is the mean of the image (and text) embeddings of the pairs shared by the matched
clusters; when a matched pair of clusters shares no member (possible when the two clusterings
disagree badly), the image cluster's members stand in, and the manifest says so
(``match_count`` 0). A prototype's caption is the real caption nearest (cosine) its text
centroid.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from gitd.errors import ConfigError


def _l2(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


@dataclass
class Prototypes:
    image: np.ndarray            # [k, d] mean image embedding of each prototype's members
    text: np.ndarray             # [k, d] mean text embedding
    members: list[np.ndarray]    # pair indices of each prototype
    image_cluster: np.ndarray    # [k] image cluster id
    text_cluster: np.ndarray     # [k] matched text cluster id
    match_count: np.ndarray      # [k] members shared by the two clusters
    caption: np.ndarray          # [k] pair index whose caption is nearest the text centroid
    norm: np.ndarray             # [k] mean raw norm of the members' image embeddings

    def to_dict(self, limit: int = 50) -> list[dict]:
        return [{"members": int(len(m)), "member_pairs": m[:limit].tolist(),
                 "image_cluster": int(self.image_cluster[j]),
                 "text_cluster": int(self.text_cluster[j]),
                 "match_count": int(self.match_count[j]), "caption_pair": int(self.caption[j]),
                 "norm": float(self.norm[j])}
                for j, m in enumerate(self.members)]


def _kmeans(X: np.ndarray, k: int, seed: int, batch_size: int) -> np.ndarray:
    from sklearn.cluster import MiniBatchKMeans

    km = MiniBatchKMeans(n_clusters=k, random_state=seed, batch_size=batch_size, n_init=3)
    return km.fit_predict(X).astype(np.int64)


def build_prototypes(image_emb: np.ndarray, text_emb: np.ndarray, k: int, *, seed: int = 0,
                     batch_size: int = 1024) -> Prototypes:
    """``image_emb``/``text_emb``: one row per pair ([n, d] each, any scale; L2-normalised here)."""
    from scipy.optimize import linear_sum_assignment

    raw_norm = np.linalg.norm(np.asarray(image_emb, dtype=np.float32), axis=1)
    img, txt = _l2(image_emb), _l2(text_emb)
    n = len(img)
    if not 1 <= k <= n:
        raise ConfigError(f"asked for {k} prototypes but only {n} pairs remain after filtering")
    li = _kmeans(img, k, seed, batch_size)
    lt = _kmeans(txt, k, seed + 1, batch_size)
    counts = np.zeros((k, k), dtype=np.int64)
    np.add.at(counts, (li, lt), 1)
    rows, cols = linear_sum_assignment(-counts)  # maximise shared members
    members, protos_i, protos_t, captions, norms = [], [], [], [], []
    for i, j in zip(rows, cols):
        shared = np.flatnonzero((li == i) & (lt == j))
        if len(shared) == 0:
            shared = np.flatnonzero(li == i)
        if len(shared) == 0:  # an empty k-means cluster: the pair nearest its centre stands in
            shared = np.asarray([int(np.argmax(img @ img[li == li[0]].mean(0)))])
        members.append(shared)
        norms.append(float(raw_norm[shared].mean()))
        protos_i.append(img[shared].mean(0))
        centroid = txt[shared].mean(0)
        protos_t.append(centroid)
        captions.append(int(np.argmax(txt @ centroid)))
    return Prototypes(np.stack(protos_i), np.stack(protos_t), members, rows.astype(np.int64),
                      cols.astype(np.int64), counts[rows, cols], np.asarray(captions),
                      np.asarray(norms, dtype=np.float32))


def select_nearest(prototype_image: np.ndarray, image_emb: np.ndarray) -> np.ndarray:
    """The real image nearest each prototype (cosine), never the same image twice: prototypes
    are served in order of their best similarity, each taking its nearest image not yet taken."""
    sims = _l2(prototype_image) @ _l2(image_emb).T
    order = np.argsort(-sims.max(1), kind="stable")
    taken: set[int] = set()
    chosen = np.empty(len(sims), dtype=np.int64)
    for j in order:
        for i in np.argsort(-sims[j], kind="stable"):
            if int(i) not in taken:
                taken.add(int(i))
                chosen[j] = int(i)
                break
    return chosen


@dataclass(frozen=True)
class PrototypeSettings:
    """Everything the prototypes depend on besides the embeddings (the ``prototypes`` key)."""

    version: ClassVar[int] = 1  # bump when a change alters the prototypes this stage picks

    k: int
    filter_fraction: float  # pairs with the lowest image-text cosine dropped first
    seed: int


def prototype_stage(call, store, records) -> tuple[dict, np.ndarray]:
    """Run (or reuse) a prototypes stage (``call``: its ``gitd.plan.StageCall``) over the embed
    stage's ``store`` (``gitd.stages.embed.EmbedStore``): drop ``filter_fraction`` of the pairs with the lowest
    image-text cosine, build ``k`` prototypes, and record for each its caption (as an index
    into every caption of every record, in order), the real image nearest it, and up to 50
    member ids. Returns ``prototypes.json`` and the prototype image embeddings
    (``image.npy``)."""
    import io

    from gitd.errors import ConfigError
    from gitd.stages.embed import filter_lowest
    from gitd.store import atomic_write_bytes, atomic_write_json, read_json, require

    st: PrototypeSettings = call.settings
    cap_idx, rec_idx = store.pairs()
    keep = filter_lowest(store.image_emb, store.text_emb[cap_idx], rec_idx, st.filter_fraction)
    cap_idx, rec_idx = cap_idx[keep], rec_idx[keep]
    if st.k > len(np.unique(rec_idx)):
        raise ConfigError(f"asked for {st.k} pairs but only {len(np.unique(rec_idx))} images "
                          f"remain after dropping {st.filter_fraction:.0%} of pairs")

    def compute(stage) -> None:
        protos = build_prototypes(store.image_emb[rec_idx], store.text_emb[cap_idx], st.k,
                                  seed=st.seed)
        valid_rows = np.flatnonzero(store.valid)
        nearest = valid_rows[select_nearest(protos.image, store.image_emb[valid_rows])]
        buf = io.BytesIO()
        np.save(buf, np.asarray(protos.image), allow_pickle=False)
        atomic_write_bytes(stage.path / "image.npy", buf.getvalue())
        table = protos.to_dict()
        for j, row in enumerate(table):
            row.update({"caption_index": int(cap_idx[int(protos.caption[j])]),
                        "nearest_record": int(nearest[j]),
                        "member_ids": [records[int(rec_idx[m])].id
                                       for m in protos.members[j][:50]]})
        atomic_write_json(stage.path / "prototypes.json", {
            "pairs_kept": int(len(cap_idx)), "pairs_dropped": int((~keep).sum()),
            "prototypes": table})

    def load(stage) -> tuple[dict, np.ndarray]:
        # A damaged cache is recomputed (issue 11), never trusted: check what the later stages
        # index with before handing it on.
        info = read_json(stage.path / "prototypes.json")
        require(isinstance(info, dict) and isinstance(info.get("prototypes"), list)
                and len(info["prototypes"]) == st.k, "prototypes.json is missing or damaged")
        image = np.load(stage.path / "image.npy", allow_pickle=False)
        require(image.shape[0] == st.k, "image.npy has the wrong number of prototypes")
        n_captions = sum(len(r.captions) for r in records)
        for row in info["prototypes"]:
            require(0 <= row["caption_index"] < n_captions
                    and 0 <= row["nearest_record"] < len(records),
                    "prototypes.json points outside the dataset")
        return info, image

    return call.whole(compute, load)
