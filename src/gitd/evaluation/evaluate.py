"""Honest retrieval evaluation of a training set (distilled, coreset, full, or another method's
tensor file), in one pass: load the sets, check them, train each seed, finish.

The reported figure is the LAST epoch's test metric, or the test metric of the epoch chosen on a
validation split; every figure is the mean and the sample std over seeds (see
``gitd.evaluation.results``). A seed fixes the projection head's initialisation, the data
order, the caption drawn per image, the augmentation and dropout. Several image or text encoders
(comma-separated) evaluate every pair of them and report their mean too.

Stable public API: ``evaluate(train, test, **settings) -> dict`` and ``format_table(results)``.
"""

from __future__ import annotations

import dataclasses
import sys
import time
import types
from pathlib import Path
from typing import Any

from gitd import __version__
from gitd.errors import ConfigError
from gitd.evaluation.estimate import Work, announce, time_steps
from gitd.evaluation.overlap import check_test_overlap
from gitd.evaluation.results import architecture_row, assemble, pick_epoch
# Names this module defined before they moved to the modules beside it: importable from here as
# before (format_table with evaluate is the stable API).
from gitd.evaluation.results import (BEST_ON_TEST_LABEL, STD_NOTE, format_table,  # noqa: F401
                                     summarize)
from gitd.evaluation.sets import set_fingerprint  # noqa: F401
from gitd.retrieval.metrics import METRIC_NAMES  # noqa: F401
from gitd.evaluation.seed_cache import (CACHE_VERSION, cached_run, finished_seeds,
                                        remove_partial, save_seed, seed_folder)
from gitd.evaluation.sets import EvalSet, load_set, recorded_source
from gitd.evaluation.settings import EvaluateSettings, split_models, split_overrides
from gitd.data.tensor_sets import text_width_problem
from gitd.log import get_logger, progress
from gitd.models.encoders import (ImageEncoder, TextEncoder, build_image_encoder,
                                  build_text_encoder, image_model_identity, resolve_device,
                                  text_model_identity)
from gitd.outdir import Inputs, check_output_file, claim, file_starts_with
from gitd.retrieval.pairs import prepare_pairs, tensor_pairs
from gitd.retrieval.protocols import DEFAULT_PROTOCOL, Protocol, get_protocol
from gitd.retrieval.train import Trainer, build_model
from gitd.settings import validate
from gitd.store import atomic_write_json, fingerprint, read_json
from gitd.threads import current_device_key

log = get_logger("evaluation")

CAPTION_POLICY = "one random caption per image per epoch (seeded)"


def eval_epochs(epochs: int, eval_every: int | None = None) -> list[int]:
    """Epochs (1-based, after training them) at which the test set is scored: every
    ``eval_every`` epochs plus the last; by default about five points. ``epochs=0``: [0]."""
    if epochs == 0:
        return [0]
    every = eval_every if eval_every is not None else max(1, -(-epochs // 5))
    points = set(range(every, epochs + 1, every))
    points.add(epochs)
    return sorted(points)


def is_results_file(path: Path) -> bool:
    """Whether ``path`` looks like a results file ``gitd evaluate`` wrote (so it may be
    overwritten by a new one)."""
    return file_starts_with(path, b'"gitd_version"', b'"summary"', limit=1 << 24)


@dataclasses.dataclass
class Run:
    """One evaluation's decided settings, shared by every encoder pair it trains."""

    protocol: Protocol
    settings: EvaluateSettings
    sets: dict[str, EvalSet]
    points: list[int]
    wanted: list[int]
    device: Any
    root: Path | None  # the cache folder, None when the cache is off
    out: Path | None
    train_use: dict[str, Any]  # how a tensor training set is used (results + cache key)
    cache: Any = None

    def key(self, image_id: str, text_id: str) -> str:
        return fingerprint({"protocol": self.protocol.to_dict(), "eval_epochs": self.points,
                            "pretrained": self.settings.pretrained,
                            "sets": {k: s.content for k, s in self.sets.items()},
                            "train_use": self.train_use.get("key"), "version": CACHE_VERSION,
                            # A GPU, a CPU and CPU thread counts round differently
                            # (gitd.threads).
                            "device": current_device_key(self.device),
                            "image_model": image_id, "text_model": text_id}, 24)


def evaluate(train, test, *, protocol: str | Protocol = DEFAULT_PROTOCOL, val=None, out=None,
             images=None, test_images=None, val_images=None, train_split: str | None = None,
             test_split: str | None = None, val_split: str | None = None, image_model="auto",
             text_model="auto", cache=None, **settings: Any) -> dict[str, Any]:
    """Train a retrieval model on ``train`` and score it on ``test``; returns the results dict
    (also written to ``out`` as JSON when given).

    ``train``/``test``/``val``: annotation paths (any format ``gitd.data.load_dataset`` reads;
    ``images``/``test_images``/``val_images`` override their image roots), ``Dataset``s, or for
    ``train`` a LoRS / RepBlend ``distilled_N.pt`` or MTT-VL ``images_*.pt`` + ``labels_*.pt``
    (``gitd.data.tensor_sets``). ``*_split``: the split of a file or folder that holds
    several (default ``train``, ``test`` and ``val``). A test set that shares images with the
    training pairs' source split (or with ``val``) raises ``DataError`` unless
    ``allow_test_overlap``, which flags the results instead.

    ``protocol``: a preset name (``gitd.retrieval.protocols``) or a ``Protocol``; any protocol
    field (``epochs``, ``lr``, ``batch_size``, ``freeze_image``, ...) and any
    ``EvaluateSettings`` field (``seeds``, ``report_best_on_test``, ``device``, ...) may be given
    as a keyword; ``None`` keeps the default. ``image_model``/``text_model``: names, comma-
    separated lists of names (every pair is evaluated, then their mean) or built encoders.
    ``cache=False``: finished seeds wait beside ``out`` instead of the cache folder.
    """
    started = time.time()
    run = _configure(protocol, settings, cache, image_model, text_model, out)
    run.sets = _load_sets(train, test, val, run, images=images, test_images=test_images,
                          val_images=val_images, train_split=train_split, test_split=test_split,
                          val_split=val_split)
    overlap = _check_sets(run)
    _apply_training_set(run)
    pairs_of = [(i, t) for i in _models(image_model, "image") for t in _models(text_model, "text")]
    rows = [_run_pair(run, image, text, k, len(pairs_of))
            for k, (image, text) in enumerate(pairs_of)]
    return _finish(run, rows, overlap, started)


# -- load the sets, check them ---------------------------------------------------------------

def _models(value, side: str) -> list:
    return split_models(value, side) if isinstance(value, str) else [value]


def _configure(protocol, settings: dict[str, Any], cache, image_model, text_model, out) -> Run:
    from gitd.models.features import cache_root

    proto_values, own = split_overrides(settings)
    own = {k: v for k, v in own.items() if v is not None}
    named = {"image_model": image_model if isinstance(image_model, str) else "auto",
             "text_model": text_model if isinstance(text_model, str) else "auto"}
    es = validate(EvaluateSettings(**own, **named,
                                   cache=None if cache in (None, False, True) else str(cache)))
    for value, side in ((image_model, "image"), (text_model, "text")):
        _models(value, side)  # a bad list is one line now, not after the first pair trained
    prot = get_protocol(protocol, **proto_values)
    out = Path(out) if out is not None else None
    if out is not None and out.is_dir():
        raise ConfigError(f"--out {out} is a folder; give a file name such as {out}/results.json")
    wanted = list(range(es.first_seed, es.first_seed + es.seeds))
    return Run(protocol=prot, settings=es, sets={}, points=[], wanted=wanted,
               device=resolve_device(es.device),
               root=cache_root(False if cache is False else cache), out=out, train_use={},
               cache=False if cache is False else cache)


def _load_sets(train, test, val, run: Run, **where) -> dict[str, EvalSet]:
    es = run.settings
    sets = {"train": load_set(train, "train", images=where["images"],
                              split=where["train_split"],
                              normalisation=es.train_normalisation)}
    source = recorded_source(sets["train"].data)
    sets["test"] = load_set(test, "test", images=where["test_images"],
                            split=where["test_split"], source=source)
    if val is not None:
        sets["val"] = load_set(val, "val", images=where["val_images"], split=where["val_split"],
                               source=source)
    for s in sets.values():
        log.info("%s", s.line())
    return sets


def _check_sets(run: Run) -> dict[str, Any]:
    """The results file may be written, and the test set is disjoint from what trains."""
    sets = run.sets
    if run.out is not None:
        inputs = Inputs()
        names = {"train": "training set", "test": "test set", "val": "validation set"}
        for s in sets.values():
            if s.is_tensors:
                for f in s.data.files:
                    inputs.file(f, "training set")
            else:
                inputs.dataset(s.data, names[s.role])
        check_output_file(run.out, inputs, what="results file", owned=is_results_file)
    val = sets["val"].data if "val" in sets else None
    return check_test_overlap(sets["train"].data, sets["test"].data, val,
                              allow=run.settings.allow_test_overlap)


def _apply_training_set(run: Run) -> None:
    """Decide how a tensor training set trains (its similarity matrix, its learned rates) and
    fix the scoring epochs; both go into every pair's cache key."""
    es, train = run.settings, run.sets["train"]
    if es.train_learned_lr:
        ts = train.data if train.is_tensors else None
        if ts is None or ts.lr_image is None or ts.lr_text is None:
            what = train.source if ts is not None else "the training set"
            raise ConfigError(f"--train-learned-lr: {what} holds no learned learning rates "
                              "(a LoRS / RepBlend file's syn_lr_img and syn_lr_txt)")
        run.protocol = get_protocol(run.protocol, image_lr=ts.lr_image, text_lr=ts.lr_text)
    run.points = eval_epochs(run.protocol.epochs, run.protocol.eval_every)
    if not train.is_tensors:
        return
    ts = train.data
    used = ts.similarity is not None and es.train_similarity == "use"
    similarity = ("the file's learned similarity matrix is the training target, with LoRS's "
                  "weighted BCE loss" if used else
                  "the file's similarity matrix is ignored (--train-similarity ignore)"
                  if ts.similarity is not None else "the file has no similarity matrix")
    rates = (f"learned learning rates (image {ts.lr_image:g}, text {ts.lr_text:g})"
             if es.train_learned_lr else "the protocol's learning rates")
    run.train_use = {
        "format": ts.format, "normalisation": ts.normalisation, "similarity_used": used,
        "learned_lr_used": es.train_learned_lr,
        "notes": [f"{ts.format} file, pixels {ts.normalisation}-normalised in the file",
                  f"its {ts.text.shape[1]}-d text embeddings stand in for the text encoder's "
                  "output (test captions are encoded by the text encoder)", similarity, rates],
        "key": {"similarity": used, "normalisation": ts.normalisation}}


# -- train each seed -------------------------------------------------------------------------

def _identities(run: Run, image, text) -> tuple[str, str]:
    return (image_model_identity(image, pretrained=run.settings.pretrained,
                                 output=run.protocol.image_output), text_model_identity(text))


def _run_pair(run: Run, image, text, index: int, total: int) -> dict[str, Any]:
    """Every wanted seed of one (image encoder, text encoder) pair: from the cache, or trained."""
    key = run.key(*_identities(run, image, text))
    hit = cached_run(run.root, key, run.out, run.wanted)
    if hit is not None:
        return architecture_row(hit, run.wanted, best=run.settings.report_best_on_test)
    prot = run.protocol
    img_enc = image if isinstance(image, ImageEncoder) else build_image_encoder(
        image, image_size=prot.image_size, pretrained=run.settings.pretrained,
        output=prot.image_output)
    txt_enc = text if isinstance(text, TextEncoder) else build_text_encoder(text)
    built = run.key(img_enc.name, text_model_identity(txt_enc))
    if built != key:  # the cheap guess of what 'auto' builds was wrong: trust what was built
        key = built
        hit = cached_run(run.root, key, run.out, run.wanted)
        if hit is not None:
            return architecture_row(hit, run.wanted, best=run.settings.report_best_on_test)
    train = run.sets["train"]
    if train.is_tensors:
        problem = text_width_problem(train.data, txt_enc.name, txt_enc.dim)
        if problem:
            raise ConfigError(problem)
    encoders = {"image": {**img_enc.info, "requested": image if isinstance(image, str)
                          else img_enc.name},
                "text": {**txt_enc.info, "requested": text if isinstance(text, str)
                         else txt_enc.name}}
    of = f" (pair {index + 1} of {total})" if total > 1 else ""
    log.info("evaluating with image encoder %s (%s), text encoder %s%s; protocol %s, %d "
             "epoch(s), %d seed(s), %d px, %s", img_enc.name,
             "frozen" if prot.freeze_image else "trainable", txt_enc.name, of, prot.name,
             prot.epochs, len(run.wanted), prot.image_size, run.device)
    config = {"protocol": prot.to_dict(), "seeds": len(run.wanted),
              "first_seed": run.wanted[0], "freeze_image": prot.freeze_image,
              "pretrained": run.settings.pretrained, "eval_epochs": run.points,
              "device": str(run.device),
              **{k: (run.sets[k].info["path"] if k in run.sets else None)
                 for k in ("train", "test", "val")},
              "splits": {k: (run.sets[k].info.get("split") if k in run.sets else None)
                         for k in ("train", "test", "val")},
              "image_model": img_enc.name, "text_model": txt_enc.name,
              "caption_policy": CAPTION_POLICY}
    folder = seed_folder(run.root, key, run.out)
    done = finished_seeds(folder, key)
    todo = [s for s in run.wanted if s not in done]
    if len(todo) < len(run.wanted):
        log.info("seeds %s: already done (%s), reusing them",
                 ", ".join(str(s) for s in run.wanted if s in done), folder)
    if todo:
        pairs = _prepare(run, img_enc, txt_enc)
        config["undecodable"] = {
            name: {"images": p.n_images, "captions": p.n_texts,
                   "skipped": [x.to_dict() for x in p.problems]}
            for name, p in pairs.items() if p is not None and p.problems}
        _train_seeds(run, todo, img_enc, txt_enc, pairs, done, key, folder, encoders, config,
                     first=index == 0, total=total)
    run_data = {"key": key, "seeds": done, "encoders": encoders, "config": config}
    return architecture_row(run_data, run.wanted, best=run.settings.report_best_on_test)


def _prepare(run: Run, img_enc, txt_enc) -> dict[str, Any]:
    common = dict(device=run.device, cache=run.cache if run.root is not None else False,
                  workers=run.settings.workers)
    out = {}
    for role, s in run.sets.items():
        if s.is_tensors:
            ts = s.data
            out[role] = tensor_pairs(ts.pixels, ts.text, img_enc, run.protocol,
                                     similarity=ts.similarity if run.train_use.get(
                                         "similarity_used") else None,
                                     device=run.device, name=f"{role} images")
        else:
            out[role] = prepare_pairs(s.data, img_enc, txt_enc, run.protocol,
                                      name=f"{role} images", **common)
    out.setdefault("val", None)
    return out


def _train_seeds(run: Run, todo: list[int], img_enc, txt_enc, pairs, done, key, folder,
                 encoders, config, *, first: bool, total: int) -> None:
    """Train the seeds still missing, under one progress bar over all of them; before the
    first, estimate the whole run (every seed, every encoder pair)."""
    prot = run.protocol
    bar = None
    try:
        for seed in todo:
            model = build_model(img_enc, txt_enc.dim, prot, seed=seed)
            trainer = Trainer(model, pairs["train"], prot, seed=seed, device=run.device,
                              workers=run.settings.workers)
            if seed == todo[0] and prot.epochs:
                work = _work(run, trainer, pairs, len(todo))
                if first:
                    _announce(run, model, trainer, pairs, work, len(todo), total)
                bar = progress(total=work.trained, desc="training", unit="img")
            result = _train_seed(seed, trainer, pairs, run, bar)
            done[seed] = {"result": result}
            save_seed(folder, key, result, encoders=encoders, config=config,
                      in_cache=run.root is not None)
    finally:
        if bar is not None:
            bar.close()


def _work(run: Run, trainer, pairs, n_seeds: int) -> Work:
    scored = pairs["test"].n_images + (pairs["val"].n_images if pairs["val"] is not None else 0)
    return Work(trained=n_seeds * run.protocol.epochs * trainer.images_per_epoch(),
                scored=n_seeds * len(run.points) * scored)


def _announce(run: Run, model, trainer, pairs, work: Work, n_seeds: int, total: int) -> None:
    prot = run.protocol
    per_train, per_score = time_steps(model, pairs["train"], prot, trainer.loss, run.device)
    whole = Work(trained=work.trained * total, scored=work.scored * total)
    what = (f"{n_seeds} seed(s) x {prot.epochs} epochs x {trainer.images_per_epoch()} images"
            + (f" x {total} encoder pairs (timed on the first)" if total > 1 else ""))
    announce(whole, per_train, per_score, device=run.device, what=what)


def _train_seed(seed: int, trainer, pairs, run: Run, bar) -> dict[str, Any]:
    seed_start = time.time()
    history: list[dict] = []

    def record(epoch: int, tr) -> None:
        if epoch not in run.points:
            return
        entry: dict[str, Any] = {"epoch": epoch,
                                 "train_loss": tr.losses[-1] if tr.losses else None,
                                 "test": tr.evaluate(pairs["test"],
                                                     desc=f"seed {seed}: scoring test")}
        if pairs["val"] is not None:
            entry["val"] = tr.evaluate(pairs["val"], desc=f"seed {seed}: scoring val")
        history.append(entry)
        log.debug("seed %d epoch %d: test r_mean %.2f", seed, epoch, entry["test"]["r_mean"])

    if run.protocol.epochs == 0:
        record(0, trainer)
    else:
        trainer.fit(on_epoch_end=record, bar=bar)
    chosen = pick_epoch(history, pairs["val"] is not None)
    log.info("seed %d: reported epoch %d, test r_mean %.2f", seed, chosen["epoch"],
             chosen["test"]["r_mean"])
    return {"seed": seed, "epochs": history, "reported_epoch": chosen["epoch"],
            "reported": chosen["test"], "train_loss": trainer.losses,
            "loss": trainer.loss_name, "wall_time_s": round(time.time() - seed_start, 2)}


# -- finish ----------------------------------------------------------------------------------

def _finish(run: Run, rows: list[dict[str, Any]], overlap: dict[str, Any],
            started: float) -> dict[str, Any]:
    sets = {k: (run.sets[k].info if k in run.sets else None) for k in ("train", "test", "val")}
    undecodable = (rows[0]["config"].get("undecodable") or {}) if rows else {}
    sets = {k: ({**v, **undecodable.get(k, {})} if v else v) for k, v in sets.items()}
    use_val = sets["val"] is not None
    selection = ("epoch chosen on the validation split (highest val r_mean); the test metric "
                 "of that epoch is reported" if use_val else "last epoch")
    header: dict[str, Any] = {
        "gitd_version": __version__,
        "train": sets["train"]["path"], "test": sets["test"]["path"],
        "val": sets["val"]["path"] if use_val else None,
        "splits": {k: (v or {}).get("split") for k, v in sets.items()},
        "sets": sets, "test_overlap": overlap,
        "train_fingerprint": sets["train"].get("fingerprint"),
        "n_train": sets["train"]["images"],
        "protocol": run.protocol.name, "epochs": run.protocol.epochs,
        "selection": selection, "std": STD_NOTE}
    if run.train_use:  # another method's tensor file: its format names the method
        header["train_tensors"] = {k: v for k, v in run.train_use.items() if k != "key"}
        header.update({"method": run.train_use["format"], "pairs": sets["train"]["images"]})
    results = assemble(rows, run.wanted, header=header,
                       best=run.settings.report_best_on_test)
    cached = all(r["from_cache"] for r in rows)
    if cached:
        log.info("evaluate: nothing to do, these sets and settings were evaluated before "
                 "(key %s); change a setting or a file to recompute", results["cache_key"])
    if run.out is not None and read_json(run.out) != results:
        atomic_write_json(run.out, results)
        claim(run.out)
    if run.root is None:
        remove_partial(run.out)
    results["from_cache"] = cached
    results["elapsed_s"] = round(time.time() - started, 2)
    return results


class _CallableModule(types.ModuleType):
    """This module is also the package attribute ``gitd.evaluation.evaluate``: calling it calls
    ``evaluate``, so ``from gitd.evaluation import evaluate`` and ``import
    gitd.evaluation.evaluate`` give one object that works both ways, in any import order."""

    def __call__(self, *args, **kwargs):
        return evaluate(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule

