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

from dataclasses import dataclass
from typing import Any

import numpy as np

from gitd.data import Dataset
from gitd.data.output import OutputPair
from gitd.errors import ConfigError, DataError
from gitd.methods.base import DistillMethod, DistillSettings
from gitd.models.roles import Role, Runtime
from gitd.registry import register_method
from gitd.settings import Boolean, Interval, Options, Text, setting
from gitd.stages.caption_synthesis import TINY as VLM_TINY
from gitd.stages.caption import CaptionerFields, caption_stage
from gitd.stages.cluster import ClusterSettings, cluster_stage
from gitd.stages.encode import EncodeSettings, encode_stage
from gitd.stages.img2img import GenerateSettings, generate_stage
from gitd.stages.pair_features import FeatureSettings, features_stage
from gitd.store import StagePlan


@dataclass(frozen=True)
class GitdSettings(CaptionerFields, DistillSettings):
    """GITD's settings (the captioner's from ``CaptionerFields``); the defaults are the
    ``paper`` preset."""

    resolution: int = setting(512, Interval(int, 8, 4096, multiple_of=8),
                              "image side in pixels for encoding and generation (the VAE "
                              "downsamples by 8)")
    # Models, by registry name or Hugging Face id; a revision pins a commit/tag of a real id.
    diffusion_model: str = setting("stable-diffusion-v1-5/stable-diffusion-v1-5", Text(),
                                   "Stable Diffusion id or folder (VAE + UNet + text encoder), "
                                   "or tiny-sd")
    diffusion_revision: str | None = setting(None, Text(), "revision (commit/tag) of the "
                                             "diffusion model", optional=True, metavar="REV")
    score_model: str = setting("openai/clip-vit-base-patch32", Text(),
                               "CLIP id or folder that picks candidates and captions, or "
                               "tiny-clip")
    score_revision: str | None = setting(None, Text(), "revision (commit/tag) of the score "
                                         "model", optional=True, metavar="REV")
    # Image generation (img2img from each medoid's latent).
    strength: float = setting(0.7, Interval(float, 0, 1, closed="right"),
                              "img2img strength: fraction of the schedule run from the "
                              "medoid's latent")
    guidance_scale: float = setting(8.0, Interval(float, 0, None),
                                    "classifier-free guidance scale")
    num_inference_steps: int = setting(50, Interval(int, 1, 1000), "scheduler steps (about "
                                       "strength x steps are run)")
    num_candidates: int = setting(4, Interval(int, 1, 64), "images generated per medoid; the "
                                  "score model keeps one")
    negative_prompt: str = setting("cartoon, anime, painting", Text(empty=True),
                                   "negative prompt for generation")
    prompt: str = setting("longest", Options("longest", "first"),
                          "which of the medoid's captions prompts the generator")
    # Encoding and clustering.
    encode_batch_size: int = setting(16, Interval(int, 1, 4096), "images per VAE batch")
    encode_workers: int = setting(2, Interval(int, 0, 256), "DataLoader processes that decode "
                                  "images for encoding (decoding is exact, so not part of any "
                                  "key)", affects_results=False)
    sample_latents: bool = setting(False, Boolean(), "sample VAE latents instead of taking "
                                   "their mean")
    # VAEs by registry name, Hugging Face id or folder (SD's AutoencoderKL or TAESD's
    # AutoencoderTiny). ``vae`` encodes the latents img2img starts from and is the pipeline's
    # decoder; ``cluster_vae`` makes the latents CLARA clusters, after which only the k medoids
    # are encoded with ``vae``.
    vae: str | None = setting(None, Text(), "VAE for img2img's latents and decoding: SD VAE or "
                              "TAESD id or folder (e.g. madebyollin/taesd); default the "
                              "diffusion model's own", optional=True, metavar="VAE")
    cluster_vae: str | None = setting(None, Text(), "VAE whose latents are clustered (e.g. a "
                                      "TAESD folder); only the medoids are then encoded with "
                                      "--vae; default the same as --vae", optional=True,
                                      metavar="VAE")
    cluster_space: str = setting("latents", Options("latents", "features"),
                                 "what CLARA clusters: latents (the paper) or features (the "
                                 "evaluation encoders' image + caption embeddings, the space "
                                 "herding and k-center use)")
    feature_image_size: int = setting(224, Interval(int, 16, 4096), "image side in pixels for "
                                      "--cluster-space features")
    clara_samples: int | None = setting(None, Interval(int, 1, 1000), "CLARA: number of random "
                                        "samples (default 5)", optional=True)
    clara_sample_size: int | None = setting(None, Interval(int, 1, 100_000_000),
                                            "CLARA: rows per sample (default max(80 + 4k, 1000))",
                                            optional=True)
    # Clustering on smaller latents than generation: every image encoded at this side, only the
    # k medoids encoded again at ``resolution`` (unset: ``resolution``, as the paper).
    cluster_resolution: int | None = setting(
        None, Interval(int, 8, 4096, multiple_of=8),
        "encode every image at this side for clustering and re-encode only the medoids at "
        "--resolution (default: --resolution, as the paper); 256 cuts encode time and latent "
        "storage about 4x at 512", optional=True)
    # Encoding and clustering's assignment passes on Ray (gitd.stages.ray_encode). The output is
    # byte-identical to the plain run (tests/stages/test_stage_ray_encode.py), so neither is part
    # of any key. The flag takes an optional value (bare --ray: $RAY_ADDRESS, else auto), which
    # the generated flags cannot say: gitd.cli.distill adds it.
    ray: str | None = setting(None, Text(empty=True), "run encoding and clustering's "
                              "assignment passes on Ray: 'local' starts a private cluster here, "
                              "'auto' joins the running one, or a Ray address; '' takes "
                              "$RAY_ADDRESS (else auto). Same output as without it; needs pip "
                              "install 'gitd[ray]' (gitd only)", optional=True,
                              affects_results=False, metavar="ADDRESS", flags=("--ray",),
                              cli=False)
    ray_workers: int | None = setting(None, Interval(int, 1, 100_000), "with --ray: encoder "
                                      "actors (default: one per GPU, else half the CPUs)",
                                      optional=True, affects_results=False)
    # Medoids per img2img call. Part of the cache key, because batch composition can change
    # low-order bits of GPU results.
    generate_batch_size: int = setting(2, Interval(int, 1, 1024), "medoids per img2img call")
    # Ablation switches (the paper's /C, /D, /T, /S when False).
    cluster: bool = setting(True, Boolean(), "CLARA medoids; --no-cluster: random medoids (the "
                            "paper's /C ablation)", flags=("--cluster", "--no-cluster"))
    diffusion: bool = setting(True, Boolean(), "img2img; --no-diffusion: the medoid's original "
                              "image (/D)", flags=("--diffusion", "--no-diffusion"))
    captioner_on: bool = setting(True, Boolean(), "the captioner; --no-captioner: the medoid's "
                                 "original caption (/T)",
                                 flags=("--captioner-on", "--no-captioner"))
    score: bool = setting(True, Boolean(), "the score model picks; --no-score: the first "
                          "candidate (/S)", flags=("--score", "--no-score"))

    def vae_source(self, role: str = "generate") -> tuple[str, str | None, dict[str, Any]]:
        """(name, revision, builder options) of the VAE for ``role``: ``generate`` (img2img's
        latents and decoder) or ``cluster``. A VAE named by itself (not the diffusion model's
        ``vae/``) is loaded ``standalone``."""
        if role not in ("generate", "cluster"):
            raise ValueError(f"role must be generate or cluster, got {role!r}")
        name = self.vae
        if role == "cluster" and self.cluster_vae is not None:
            name = self.cluster_vae
        if name is None or name == self.diffusion_model:
            return self.diffusion_model, self.diffusion_revision, {}
        return name, None, {"standalone": True}

    def shared_latents(self) -> bool:
        """True when one encode of every image with the generation VAE serves both clustering
        and img2img (the paper; also /C); else clustering reads its own space and only the
        medoids are encoded with the generation VAE (stage ``encode-medoids``)."""
        return not self.cluster or (self.cluster_space == "latents" and
                                    self.vae_source("cluster") == self.vae_source("generate"))


# Presets hold every setting they fix, so that reading one tells the whole story.
_PAPER = {
    "resolution": 512, "diffusion_model": "stable-diffusion-v1-5/stable-diffusion-v1-5",
    "score_model": "openai/clip-vit-base-patch32", "captioner": "Salesforce/blip2-opt-6.7b-coco",
    "strength": 0.7, "guidance_scale": 8.0, "num_inference_steps": 50, "num_candidates": 4,
    "num_captions": 5, "temperature": 0.7, "top_p": 0.9, "max_new_tokens": 30,
    "negative_prompt": "cartoon, anime, painting", "prompt": "longest",
    "generate_batch_size": 2, "caption_batch_size": 8,
}
# Real models, about 6x less compute: SD 1.5 at 384 px (latent 4x48x48) with 25 steps and 2
# candidates, and BLIP-base (0.25B) instead of BLIP-2 OPT-6.7B. Fits a 6-8 GB GPU.
_FAST = {**_PAPER, "resolution": 384, "captioner": "Salesforce/blip-image-captioning-base",
         "num_inference_steps": 25, "num_candidates": 2, "num_captions": 3,
         "generate_batch_size": 4}
# Tiny random-weight models of the same classes (gitd.models.tiny): fully offline and
# deterministic, for tests and for trying the pipeline end to end. Output is noise.
_TINY = {**_PAPER, "resolution": 64, "diffusion_model": "tiny-sd", "score_model": "tiny-clip",
         "captioner": "tiny-blip", "num_inference_steps": 4, "num_candidates": 2,
         "num_captions": 2, "max_new_tokens": 8, "encode_batch_size": 8, "encode_workers": 0,
         "generate_batch_size": 4, **VLM_TINY}
# The real presets' architectures and settings with random weights (gitd.models.fullsize): they
# cost what the real runs cost, offline. BLIP-2 OPT-6.7B is not built (31 GB in float32); both
# caption with BLIP base.
_RANDOM_MODELS = {"diffusion_model": "random-sd15", "score_model": "random-clip-b32",
                  "captioner": "random-blip-base"}


@register_method("gitd")
class Gitd(DistillMethod):
    """GITD: VAE latents, CLARA medoids, img2img per medoid, captioner, CLIP picks (no training)."""

    Settings = GitdSettings
    presets = {"paper": _PAPER, "fast": _FAST, "tiny": _TINY,
               "random-paper": {**_PAPER, **_RANDOM_MODELS},
               "random-fast": {**_FAST, **_RANDOM_MODELS}}
    roles = {
        # The generation VAE: img2img's starting latents and its decoder (also the clustered
        # latents unless cluster_vae or cluster_space says otherwise).
        "vae": Role("vae", "diffusion_model", "diffusion_revision",
                    source=lambda s: s.vae_source("generate"),
                    used=lambda s: s.diffusion or (s.cluster and s.shared_latents())),
        "cluster_vae": Role("vae", "diffusion_model", "diffusion_revision",
                            source=lambda s: s.vae_source("cluster"),
                            used=lambda s: (s.cluster and s.cluster_space == "latents"
                                            and not s.shared_latents())),
        "img2img": Role("img2img", "diffusion_model", "diffusion_revision", shares=("vae",),
                        used=lambda s: s.diffusion),
        # The score model picks among candidates (images or captions): with neither generated,
        # it is never built.
        "score": Role("score", "score_model", "score_revision",
                      used=lambda s: s.score and (s.diffusion or s.captioner_on)),
        "captioner": Role("captioner", "captioner", "captioner_revision",
                          used=lambda s: s.captioner_on),
    }

    @classmethod
    def stages(cls, s: GitdSettings, rt: Runtime) -> dict[str, StagePlan]:
        def ref(role):
            return cls.roles[role].ref(s)

        def encode(role: str, resolution: int, **where) -> EncodeSettings:
            return EncodeSettings(
                vae=ref(role), resolution=resolution, sample=s.sample_latents,
                seed=s.seed if s.sample_latents else None, batch_size=s.encode_batch_size,
                dtype=rt.dtype_name, device=rt.device_type, **where)

        plan: dict[str, StagePlan] = {}
        shared = s.shared_latents()
        cluster_resolution = s.cluster_resolution or s.resolution
        if s.cluster and s.cluster_space == "features":
            from gitd.models.encoders import image_model_identity, text_model_identity

            plan["features"] = StagePlan(FeatureSettings(
                image_model="auto", text_model="auto", image_identity=image_model_identity("auto"),
                text_identity=text_model_identity("auto"), image_size=s.feature_image_size,
                device=rt.device_type))
        elif s.cluster or s.diffusion:
            plan["encode"] = StagePlan(encode("vae" if shared else "cluster_vae",
                                              cluster_resolution, workers=s.encode_workers,
                                              ray=s.ray, ray_workers=s.ray_workers))
        plan["cluster"] = StagePlan(ClusterSettings(
            k=s.pairs, method="clara" if s.cluster else "random", n_samples=s.clara_samples,
            sample_size=s.clara_sample_size, seed=s.seed, device=rt.device_type,
            ray=s.ray if s.cluster else None),
            upstream=next((u for u in ("features", "encode") if u in plan), "data"))
        if s.diffusion and (not shared or cluster_resolution != s.resolution):
            # Clustering read another space or resolution (--cluster-vae, --cluster-space,
            # --cluster-resolution): only the k medoids are encoded for img2img, in this process.
            plan["encode-medoids"] = StagePlan(encode("vae", s.resolution, workers=0),
                                               upstream="cluster")
        score = ref("score") if s.score else None
        if s.diffusion:
            plan["generate"] = StagePlan(GenerateSettings(
                img2img=ref("img2img"), score=score, resolution=s.resolution,
                strength=s.strength, guidance_scale=s.guidance_scale,
                steps=s.num_inference_steps, candidates=s.num_candidates,
                negative_prompt=s.negative_prompt, prompt=s.prompt,
                batch_size=s.generate_batch_size, seed=s.seed, dtype=rt.dtype_name,
                device=rt.device_type),
                upstream="encode-medoids" if "encode-medoids" in plan else "cluster")
        if s.captioner_on:
            plan["caption"] = StagePlan(s.caption_settings(ref("captioner"), score, rt),
                                        upstream="generate" if s.diffusion else "cluster")
        return cls.with_caption_synthesis(plan, s, rt)

    def _vae_for_actors(self):
        """What Ray's encoder actors build their VAE from: the model given to this run (tests),
        else a registry call that each actor makes for itself (weights are not shipped)."""
        role = "vae" if self.settings.shared_latents() else "cluster_vae"
        if role in (self.given_models or {}):
            return self.given_models[role]
        import functools

        from gitd.models.registry import build

        role = "vae" if self.settings.shared_latents() else "cluster_vae"
        ref = self.roles[role].ref(self.settings)
        return functools.partial(build, ref.kind, ref.name, device="cpu", dtype=self.models.dtype,
                                 seed=self.settings.seed, revision=ref.revision)

    def prompt_of(self, rec) -> str:
        # The paper prompts with the longest of the medoid's captions.
        return rec.captions[0] if self.settings.prompt == "first" else rec.longest_caption

    def distill(self, dataset: Dataset) -> tuple[list[OutputPair], dict[str, Any]]:
        s, runner, models = self.settings, self.runner, self.models
        plan = runner.plan
        scorer = (lambda: models.get("score")) if s.score else None

        # -- encode + cluster ------------------------------------------------------------
        store, feats, problems = None, None, []
        shared = s.shared_latents()
        if "features" in plan:
            feats = features_stage(runner, "features", plan["features"].settings, dataset,
                                   device=models.device)
            valid = np.arange(len(dataset))
        elif "encode" in plan:
            store = encode_stage(runner, "encode", plan["encode"].settings, dataset.records,
                                 lambda: models.get("vae" if shared else "cluster_vae"),
                                 device=models.device, dtype=models.dtype,
                                 vae_for_actors=self._vae_for_actors)
            problems = list(store.problems)
            valid = np.asarray(store.valid_indices)
        else:
            # Neither clustering nor diffusion needs latents: random medoids over all valid rows.
            valid = np.arange(len(dataset))
        if s.pairs > len(valid):
            raise ConfigError(f"asked for {s.pairs} pairs but only {len(valid)} images "
                              "could be read")
        cached = cluster_stage(
            runner, "cluster", plan["cluster"].settings,
            lambda: (feats if feats is not None else
                     store.matrix(valid_only=True, files=plan["cluster"].settings.ray is not None)
                     if store is not None else None), valid,
            [r.id for r in dataset], device=models.device)
        medoids = list(zip(cached["medoids"], cached["sizes"]))
        prompts = [self.prompt_of(dataset[r]) for r, _ in medoids]

        # -- generate --------------------------------------------------------------------
        if "generate" in plan:
            rows = [r for r, _ in medoids]
            latents = None if "encode-medoids" in plan else store.latents
            if "encode-medoids" in plan:
                # Clustering read another space or resolution: the medoids' generation latents.
                med = encode_stage(runner, "encode-medoids", plan["encode-medoids"].settings,
                                   [dataset[r] for r in rows], lambda: models.get("vae"),
                                   device=models.device, dtype=models.dtype)
                if not med.valid.all():
                    raise DataError(f"a medoid image could not be encoded: {med.problems[0]}")
                latents, rows = med.latents, list(range(len(rows)))
            images = generate_stage(runner, "generate", plan["generate"].settings,
                                    lambda js: latents[[rows[j] for j in js]], prompts,
                                    lambda: models.get("img2img"), scorer)
        else:
            runner.skip("generate")
            # /D: the medoid's own image, copied byte for byte into the output.
            images = [{"image": dataset[r].image, "scores": {}} for r, _ in medoids]

        # -- caption ---------------------------------------------------------------------
        if "caption" in plan:
            captions = caption_stage(runner, "caption", plan["caption"].settings,
                                     [im["image"] for im in images],
                                     lambda: models.get("captioner"), scorer)
        else:
            runner.skip("caption")
            # /T: the medoid's own caption (the one used as the prompt).
            captions = [{"caption": p, "scores": {}} for p in prompts]

        pairs = []
        for j, (r, size) in enumerate(medoids):
            rec = dataset[r]
            pairs.append(OutputPair(image=images[j]["image"], captions=[captions[j]["caption"]],
                                    info={"source_id": rec.id, "source_image": str(rec.image),
                                          "source_caption": prompts[j], "cluster_size": size,
                                          "scores": {**images[j]["scores"],
                                                     **captions[j]["scores"]}}))
        clustering = {k: cached.get(k) for k in
                      ("method", "cost", "sizes", "sample_size", "sample_costs")}
        clustering["medoid_ids"] = cached["ids"]
        if s.cluster:
            clustering["space"] = s.cluster_space
            if s.cluster_space == "latents":
                clustering["vae"] = s.vae_source("cluster")[0]
            else:
                fs = plan["features"].settings
                clustering["feature_encoders"] = {"image": fs.image_identity,
                                                  "text": fs.text_identity,
                                                  "image_size": fs.image_size}
        ablations = {"cluster": s.cluster, "diffusion": s.diffusion,
                     "captioner": s.captioner_on, "score": s.score}
        return pairs, {"ablations": ablations, "clustering": clustering, "problems": problems}
