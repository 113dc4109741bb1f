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
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from gitd.config import DistillConfig
from gitd.data import Dataset
from gitd.data.formats import dataset_fingerprint, load_dataset, note_input_change
from gitd.data.output import OutputPair, write_output
from gitd.errors import ConfigError, GitdError
from gitd.log import get_logger, progress
from gitd.outdir import Inputs, OutputFolder
from gitd.store import (Stage, StageTimer, atomic_save_image, atomic_write_json,
                        read_json, require, run_units, unit_image, unit_json, unit_path)

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
    img2img: Any = None
    score_model: Any = None
    captioner: Any = None

    def get_vae(self):
        if self.vae is None:
            from gitd.models import build_vae

            self.vae = build_vae(self.config.diffusion_model, device=self.device, dtype=self.dtype,
                                 seed=self.config.seed, revision=self.config.diffusion_revision)
        return self.vae

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
            components: Components | None = None, config_file: str | Path | None = None,
            on_unit: Callable[[str, int], None] | None = None) -> Path:
    """Distil the dataset at ``data`` into ``config.pairs`` pairs written to ``out``.

    ``out`` may not overlap the dataset (or ``config_file``) and is replaced as a whole
    (``gitd.outdir``). ``on_unit(stage, index)`` is called after each finished medoid is written
    (tests use it to interrupt a run at a known point). Returns ``out``.
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
    folder = OutputFolder.prepare(out, command="distill", work=work, inputs=Inputs().dataset(
        dataset).file(config_file, "config file"))
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
    with folder.replace() as staging:
        write_output(staging, pairs, manifest)
        # The settings alone, loadable with `gitd distill --config OUT/config.json`.
        atomic_write_json(staging / "config.json", config.to_dict())
        timings["output"] = round(time.perf_counter() - t_out, 3)
        # The manifest is written once more so that it carries the output stage's own time.
        atomic_write_json(staging / "manifest.json",
                          {**read_json(staging / "manifest.json"), "timings": timings})
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
        note_input_change(work, dataset, self.data_key)
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

    def _stage(self, name: str, settings: dict[str, Any],
               prepare: Callable[[], Any] | None = None) -> Stage:
        stage = Stage.open(self.work, name, settings, prepare=prepare)
        self.stage_keys[name] = stage.key
        return stage

    # -- encode + cluster ----------------------------------------------------------------
    def encode(self):
        from gitd.stages.encode import LatentStore, encode_latents

        cfg = self.cfg
        resolution = cfg.cluster_resolution or cfg.resolution
        stage = self._stage("encode", {
            "data": self.data_key, "ids": len(self.dataset), "vae": cfg.diffusion_model,
            "revision": cfg.diffusion_revision, "resolution": resolution,
            "sample_latents": cfg.sample_latents,
            "seed": cfg.seed if cfg.sample_latents else None,
            "dtype": str(self.c.dtype),
        }, prepare=self.c.get_vae)

        def load() -> LatentStore:
            return LatentStore.open(stage.path).check(self.dataset.ids)

        def compute() -> None:
            if cfg.ray is not None:
                from gitd.stages.raydata import encode_latents_ray

                encode_latents_ray(self.dataset.records, self._vae_for_actors(), stage.path,
                                   resolution=resolution, batch_size=cfg.encode_batch_size,
                                   sample=cfg.sample_latents, seed=cfg.seed, dtype=self.c.dtype,
                                   workers=cfg.ray_workers, address=cfg.ray)
                return
            encode_latents(self.dataset.records, self.c.get_vae(), stage.path,
                           resolution=resolution, batch_size=cfg.encode_batch_size,
                           num_workers=cfg.encode_workers, sample=cfg.sample_latents,
                           seed=cfg.seed, device=self.c.device, dtype=self.c.dtype)

        store = stage.cached(load, compute)
        self.timings["encode"] = float(stage.summary().get("seconds", 0.0))
        self.extra_problems = list(store.problems)
        self.latents = store
        return stage, store

    def _vae_for_actors(self):
        """What Ray's encoder actors build their VAE from: the model given to this run (tests),
        else a registry call that each actor makes for itself (weights are not shipped)."""
        if self.c.vae is not None:
            return self.c.vae
        import functools

        from gitd.models import build_vae

        cfg = self.cfg
        return functools.partial(build_vae, cfg.diffusion_model, device="cpu", dtype=self.c.dtype,
                                 seed=cfg.seed, revision=cfg.diffusion_revision)

    def medoid_latents(self, rows: list[int]):
        """Latents of the medoids at the generation resolution: the clustering latents when
        they were made at it, else the medoids alone encoded again (``--cluster-resolution``)."""
        cfg = self.cfg
        if not cfg.cluster_resolution or cfg.cluster_resolution == cfg.resolution:
            return np.asarray(self.latents.latents[rows], dtype=np.float32)
        from gitd.stages.encode import LatentStore, encode_latents

        stage = self._stage("encode-medoids", {
            "upstream": self._cluster_key, "vae": cfg.diffusion_model,
            "revision": cfg.diffusion_revision, "resolution": cfg.resolution,
            "sample_latents": cfg.sample_latents,
            "seed": cfg.seed if cfg.sample_latents else None, "dtype": str(self.c.dtype)})
        medoids = [self.dataset[r] for r in self._medoid_rows]

        def load() -> LatentStore:
            return LatentStore.open(stage.path).check([r.id for r in medoids])

        def compute() -> None:
            encode_latents(medoids, self.c.get_vae(), stage.path, resolution=cfg.resolution,
                           batch_size=cfg.encode_batch_size, num_workers=0,
                           sample=cfg.sample_latents, seed=cfg.seed, device=self.c.device,
                           dtype=self.c.dtype)

        store = stage.cached(load, compute)
        where = {r: j for j, r in enumerate(self._medoid_rows)}
        return np.asarray(store.latents[[where[r] for r in rows]], dtype=np.float32)

    def select_medoids(self) -> list[dict[str, Any]]:
        """Medoid records (dataset indices), in output order, with their cluster sizes."""
        from gitd.stages.cluster import clara, random_medoids

        cfg = self.cfg
        need_latents = cfg.cluster or cfg.diffusion
        if need_latents:
            enc_stage, store = self.encode()
            valid = np.asarray(store.valid_indices)
            upstream = enc_stage.key
        else:
            # Neither clustering nor diffusion needs latents: random medoids over all valid rows.
            store = None
            valid = np.arange(len(self.dataset))
            upstream = self.data_key
        if cfg.pairs > len(valid):
            raise ConfigError(f"asked for {cfg.pairs} pairs but only {len(valid)} images "
                              "could be read")
        stage = self._stage("cluster", {
            "upstream": upstream, "k": cfg.pairs, "method": "clara" if cfg.cluster else "random",
            "n_samples": cfg.clara_samples, "sample_size": cfg.clara_sample_size,
            "seed": cfg.seed,
        })
        result_path = stage.path / "medoids.json"
        usable = set(valid.tolist())

        def load() -> dict[str, Any]:
            res = read_json(result_path)
            require(isinstance(res, dict), "medoids.json is missing or not a JSON object")
            rows, sizes = res["medoids"], res["sizes"]
            require(isinstance(rows, list) and len(rows) == cfg.pairs
                    and all(r in usable for r in rows),
                    f"medoids.json does not hold {cfg.pairs} usable rows")
            require(isinstance(sizes, list) and len(sizes) == len(rows)
                    and all(isinstance(x, int) for x in sizes), "medoids.json has bad sizes")
            require(res["ids"] == [self.dataset[r].id for r in rows],
                    "medoids.json names other images than the dataset's")
            return res

        def compute() -> None:
            if cfg.cluster:
                extra = {} if cfg.clara_samples is None else {"n_samples": cfg.clara_samples}
                if cfg.ray is not None:
                    # Assignment passes as Ray tasks over spans of rows; each task reads its
                    # own rows from the latent files (same chunks, same result).
                    from gitd.stages.raydata import connect, map_spans

                    connect(cfg.ray)
                    extra["mapper"] = map_spans
                res = clara(store.matrix(valid_only=True, files=cfg.ray is not None), cfg.pairs,
                            sample_size=cfg.clara_sample_size, seed=cfg.seed,
                            device=self.c.device, **extra)
            else:
                res = random_medoids(store.matrix(valid_only=True) if store is not None
                                     else len(valid), cfg.pairs, seed=cfg.seed)
            medoid_rows = [int(valid[i]) for i in res.medoids]
            sizes = ([int(s) for s in res.sizes] if res.sizes is not None
                     else [1] * len(medoid_rows))
            cost = float(res.cost)
            atomic_write_json(result_path, {
                "medoids": medoid_rows,
                "ids": [self.dataset[i].id for i in medoid_rows],
                "sizes": sizes,
                "cost": None if cost != cost else cost,  # NaN when there was nothing to measure
                "method": "clara" if cfg.cluster else "random",
                "sample_size": res.sample_size,
                "sample_costs": [float(c) for c in (res.sample_costs or [])],
            })

        cached = stage.cached(load, compute)
        self.timings["cluster"] = float(stage.summary().get("seconds", 0.0))
        self.cluster_summary = {k: cached.get(k) for k in
                                ("method", "cost", "sizes", "sample_size", "sample_costs")}
        self.cluster_summary["medoid_ids"] = cached["ids"]
        self._cluster_key = stage.key
        self._medoid_rows = list(cached["medoids"])
        return [{"record": r, "size": s} for r, s in zip(cached["medoids"], cached["sizes"])]

    # -- generate ------------------------------------------------------------------------
    def generate(self, medoids: list[dict[str, Any]]) -> list[dict[str, Any]]:
        cfg = self.cfg
        if not cfg.diffusion:
            self._image_key = self._cluster_key
            self.timings["generate"] = 0.0
            # /D: the medoid's own image, copied byte for byte into the output.
            return [{"image": self.dataset[m["record"]].image, "scores": {}} for m in medoids]
        stage = self._stage("generate", {
            "upstream": self._cluster_key, "model": cfg.diffusion_model,
            "revision": cfg.diffusion_revision, "resolution": cfg.resolution,
            "strength": cfg.strength, "guidance_scale": cfg.guidance_scale,
            "steps": cfg.num_inference_steps, "candidates": cfg.num_candidates,
            "negative_prompt": cfg.negative_prompt, "prompt": cfg.prompt,
            "score_model": cfg.score_model if cfg.score else None, "score": cfg.score,
            "batch": cfg.generate_batch_size, "seed": cfg.seed, "dtype": str(self.c.dtype),
        }, prepare=lambda: (self.c.get_img2img(), cfg.score and self.c.get_score_model()))
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
            rows = [medoids[j]["record"] for j in chunk]
            lat = torch.from_numpy(self.medoid_latents(rows))
            prompts = [self.prompt_of(self.dataset[r]) for r in rows]
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

        def load(j: int) -> dict[str, Any]:
            meta = unit_json(stage, j, "prompt", "seed", "candidate_scores", "chosen_candidate")
            return {"image": unit_image(stage, j), "scores": {
                "image_prompt_scores": meta["candidate_scores"],
                "chosen_candidate": meta["chosen_candidate"]}}

        results = run_units(stage, k, cfg.generate_batch_size, compute, write, load,
                            noun="medoid", on_written=self._written("generate", clock))
        stage.mark_done({"seconds": round(clock.total(), 3)})
        self.timings["generate"] = round(clock.total(), 3)
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
        from gitd.data.images import is_image_ref, open_rgb
        from gitd.stages.caption import caption_images, load_caption_unit

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
        }, prepare=lambda: (self.c.get_captioner(), cfg.score and self.c.get_score_model()))
        clock = StageTimer(stage)
        k = len(medoids)
        captioner = scorer = None

        def compute(chunk: range) -> list:

            nonlocal captioner, scorer
            if captioner is None:
                captioner = self.c.get_captioner()
                scorer = self.c.get_score_model() if cfg.score else None
            imgs = [images[j]["image"] for j in chunk]
            imgs = [open_rgb(im) if is_image_ref(im) else im for im in imgs]
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

        out = run_units(stage, k, cfg.caption_batch_size, compute, write,
                        lambda j: load_caption_unit(stage, j), noun="image",
                        on_written=self._written("caption", clock))
        stage.mark_done({"seconds": round(clock.total(), 3)})
        self.timings["caption"] = round(clock.total(), 3)
        return out
