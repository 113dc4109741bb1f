"""GITD: generative image-text distillation, training-free.

encode (VAE latents) -> cluster (CLARA k-medoids) -> img2img (from each medoid's own latent,
prompted by its longest caption; the score model keeps the best of N candidates) -> caption (M
sampled captions per synthetic image; the score model keeps the best) -> output. ``Gitd.plan``
says which of these run and what each reads (the ablations, ``--cluster-vae``,
``--cluster-space``, ``--cluster-resolution``); ``gitd.plan.PlanRunner`` runs them.

Each stage is cached in the work directory under a fingerprint of its settings, its version and
the stages it reads (``gitd.plan``), so a re-run finishes only what is missing and a changed
setting recomputes exactly the stages that depend on it. Generation and captioning write each
finished medoid atomically; a re-run after a crash (SIGKILL included) skips finished medoids and
gives the same output as an uninterrupted run, because every medoid's randomness comes from its
own seed and batches always have the same composition.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from gitd.data.output import OutputPair
from gitd.errors import DataError
from gitd.methods.base import DistillMethod, DistillSettings
from gitd.methods.fields import (ClaraFields, DiffusionModelFields, DiffusionSwitch,
                                 EncodeFields, GenerationFields, ScoreFields)
from gitd.models.roles import Role, Runtime
from gitd.plan import Plan, Results
from gitd.registry import register_method
from gitd.settings import Boolean, Interval, Options, Text, setting
from gitd.stages.caption_synthesis import TINY as VLM_TINY
from gitd.stages.caption import CaptionerFields, caption_stage
from gitd.stages.cluster import cluster_stage
from gitd.stages.encode import encode_stage
from gitd.stages.img2img import GenerateSettings, generate_stage
from gitd.stages.pair_features import FeatureSettings, features_stage



@dataclass(frozen=True)
class GitdSettings(ScoreFields, DiffusionModelFields, GenerationFields, EncodeFields,
                   ClaraFields, DiffusionSwitch, CaptionerFields, DistillSettings):
    """GITD's settings (the shared ones from their groups: ``gitd.methods.fields``,
    ``CaptionerFields``); the defaults are the ``paper`` preset."""

    # Image generation (img2img from each medoid's latent).
    strength: float = setting(0.7, Interval(float, 0, 1, closed="right"),
                              "img2img strength: fraction of the schedule run from the "
                              "medoid's latent")
    num_candidates: int = setting(4, Interval(int, 1, 64), "images generated per medoid; the "
                                  "score model keeps one")
    prompt: str = setting("longest", Options("longest", "first"),
                          "which of the medoid's captions prompts the generator")
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
    # Ablation switches (the paper's /C, /T, /S when False; /D is ``diffusion``).
    cluster: bool = setting(True, Boolean(), "CLARA medoids; --no-cluster: random medoids (the "
                            "paper's /C ablation)", flags=("--cluster", "--no-cluster"))
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


def encode_medoids(call, records) -> Any:
    """The ``encode-medoids`` stage: the medoids' latents for img2img, when clustering read
    another space or resolution. Every medoid must encode (it was read once already)."""
    store = encode_stage(call, records)
    if not store.valid.all():
        raise DataError(f"a medoid image could not be encoded: {store.problems[0]}")
    return store


def prompt_of(s: GitdSettings, rec) -> str:
    # The paper prompts with the longest of the medoid's captions.
    return rec.captions[0] if s.prompt == "first" else rec.longest_caption


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
                    source=lambda s: s.vae_source("generate")),
        "cluster_vae": Role("vae", "diffusion_model", "diffusion_revision",
                            source=lambda s: s.vae_source("cluster")),
        "img2img": Role("img2img", "diffusion_model", "diffusion_revision", shares=("vae",)),
        # The score model picks among candidates (images or captions).
        "score": Role("score", "score_model", "score_revision"),
        "captioner": Role("captioner", "captioner", "captioner_revision"),
    }

    @classmethod
    def plan(cls, s: GitdSettings, rt: Runtime) -> Plan:
        def ref(role):
            return cls.roles[role].ref(s)

        p = Plan()
        shared = s.shared_latents()
        cluster_resolution = s.cluster_resolution or s.resolution
        scorer = {"score": "score"} if s.score else {}
        space_info: dict[str, Any] = {}

        # -- what CLARA clusters: features, latents, or nothing (random medoids, /C /D) -------
        space = None
        if s.cluster and s.cluster_space == "features":
            from gitd.models.encoders import image_model_identity, text_model_identity

            fs = FeatureSettings(
                image_model="auto", text_model="auto", image_identity=image_model_identity("auto"),
                text_identity=text_model_identity("auto"), image_size=s.feature_image_size,
                device=rt.device_type)
            space = p.add("features", fs, features_stage)
            space_info = {"space": "features", "feature_encoders": {
                "image": fs.image_identity, "text": fs.text_identity, "image_size": fs.image_size}}

            def rows(call):
                return (lambda: call[space]), np.arange(len(call.dataset))

            def problems(r) -> list:
                return []
        elif s.cluster or s.diffusion:
            vae = "vae" if shared else "cluster_vae"
            space = p.add("encode", s.encode_settings(
                ref(vae), cluster_resolution, rt, sample=s.sample_latents,
                workers=s.encode_workers, ray=s.ray, ray_workers=s.ray_workers),
                lambda call: encode_stage(call, call.dataset.records), roles={"vae": vae})
            if s.cluster:
                space_info = {"space": "latents", "vae": s.vae_source("cluster")[0]}
            # With --ray, CLARA's tasks read their rows from the latent files, not from here.
            files = s.cluster and s.ray is not None

            def rows(call):
                store = call[space]
                return (lambda: store.matrix(valid_only=True, files=files),
                        np.asarray(store.valid_indices))

            def problems(r) -> list:
                return list(r[space].problems)
        else:
            def rows(call):
                return (lambda: None), np.arange(len(call.dataset))

            def problems(r) -> list:
                return []

        def run_cluster(call):
            matrix, valid = rows(call)
            return cluster_stage(call, matrix, valid, [r.id for r in call.dataset])

        cluster = p.add("cluster", s.cluster_settings(
            rt, method="clara" if s.cluster else "random", ray=s.ray if s.cluster else None),
            run_cluster, upstream=(space,))

        def medoids(r) -> list[int]:
            return r[cluster]["medoids"]

        def prompts(r) -> list[str]:
            return [prompt_of(s, r.dataset[m]) for m in medoids(r)]

        p.output("medoids", medoids, reads=(cluster,))
        p.output("prompts", prompts, reads=(cluster,))
        p.output("clustering", lambda r: {**_clustering(r[cluster]), **space_info},
                 reads=(cluster,))
        p.output("problems", problems, reads=(space,))

        # -- img2img from each medoid's latent, or the medoid's own image (/D) ---------------
        if s.diffusion:
            if not shared or cluster_resolution != s.resolution:
                # Clustering read another space or resolution (--cluster-vae, --cluster-space,
                # --cluster-resolution): only the k medoids are encoded for img2img, here.
                source = p.add("encode-medoids", s.encode_settings(
                    ref("vae"), s.resolution, rt, sample=s.sample_latents, workers=0),
                    lambda call: encode_medoids(call, [call.dataset[m] for m in medoids(call)]),
                    upstream=(cluster,), roles={"vae": "vae"})

                def latents(call):
                    return lambda js: call[source].latents[js]
            else:
                source = space

                def latents(call):
                    rows_ = medoids(call)
                    return lambda js: call[source].latents[[rows_[j] for j in js]]

            gen = p.add("img2img", GenerateSettings(
                img2img=ref("img2img"), score=ref("score") if s.score else None,
                resolution=s.resolution, strength=s.strength, guidance_scale=s.guidance_scale,
                steps=s.num_inference_steps, candidates=s.num_candidates,
                negative_prompt=s.negative_prompt, prompt=s.prompt,
                batch_size=s.generate_batch_size, seed=s.seed, dtype=rt.dtype_name,
                device=rt.device_type),
                lambda call: generate_stage(call, latents(call), prompts(call)),
                upstream=(cluster, source), roles={"img2img": "img2img", **scorer})
            images = p.output("images", lambda r: [u["image"] for u in r[gen]], reads=(gen,))
            p.output("image_scores", lambda r: [u["scores"] for u in r[gen]], reads=(gen,))
        else:
            # /D: the medoid's own image, copied byte for byte into the output.
            images = p.output("images", lambda r: [r.dataset[m].image for m in medoids(r)],
                              reads=(cluster,))
            p.output("image_scores", lambda r: [{} for _ in medoids(r)], reads=(cluster,))

        # -- captions, or the medoid's own caption, the one that prompted it (/T) ------------
        if s.captioner_on:
            cap = p.add("caption", s.caption_settings(
                ref("captioner"), ref("score") if s.score else None, rt),
                lambda call: caption_stage(call, images(call)), upstream=images.reads,
                roles={"captioner": "captioner", **scorer})
            p.output("captions", lambda r: r[cap], reads=(cap,))
        else:
            p.output("captions", lambda r: [{"caption": t, "scores": {}} for t in prompts(r)],
                     reads=(cluster,))
        return p

    def assemble(self, results: Results) -> tuple[list[OutputPair], dict[str, Any]]:
        s, dataset = self.settings, results.dataset
        clustering = results.output("clustering")
        images, captions = results.output("images"), results.output("captions")
        image_scores, prompts = results.output("image_scores"), results.output("prompts")
        pairs = []
        for j, r in enumerate(results.output("medoids")):
            rec = dataset[r]
            pairs.append(OutputPair(image=images[j], captions=[captions[j]["caption"]],
                                    info={"source_id": rec.id, "source_image": str(rec.image),
                                          "source_caption": prompts[j],
                                          "cluster_size": clustering["sizes"][j],
                                          "scores": {**image_scores[j],
                                                     **captions[j]["scores"]}}))
        ablations = {"cluster": s.cluster, "diffusion": s.diffusion,
                     "captioner": s.captioner_on, "score": s.score}
        return pairs, {"ablations": ablations, "clustering": clustering,
                       "problems": results.output("problems")}


def _clustering(cached: dict[str, Any]) -> dict[str, Any]:
    """The manifest's ``clustering`` from the cluster stage's result."""
    out = {k: cached.get(k) for k in ("method", "cost", "sizes", "sample_size", "sample_costs")}
    out["medoid_ids"] = cached["ids"]
    return out
