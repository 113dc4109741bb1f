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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar

import numpy as np

from gitd.data import Dataset
from gitd.data.formats import dataset_fingerprint, load_dataset
from gitd.data.output import OutputPair, source_block, write_output
from gitd.errors import ConfigError, GitdError
from gitd.log import get_logger, progress
from gitd.outdir import Inputs, OutputFolder
from gitd.plan import Entry, Plan, PlanRunner
from gitd.registry import Method, MethodSettings, get_method, list_methods, register_method
from gitd.settings import (Interval, Options, PathText, Text, check, field_names, inherit,
                           setting)
from gitd.stages.pair_features import l2_rows, pair_features

log = get_logger("methods.coreset")

FORGETTING_TESTS = ("batch", "train-set")
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
def forgetting_scores(dataset: Dataset, *, epochs: int = 10, seed: int = 0,
                      learned: str = "batch", image_model="auto", text_model="auto",
                      image_size: int = 224, cache=None, device="auto",
                      problems: list | None = None) -> tuple[np.ndarray, dict[str, Any]]:
    """Per-image forgetting score from a short frozen-image-feature training on the full set;
    ``learned`` picks what counts as right (module docstring). An image that does not decode
    is left out of the training, scores -1 and is appended to ``problems``."""
    from gitd.retrieval.train import train

    check("forgetting_epochs", epochs, Interval(int, 2, None))
    check("forgetting_learned", learned, Options(*FORGETTING_TESTS))
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
        from gitd.models.features import embed_images, embed_texts

        features = (embed_images([r.image for r in dataset], image_model, image_size=image_size,
                                 cache=cache, device=device),
                    embed_texts(texts, text_model, cache=cache, device=device))
    img, txt = l2_rows(features[0]), l2_rows(features[1])
    protos = build_prototypes(img[owner], txt, k, seed=seed)
    chosen = select_nearest(protos.image, img)
    captions = [texts[int(i)] for i in protos.caption]
    info = {"match_counts": protos.match_count.tolist(),
            "members": [int(len(m)) for m in protos.members]}
    return chosen, captions, info


def _caption_features(dataset: Dataset, text_model, cache, device) -> np.ndarray:
    from gitd.models.features import embed_texts

    return embed_texts([c for r in dataset for c in r.captions], text_model, cache=cache,
                       device=device)


def _captions_for(record, policy: str, rng: np.random.Generator) -> list[str]:
    if policy == "all":
        return list(record.captions)
    if policy == "first":
        return [record.captions[0]]
    if policy == "random":
        return [record.captions[int(rng.integers(len(record.captions)))]]
    return [record.longest_caption]


# -- the registered selections -------------------------------------------------------------------
@dataclass(frozen=True)
class SelectSettings(MethodSettings):
    """What every selection has: which captions go with a selected image."""

    caption: str = setting("longest", Options(*CAPTION_POLICIES),
                           "which captions go with a selected image: the longest (as GITD's /T "
                           "ablation), the first, a random one, or all")


@dataclass(frozen=True)
class FeatureSettings(SelectSettings):
    """Selections in the feature space of the evaluation encoders (cached)."""

    image_model: str = setting("auto", Text(), "evaluation image encoder for features")
    text_model: str = setting("auto", Text(), "evaluation text encoder for features")
    image_size: int = setting(224, Interval(int, 16, 4096), "image size for features, in pixels")
    cache: str | None = setting(None, PathText(), "feature cache (default: $GITD_CACHE or "
                                "~/.cache/gitd); features are keyed by what made them",
                                optional=True, affects_results=False, metavar="DIR")


@dataclass(frozen=True)
class ForgettingSettings(FeatureSettings):
    forgetting_epochs: int = setting(10, Interval(int, 2, 100_000),
                                     "epochs of the forgetting run (frozen image features)")
    forgetting_learned: str = setting(
        "batch", Options(*FORGETTING_TESTS),
        "what counts as right: 'batch' (Toneva et al.): the pair retrieves itself within its "
        "mini-batch when presented; 'train-set': top-1 among the whole training set after each "
        "epoch, in both directions (strict)")


@dataclass(frozen=True)
class PairFeatureSettings:
    """The selections' ``features`` stage: ``pair_features`` of every pair (not cached in the
    work folder: the feature cache keeps them, keyed by what made them)."""

    version: ClassVar[int] = 1  # bump when a change alters the features

    image_model: str
    text_model: str
    image_size: int
    device: str
    cache: str | None = setting(None, PathText(), "the feature cache", optional=True,
                                affects_results=False)


@dataclass
class Selection:
    """What a selection picked: dataset indices in selection order, optionally the captions
    that go with them and a score per dataset row, what the manifest should say, and the rows
    skipped because their images did not decode."""

    chosen: np.ndarray
    captions: list[str] | None = None
    scores: np.ndarray | None = None
    info: dict[str, Any] = field(default_factory=dict)
    skipped: list = field(default_factory=list)


def usable(dataset: Dataset, k: int, errors: list) -> tuple[np.ndarray, list]:
    """Indices of the rows whose images decoded (``errors``: (row, ImageError) of the others),
    and the others' problems; a one-line error when fewer than ``k`` are left."""
    bad = {i for i, _ in errors}
    skipped = [exc.to_problem(dataset[i].row) for i, exc in sorted(errors, key=lambda e: e[0])]
    keep = np.asarray([i for i in range(len(dataset)) if i not in bad], dtype=np.int64)
    if k > len(keep):
        raise ConfigError(f"asked for {k} pairs but only {len(keep)} images of "
                          f"{dataset.source} could be decoded")
    return keep, skipped


class SelectMethod(Method):
    """Base of ``gitd select`` methods. A selection's plan is its ``select`` stage, after the
    stages it reads (``inputs``: the feature selections' ``features``); subclasses implement
    ``pick(call, inputs, k)``. Selections are not cached in a work folder (the features have
    their own cache); their stages' keys fingerprint what made the output."""

    kind = "select"
    Settings = SelectSettings
    needs_pairs = True
    version: ClassVar[int] = 1  # of the select stage: bump when a change alters what it picks

    @classmethod
    def check(cls, settings: SelectSettings) -> None:
        if cls.needs_pairs and settings.pairs is None:
            raise ConfigError(f"--pairs is required for method {cls.name}")

    @classmethod
    def inputs(cls, p: Plan, s: SelectSettings) -> tuple[Entry, ...]:
        """The stages the selection reads (none here)."""
        return ()

    @classmethod
    def plan(cls, s: SelectSettings, runtime: Any = None) -> Plan:
        p = Plan()
        inputs = cls.inputs(p, s)

        def run(call) -> Selection:
            k = s.pairs if cls.needs_pairs else len(call.dataset)
            return call.value(lambda: cls.pick(call, inputs, k))

        step = p.add("select", s, run, upstream=inputs, cached=False, version=cls.version)
        p.output("selection", lambda r: r[step], reads=(step,))
        return p

    @classmethod
    def pick(cls, call, inputs: tuple[Entry, ...], k: int) -> Selection:  # pragma: no cover
        raise NotImplementedError

    def run(self, data: str | Path | Dataset, out: str | Path, *, images=None,
            split: str = "train", strict: bool = False, allow_outside_root: bool = False,
            features_fn: Callable[[Dataset], np.ndarray] | None = None) -> Path:
        """Select ``settings.pairs`` images of ``data`` and write them to ``out`` in gitd's
        output format (images copied byte for byte). ``features_fn`` replaces the evaluation
        encoders' features (tests, other feature spaces). Images that fail to decode (only
        the feature selections decode) are skipped rows. A run that fails before writing its
        result leaves no folder of its own behind."""
        try:
            return self._run(data, out, images=images, split=split, strict=strict,
                             allow_outside_root=allow_outside_root, features_fn=features_fn)
        except BaseException:
            OutputFolder.discard_unused(out)
            raise

    def _run(self, data, out, *, images, split, strict, allow_outside_root, features_fn) -> Path:
        from gitd.models.roles import Models

        s = type(self).validate(self.settings)
        t0 = time.perf_counter()
        dataset = data if isinstance(data, Dataset) else load_dataset(
            data, images, split=split, strict=strict, allow_outside_root=allow_outside_root)
        n = len(dataset)
        if n == 0:
            raise GitdError(f"{dataset.source}: no valid image-caption pairs to select from")
        # The one check of the number of pairs against the data.
        k = s.pairs if self.needs_pairs else n
        if k > n:
            raise ConfigError(f"asked for {k} pairs but {dataset.source} has only {n} valid "
                              "images")
        plan = self.plan(s)
        folder = OutputFolder.prepare(out, command="select", inputs=Inputs().dataset(dataset))
        runner = PlanRunner(None, plan, dataset_fingerprint(dataset),
                            Models({}, s, s.device, None), dataset=dataset,
                            options={"features_fn": features_fn})
        runner.timings["load"] = round(time.perf_counter() - t0, 3)
        sel = runner.run().output("selection")
        for p in sel.skipped:
            log.warning("%s (skipped)", p)
        if len(np.unique(sel.chosen)) != len(sel.chosen):  # a bug, not bad input
            raise RuntimeError(f"{self.name} selected an image more than once: "
                               f"{sel.chosen.tolist()}")

        rng = np.random.default_rng(s.seed)
        out_pairs = []
        for rank, i in enumerate(progress(sel.chosen, desc="copy", unit="pair")):
            rec = dataset[int(i)]
            caps = ([sel.captions[rank]] if sel.captions is not None and s.caption != "all"
                    else _captions_for(rec, s.caption, rng))
            info: dict[str, Any] = {"source_id": rec.id, "source_image": str(rec.image),
                                    "source_caption": rec.longest_caption,
                                    "selection_rank": rank}
            if sel.scores is not None:
                info["scores"] = {"forgetting_events": float(sel.scores[int(i)])}
            out_pairs.append(OutputPair(image=rec.image, captions=caps, info=info))
        config = {**s.to_dict(), "pairs": k}
        manifest = {
            "method": self.name, "kind": self.kind, "seed": s.seed,
            "config": config, "untrained": False, "selection": sel.info,
            "source": source_block(dataset, n_valid=n - len(sel.skipped)),
            "stages": runner.stage_keys, "plan": runner.describe(),
            "skipped": [p.to_dict() for p in dataset.problems + sel.skipped],
            "timings": runner.timings,
        }
        t2 = time.perf_counter()
        with folder.replace() as staging:
            write_output(staging, out_pairs, manifest)
        log.info("%s: wrote %d pairs to %s (output %.1fs)", self.name, len(out_pairs), out,
                 time.perf_counter() - t2)
        return Path(out)


def features_stage(call) -> tuple[np.ndarray, list]:
    """The selections' ``features`` stage: (features of every pair, (row, ImageError) of the
    images that did not decode); a run's ``features_fn`` option replaces the encoders."""
    st: PairFeatureSettings = call.settings

    def compute():
        custom = call.option("features_fn")
        if custom is not None:
            return custom(call.dataset), []
        errors: list = []
        feats = pair_features(call.dataset, image_model=st.image_model,
                              text_model=st.text_model, image_size=st.image_size,
                              cache=st.cache, device=st.device, errors=errors)
        return feats, errors

    return call.value(compute)


class FeatureSelection(SelectMethod):
    """A selection in the feature space of the evaluation encoders (``features`` stage)."""

    Settings = FeatureSettings

    @classmethod
    def inputs(cls, p: Plan, s: FeatureSettings) -> tuple[Entry, ...]:
        return (p.add("features", PairFeatureSettings(s.image_model, s.text_model,
                                                      s.image_size, s.device, s.cache),
                      features_stage, cached=False),)

    @classmethod
    def pick(cls, call, inputs: tuple[Entry, ...], k: int) -> Selection:
        feats, errors = call[inputs[0]]
        keep, skipped = usable(call.dataset, k, errors)
        return Selection(keep[cls.choose(feats[keep], k, call.settings)],
                         info=_feature_info(feats, call.option("features_fn")), skipped=skipped)

    @classmethod
    def choose(cls, feats: np.ndarray, k: int, s: FeatureSettings) -> np.ndarray:
        raise NotImplementedError  # pragma: no cover


@register_method("random", kind="select")
class RandomSelection(SelectMethod):
    """random: K images uniformly at random (seeded)."""

    @classmethod
    def pick(cls, call, inputs, k: int) -> Selection:
        return Selection(random_subset(len(call.dataset), k, call.settings.seed))


@register_method("herding", kind="select")
class HerdingSelection(FeatureSelection):
    """herding: greedy moment matching of the image ++ text features (Welling 2009)."""

    @classmethod
    def choose(cls, feats: np.ndarray, k: int, s: FeatureSettings) -> np.ndarray:
        return herding(feats, k)


@register_method("kcenter", kind="select")
class KCenterSelection(FeatureSelection):
    """kcenter: greedy farthest-point k-center of the features (Sener & Savarese 2018)."""

    @classmethod
    def choose(cls, feats: np.ndarray, k: int, s: FeatureSettings) -> np.ndarray:
        return kcenter_greedy(feats, k, s.seed)


@register_method("forgetting", kind="select")
class ForgettingSelection(SelectMethod):
    """forgetting: the K most forgotten images in a short training (Toneva et al. 2019)."""

    Settings = ForgettingSettings

    @classmethod
    def pick(cls, call, inputs, k: int) -> Selection:
        s, dataset, skipped = call.settings, call.dataset, []
        scores, info = forgetting_scores(dataset, epochs=s.forgetting_epochs, seed=s.seed,
                                         learned=s.forgetting_learned,
                                         image_model=s.image_model, text_model=s.text_model,
                                         image_size=s.image_size, cache=s.cache,
                                         device=s.device, problems=skipped)
        n_usable = int((scores >= 0).sum())
        if k > n_usable:
            raise ConfigError(f"asked for {k} pairs but only {n_usable} images of "
                              f"{dataset.source} could be decoded")
        return Selection(top_k(scores, k), scores=scores, info=info, skipped=skipped)


@register_method("pds", kind="select")
class PdsSelection(SelectMethod):
    """pds: PDS's matched image/text prototypes without its generator."""

    Settings = FeatureSettings

    @classmethod
    def pick(cls, call, inputs, k: int) -> Selection:
        from gitd.models.features import embed_images

        s, dataset, errors = call.settings, call.dataset, []
        img = embed_images([r.image for r in dataset], s.image_model, image_size=s.image_size,
                           cache=s.cache, device=s.device, errors=errors)
        keep, skipped = usable(dataset, k, errors)
        part = dataset.subset(keep)
        features = None if len(keep) == len(dataset) else (
            img[keep], _caption_features(part, s.text_model, s.cache, s.device))
        chosen, captions, info = pds_select(part, k, seed=s.seed, image_model=s.image_model,
                                            text_model=s.text_model, image_size=s.image_size,
                                            cache=s.cache, device=s.device, features=features)
        return Selection(keep[chosen], captions=captions, info=info, skipped=skipped)


@dataclass(frozen=True)
class FullSettings(SelectSettings):
    """The whole set, by default with every caption: the full-data row the papers compare
    against trains on all of them (5 per image in Flickr30K and COCO)."""

    caption: str = inherit(SelectSettings, "caption", "all")


@register_method("full", kind="select")
class FullSelection(SelectMethod):
    """full: every image with every caption (the upper bound); --pairs is not needed."""

    Settings = FullSettings
    needs_pairs = False

    @classmethod
    def pick(cls, call, inputs, k: int) -> Selection:
        return Selection(np.arange(len(call.dataset), dtype=np.int64))


def _feature_info(feats: np.ndarray, features_fn) -> dict[str, Any]:
    return {"feature_dim": int(feats.shape[1]),
            "features": "custom" if features_fn else
            "L2(image) ++ L2(mean L2(captions)) of the evaluation encoders"}


def select_fields() -> dict[str, list[str]]:
    """Every settings field of every selection -> the selections that have it."""
    out: dict[str, list[str]] = {}
    for name in list_methods("select"):
        for f in field_names(get_method(name, "select").Settings):
            out.setdefault(f, []).append(name)
    return out


def select_coreset(data: str | Path | Dataset, method: str, pairs: int | None, out: str | Path, *,
                   images=None, split: str = "train", strict: bool = False,
                   allow_outside_root: bool = False,
                   features_fn: Callable[[Dataset], np.ndarray] | None = None,
                   **settings: Any) -> Path:
    """Run the selection ``method`` (``gitd select``): ``settings`` are its fields (``seed``,
    ``caption``, ``image_model``, ...). A setting that only other selections have is ignored,
    so one call shape serves them all; a name no selection has is an error."""
    cls = get_method(method, "select")
    known = select_fields()
    unknown = sorted(set(settings) - set(known))
    if unknown:
        raise ConfigError(f"unknown setting(s) {', '.join(unknown)}; known settings: "
                          f"{', '.join(known)}")
    own = {k: v for k, v in settings.items() if k in field_names(cls.Settings)}
    if set(settings) - set(own):
        log.debug("%s ignores %s", method, ", ".join(sorted(set(settings) - set(own))))
    return cls(cls.configure(pairs=pairs, **own)).run(
        data, out, images=images, split=split, strict=strict,
        allow_outside_root=allow_outside_root, features_fn=features_fn)
