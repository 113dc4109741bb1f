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
from gitd.errors import ConfigError, GitdError, check_positive_int
from gitd.evaluation.encoders import (ImageEncoder, TextEncoder, build_image_encoder,
                                      build_text_encoder, resolve_device)
from gitd.evaluation.metrics import METRIC_NAMES
from gitd.evaluation.protocols import DEFAULT_PROTOCOL, Protocol, get_protocol
from gitd.evaluation.train import Trainer, build_model, prepare_pairs
from gitd.log import get_logger
from gitd.outdir import Inputs, check_output_file, claim, file_starts_with, release
from gitd.store import atomic_write_json, file_fingerprint, fingerprint, read_json

log = get_logger("evaluation")

BEST_ON_TEST_LABEL = "best epoch ON TEST (optimistic, for comparison with papers only)"
STD_NOTE = "sample standard deviation over seeds (ddof=1); 0 with one seed"


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


def _load(path_or_ds, images, what: str):
    from gitd.data import load_dataset
    if isinstance(path_or_ds, (str, Path)):
        return load_dataset(path_or_ds, images)
    if path_or_ds is None:
        raise ConfigError(f"no {what} set given")
    return path_or_ds


def _describe_set(ds) -> dict[str, Any]:
    src = getattr(ds, "source", None)
    info: dict[str, Any] = {"path": str(src) if src else None,
                            "images": len(ds), "captions": sum(len(r.captions) for r in ds)}
    if src and Path(src).is_file():
        info["fingerprint"] = file_fingerprint(src)
    return info


def _pick_epoch(history: list[dict], use_val: bool) -> dict:
    if not use_val:
        return history[-1]
    best = max(h["val"]["r_mean"] for h in history)
    return next(h for h in history if h["val"]["r_mean"] == best)


def evaluate(train, test, *, protocol: str | Protocol = DEFAULT_PROTOCOL, epochs: int | None = None,
             seeds: int = 3, image_model="auto", text_model="auto", freeze_image: bool = False,
             pretrained: bool = True, val=None, eval_every: int | None = None,
             report_best_on_test: bool = False, device="auto", cache=None, out=None,
             image_size: int | None = None, batch_size: int | None = None,
             lr: float | None = None, images=None, test_images=None, val_images=None,
             workers: int | None = None, first_seed: int = 0) -> dict[str, Any]:
    """Train a retrieval model on ``train`` and score it on ``test``; returns the results dict
    (also written to ``out`` as JSON when given).

    ``train``/``test``/``val``: annotation paths (any format ``gitd.data.load_dataset`` reads;
    ``images``/``test_images``/``val_images`` override their image roots) or ``Dataset``s.
    ``protocol``: ``gitd`` or ``lors`` (``gitd.evaluation.protocols``), with ``epochs``,
    ``image_size``, ``batch_size`` and ``lr`` overriding it; ``epochs=0`` scores the untrained
    model. ``seeds``: number of seeds (``first_seed`` .. ``first_seed + seeds - 1``).
    ``image_model``/``text_model``: names (``gitd.evaluation.encoders``) or built encoders.
    With ``out``, each finished seed is kept beside it (``OUT.partial/``) and a re-run with the
    same settings resumes after the seeds already done.
    """
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

    train_ds = _load(train, images, "train")
    test_ds = _load(test, test_images, "test")
    val_ds = _load(val, val_images, "validation") if val is not None else None
    if out is not None:
        inputs = Inputs().dataset(train_ds, "training set").dataset(test_ds, "test set")
        if val_ds is not None:
            inputs.dataset(val_ds, "validation set")
        check_output_file(out, inputs, what="results file", owned=is_results_file)

    img_enc = image_model if isinstance(image_model, ImageEncoder) else build_image_encoder(
        image_model, image_size=prot.image_size, pretrained=pretrained)
    txt_enc = text_model if isinstance(text_model, TextEncoder) else build_text_encoder(text_model)
    encoders = {"image": {**img_enc.info, "requested": image_model if isinstance(image_model, str)
                          else img_enc.name},
                "text": {**txt_enc.info, "requested": text_model if isinstance(text_model, str)
                         else txt_enc.name}}
    log.info("evaluating with image encoder %s (%s), text encoder %s; protocol %s, %d epoch(s), "
             "%d seed(s), %d px, %s", img_enc.name, "frozen" if freeze_image else "trainable",
             txt_enc.name, prot.name, prot.epochs, seeds, prot.image_size, dev)

    points = eval_epochs(prot.epochs, eval_every)
    sets = {"train": _describe_set(train_ds), "test": _describe_set(test_ds),
            "val": _describe_set(val_ds) if val_ds is not None else None}
    config = {"protocol": prot.to_dict(), "seeds": seeds, "first_seed": first_seed,
              "freeze_image": freeze_image, "pretrained": pretrained, "eval_epochs": points,
              "device": str(dev), "train": sets["train"]["path"], "test": sets["test"]["path"],
              "val": sets["val"]["path"] if val_ds is not None else None,
              "image_model": img_enc.name, "text_model": txt_enc.name,
              "caption_policy": "one random caption per image per epoch (seeded)"}
    train_pairs = prepare_pairs(train_ds, img_enc, txt_enc, prot, freeze_image=freeze_image,
                                device=dev, cache=cache, workers=workers, name="train images")
    test_pairs = prepare_pairs(test_ds, img_enc, txt_enc, prot, freeze_image=freeze_image,
                               device=dev, cache=cache, workers=workers, name="test images")
    val_pairs = (prepare_pairs(val_ds, img_enc, txt_enc, prot, freeze_image=freeze_image,
                               device=dev, cache=cache, workers=workers, name="val images")
                 if val_ds is not None else None)
    # Images that could not be decoded are left out (and listed): counts say what was used.
    for what, pairs in (("train", train_pairs), ("test", test_pairs), ("val", val_pairs)):
        if pairs is not None and pairs.problems:
            sets[what].update(images=pairs.n_images, captions=pairs.n_texts,
                              skipped=[p.to_dict() for p in pairs.problems])
    run_key = fingerprint({"config": {k: v for k, v in config.items() if k != "device"},
                           "sets": sets, "encoders": encoders, "version": 1})

    partial = out.with_name(out.name + ".partial") if out is not None else None
    seed_results = []
    for seed in range(first_seed, first_seed + seeds):
        saved = partial / f"seed-{seed}.json" if partial is not None else None
        done = read_json(saved) if saved is not None else None
        if isinstance(done, dict) and done.get("run_key") == run_key:
            log.info("seed %d: already done (%s), reusing it", seed, saved)
            seed_results.append(done["result"])
            continue
        seed_start = time.time()
        model = build_model(img_enc, txt_enc.dim, prot, seed=seed, freeze_image=freeze_image)
        trainer = Trainer(model, train_pairs, prot, seed=seed, device=dev, workers=workers,
                          desc=f"seed {seed}")
        history: list[dict] = []

        def record(epoch: int, tr: Trainer) -> None:
            if epoch not in points:
                return
            entry: dict[str, Any] = {"epoch": epoch,
                                     "train_loss": tr.losses[-1] if tr.losses else None,
                                     "test": tr.evaluate(test_pairs)}
            if val_pairs is not None:
                entry["val"] = tr.evaluate(val_pairs)
            history.append(entry)
            log.debug("seed %d epoch %d: test r_mean %.2f", seed, epoch, entry["test"]["r_mean"])

        if prot.epochs == 0:
            record(0, trainer)
        else:
            trainer.fit(on_epoch_end=record)
        chosen = _pick_epoch(history, val_pairs is not None)
        result = {"seed": seed, "epochs": history, "reported_epoch": chosen["epoch"],
                  "reported": chosen["test"], "train_loss": trainer.losses,
                  "wall_time_s": round(time.time() - seed_start, 2)}
        log.info("seed %d: reported epoch %d, test r_mean %.2f", seed, chosen["epoch"],
                 chosen["test"]["r_mean"])
        seed_results.append(result)
        if saved is not None:
            atomic_write_json(saved, {"run_key": run_key, "result": result})
            claim(saved)

    if val_pairs is not None:
        selection = ("epoch chosen on the validation split (highest val r_mean); the test "
                     "metric of that epoch is reported")
    else:
        selection = "last epoch"
    results: dict[str, Any] = {
        "gitd_version": __version__,
        "train": sets["train"]["path"], "test": sets["test"]["path"],
        "val": sets["val"]["path"] if val_ds is not None else None,
        "sets": sets,
        "train_fingerprint": sets["train"].get("fingerprint"),
        "n_train": sets["train"]["images"],
        "protocol": prot.name, "epochs": prot.epochs,
        "config": config, "encoders": encoders,
        "selection": selection, "std": STD_NOTE,
        "seeds": seed_results,
        "summary": summarize([s["reported"] for s in seed_results]),
        "wall_time_s": round(time.time() - started, 2),
    }
    if report_best_on_test:
        best = [max(s["epochs"], key=lambda h: h["test"]["r_mean"])["test"] for s in seed_results]
        results["best_on_test"] = summarize(best)
        results["best_on_test_label"] = BEST_ON_TEST_LABEL
    if out is not None:
        atomic_write_json(out, results)
        claim(out)
        _remove_partial(partial)
    return results


def is_results_file(path: Path) -> bool:
    """Whether ``path`` looks like a results file ``gitd evaluate`` wrote (so it may be
    overwritten by a new one)."""
    return file_starts_with(path, b'"gitd_version"', b'"summary"', limit=1 << 24)


def _remove_partial(partial: Path | None) -> None:
    """Remove the per-seed files of a finished evaluation (only those; the folder goes if it is
    left empty)."""
    if partial is None or not partial.is_dir():
        return
    for saved in partial.glob("seed-*.json"):
        saved.unlink(missing_ok=True)
        release(saved)
    try:
        partial.rmdir()
    except OSError:
        pass


def format_table(results: dict[str, Any]) -> str:
    """The results table: TR@1/5/10, IR@1/5/10 and r_mean as mean ± std (sample std)."""
    head = f"{'':<24}" + "".join(f"{k:>14}" for k in METRIC_NAMES)

    def row(label, summary):
        cells = (f"{summary[k]['mean']:.2f} ± {summary[k]['std']:.2f}" for k in METRIC_NAMES)
        return f"{label:<24}" + "".join(f"{c:>14}" for c in cells)

    n = len(results.get("seeds") or [])
    enc = results.get("encoders", {})
    lines = [f"train: {results.get('train')}  ({results.get('n_train')} images)",
             f"test:  {results.get('test')}",
             f"image encoder: {enc.get('image', {}).get('name')}   text encoder: "
             f"{enc.get('text', {}).get('name')}   protocol: {results.get('protocol')}, "
             f"{results.get('epochs')} epoch(s)",
             f"reported: {results.get('selection')}; mean ± sample std over {n} seed(s)",
             head, row("test", results["summary"])]
    if "best_on_test" in results:
        lines += ["", BEST_ON_TEST_LABEL + ":", row("best-on-test", results["best_on_test"])]
    return "\n".join(lines)
