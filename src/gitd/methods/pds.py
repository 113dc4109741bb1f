"""PDS: prototype-guided synthesis (ICLR 2026), training-free, as ``gitd distill --method pds``.

embed (CLIP image + text embeddings of every pair) -> filter (drop the ``filter_fraction`` of
pairs with the lowest image-text cosine) -> prototypes (k-means on images and on texts, clusters
matched by the Hungarian algorithm, prototype = mean of the shared members, caption = the real
caption nearest the text centroid) -> synthesize (unCLIP decoder conditioned on each
prototype's image embedding, prompted by its caption) -> optional recaption -> output.

It shares GITD's machinery: the model registry, fingerprinted stage folders, per-unit atomic
writes with fixed batch composition (``gitd.store.run_units``), the output format and the
manifest. ``--no-diffusion`` is the generator-free variant: the real image nearest each
prototype, with the prototype's caption.
"""

from __future__ import annotations

import io
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from gitd.config import DistillConfig
from gitd.data.formats import dataset_fingerprint, load_dataset, note_input_change
from gitd.data.images import is_image_ref, open_rgb
from gitd.data.output import OutputPair, write_output
from gitd.errors import ConfigError, GitdError
from gitd.log import get_logger
from gitd.methods.gitd import Components, derive_seed
from gitd.outdir import Inputs, OutputFolder
from gitd.stages.caption import load_caption_unit
from gitd.store import (Stage, StageTimer, atomic_save_image, atomic_write_bytes,
                        atomic_write_json, read_json, require, run_units, unit_image, unit_json,
                        unit_path)

log = get_logger("pds")


@dataclass
class PdsComponents(Components):
    unclip: Any = None

    def get_unclip(self):
        if self.unclip is None:
            from gitd.models.unclip import build_unclip

            self.unclip = build_unclip(self.config.unclip_model, device=self.device,
                                       dtype=self.dtype, seed=self.config.seed,
                                       revision=self.config.unclip_revision)
        return self.unclip


def _save_npy(path: Path, arr: np.ndarray) -> None:
    buf = io.BytesIO()
    np.save(buf, np.asarray(arr), allow_pickle=False)
    atomic_write_bytes(path, buf.getvalue())


def distill(data: str | Path, out: str | Path, config: DistillConfig, *,
            images: str | Path | None = None, split: str = "train", strict: bool = False,
            allow_outside_root: bool = False, work: str | Path | None = None,
            components: PdsComponents | None = None, config_file: str | Path | None = None,
            on_unit: Callable[[str, int], None] | None = None) -> Path:
    """Distil ``data`` into ``config.pairs`` pairs with PDS, written to ``out`` (which may not
    overlap the dataset or ``config_file``, and is replaced as a whole)."""
    from gitd.models import describe_model, resolve_device, resolve_dtype
    from gitd.stages.embed import EmbedStore, embed_pairs, filter_lowest
    from gitd.stages.prototypes import build_prototypes, select_nearest

    config.validate()
    if config.ray is not None:
        log.warning("--ray runs GITD's encode and clustering on Ray; PDS's stages run in this "
                    "process")
    out = Path(out)
    work = Path(work) if work is not None else out / "work"
    t0 = time.perf_counter()
    dataset = load_dataset(data, images, split=split, strict=strict,
                           allow_outside_root=allow_outside_root)
    if len(dataset) == 0:
        raise GitdError(f"{data}: no valid image-caption pairs to distil")
    if config.pairs > len(dataset):
        raise ConfigError(f"asked for {config.pairs} pairs but {data} has only "
                          f"{len(dataset)} valid images")
    folder = OutputFolder.prepare(out, command="distill", work=work, inputs=Inputs().dataset(
        dataset).file(config_file, "config file"))
    timings: dict[str, float] = {"load": round(time.perf_counter() - t0, 3)}
    if components is None:
        device = resolve_device(config.device)
        components = PdsComponents(config, device, resolve_dtype(config.dtype, device))
    c, cfg = components, config
    data_key = dataset_fingerprint(dataset)
    note_input_change(work, dataset, data_key)
    stages: dict[str, str] = {}

    # -- embed ---------------------------------------------------------------------------
    stage = Stage.open(work, "embed", {"data": data_key, "score_model": cfg.score_model,
                                       "revision": cfg.score_revision, "dtype": str(c.dtype)},
                       prepare=c.get_score_model)
    stages["embed"] = stage.key
    store = stage.cached(lambda: EmbedStore.open(stage.path, dataset.records),
                         lambda: embed_pairs(dataset.records, c.get_score_model(), stage.path))
    timings["embed"] = float(stage.summary().get("seconds", 0.0))
    texts = [cap for r in dataset for cap in r.captions]

    # -- filter + prototypes -------------------------------------------------------------
    cap_idx, rec_idx = store.pairs()
    keep = filter_lowest(store.image_emb, store.text_emb[cap_idx], rec_idx, cfg.filter_fraction)
    cap_idx, rec_idx = cap_idx[keep], rec_idx[keep]
    if cfg.pairs > len(np.unique(rec_idx)):
        raise ConfigError(f"asked for {cfg.pairs} pairs but only {len(np.unique(rec_idx))} "
                          f"images remain after dropping {cfg.filter_fraction:.0%} of pairs")
    stage = Stage.open(work, "prototypes", {"upstream": stages["embed"], "k": cfg.pairs,
                                            "filter_fraction": cfg.filter_fraction,
                                            "seed": cfg.seed})
    stages["prototypes"] = stage.key
    info_path = stage.path / "prototypes.json"

    def compute_prototypes() -> None:
        protos = build_prototypes(store.image_emb[rec_idx], store.text_emb[cap_idx], cfg.pairs,
                                  seed=cfg.seed)
        valid_rows = np.flatnonzero(store.valid)
        nearest = valid_rows[select_nearest(protos.image, store.image_emb[valid_rows])]
        _save_npy(stage.path / "image.npy", protos.image)
        table = protos.to_dict()
        for j, row in enumerate(table):
            pair = int(protos.caption[j])
            row.update({"caption_index": int(cap_idx[pair]), "nearest_record": int(nearest[j]),
                        "member_ids": [dataset[int(rec_idx[m])].id
                                       for m in protos.members[j][:50]]})
        atomic_write_json(info_path, {"pairs_kept": int(len(cap_idx)),
                                      "pairs_dropped": int((~keep).sum()), "prototypes": table})

    def load_prototypes() -> tuple[dict, np.ndarray]:
        info = read_json(info_path)
        require(isinstance(info, dict) and isinstance(info.get("prototypes"), list)
                and len(info["prototypes"]) == cfg.pairs, "prototypes.json is missing or damaged")
        image = np.load(stage.path / "image.npy", allow_pickle=False)
        require(image.shape[0] == cfg.pairs, "image.npy has the wrong number of prototypes")
        for row in info["prototypes"]:
            require(0 <= row["caption_index"] < len(texts)
                    and 0 <= row["nearest_record"] < len(dataset),
                    "prototypes.json points outside the dataset")
        return info, image

    info, proto_image = stage.cached(load_prototypes, compute_prototypes)
    timings["prototypes"] = float(stage.summary().get("seconds", 0.0))
    table = info["prototypes"]
    k = len(table)
    prompts = [texts[row["caption_index"]] for row in table]

    # -- synthesize ----------------------------------------------------------------------
    images: list[Any]
    if cfg.diffusion:
        stage = Stage.open(work, "synthesize", {
            "upstream": stages["prototypes"], "model": cfg.unclip_model,
            "revision": cfg.unclip_revision, "resolution": cfg.resolution,
            "steps": cfg.num_inference_steps, "guidance_scale": cfg.guidance_scale,
            "noise_level": cfg.noise_level, "negative_prompt": cfg.negative_prompt,
            "batch": cfg.generate_batch_size, "seed": cfg.seed, "dtype": str(c.dtype)},
            prepare=c.get_unclip)
        stages["synthesize"] = stage.key
        clock = StageTimer(stage)

        def compute(chunk: range) -> list:
            import torch

            from gitd.stages.synthesize import synthesize

            pipe = c.get_unclip()
            seeds = [derive_seed(cfg.seed, "synthesize", j) for j in chunk]
            return list(zip(seeds, synthesize(
                pipe, torch.from_numpy(proto_image[list(chunk)]), [prompts[j] for j in chunk],
                num_inference_steps=cfg.num_inference_steps, guidance_scale=cfg.guidance_scale,
                noise_level=cfg.noise_level, negative_prompt=cfg.negative_prompt, seeds=seeds,
                norms=[table[j]["norm"] for j in chunk], height=cfg.resolution,
                width=cfg.resolution)))

        def write(j: int, result) -> None:
            seed, image = result
            atomic_save_image(unit_path(stage, j, ".png"), image)
            atomic_write_json(unit_path(stage, j), {"prompt": prompts[j], "seed": seed})

        def written(j: int) -> None:
            clock.save()
            if on_unit:
                on_unit("synthesize", j)

        if not all(unit_path(stage, j).exists() for j in range(k)):
            # A mismatched CLIP/unCLIP pair is a setting error: say so before any work.
            from gitd.models.unclip import check_embedding_match

            check_embedding_match(c.get_unclip(), proto_image.shape[1],
                                  score_model=cfg.score_model, unclip_model=cfg.unclip_model)
        def load(j: int):
            unit_json(stage, j, "prompt", "seed")
            return unit_image(stage, j)

        images = run_units(stage, k, cfg.generate_batch_size, compute, write, load,
                           noun="prototype", on_written=written)
        stage.mark_done({"seconds": round(clock.total(), 3)})
        timings["synthesize"] = round(clock.total(), 3)
        image_key = stage.key
    else:
        # Generator-free variant: the real image nearest each prototype, copied as is.
        images = [dataset[row["nearest_record"]].image for row in table]
        timings["synthesize"] = 0.0
        image_key = stages["prototypes"]

    # -- optional recaption --------------------------------------------------------------
    captions = list(prompts)
    caption_scores: list[dict[str, Any]] = [{} for _ in range(k)]
    if cfg.recaption:
        stage = Stage.open(work, "caption", {
            "upstream": image_key, "model": cfg.captioner, "captions": cfg.num_captions,
            "temperature": cfg.temperature, "top_p": cfg.top_p,
            "max_new_tokens": cfg.max_new_tokens, "score_model": cfg.score_model,
            "batch": cfg.caption_batch_size, "seed": cfg.seed, "dtype": str(c.dtype)},
            prepare=lambda: (c.get_captioner(), c.get_score_model()))
        stages["caption"] = stage.key
        clock = StageTimer(stage)

        def compute_caps(chunk: range) -> list:
            from gitd.stages.caption import caption_images

            imgs = [open_rgb(images[j]) if is_image_ref(images[j]) else images[j]
                    for j in chunk]
            seeds = [derive_seed(cfg.seed, "caption", j) for j in chunk]
            return caption_images(c.get_captioner(), c.get_score_model(), imgs,
                                  num_captions=cfg.num_captions, temperature=cfg.temperature,
                                  top_p=cfg.top_p, max_new_tokens=cfg.max_new_tokens,
                                  seeds=seeds, use_score=True)

        def write_caps(j: int, res) -> None:
            atomic_write_json(unit_path(stage, j), {"caption": res.best,
                                                    "candidates": list(res.candidates),
                                                    "scores": [float(x) for x in res.scores]})

        done = run_units(stage, k, cfg.caption_batch_size, compute_caps, write_caps,
                         lambda j: load_caption_unit(stage, j), noun="image",
                         on_written=lambda j: (clock.save(), on_unit and on_unit("caption", j)))
        stage.mark_done({"seconds": round(clock.total(), 3)})
        timings["caption"] = round(clock.total(), 3)
        captions = [u["caption"] for u in done]
        caption_scores = [u["scores"] for u in done]

    # -- output --------------------------------------------------------------------------
    pairs = []
    for j, row in enumerate(table):
        rec = dataset[row["nearest_record"]]
        pairs.append(OutputPair(image=images[j], captions=[captions[j]], info={
            "source_id": rec.id, "source_image": str(rec.image), "source_caption": prompts[j],
            "cluster_size": row["members"], "prototype": {
                "match_count": row["match_count"], "image_cluster": row["image_cluster"],
                "text_cluster": row["text_cluster"], "members": row["members"],
                "member_ids": row["member_ids"], "embedding_norm": row["norm"]},
            "scores": caption_scores[j]}))
    used = {"score": describe_model("score", cfg.score_model, cfg.score_revision)}
    if cfg.diffusion:
        used["unclip"] = describe_model("unclip", cfg.unclip_model, cfg.unclip_revision)
    if cfg.recaption:
        used["captioner"] = describe_model("captioner", cfg.captioner, cfg.captioner_revision)
    manifest = {
        "method": "pds", "preset": cfg.preset, "seed": cfg.seed, "config": cfg.to_dict(),
        "models": used, "untrained": any(m.get("untrained") for m in used.values()),
        "ablations": {"diffusion": cfg.diffusion, "recaption": cfg.recaption},
        "source": {"path": str(Path(data).resolve()), "format": dataset.format,
                   "split": dataset.split, "image_root": str(dataset.image_root),
                   "fingerprint": data_key, "n_records": len(dataset) + len(dataset.problems),
                   "n_valid": int(store.valid.sum())},
        "work": str(work.resolve()), "stages": stages,
        "filtering": {"fraction": cfg.filter_fraction, "pairs_kept": info["pairs_kept"],
                      "pairs_dropped": info["pairs_dropped"]},
        "clustering": {"method": "pds-prototypes", "sizes": [r["members"] for r in table],
                       "match_counts": [r["match_count"] for r in table]},
        "skipped": [p.to_dict() for p in dataset.problems + store.problems],
        "timings": timings, "device": str(c.device),
        "dtype": str(c.dtype).removeprefix("torch."),
    }
    with folder.replace() as staging:
        write_output(staging, pairs, manifest)
        atomic_write_json(staging / "config.json", cfg.to_dict())
    log.info("wrote %d pairs to %s", len(pairs), out)
    return out
