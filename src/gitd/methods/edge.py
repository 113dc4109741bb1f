"""EDGE (NeurIPS 2025): text-to-image sampling from Stable Diffusion, as ``gitd distill --method
edge [--finetuned RUN]``; with ``--finetuned`` the UNet parameters a ``gitd finetune`` run
trained (for image-text alignment and diversity) are loaded onto the base model, without it the
base model samples (the paper's "no fine-tuning" row).

prompts (a named, seeded strategy: ``random``, EDGE's own, draws training captions; ``clara``
encodes every image and takes the longest caption of each CLARA medoid, as GITD; ``prototype``
embeds every pair and takes each PDS prototype's nearest caption) -> sample (the registry's
``text2img`` model, one image per prompt from its own seed) -> caption synthesis
(``--extra-captions``: 0 unless given, the ``paper`` preset's 1 is EDGE's cpi = 2) -> output.
The fine-tuning itself is ``gitd finetune`` (``gitd.stages.finetune``); ``docs/edge.md`` lists
where gitd departs from EDGE's released code.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gitd.data import Dataset
from gitd.data.output import OutputPair
from gitd.errors import ConfigError
from gitd.methods.base import DistillMethod, DistillSettings
from gitd.models.roles import Role, Runtime
from gitd.registry import register_method
from gitd.settings import Interval, Options, PathText, Text, setting
from gitd.stages.caption_synthesis import PAPER as VLM_PAPER, TINY as VLM_TINY
from gitd.stages.cluster import ClusterSettings, cluster_stage
from gitd.stages.embed import EmbedSettings, embed_stage
from gitd.stages.encode import EncodeSettings, encode_stage
from gitd.stages.prototypes import PrototypeSettings, prototype_stage
from gitd.stages.text2image import SampleSettings, random_prompts, sample_stage
from gitd.store import StagePlan, atomic_write_json, read_json

STRATEGIES = ("random", "clara", "prototype")


@dataclass(frozen=True)
class RandomPromptSettings:
    """EDGE's prompt choice: ``k`` captions drawn without replacement (the ``prompts`` key)."""

    k: int
    seed: int


@dataclass(frozen=True)
class EdgeSettings(DistillSettings):
    """EDGE's settings; the defaults are the ``paper`` preset's but for ``extra_captions`` (0, as
    in every method; the preset adds EDGE's one extra caption)."""

    finetuned: str | None = setting(
        None, PathText(), "a 'gitd finetune' run folder whose trained UNet parameters are "
        "loaded onto the base model (default: the base model, the paper's no-fine-tuning row); "
        "the sample stage's key records the weights' fingerprint, not the path", optional=True,
        metavar="RUN")
    resolution: int = setting(512, Interval(int, 8, 4096, multiple_of=8),
                              "side of the sampled images in pixels")
    diffusion_model: str = setting("stable-diffusion-v1-5/stable-diffusion-v1-5", Text(),
                                   "Stable Diffusion id or folder (the fine-tuned run's base "
                                   "model), or tiny-sd")
    diffusion_revision: str | None = setting(None, Text(), "revision (commit/tag) of the "
                                             "diffusion model", optional=True, metavar="REV")
    guidance_scale: float = setting(7.5, Interval(float, 0, None),
                                    "classifier-free guidance scale")
    num_inference_steps: int = setting(50, Interval(int, 1, 1000), "scheduler steps")
    negative_prompt: str = setting("", Text(empty=True), "negative prompt (EDGE: none)")
    prompts: str = setting("random", Options(*STRATEGIES),
                           "which captions prompt the generator: random (EDGE's: training "
                           "captions drawn at random, seeded), clara (the longest caption of "
                           "each CLARA medoid, as GITD; --encode-*, --clara-*) or prototype "
                           "(each PDS prototype's nearest caption; --score-model, "
                           "--filter-fraction)")
    score_model: str = setting("openai/clip-vit-base-patch32", Text(),
                               "CLIP id or folder that embeds the pairs for --prompts "
                               "prototype, or tiny-clip")
    score_revision: str | None = setting(None, Text(), "revision (commit/tag) of the score "
                                         "model", optional=True, metavar="REV")
    # The settings of the stages EDGE borrows, as GITD (clara) and PDS (prototype) declare them.
    filter_fraction: float = setting(0.2, Interval(float, 0, 1, closed="left"),
                                     "fraction of pairs with the lowest image-text cosine "
                                     "dropped before clustering")
    encode_batch_size: int = setting(16, Interval(int, 1, 4096), "images per VAE batch")
    encode_workers: int = setting(2, Interval(int, 0, 256), "DataLoader processes that decode "
                                  "images for encoding (decoding is exact, so not part of any "
                                  "key)", affects_results=False)
    clara_samples: int | None = setting(None, Interval(int, 1, 1000), "CLARA: number of random "
                                        "samples (default 5)", optional=True)
    clara_sample_size: int | None = setting(None, Interval(int, 1, 100_000_000),
                                            "CLARA: rows per sample (default max(80 + 4k, 1000))",
                                            optional=True)
    # Part of the cache key: batch composition can change low-order bits of the images.
    generate_batch_size: int = setting(4, Interval(int, 1, 1024), "pairs per pipeline call")


# EDGE's sampling: diffusers' defaults for SD 1.5 (PNDM, 50 steps, CFG 7.5, 512 px), no
# negative prompt; one extra caption per image from LLaVA-1.5-7B (cpi = 2).
_PAPER = {"diffusion_model": "stable-diffusion-v1-5/stable-diffusion-v1-5", "resolution": 512,
          "guidance_scale": 7.5, "num_inference_steps": 50, "negative_prompt": "",
          "score_model": "openai/clip-vit-base-patch32", "generate_batch_size": 4,
          "extra_captions": 1, **VLM_PAPER}
_TINY = {**_PAPER, "diffusion_model": "tiny-sd", "score_model": "tiny-clip", "resolution": 64,
         "num_inference_steps": 4, "encode_batch_size": 8, "encode_workers": 0, **VLM_TINY}
# No random-weight LLaVA-7B is built (27 GB in float32): the timing preset adds no captions.
_RANDOM_PAPER = {**_PAPER, "diffusion_model": "random-sd15", "score_model": "random-clip-b32",
                 "extra_captions": 0}


def _finetuned(s: EdgeSettings) -> tuple[dict, dict, str] | None:
    """The trained tensors, their base model and their fingerprint; None without a run."""
    if s.finetuned is None:
        return None
    from gitd.stages.finetune import read_trained
    from gitd.stages.finetune.state import TRAINED
    from gitd.store import file_fingerprint

    path = Path(s.finetuned)
    tensors, base = read_trained(path)
    return tensors, base, file_fingerprint(path / TRAINED if path.is_dir() else path)


@register_method("edge")
class Edge(DistillMethod):
    """EDGE: text-to-image from a fine-tuned SD (gitd finetune), prompts by a seeded strategy."""

    Settings = EdgeSettings
    presets = {"paper": _PAPER, "tiny": _TINY, "random-paper": _RANDOM_PAPER}
    roles = {
        # The pipeline's components; the trained UNet parameters are loaded onto its UNet.
        "sd": Role("text2img", "diffusion_model", "diffusion_revision", shares=("vae",)),
        "vae": Role("vae", "diffusion_model", "diffusion_revision"),
        "score": Role("score", "score_model", "score_revision",
                      used=lambda s: s.prompts == "prototype"),
    }

    @classmethod
    def check(cls, s: EdgeSettings) -> None:
        run = _finetuned(s)
        if run is None:
            return
        base = run[1]
        if (base["model"], base["revision"]) != (s.diffusion_model, s.diffusion_revision):
            raise ConfigError(
                f"finetuned {s.finetuned} was trained from {base['model']!r} (revision "
                f"{base['revision']}); pass --diffusion-model {base['model']} (and its revision) "
                "or the preset it was trained with")
        ref = cls.roles["sd"].ref(s)
        if ref.seed is not None and base["seed"] != ref.seed:
            raise ConfigError(
                f"finetuned {s.finetuned} was trained on {base['model']} built with seed "
                f"{base['seed']} (random weights); distill with --seed {base['seed']}")

    @classmethod
    def stages(cls, s: EdgeSettings, rt: Runtime) -> dict[str, StagePlan]:
        def ref(role):
            return cls.roles[role].ref(s)

        plan: dict[str, StagePlan] = {}
        if s.prompts == "random":
            plan["prompts"] = StagePlan(RandomPromptSettings(k=s.pairs, seed=s.seed))
        elif s.prompts == "clara":
            plan["encode"] = StagePlan(EncodeSettings(
                vae=ref("vae"), resolution=s.resolution, sample=False, seed=None,
                batch_size=s.encode_batch_size, dtype=rt.dtype_name, device=rt.device_type,
                workers=s.encode_workers))
            plan["prompts"] = StagePlan(ClusterSettings(
                k=s.pairs, method="clara", n_samples=s.clara_samples,
                sample_size=s.clara_sample_size, seed=s.seed, device=rt.device_type),
                upstream="encode")
        else:
            plan["embed"] = StagePlan(EmbedSettings(score=ref("score"), dtype=rt.dtype_name,
                                                    device=rt.device_type))
            plan["prompts"] = StagePlan(PrototypeSettings(
                k=s.pairs, filter_fraction=s.filter_fraction, seed=s.seed), upstream="embed")
        run = _finetuned(s)
        plan["sample"] = StagePlan(SampleSettings(
            pipeline=ref("sd"), finetuned=run[2] if run else None, resolution=s.resolution,
            guidance_scale=s.guidance_scale, steps=s.num_inference_steps,
            negative_prompt=s.negative_prompt, batch_size=s.generate_batch_size, seed=s.seed,
            dtype=rt.dtype_name, device=rt.device_type), upstream="prompts")
        return cls.with_caption_synthesis(plan, s, rt)

    # -- prompts ---------------------------------------------------------------------------
    def choose_prompts(self, dataset: Dataset) -> tuple[list[tuple[int, str]], dict, list]:
        """(record, prompt) per pair, the manifest's ``prompts`` entry, and any problems the
        stages found in the source."""
        s, runner, models = self.settings, self.runner, self.models
        st = runner.plan["prompts"].settings
        if s.prompts == "random":
            def draw(stage) -> None:
                picks = random_prompts([r.captions for r in dataset], st.k, st.seed)
                atomic_write_json(stage.path / "prompts.json",
                                  [{"record": r, "caption": c} for r, c in picks])

            rows = runner.whole("prompts", draw,
                                lambda stage: read_json(stage.path / "prompts.json"))
            chosen = [(row["record"], dataset[row["record"]].captions[row["caption"]])
                      for row in rows]
            return chosen, {"strategy": "random"}, []
        if s.prompts == "clara":
            import numpy as np

            store = encode_stage(runner, "encode", runner.plan["encode"].settings,
                                 dataset.records, lambda: models.get("vae"),
                                 device=models.device, dtype=models.dtype)
            valid = np.asarray(store.valid_indices)
            if s.pairs > len(valid):
                raise ConfigError(f"asked for {s.pairs} pairs but only {len(valid)} images "
                                  "could be read")
            cached = cluster_stage(runner, "prompts", st,
                                   lambda: store.matrix(valid_only=True), valid,
                                   [r.id for r in dataset], device=models.device)
            chosen = [(r, dataset[r].longest_caption) for r in cached["medoids"]]
            return chosen, {"strategy": "clara", "cluster_sizes": cached["sizes"],
                            "cost": cached["cost"]}, list(store.problems)
        store = embed_stage(runner, "embed", runner.plan["embed"].settings, dataset.records,
                            lambda: models.get("score"))
        info, _ = prototype_stage(runner, "prompts", st, store, dataset.records)
        texts = [c for r in dataset for c in r.captions]
        chosen = [(row["nearest_record"], texts[row["caption_index"]])
                  for row in info["prototypes"]]
        return chosen, {"strategy": "prototype", "pairs_kept": info["pairs_kept"],
                        "pairs_dropped": info["pairs_dropped"],
                        "cluster_sizes": [row["members"] for row in info["prototypes"]]}, \
            list(store.problems)

    # -- the run ---------------------------------------------------------------------------
    def pipeline(self):
        """The text-to-image pipeline: the base model, with the fine-tuned UNet parameters
        loaded when ``finetuned`` names a run."""
        from gitd.stages.finetune import apply_trained

        if getattr(self, "_pipe", None) is None:
            pipe = self.models.get("sd")
            run = _finetuned(self.settings)
            if run is not None:
                apply_trained(pipe.unet, run[0], source=str(self.settings.finetuned))
            self._pipe = pipe
        return self._pipe

    def distill(self, dataset: Dataset) -> tuple[list[OutputPair], dict[str, Any]]:
        s = self.settings
        chosen, prompts_info, problems = self.choose_prompts(dataset)
        prompts = [p for _, p in chosen]
        images = sample_stage(self.runner, "sample", self.runner.plan["sample"].settings,
                              prompts, self.pipeline)
        pairs = []
        for j, (r, prompt) in enumerate(chosen):
            rec = dataset[r]
            pairs.append(OutputPair(image=images[j], captions=[prompt], info={
                "source_id": rec.id, "source_image": str(rec.image), "source_caption": prompt}))
        run = _finetuned(s)
        finetuned = None if run is None else {"run": str(Path(s.finetuned).resolve()),
                                              "fingerprint": run[2], "base": run[1],
                                              "tensors": len(run[0])}
        return pairs, {"prompts": prompts_info, "finetuned": finetuned, "problems": problems}
