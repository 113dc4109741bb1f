"""Coreset baselines: pick K real pairs instead of synthesising them.

Every distilled result is compared against these. The selection is over images (a pair is an
image and one of its captions), in the feature space of the evaluation encoders (documented in
docs/coresets.md):

* ``random``: K images uniformly at random (seeded).
* ``herding``: Welling's (2009) greedy moment matching: each step adds the image whose features
  bring the running mean of the selected set closest to the mean of the whole set.
* ``kcenter``: greedy farthest-point k-center (Sener & Savarese 2018), seeded first centre.
* ``forgetting``: Toneva et al. (2019): a short training of the retrieval model on the full set
  (frozen image features, so it runs on a CPU), counting per image the forgetting events (right
  at one presentation, wrong at the next). "Right" is, by default (``learned="batch"``, the
  paper's presentation accuracy), that the image and the caption it was presented with retrieve
  each other within their mini-batch; ``learned="train-set"`` asks instead, after every epoch,
  that each caption and its image be top-1 among the whole training set (much stricter) and sums
  over an image's captions. An example never right counts as ``epochs`` events (the paper ranks
  never-learned examples as the most forgettable); the K highest-scoring images are kept, ties to
  the lower index.
* ``pds``: the selection step of prototype-guided synthesis without its generator: matched
  image/text k-means prototypes (``gitd.stages.prototypes``) over every (image, caption) pair,
  the real image nearest each image prototype and the real caption nearest its text centroid.
  The evaluation encoders share no embedding space, so PDS's image-text cosine filter does not
  apply here (``gitd distill --method pds --no-diffusion`` is the variant with CLIP and filter).
* ``full``: every image (the upper bound).

Features for herding and k-center: the L2-normalised frozen image feature of the image,
concatenated with the L2-normalised mean of its captions' L2-normalised text features, so that
image and text weigh the same.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from gitd.data import Dataset
from gitd.data.formats import dataset_fingerprint, load_dataset
from gitd.data.output import OutputPair, write_output
from gitd.errors import MAX_SEED, ConfigError, GitdError, check_positive_int
from gitd.log import get_logger, progress
from gitd.outdir import Inputs, OutputFolder

log = get_logger("methods.coreset")

METHODS = ("random", "herding", "kcenter", "forgetting", "pds", "full")
FORGETTING_TESTS = ("batch", "train-set")


def _check_forgetting_test(learned: str) -> None:
    if learned not in FORGETTING_TESTS:
        raise ConfigError(f"forgetting_learned must be one of {', '.join(FORGETTING_TESTS)}; "
                          f"got {learned!r}")
CAPTION_POLICIES = ("longest", "first", "random", "all")


# -- selection on arrays -------------------------------------------------------------------------
def random_subset(n: int, k: int, seed: int = 0) -> np.ndarray:
    """``k`` distinct indices of ``range(n)``, uniformly at random, in the order drawn."""
    return np.random.default_rng(seed).choice(n, size=k, replace=False).astype(np.int64)


def herding(features: np.ndarray, k: int) -> np.ndarray:
    """Greedy herding: indices in selection order (the first is the point nearest the mean)."""
    X = np.asarray(features, dtype=np.float64)
    n = len(X)
    mu = X.mean(0)
    chosen: list[int] = []
    taken = np.zeros(n, dtype=bool)
    total = np.zeros_like(mu)
    for t in range(1, k + 1):
        # Distance from the whole-set mean of the mean after adding each candidate.
        gap = np.linalg.norm((total[None, :] + X) / t - mu[None, :], axis=1)
        gap[taken] = np.inf
        i = int(np.argmin(gap))
        chosen.append(i)
        taken[i] = True
        total += X[i]
    return np.asarray(chosen, dtype=np.int64)


def kcenter_greedy(features: np.ndarray, k: int, seed: int = 0) -> np.ndarray:
    """Greedy k-center: a seeded random first centre, then always the point farthest from the
    centres chosen so far. Indices in selection order, all distinct: chosen centres are masked,
    so once every point is covered (duplicate feature rows) the remaining picks go to the
    lowest-index points not yet chosen instead of repeating a centre."""
    X = np.asarray(features, dtype=np.float64)
    n = len(X)
    if not 0 < k <= n:
        raise ValueError(f"k must be in 1..{n}, got {k}")
    first = int(np.random.default_rng(seed).integers(n))
    chosen = [first]
    nearest = np.linalg.norm(X - X[first], axis=1)
    nearest[first] = -np.inf
    for _ in range(1, k):
        i = int(np.argmax(nearest))
        chosen.append(i)
        nearest = np.minimum(nearest, np.linalg.norm(X - X[i], axis=1))
        nearest[chosen] = -np.inf
    return np.asarray(chosen, dtype=np.int64)


def forgetting_events(history: np.ndarray) -> np.ndarray:
    """Forgetting events per example from a bool ``[epochs, n]`` history of "learned" flags:
    the number of epochs learned after which the next epoch is not. An example never learned
    gets ``epochs`` (ranked as most forgettable, as in Toneva et al.)."""
    h = np.asarray(history, dtype=bool)
    if h.ndim != 2:
        raise ValueError(f"history must be [epochs, n], got shape {h.shape}")
    events = (h[:-1] & ~h[1:]).sum(0).astype(np.int64)
    never = ~h.any(0)
    events[never] = h.shape[0]
    return events


def top_k(scores: np.ndarray, k: int) -> np.ndarray:
    """Indices of the ``k`` highest scores, ties to the lower index."""
    scores = np.asarray(scores)
    return np.lexsort((np.arange(len(scores)), -scores))[:k].astype(np.int64)


# -- features and forgetting on a dataset --------------------------------------------------------
def _l2(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def pair_features(dataset: Dataset, *, image_model="auto", text_model="auto",
                  image_size: int = 224, cache=None, device="auto",
                  errors: list | None = None) -> np.ndarray:
    """[n_images, d_img + d_txt]: L2(image feature) ++ L2(mean of L2(caption features)).
    ``errors``: as ``embed_images`` (rows of images that do not decode are listed there)."""
    from gitd.evaluation.features import embed_images, embed_texts

    img = _l2(embed_images([r.image for r in dataset], image_model, image_size=image_size,
                           cache=cache, device=device, errors=errors))
    texts = [c for r in dataset for c in r.captions]
    owner = np.repeat(np.arange(len(dataset)), [len(r.captions) for r in dataset])
    txt = _l2(embed_texts(texts, text_model, cache=cache, device=device))
    mean = np.zeros((len(dataset), txt.shape[1]), dtype=np.float32)
    np.add.at(mean, owner, txt)
    return np.concatenate([img, _l2(mean)], axis=1)


def forgetting_scores(dataset: Dataset, *, epochs: int = 10, seed: int = 0,
                      learned: str = "batch", image_model="auto", text_model="auto",
                      image_size: int = 224, cache=None, device="auto",
                      problems: list | None = None) -> tuple[np.ndarray, dict[str, Any]]:
    """Per-image forgetting score from a short frozen-image-feature training on the full set;
    ``learned`` picks what counts as right (module docstring). An image that does not decode
    is left out of the training, scores -1 and is appended to ``problems``."""
    from gitd.evaluation.train import train

    check_positive_int("forgetting_epochs", epochs, minimum=2)
    _check_forgetting_test(learned)
    history: list[np.ndarray] = []

    def record(epoch, tr):
        history.append(tr.batch_correct.copy() if learned == "batch" else tr.learned())

    trainer = train(dataset, epochs=epochs, seed=seed, image_model=image_model,
                    text_model=text_model, freeze_image=True, image_size=image_size,
                    cache=cache, device=device, on_epoch_end=record)
    h = np.stack(history)
    events = forgetting_events(h)
    if learned == "batch":
        per_image = events.astype(np.float64)
        unit = "images"
    else:
        owner = np.asarray(trainer.pairs.text_to_image)
        per_image = np.bincount(owner, weights=events, minlength=trainer.pairs.n_images)
        unit = "captions"
    info = {"epochs": epochs, "frozen_image_features": True, "learned_test": learned,
            f"{unit}_never_learned": int((~h.any(0)).sum()),
            f"{unit}_learned_at_end": int(h[-1].sum()),
            f"{unit}_forgotten_at_least_once": int((events[h.any(0)] > 0).sum()),
            "distinct_scores": int(len(np.unique(per_image)))}
    kept = trainer.pairs.kept
    if kept is not None and len(kept) < len(dataset):
        full = np.full(len(dataset), -1.0)
        full[kept] = per_image
        per_image = full
        if problems is not None:
            problems.extend(trainer.pairs.problems)
    return per_image, info


def pds_select(dataset: Dataset, k: int, *, seed: int = 0, image_model="auto",
               text_model="auto", image_size: int = 224, cache=None, device="auto",
               features: tuple[np.ndarray, np.ndarray] | None = None
               ) -> tuple[np.ndarray, list[str], dict[str, Any]]:
    """PDS's prototypes on any features: (image indices, their captions, info).

    ``features``: (image features [n_images, d1], caption features [n_captions, d2]) in the
    dataset's caption order; default the evaluation encoders' (cached)."""
    from gitd.stages.prototypes import build_prototypes, select_nearest

    owner = np.repeat(np.arange(len(dataset)), [len(r.captions) for r in dataset])
    texts = [c for r in dataset for c in r.captions]
    if features is None:
        from gitd.evaluation.features import embed_images, embed_texts

        features = (embed_images([r.image for r in dataset], image_model, image_size=image_size,
                                 cache=cache, device=device),
                    embed_texts(texts, text_model, cache=cache, device=device))
    img, txt = _l2(features[0]), _l2(features[1])
    protos = build_prototypes(img[owner], txt, k, seed=seed)
    chosen = select_nearest(protos.image, img)
    captions = [texts[int(i)] for i in protos.caption]
    info = {"match_counts": protos.match_count.tolist(),
            "members": [int(len(m)) for m in protos.members]}
    return chosen, captions, info


def _caption_features(dataset: Dataset, text_model, cache, device) -> np.ndarray:
    from gitd.evaluation.features import embed_texts

    return embed_texts([c for r in dataset for c in r.captions], text_model, cache=cache,
                       device=device)


# -- the command ---------------------------------------------------------------------------------
def _captions_for(record, policy: str, rng: np.random.Generator) -> list[str]:
    if policy == "all":
        return list(record.captions)
    if policy == "first":
        return [record.captions[0]]
    if policy == "random":
        return [record.captions[int(rng.integers(len(record.captions)))]]
    return [record.longest_caption]


def select_coreset(data: str | Path | Dataset, method: str, pairs: int | None, out: str | Path, *,
                   images=None, split: str = "train", strict: bool = False,
                   allow_outside_root: bool = False, seed: int = 0, image_model="auto",
                   text_model="auto", image_size: int = 224, cache=None, device="auto",
                   caption: str = "longest", forgetting_epochs: int = 10,
                   forgetting_learned: str = "batch",
                   features_fn: Callable[[Dataset], np.ndarray] | None = None) -> Path:
    """Select ``pairs`` images of ``data`` with ``method`` and write them to ``out`` in gitd's
    output format (images copied byte for byte). ``caption`` picks which of an image's captions
    go with it (``longest``, as GITD's /T ablation; ``first``; ``random``; ``all``).
    ``features_fn`` replaces the evaluation encoders' features (tests, other feature spaces)."""
    if method not in METHODS:
        raise ConfigError(f"method must be one of {', '.join(METHODS)}; got {method!r}")
    check_positive_int("seed", seed, minimum=0, maximum=MAX_SEED)
    if caption not in CAPTION_POLICIES:
        raise ConfigError(f"caption must be one of {', '.join(CAPTION_POLICIES)}; "
                          f"got {caption!r}")
    _check_forgetting_test(forgetting_learned)  # before any loading or training
    t0 = time.perf_counter()
    dataset = data if isinstance(data, Dataset) else load_dataset(
        data, images, split=split, strict=strict, allow_outside_root=allow_outside_root)
    n = len(dataset)
    if n == 0:
        raise GitdError(f"{dataset.source}: no valid image-caption pairs to select from")
    folder = OutputFolder.prepare(out, command="select", inputs=Inputs().dataset(dataset))
    if method == "full":
        k = n
    else:
        if pairs is None:
            raise ConfigError(f"--pairs is required for method {method}")
        k = check_positive_int("pairs", pairs)
        if k > n:
            raise ConfigError(f"asked for {k} pairs but {dataset.source} has only {n} valid "
                              "images")
    timings: dict[str, float] = {"load": round(time.perf_counter() - t0, 3)}
    t1 = time.perf_counter()
    scores: np.ndarray | None = None
    extra: dict[str, Any] = {}
    # Images that fail to decode (only the feature methods decode) are skipped rows.
    errors: list = []
    skipped: list = []

    def usable() -> np.ndarray:
        bad = {i for i, _ in errors}
        skipped.extend(exc.to_problem(dataset[i].row)
                       for i, exc in sorted(errors, key=lambda e: e[0]))
        keep = np.asarray([i for i in range(n) if i not in bad], dtype=np.int64)
        if k > len(keep):
            raise ConfigError(f"asked for {k} pairs but only {len(keep)} images of "
                              f"{dataset.source} could be decoded")
        return keep

    if method == "full":
        chosen = np.arange(n, dtype=np.int64)
    elif method == "random":
        chosen = random_subset(n, k, seed)
    elif method in ("herding", "kcenter"):
        feats = features_fn(dataset) if features_fn else pair_features(
            dataset, image_model=image_model, text_model=text_model, image_size=image_size,
            cache=cache, device=device, errors=errors)
        keep = usable()
        chosen = keep[herding(feats[keep], k) if method == "herding"
                      else kcenter_greedy(feats[keep], k, seed)]
        extra["feature_dim"] = int(feats.shape[1])
    elif method == "pds":
        from gitd.evaluation.features import embed_images

        img = embed_images([r.image for r in dataset], image_model, image_size=image_size,
                           cache=cache, device=device, errors=errors)
        keep = usable()
        part = dataset.subset(keep)
        chosen, pds_captions, extra = pds_select(
            part, k, seed=seed, image_model=image_model, text_model=text_model,
            image_size=image_size, cache=cache, device=device,
            features=None if len(keep) == n else (img[keep], _caption_features(
                part, text_model, cache, device)))
        chosen = keep[chosen]
    else:
        scores, extra = forgetting_scores(dataset, epochs=forgetting_epochs, seed=seed,
                                          learned=forgetting_learned, image_model=image_model,
                                          text_model=text_model, image_size=image_size,
                                          cache=cache, device=device, problems=skipped)
        if k > int((scores >= 0).sum()):
            raise ConfigError(f"asked for {k} pairs but only {int((scores >= 0).sum())} images "
                              f"of {dataset.source} could be decoded")
        chosen = top_k(scores, k)
    for p in skipped:
        log.warning("%s (skipped)", p)
    timings["select"] = round(time.perf_counter() - t1, 3)
    if len(np.unique(chosen)) != len(chosen):  # a bug, not bad input: never write a pair twice
        raise RuntimeError(f"{method} selected an image more than once: {chosen.tolist()}")

    rng = np.random.default_rng(seed)
    out_pairs = []
    for rank, i in enumerate(progress(chosen, desc="copy", unit="pair")):
        rec = dataset[int(i)]
        caps = ([pds_captions[rank]] if method == "pds" and caption != "all"
                else _captions_for(rec, caption, rng))
        info: dict[str, Any] = {"source_id": rec.id, "source_image": str(rec.image),
                                "source_caption": rec.longest_caption, "selection_rank": rank}
        if scores is not None:
            info["scores"] = {"forgetting_events": float(scores[int(i)])}
        out_pairs.append(OutputPair(image=rec.image, captions=caps, info=info))
    manifest = {
        "method": method,
        "seed": seed,
        "config": {"method": method, "pairs": k, "seed": seed, "caption": caption,
                   "image_model": str(image_model), "text_model": str(text_model),
                   "image_size": image_size, "forgetting_epochs": forgetting_epochs
                   if method == "forgetting" else None,
                   "forgetting_learned": forgetting_learned if method == "forgetting" else None,
                   "features": ("custom" if features_fn else
                                "L2(image) ++ L2(mean L2(captions)) of the evaluation encoders")
                   if method in ("herding", "kcenter") else None},
        "untrained": False,
        "selection": extra,
        "source": {"path": str(Path(dataset.source).resolve()), "format": dataset.format,
                   "split": dataset.split, "image_root": str(dataset.image_root),
                   "fingerprint": dataset_fingerprint(dataset),
                   "n_records": n + len(dataset.problems), "n_valid": n - len(skipped)},
        "skipped": [p.to_dict() for p in dataset.problems + skipped],
        "timings": timings,
    }
    t2 = time.perf_counter()
    with folder.replace() as staging:
        write_output(staging, out_pairs, manifest)
    log.info("%s: wrote %d pairs to %s (output %.1fs)", method, len(out_pairs), out,
             time.perf_counter() - t2)
    return Path(out)
