"""GITD: generative image-text distillation, training-free.

encode (VAE latents) -> cluster (CLARA k-medoids) -> generate (img2img from each medoid's own
latent, prompted by its longest caption; the score model keeps the best of N candidates) ->
caption (M sampled captions per synthetic image; the score model keeps the best) -> output.

Each stage is cached in the work directory under a fingerprint of its settings and of the stages
before it (``gitd.store.Stage``), so a re-run finishes only what is missing and a changed
setting recomputes exactly the stages that depend on it. Generation and captioning write each
finished medoid atomically; a re-run after a crash (SIGKILL included) skips finished medoids and
gives the same output as an uninterrupted run, because every medoid's randomness comes from its
own seed and batches always have the same composition.
"""

from __future__ import annotations

import hashlib
import io
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from gitd.config import DistillConfig
from gitd.data import Dataset
from gitd.data.formats import dataset_fingerprint, load_dataset
from gitd.data.output import OutputPair, write_output
from gitd.errors import ConfigError, DataError, GitdError
from gitd.log import get_logger, progress
from gitd.store import (Stage, StageTimer, atomic_save_image, atomic_write_json, read_json,
                        run_units, unit_path)

log = get_logger("gitd")


def derive_seed(seed: int, *parts: Any) -> int:
    """A 31-bit seed for one unit of work, independent of which other units run beside it."""
    blob = ":".join(str(p) for p in (seed, *parts)).encode()
    return int.from_bytes(hashlib.sha256(blob).digest()[:4], "little") & 0x7FFFFFFF


@dataclass
class Components:
    """Models a run needs, built lazily from the registry unless passed in (tests pass their own)."""

    config: DistillConfig
    device: Any
    dtype: Any
    vae: Any = None
    cluster_vae: Any = None
    img2img: Any = None
    score_model: Any = None
    captioner: Any = None

    def get_vae(self):
        """The generation VAE: img2img's starting latents and its decoder."""
        if self.vae is None:
            self.vae = self._build_vae("generate")
        return self.vae

    def get_cluster_vae(self):
        """The VAE whose latents are clustered (the generation VAE unless ``cluster_vae``)."""
        if self.cluster_vae is None:
            cfg = self.config
            same = cfg.vae_source("cluster") == cfg.vae_source("generate")
            self.cluster_vae = self.get_vae() if same else self._build_vae("cluster")
        return self.cluster_vae

    def _build_vae(self, role: str):
        from gitd.models import build_vae

        name, revision, standalone = self.config.vae_source(role)
        return build_vae(name, device=self.device, dtype=self.dtype, seed=self.config.seed,
                         revision=revision, standalone=standalone)

    def get_img2img(self):
        if self.img2img is None:
            from gitd.models import build_img2img

            self.img2img = build_img2img(self.config.diffusion_model, device=self.device,
                                         dtype=self.dtype, seed=self.config.seed,
                                         vae=self.get_vae(),
                                         revision=self.config.diffusion_revision)
        return self.img2img

    def get_score_model(self):
        if self.score_model is None:
            from gitd.models import build_score_model

            self.score_model = build_score_model(self.config.score_model, device=self.device,
                                                 dtype=self.dtype, seed=self.config.seed,
                                                 revision=self.config.score_revision)
        return self.score_model

    def get_captioner(self):
        if self.captioner is None:
            from gitd.models import build_captioner

            self.captioner = build_captioner(self.config.captioner, device=self.device,
                                             dtype=self.dtype, seed=self.config.seed,
                                             revision=self.config.captioner_revision)
        return self.captioner


# Kept for code written against the first version of this module.
_Clock = StageTimer


def distill(data: str | Path, out: str | Path, config: DistillConfig, *,
            images: str | Path | None = None, split: str = "train", strict: bool = False,
            allow_outside_root: bool = False, work: str | Path | None = None,
            components: Components | None = None,
            on_unit: Callable[[str, int], None] | None = None) -> Path:
    """Distil the dataset at ``data`` into ``config.pairs`` pairs written to ``out``.

    ``on_unit(stage, index)`` is called after each finished medoid is written (tests use it to
    interrupt a run at a known point). Returns ``out``.
    """
    from gitd.models import describe_models, resolve_device, resolve_dtype

    config.validate()
    out = Path(out)
    work = Path(work) if work is not None else out / "work"
    t_load = time.perf_counter()
    dataset = load_dataset(data, images, split=split, strict=strict,
                           allow_outside_root=allow_outside_root)
    if len(dataset) == 0:
        raise GitdError(f"{data}: no valid image-caption pairs to distil "
                        f"({len(dataset.problems)} rows skipped; run 'gitd check {data}')")
    if config.pairs > len(dataset):
        raise ConfigError(f"asked for {config.pairs} pairs but {data} has only "
                          f"{len(dataset)} valid images")
    if dataset.problems:
        log.warning("%d input problems; those rows are skipped (listed in the manifest; "
                    "run 'gitd check' for details, or --strict to stop on them)",
                    len(dataset.problems))
    timings: dict[str, float] = {"load": round(time.perf_counter() - t_load, 3)}
    if components is None:
        device = resolve_device(config.device)
        components = Components(config, device, resolve_dtype(config.dtype, device))
    run = _Run(dataset, work, config, components, timings, on_unit)
    medoids = run.select_medoids()
    images_out = run.generate(medoids)
    captions_out = run.caption(medoids, images_out)

    pairs = []
    for j, m in enumerate(medoids):
        rec = dataset[m["record"]]
        image = images_out[j]["image"]
        info = {
            "source_id": rec.id,
            "source_image": str(rec.image),
            "source_caption": run.prompt_of(rec),
            "cluster_size": m["size"],
            "scores": {**images_out[j]["scores"], **captions_out[j]["scores"]},
        }
        pairs.append(OutputPair(image=image, captions=[captions_out[j]["caption"]], info=info))

    models = describe_models(config, ablations=run.ablations())
    manifest = {
        "method": "gitd",
        "preset": config.preset,
        "seed": config.seed,
        "config": config.to_dict(),
        "models": models,
        # The registry marks random-weight builders (tiny and full-size alike).
        "untrained": any(m.get("untrained") and m.get("used") for m in models.values()),
        "ablations": run.ablations(),
        "source": {
            "path": str(Path(data).resolve()), "format": dataset.format, "split": dataset.split,
            "image_root": str(dataset.image_root), "fingerprint": run.data_key,
            "n_records": len(dataset) + len(dataset.problems), "n_valid": len(dataset),
        },
        "work": str(work.resolve()),
        "stages": run.stage_keys,
        "clustering": run.cluster_summary,
        "skipped": [p.to_dict() for p in dataset.problems + run.extra_problems],
        "timings": timings,
        "device": str(components.device),
        "dtype": str(components.dtype).removeprefix("torch."),
    }
    t_out = time.perf_counter()
    write_output(out, pairs, manifest)
    # The settings alone, loadable with `gitd distill --config OUT/config.json`.
    atomic_write_json(out / "config.json", config.to_dict())
    timings["output"] = round(time.perf_counter() - t_out, 3)
    # The manifest is written once more so that it carries the output stage's own time.
    atomic_write_json(out / "manifest.json", {**read_json(out / "manifest.json"), "timings": timings})
    log.info("wrote %d pairs to %s", len(pairs), out)
    return out


class _Run:
    """The stages of one ``distill`` call, sharing the dataset, work folder and components."""

    def __init__(self, dataset: Dataset, work: Path, config: DistillConfig,
                 components: Components, timings: dict[str, float],
                 on_unit: Callable[[str, int], None] | None):
        self.dataset = dataset
        self.work = work
        self.cfg = config
        self.c = components
        self.timings = timings
        self.on_unit = on_unit
        self.data_key = dataset_fingerprint(dataset)
        self.stage_keys: dict[str, str] = {}
        self.cluster_summary: dict[str, Any] = {}
        self.extra_problems: list = []
        self.latents = None

    # -- helpers -------------------------------------------------------------------------
    def ablations(self) -> dict[str, bool]:
        c = self.cfg
        return {"cluster": c.cluster, "diffusion": c.diffusion, "captioner": c.captioner_on,
                "score": c.score}

    def prompt_of(self, rec) -> str:
        # The paper prompts with the longest of the medoid's captions.
        if self.cfg.prompt == "first":
            return rec.captions[0]
        return rec.longest_caption

    def _stage(self, name: str, settings: dict[str, Any]) -> Stage:
        stage = Stage.open(self.work, name, settings)
        self.stage_keys[name] = stage.key
        return stage

    # -- encode + cluster ----------------------------------------------------------------
    def shared_latents(self) -> bool:
        """True when one encode of every image with the generation VAE serves both clustering
        and img2img (the paper; also /C with diffusion); else clustering reads its own space
        and only the medoids are encoded with the generation VAE (``encode_medoids``)."""
        c = self.cfg
        return not c.cluster or (c.cluster_space == "latents"
                                 and c.vae_source("cluster") == c.vae_source("generate"))

    def encode(self, name: str, role: str, records, upstream: str):
        """Stage ``name``: ``records`` encoded with the ``role`` VAE (``Components``)."""
        from gitd.stages.encode import LatentStore, encode_latents

        cfg = self.cfg
        vae_name, revision, _ = cfg.vae_source(role)
        stage = self._stage(name, {
            "data": upstream, "ids": len(records), "vae": vae_name, "revision": revision,
            "resolution": cfg.resolution, "sample_latents": cfg.sample_latents,
            "seed": cfg.seed if cfg.sample_latents else None,
            "dtype": str(self.c.dtype),
        })
        clock = StageTimer(stage)
        if stage.done:
            log.info("%s: cached (%s)", name, stage.path.name)
            store = LatentStore.open(stage.path)
        else:
            vae = self.c.get_vae() if role == "generate" else self.c.get_cluster_vae()
            store = encode_latents(records, vae, stage.path,
                                   resolution=cfg.resolution, batch_size=cfg.encode_batch_size,
                                   num_workers=cfg.encode_workers, sample=cfg.sample_latents,
                                   seed=cfg.seed, device=self.c.device, dtype=self.c.dtype)
            clock.save()
            stage.mark_done({"seconds": round(clock.total(), 3)})
        self.timings[name] = float(stage.summary().get("seconds", clock.total()))
        return stage, store

    def features(self):
        """Stage ``features``: the coreset baselines' image ++ caption features of every image."""
        from gitd.evaluation.encoders import build_image_encoder, build_text_encoder
        from gitd.methods.coreset import pair_features
        from gitd.store import atomic_write_bytes

        cfg = self.cfg
        image_enc = build_image_encoder("auto", image_size=cfg.feature_image_size)
        text_enc = build_text_encoder("auto")
        stage = self._stage("features", {
            "data": self.data_key, "image_model": image_enc.info, "text_model": text_enc.info,
            "text_identity": text_enc.identity, "image_size": cfg.feature_image_size})
        path = stage.path / "features.npy"
        clock = StageTimer(stage)
        if stage.done and path.is_file():
            log.info("features: cached (%s)", stage.path.name)
            feats = np.load(path, allow_pickle=False)
        else:
            feats = pair_features(self.dataset, image_model=image_enc, text_model=text_enc,
                                  image_size=cfg.feature_image_size, cache=False,
                                  device=self.c.device)
            buf = io.BytesIO()
            np.save(buf, feats, allow_pickle=False)
            atomic_write_bytes(path, buf.getvalue())
            stage.mark_done({"seconds": round(clock.total(), 3), "shape": list(feats.shape)})
        self.timings["features"] = float(stage.summary().get("seconds", clock.total()))
        self.feature_encoders = {"image": image_enc.info, "text": text_enc.info}
        return stage, feats

    def select_medoids(self) -> list[dict[str, Any]]:
        """Medoid records (dataset indices), in output order, with their cluster sizes."""
        from gitd.stages.cluster import clara, random_medoids

        cfg = self.cfg
        X = None
        if cfg.cluster and cfg.cluster_space == "features":
            feat_stage, X = self.features()
            valid = np.arange(len(self.dataset))
            upstream = feat_stage.key
        elif cfg.cluster or cfg.diffusion:
            shared = self.shared_latents()
            enc_stage, store = self.encode("encode", "generate" if shared else "cluster",
                                           self.dataset.records, self.data_key)
            self.extra_problems = list(store.problems)
            if shared:
                self.latents = store
            valid = np.asarray(store.valid_indices)
            X = store.matrix(valid_only=True)
            upstream = enc_stage.key
        else:
            # Neither clustering nor diffusion needs latents: random medoids over all valid rows.
            valid = np.arange(len(self.dataset))
            upstream = self.data_key
        if cfg.pairs > len(valid):
            raise ConfigError(f"asked for {cfg.pairs} pairs but only {len(valid)} images "
                              "could be read")
        stage = self._stage("cluster", {
            "upstream": upstream, "k": cfg.pairs, "method": "clara" if cfg.cluster else "random",
            "space": cfg.cluster_space if cfg.cluster else None,
            "n_samples": cfg.clara_samples, "sample_size": cfg.clara_sample_size,
            "seed": cfg.seed,
        })
        result_path = stage.path / "medoids.json"
        cached = read_json(result_path)
        if stage.done and cached:
            log.info("cluster: cached (%s)", stage.path.name)
        else:
            clock = StageTimer(stage)
            if cfg.cluster:
                extra = {} if cfg.clara_samples is None else {"n_samples": cfg.clara_samples}
                res = clara(X, cfg.pairs, sample_size=cfg.clara_sample_size, seed=cfg.seed,
                            device=self.c.device, **extra)
            else:
                res = random_medoids(X if X is not None else len(valid), cfg.pairs,
                                     seed=cfg.seed)
            medoid_rows = [int(valid[i]) for i in res.medoids]
            sizes = ([int(s) for s in res.sizes] if res.sizes is not None
                     else [1] * len(medoid_rows))
            cost = float(res.cost)
            cached = {
                "medoids": medoid_rows,
                "ids": [self.dataset[i].id for i in medoid_rows],
                "sizes": sizes,
                "cost": None if cost != cost else cost,  # NaN when there was nothing to measure
                "method": "clara" if cfg.cluster else "random",
                "sample_size": res.sample_size,
                "sample_costs": [float(c) for c in (res.sample_costs or [])],
            }
            atomic_write_json(result_path, cached)
            stage.mark_done({"seconds": round(clock.total(), 3)})
        self.timings["cluster"] = float(stage.summary().get("seconds", 0.0))
        self.cluster_summary = {k: cached.get(k) for k in
                                ("method", "cost", "sizes", "sample_size", "sample_costs")}
        self.cluster_summary["medoid_ids"] = cached["ids"]
        if cfg.cluster:
            self.cluster_summary["space"] = cfg.cluster_space
            if cfg.cluster_space == "latents":
                self.cluster_summary["vae"] = cfg.vae_source("cluster")[0]
            else:
                self.cluster_summary["feature_encoders"] = self.feature_encoders
        self._cluster_key = stage.key
        return [{"record": r, "size": s} for r, s in zip(cached["medoids"], cached["sizes"])]

    # -- generate ------------------------------------------------------------------------
    def medoid_latents(self, medoids: list[dict[str, Any]]):
        """(latents array, row of medoid j in it, upstream stage key) for img2img."""
        if self.latents is not None:  # every image encoded with the generation VAE already
            return (self.latents.latents, [m["record"] for m in medoids], self._cluster_key)
        records = [self.dataset[m["record"]] for m in medoids]
        stage, store = self.encode("encode-medoids", "generate", records, self._cluster_key)
        if not store.valid.all():
            raise DataError(f"a medoid image could not be encoded: {store.problems[0]}")
        return store.latents, list(range(len(medoids))), stage.key

    def generate(self, medoids: list[dict[str, Any]]) -> list[dict[str, Any]]:
        from gitd.data.images import open_rgb

        cfg = self.cfg
        if not cfg.diffusion:
            self._image_key = self._cluster_key
            self.timings["generate"] = 0.0
            # /D: the medoid's own image, copied byte for byte into the output.
            return [{"image": self.dataset[m["record"]].image, "scores": {}} for m in medoids]
        latents, rows, upstream = self.medoid_latents(medoids)
        stage = self._stage("generate", {
            "upstream": upstream, "model": cfg.diffusion_model,
            "revision": cfg.diffusion_revision, "vae": cfg.vae_source("generate")[:2],
            "resolution": cfg.resolution,
            "strength": cfg.strength, "guidance_scale": cfg.guidance_scale,
            "steps": cfg.num_inference_steps, "candidates": cfg.num_candidates,
            "negative_prompt": cfg.negative_prompt, "prompt": cfg.prompt,
            "score_model": cfg.score_model if cfg.score else None, "score": cfg.score,
            "batch": cfg.generate_batch_size, "seed": cfg.seed, "dtype": str(self.c.dtype),
        })
        self._image_key = stage.key
        clock = StageTimer(stage)
        k = len(medoids)
        pipe = scorer = None

        def compute(chunk: range) -> list:
            import torch

            from gitd.stages.generate import generate_candidates

            nonlocal pipe, scorer
            if pipe is None:
                pipe = self.c.get_img2img()
                scorer = self.c.get_score_model() if cfg.score else None
            lat = torch.from_numpy(np.asarray(latents[[rows[j] for j in chunk]],
                                              dtype=np.float32))
            prompts = [self.prompt_of(self.dataset[medoids[j]["record"]]) for j in chunk]
            seeds = [derive_seed(cfg.seed, "generate", j) for j in chunk]
            cands = generate_candidates(
                pipe, lat, prompts, negative_prompt=cfg.negative_prompt,
                strength=cfg.strength, guidance_scale=cfg.guidance_scale,
                num_inference_steps=cfg.num_inference_steps,
                num_candidates=cfg.num_candidates, seeds=seeds)
            return list(zip(prompts, seeds, cands))

        def write(j: int, result) -> None:
            from gitd.stages.generate import select_best

            prompt, seed, cand = result
            best, scores = (select_best(scorer, cand, prompt, use_score=True)
                            if scorer is not None else (0, []))
            atomic_save_image(unit_path(stage, j, ".png"), cand[best])
            atomic_write_json(unit_path(stage, j), {
                "prompt": prompt, "seed": seed, "candidate_scores": [float(x) for x in scores],
                "chosen_candidate": int(best)})

        run_units(stage, k, cfg.generate_batch_size, compute, write, noun="medoid",
                  on_written=self._written("generate", clock))
        stage.mark_done({"seconds": round(clock.total(), 3)})
        self.timings["generate"] = round(clock.total(), 3)
        results = []
        for j in range(k):
            meta = read_json(unit_path(stage, j), {})
            results.append({"image": open_rgb(unit_path(stage, j, ".png")), "scores": {
                "image_prompt_scores": meta.get("candidate_scores", []),
                "chosen_candidate": meta.get("chosen_candidate", 0)}})
        return results

    def _written(self, name: str, clock: StageTimer) -> Callable[[int], None]:
        def after(j: int) -> None:
            clock.save()
            if self.on_unit:
                self.on_unit(name, j)
        return after

    # -- caption -------------------------------------------------------------------------
    def caption(self, medoids: list[dict[str, Any]],
                images: list[dict[str, Any]]) -> list[dict[str, Any]]:
        from gitd.data.images import open_rgb

        cfg = self.cfg
        if not cfg.captioner_on:
            self.timings["caption"] = 0.0
            # /T: the medoid's own caption (the one used as the prompt).
            return [{"caption": self.prompt_of(self.dataset[m["record"]]), "scores": {}}
                    for m in medoids]
        stage = self._stage("caption", {
            "upstream": self._image_key, "model": cfg.captioner,
            "captions": cfg.num_captions, "temperature": cfg.temperature, "top_p": cfg.top_p,
            "max_new_tokens": cfg.max_new_tokens,
            "score_model": cfg.score_model if cfg.score else None, "score": cfg.score,
            "batch": cfg.caption_batch_size, "seed": cfg.seed, "dtype": str(self.c.dtype),
        })
        clock = StageTimer(stage)
        k = len(medoids)
        captioner = scorer = None

        def compute(chunk: range) -> list:
            from gitd.stages.caption import caption_images

            nonlocal captioner, scorer
            if captioner is None:
                captioner = self.c.get_captioner()
                scorer = self.c.get_score_model() if cfg.score else None
            imgs = [images[j]["image"] for j in chunk]
            imgs = [open_rgb(im) if isinstance(im, (str, Path)) else im for im in imgs]
            seeds = [derive_seed(cfg.seed, "caption", j) for j in chunk]
            results = caption_images(
                captioner, scorer, imgs, num_captions=cfg.num_captions,
                temperature=cfg.temperature, top_p=cfg.top_p,
                max_new_tokens=cfg.max_new_tokens, seeds=seeds, use_score=cfg.score)
            return list(zip(seeds, results))

        def write(j: int, result) -> None:
            seed, res = result
            atomic_write_json(unit_path(stage, j), {
                "caption": res.best, "candidates": list(res.candidates),
                "scores": [float(x) for x in res.scores], "seed": seed})

        run_units(stage, k, cfg.caption_batch_size, compute, write, noun="image",
                  on_written=self._written("caption", clock))
        stage.mark_done({"seconds": round(clock.total(), 3)})
        self.timings["caption"] = round(clock.total(), 3)
        out = []
        for j in range(k):
            meta = read_json(unit_path(stage, j), {})
            out.append({"caption": meta["caption"], "scores": {
                "caption_candidates": meta.get("candidates", []),
                "caption_scores": meta.get("scores", [])}})
        return out
