"""Honest retrieval evaluation of a training set (distilled, coreset or full).

The reported figure is the LAST epoch's test metric, or, with a validation split, the test
metric of the epoch whose VALIDATION r_mean is highest (ties: the earliest such epoch). Every
figure is the mean and the sample standard deviation (ddof=1; 0 for one seed) over seeds; a seed
fixes the projection head's initialisation, the data order, the caption drawn per image and
dropout. A best-epoch-on-test figure is computed only on request and always labelled as such.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import numpy as np

from gitd import __version__
from gitd.data.images import image_ref, image_sha256, image_size_mtime
from gitd.errors import ConfigError, DataError, check_positive_int
from gitd.models.encoders import (ImageEncoder, TextEncoder, build_image_encoder,
                                      build_text_encoder, resolve_device)
from gitd.retrieval.metrics import METRIC_NAMES
from gitd.retrieval.protocols import DEFAULT_PROTOCOL, Protocol, get_protocol
from gitd.retrieval.train import Trainer, build_model, prepare_pairs
from gitd.log import get_logger
from gitd.outdir import Inputs, check_output_file, claim, file_starts_with, release
from gitd.store import atomic_write_json, file_fingerprint, fingerprint, read_json
from gitd.threads import current_device_key

log = get_logger("evaluation")

BEST_ON_TEST_LABEL = "best epoch ON TEST (optimistic, for comparison with papers only)"
STD_NOTE = "sample standard deviation over seeds (ddof=1); 0 with one seed"
HASH_LIMIT = 1 << 30  # sets up to this many image bytes are fingerprinted by content
CACHE_VERSION = 2  # bump when what a cached seed holds, or how it is computed, changes


def eval_epochs(epochs: int, eval_every: int | None = None) -> list[int]:
    """Epochs (1-based, after training them) at which the test set is scored: every
    ``eval_every`` epochs plus the last; by default about five points. ``epochs=0``: [0]."""
    if epochs == 0:
        return [0]
    every = eval_every if eval_every is not None else max(1, math.ceil(epochs / 5))
    points = set(range(every, epochs + 1, every))
    points.add(epochs)
    return sorted(points)


def summarize(per_seed: list[dict[str, float]]) -> dict[str, dict[str, float]]:
    """{metric: {"mean", "std"}} with the sample std (ddof=1), 0 for a single seed."""
    out = {}
    for k in METRIC_NAMES:
        vals = np.array([m[k] for m in per_seed], dtype=np.float64)
        std = float(vals.std(ddof=1)) if len(vals) > 1 else 0.0
        out[k] = {"mean": float(vals.mean()), "std": std}
    return out


def _load(path_or_ds, images, split: str | None, default_split: str, what: str):
    from gitd.data import load_dataset
    if isinstance(path_or_ds, (str, Path)):
        return load_dataset(path_or_ds, images, split=split, default_split=default_split)
    if path_or_ds is None:
        raise ConfigError(f"no {what} set given")
    return path_or_ds


def set_fingerprint(ds, *, hash_limit: int = HASH_LIMIT) -> dict[str, Any]:
    """What a set's evaluation depends on: its rows (image ids, captions, in order) and its
    images' bytes (sha256) when they total at most ``hash_limit`` bytes, else their sizes and
    modification times. A distilled set is rewritten with new times but the same bytes on every
    re-run; a full training set is too big to hash each time."""
    rows = fingerprint([[r.id, list(r.captions)] for r in ds], 32)
    stats = [image_size_mtime(r.image) for r in ds]
    if sum(size or 0 for size, _ in stats) <= hash_limit:
        images = fingerprint([image_sha256(r.image) for r in ds], 32)
        mode = "sha256"
    else:
        images = fingerprint(stats, 32)
        mode = "size+mtime"
    return {"rows": rows, "images": images, "image_identity": mode}


def _describe_set(ds) -> dict[str, Any]:
    src = getattr(ds, "source", None)
    info: dict[str, Any] = {"path": str(src) if src else None,
                            "format": getattr(ds, "format", None),
                            "split": getattr(ds, "split", None),
                            "images": len(ds), "captions": sum(len(r.captions) for r in ds)}
    if src and Path(src).is_file():
        info["fingerprint"] = file_fingerprint(src)
    return info


def _pick_epoch(history: list[dict], use_val: bool) -> dict:
    if not use_val:
        return history[-1]
    best = max(h["val"]["r_mean"] for h in history)
    return next(h for h in history if h["val"]["r_mean"] == best)


def _set_line(name: str, info: dict[str, Any]) -> str:
    split = f", split {info['split']}" if info.get("split") else ""
    return (f"{name}: {info.get('path')}{split} ({info.get('images')} images, "
            f"{info.get('captions')} captions)")


def check_test_overlap(train_ds, test_ds, val_ds=None, *, allow: bool = False
                       ) -> dict[str, Any]:
    """Refuse (``DataError``) a test set sharing images with what the training pairs were made
    from, or with the validation set that picks the epoch; with ``allow``, return the findings
    for the results file instead. See ``gitd.evaluation.overlap``."""
    from gitd.evaluation.overlap import shared_images, training_origin

    test_images = [image_ref(r.image) for r in test_ds]
    origin = training_origin(train_ds)
    found = {"source": shared_images(test_images, origin.images)}
    against = {"source": origin.what}
    if val_ds is not None:
        found["val"] = shared_images(test_images, [image_ref(r.image) for r in val_ds])
        against["val"] = f"the validation set {val_ds.source} (it picks the reported epoch)"
    report: dict[str, Any] = {"checked_against": list(against.values()), "images": 0}
    for key, hits in found.items():
        if not len(hits):
            continue
        first = hits.pairs[0]
        twin = "" if first[0] == first[1] else f" (same bytes as {first[1]})"
        message = (f"the test set {test_ds.source} shares {len(hits)} of its {len(test_images)} "
                   f"images with {against[key]}, e.g. {first[0]}{twin}")
        if not allow:
            raise DataError(f"{message}; scores on images the pairs were made from overstate "
                            "retrieval: pick a disjoint test split (--test-split), or pass "
                            "--allow-test-overlap to evaluate anyway with the results flagged")
        report["images"] = max(report["images"], len(hits))
        report.setdefault("warnings", []).append(message)
        report.setdefault("examples", []).extend(str(p) for p, _ in hits.pairs[:5])
    if report["images"]:
        report["allowed"] = True
        for message in report["warnings"]:
            log.warning("TEST OVERLAP (allowed by --allow-test-overlap): %s; these results "
                        "overstate retrieval", message)
    return report


def evaluate(train, test, *, protocol: str | Protocol = DEFAULT_PROTOCOL, epochs: int | None = None,
             seeds: int = 3, image_model="auto", text_model="auto", freeze_image: bool = False,
             pretrained: bool = True, val=None, eval_every: int | None = None,
             report_best_on_test: bool = False, device="auto", cache=None, out=None,
             image_size: int | None = None, batch_size: int | None = None,
             lr: float | None = None, images=None, test_images=None, val_images=None,
             train_split: str | None = None, test_split: str | None = None,
             val_split: str | None = None, allow_test_overlap: bool = False,
             workers: int | None = None, first_seed: int = 0) -> dict[str, Any]:
    """Train a retrieval model on ``train`` and score it on ``test``; returns the results dict
    (also written to ``out`` as JSON when given).

    ``train``/``test``/``val``: annotation paths (any format ``gitd.data.load_dataset`` reads;
    ``images``/``test_images``/``val_images`` override their image roots) or ``Dataset``s.
    ``train_split``/``test_split``/``val_split``: the split of a file or folder that holds
    several (default ``train``, ``test`` and ``val``); the split read is recorded per set. A test
    set that shares images with the training pairs' source split (or with ``val``) raises
    ``DataError`` unless ``allow_test_overlap``, which flags the results instead.
    ``protocol``: ``gitd`` or ``lors`` (``gitd.retrieval.protocols``), with ``epochs``,
    ``image_size``, ``batch_size`` and ``lr`` overriding it; ``epochs=0`` scores the untrained
    model. ``seeds``: number of seeds (``first_seed`` .. ``first_seed + seeds - 1``).
    ``image_model``/``text_model``: names (``gitd.models.encoders``) or built encoders.

    Each finished seed is cached (``CACHE/evaluations/<key>/``, ``cache=False``: beside ``out``
    as ``OUT.partial/``) under a fingerprint of the three sets' rows and image bytes and of every
    setting that changes the numbers, so an interrupted run resumes after its finished seeds and
    an identical run returns at once.
    """
    from gitd.models.encoders import image_model_identity, text_model_identity
    from gitd.stages.features import cache_root

    started = time.time()
    seeds = check_positive_int("seeds", seeds)
    first_seed = check_positive_int("first seed", first_seed, minimum=0)
    if eval_every is not None:
        eval_every = check_positive_int("eval every", eval_every)
    prot = get_protocol(protocol, epochs=epochs, image_size=image_size, batch_size=batch_size,
                        lr=lr)
    dev = resolve_device(device)
    out = Path(out) if out is not None else None
    if out is not None and out.is_dir():
        raise ConfigError(f"--out {out} is a folder; give a file name such as {out}/results.json")

    train_ds = _load(train, images, train_split, "train", "train")
    test_ds = _load(test, test_images, test_split, "test", "test")
    val_ds = (_load(val, val_images, val_split, "val", "validation")
              if val is not None else None)
    if out is not None:
        inputs = Inputs().dataset(train_ds, "training set").dataset(test_ds, "test set")
        if val_ds is not None:
            inputs.dataset(val_ds, "validation set")
        check_output_file(out, inputs, what="results file", owned=is_results_file)
    sets = {"train": _describe_set(train_ds), "test": _describe_set(test_ds),
            "val": _describe_set(val_ds) if val_ds is not None else None}
    for name, info in sets.items():
        if info is not None:
            log.info("%s", _set_line(name, info))
    overlap = check_test_overlap(train_ds, test_ds, val_ds, allow=allow_test_overlap)

    points = eval_epochs(prot.epochs, eval_every)
    content = {k: set_fingerprint(ds) for k, ds in
               (("train", train_ds), ("test", test_ds), ("val", val_ds)) if ds is not None}
    settings = {"protocol": prot.to_dict(), "eval_epochs": points, "freeze_image": freeze_image,
                "pretrained": pretrained, "sets": content, "version": CACHE_VERSION,
                # A GPU, a CPU and CPU thread counts round differently (gitd.threads).
                "device": current_device_key(dev)}

    def key_for(image_id: str, text_id: str) -> str:
        return fingerprint({**settings, "image_model": image_id, "text_model": text_id}, 24)

    root = cache_root(cache)
    wanted = list(range(first_seed, first_seed + seeds))
    key = key_for(image_model_identity(image_model, pretrained=pretrained),
                  text_model_identity(text_model))
    hit = _cached_run(root, key, out, wanted)
    if hit is not None:
        return _finish(hit, wanted, sets, overlap, out, report_best_on_test, started,
                       cached=True)

    img_enc = image_model if isinstance(image_model, ImageEncoder) else build_image_encoder(
        image_model, image_size=prot.image_size, pretrained=pretrained)
    txt_enc = text_model if isinstance(text_model, TextEncoder) else build_text_encoder(text_model)
    built = key_for(img_enc.name, text_model_identity(txt_enc))
    if built != key:  # the cheap guess of what 'auto' builds was wrong: trust what was built
        key = built
        hit = _cached_run(root, key, out, wanted)
        if hit is not None:
            return _finish(hit, wanted, sets, overlap, out, report_best_on_test, started,
                           cached=True)
    encoders = {"image": {**img_enc.info, "requested": image_model if isinstance(image_model, str)
                          else img_enc.name},
                "text": {**txt_enc.info, "requested": text_model if isinstance(text_model, str)
                         else txt_enc.name}}
    log.info("evaluating with image encoder %s (%s), text encoder %s; protocol %s, %d epoch(s), "
             "%d seed(s), %d px, %s", img_enc.name, "frozen" if freeze_image else "trainable",
             txt_enc.name, prot.name, prot.epochs, seeds, prot.image_size, dev)
    config = {"protocol": prot.to_dict(), "seeds": seeds, "first_seed": first_seed,
              "freeze_image": freeze_image, "pretrained": pretrained, "eval_epochs": points,
              "device": str(dev), "train": sets["train"]["path"], "test": sets["test"]["path"],
              "val": sets["val"]["path"] if val_ds is not None else None,
              "splits": {k: (v or {}).get("split") for k, v in sets.items()},
              "image_model": img_enc.name, "text_model": txt_enc.name,
              "caption_policy": "one random caption per image per epoch (seeded)"}

    if root is not None:
        seed_dir = root / "evaluations" / key
    else:
        seed_dir = out.with_name(out.name + ".partial") if out is not None else None
    done = _finished_seeds(seed_dir, key)
    todo = [s for s in wanted if s not in done]
    if len(todo) < len(wanted):
        log.info("seeds %s: already done (%s), reusing them",
                 ", ".join(str(s) for s in wanted if s in done), seed_dir)
    train_pairs = test_pairs = val_pairs = None
    if todo:
        train_pairs = prepare_pairs(train_ds, img_enc, txt_enc, prot, freeze_image=freeze_image,
                                    device=dev, cache=cache, workers=workers,
                                    name="train images")
        test_pairs = prepare_pairs(test_ds, img_enc, txt_enc, prot, freeze_image=freeze_image,
                                   device=dev, cache=cache, workers=workers, name="test images")
        val_pairs = (prepare_pairs(val_ds, img_enc, txt_enc, prot, freeze_image=freeze_image,
                                   device=dev, cache=cache, workers=workers, name="val images")
                     if val_ds is not None else None)
        # Images that could not be decoded were left out: the results say which, and count
        # what was used.
        config["undecodable"] = {
            name: {"images": pairs.n_images, "captions": pairs.n_texts,
                   "skipped": [p.to_dict() for p in pairs.problems]}
            for name, pairs in (("train", train_pairs), ("test", test_pairs), ("val", val_pairs))
            if pairs is not None and pairs.problems}
    for seed in todo:
        result = _train_seed(seed, img_enc, txt_enc, prot, train_pairs, test_pairs, val_pairs,
                             points, freeze_image=freeze_image, device=dev, workers=workers)
        done[seed] = {"result": result}
        if seed_dir is not None:
            atomic_write_json(seed_dir / f"seed-{seed}.json",
                              {"run_key": key, "result": result, "encoders": encoders,
                               "config": config})
            if root is None:
                claim(seed_dir / f"seed-{seed}.json")
    run = {"key": key, "seeds": done, "encoders": encoders, "config": config}
    results = _finish(run, wanted, sets, overlap, out, report_best_on_test, started,
                      cached=False)
    if root is None:
        _remove_partial(seed_dir)
    return results


def is_results_file(path: Path) -> bool:
    """Whether ``path`` looks like a results file ``gitd evaluate`` wrote (so it may be
    overwritten by a new one)."""
    return file_starts_with(path, b'"gitd_version"', b'"summary"', limit=1 << 24)


def _remove_partial(partial: Path | None) -> None:
    """Remove the per-seed files of a finished evaluation beside its results (only those; the
    folder goes if it is left empty)."""
    if partial is None or not partial.is_dir():
        return
    for saved in partial.glob("seed-*.json"):
        saved.unlink(missing_ok=True)
        release(saved)
    try:
        partial.rmdir()
    except OSError:
        pass


def _finished_seeds(seed_dir: Path | None, key: str) -> dict[int, dict]:
    """Seeds finished under ``key`` in ``seed_dir``; a damaged or foreign file is not one."""
    done: dict[int, dict] = {}
    if seed_dir is None or not seed_dir.is_dir():
        return done
    for path in seed_dir.glob("seed-*.json"):
        saved = read_json(path)
        try:
            seed = int(path.stem.removeprefix("seed-"))
        except ValueError:
            continue
        if (isinstance(saved, dict) and saved.get("run_key") == key
                and isinstance(saved.get("result"), dict)
                and saved["result"].get("seed") == seed and "reported" in saved["result"]):
            done[seed] = saved
    return done


def _cached_run(root: Path | None, key: str, out: Path | None,
                wanted: list[int]) -> dict[str, Any] | None:
    """Every wanted seed of run ``key``, from ``out`` (a results file of the same run) or the
    cache, or None when any is missing."""
    if out is not None:
        prior = read_json(out)
        if isinstance(prior, dict) and prior.get("cache_key") == key:
            seeds = {s.get("seed"): s for s in prior.get("seeds", []) if isinstance(s, dict)}
            if all(s in seeds for s in wanted):
                return {"key": key, "seeds": {s: {"result": seeds[s]} for s in wanted},
                        "encoders": prior.get("encoders"), "config": prior.get("config")}
    if root is None:
        return None
    done = _finished_seeds(root / "evaluations" / key, key)
    if not all(s in done for s in wanted):
        return None
    last = done[wanted[-1]]
    return {"key": key, "seeds": done, "encoders": last.get("encoders"),
            "config": last.get("config")}


def _train_seed(seed: int, img_enc, txt_enc, prot: Protocol, train_pairs, test_pairs, val_pairs,
                points: list[int], *, freeze_image: bool, device, workers) -> dict[str, Any]:
    seed_start = time.time()
    model = build_model(img_enc, txt_enc.dim, prot, seed=seed, freeze_image=freeze_image)
    trainer = Trainer(model, train_pairs, prot, seed=seed, device=device, workers=workers,
                      desc=f"seed {seed}: training")
    history: list[dict] = []

    def record(epoch: int, tr: Trainer) -> None:
        if epoch not in points:
            return
        entry: dict[str, Any] = {"epoch": epoch,
                                 "train_loss": tr.losses[-1] if tr.losses else None,
                                 "test": tr.evaluate(test_pairs, desc=f"seed {seed}: scoring test")}
        if val_pairs is not None:
            entry["val"] = tr.evaluate(val_pairs, desc=f"seed {seed}: scoring val")
        history.append(entry)
        log.debug("seed %d epoch %d: test r_mean %.2f", seed, epoch, entry["test"]["r_mean"])

    if prot.epochs == 0:
        record(0, trainer)
    else:
        trainer.fit(on_epoch_end=record)
    chosen = _pick_epoch(history, val_pairs is not None)
    log.info("seed %d: reported epoch %d, test r_mean %.2f", seed, chosen["epoch"],
             chosen["test"]["r_mean"])
    return {"seed": seed, "epochs": history, "reported_epoch": chosen["epoch"],
            "reported": chosen["test"], "train_loss": trainer.losses,
            "wall_time_s": round(time.time() - seed_start, 2)}


def _finish(run: dict[str, Any], wanted: list[int], sets: dict, overlap: dict,
            out: Path | None, report_best_on_test: bool, started: float, *,
            cached: bool) -> dict[str, Any]:
    seed_results = [run["seeds"][s]["result"] for s in wanted]
    config = dict(run.get("config") or {})
    config.update({"seeds": len(wanted), "first_seed": wanted[0]})
    sets = {k: ({**v, **(config.get("undecodable") or {}).get(k, {})} if v else v)
            for k, v in sets.items()}
    use_val = sets["val"] is not None
    if use_val:
        selection = ("epoch chosen on the validation split (highest val r_mean); the test "
                     "metric of that epoch is reported")
    else:
        selection = "last epoch"
    results: dict[str, Any] = {
        "gitd_version": __version__,
        "train": sets["train"]["path"], "test": sets["test"]["path"],
        "val": sets["val"]["path"] if use_val else None,
        "splits": {k: (v or {}).get("split") for k, v in sets.items()},
        "sets": sets,
        "test_overlap": overlap,
        "train_fingerprint": sets["train"].get("fingerprint"),
        "n_train": sets["train"]["images"],
        "protocol": (config.get("protocol") or {}).get("name"),
        "epochs": (config.get("protocol") or {}).get("epochs"),
        "config": config, "encoders": run.get("encoders"),
        "selection": selection, "std": STD_NOTE,
        "seeds": seed_results,
        "summary": summarize([s["reported"] for s in seed_results]),
        "cache_key": run["key"],
        "wall_time_s": round(sum(s.get("wall_time_s", 0.0) for s in seed_results), 2),
    }
    if report_best_on_test:
        best = [max(s["epochs"], key=lambda h: h["test"]["r_mean"])["test"] for s in seed_results]
        results["best_on_test"] = summarize(best)
        results["best_on_test_label"] = BEST_ON_TEST_LABEL
    if cached:
        log.info("evaluate: nothing to do, these sets and settings were evaluated before "
                 "(key %s); change a setting or a file to recompute", run["key"])
    if out is not None and read_json(out) != results:
        atomic_write_json(out, results)
        claim(out)
    results["from_cache"] = cached
    results["elapsed_s"] = round(time.time() - started, 2)
    return results


def format_table(results: dict[str, Any]) -> str:
    """The results table: TR@1/5/10, IR@1/5/10 and r_mean as mean ± std (sample std)."""
    head = f"{'':<24}" + "".join(f"{k:>14}" for k in METRIC_NAMES)

    def row(label, summary):
        cells = (f"{summary[k]['mean']:.2f} ± {summary[k]['std']:.2f}" for k in METRIC_NAMES)
        return f"{label:<24}" + "".join(f"{c:>14}" for c in cells)

    n = len(results.get("seeds") or [])
    enc = results.get("encoders") or {}
    sets = results.get("sets") or {}
    lines = [_set_line(name, sets[name]) if isinstance(sets.get(name), dict)
             else f"{name}: {results.get(name)}" for name in ("train", "test", "val")
             if results.get(name)]
    overlap = results.get("test_overlap") or {}
    for warning in overlap.get("warnings", []):
        lines.append(f"WARNING: {warning}; allowed by --allow-test-overlap, so these figures "
                     "OVERSTATE retrieval")
    lines += [f"image encoder: {enc.get('image', {}).get('name')}   text encoder: "
              f"{enc.get('text', {}).get('name')}   protocol: {results.get('protocol')}, "
              f"{results.get('epochs')} epoch(s)",
              f"reported: {results.get('selection')}; mean ± sample std over {n} seed(s)",
              head, row("test", results["summary"])]
    if results.get("from_cache"):
        lines.append(f"(cached: evaluated before with the same sets and settings, key "
                     f"{results.get('cache_key')})")
    if "best_on_test" in results:
        lines += ["", BEST_ON_TEST_LABEL + ":", row("best-on-test", results["best_on_test"])]
    return "\n".join(lines)
