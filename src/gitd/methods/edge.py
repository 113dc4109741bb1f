"""EDGE (NeurIPS 2025): text-to-image sampling from Stable Diffusion, as ``gitd distill --method
edge [--finetuned RUN]``; with ``--finetuned`` the UNet parameters a ``gitd finetune`` run
trained (for image-text alignment and diversity) are loaded onto the base model, without it the
base model samples (the paper's "no fine-tuning" row).

prompts (a named, seeded strategy: ``random``, EDGE's own, draws training captions (stage
``random-prompts``); ``clara`` encodes every image and takes the longest caption of each CLARA
medoid, as GITD (stages ``encode``, ``cluster``); ``prototype`` embeds every pair and takes each
PDS prototype's nearest caption (``embed``, ``prototypes``)) -> text2img (the registry's
``text2img`` model, one image per prompt from its own seed; the run's file is read once, when
the plan is built) -> caption synthesis (``--extra-captions``: 0 unless given, the ``paper``
preset's 1 is EDGE's cpi = 2) -> output. The fine-tuning itself is ``gitd finetune``
(``gitd.stages.finetune``); ``docs/edge.md`` lists where gitd departs from EDGE's released code.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from gitd.data.output import OutputPair
from gitd.errors import ConfigError
from gitd.methods.base import DistillMethod, DistillSettings
from gitd.methods.fields import (ClaraFields, DiffusionModelFields, EncodeFields,
                                 GenerationFields, PrototypeFields, ScoreFields)
from gitd.models.roles import Role, Runtime
from gitd.plan import Plan, Results
from gitd.registry import register_method
from gitd.settings import Options, PathText, inherit, setting
from gitd.stages.caption_synthesis import PAPER as VLM_PAPER, TINY as VLM_TINY
from gitd.stages.cluster import cluster_stage
from gitd.stages.embed import EmbedSettings, embed_stage
from gitd.stages.encode import encode_stage
from gitd.stages.prototypes import prototype_stage
from gitd.stages.text2image import SampleSettings, random_prompts, sample_stage
from gitd.store import atomic_write_json, read_json

STRATEGIES = ("random", "clara", "prototype")


@dataclass(frozen=True)
class RandomPromptSettings:
    """EDGE's prompt choice: ``k`` captions drawn without replacement (the ``random-prompts``
    key)."""

    version: ClassVar[int] = 1  # bump when a change alters the prompts this stage draws

    k: int
    seed: int


def random_prompt_stage(call) -> list[dict[str, int]]:
    """The ``random-prompts`` stage: (record, caption) positions drawn from ``call.dataset``."""
    st: RandomPromptSettings = call.settings

    def draw(stage) -> None:
        picks = random_prompts([r.captions for r in call.dataset], st.k, st.seed)
        atomic_write_json(stage.path / "prompts.json",
                          [{"record": r, "caption": c} for r, c in picks])

    return call.whole(draw, lambda stage: read_json(stage.path / "prompts.json"))


@dataclass(frozen=True)
class EdgeSettings(ScoreFields, DiffusionModelFields, GenerationFields, EncodeFields,
                   ClaraFields, PrototypeFields, DistillSettings):
    """EDGE's settings (the shared ones, and those of the stages it borrows from GITD (clara)
    and PDS (prototype), from their groups: ``gitd.methods.fields``); the defaults are the
    ``paper`` preset's but for ``extra_captions`` (0, as in every method; the preset adds EDGE's
    one extra caption)."""

    finetuned: str | None = setting(
        None, PathText(), "a 'gitd finetune' run folder whose trained UNet parameters are "
        "loaded onto the base model (default: the base model, the paper's no-fine-tuning row); "
        "the text2img stage's key records the weights' fingerprint, not the path",
        optional=True, metavar="RUN")
    guidance_scale: float = inherit(GenerationFields, "guidance_scale", 7.5)
    negative_prompt: str = inherit(GenerationFields, "negative_prompt", "")
    generate_batch_size: int = inherit(GenerationFields, "generate_batch_size", 4)
    prompts: str = setting("random", Options(*STRATEGIES),
                           "which captions prompt the generator: random (EDGE's: training "
                           "captions drawn at random, seeded), clara (the longest caption of "
                           "each CLARA medoid, as GITD; --encode-*, --clara-*) or prototype "
                           "(each PDS prototype's nearest caption; --score-model, "
                           "--filter-fraction)")


@dataclass(frozen=True)
class FinetunedRun:
    """A ``gitd finetune`` run as a distillation reads it, once: its trained tensors, the base
    model they apply to, and the fingerprint of their file (what the text2img key records)."""

    path: Path
    tensors: dict
    base: dict
    fingerprint: str

    @classmethod
    def read(cls, s: EdgeSettings, seed: int | None) -> "FinetunedRun | None":
        """The run ``s.finetuned`` names (None without one), checked to have been trained from
        ``s``'s diffusion model (built with ``seed`` when it has random weights)."""
        if s.finetuned is None:
            return None
        from gitd.stages.finetune.state import read_trained_run

        tensors, base, fp = read_trained_run(s.finetuned)
        if (base["model"], base["revision"]) != (s.diffusion_model, s.diffusion_revision):
            raise ConfigError(
                f"finetuned {s.finetuned} was trained from {base['model']!r} (revision "
                f"{base['revision']}); pass --diffusion-model {base['model']} (and its revision) "
                "or the preset it was trained with")
        if seed is not None and base["seed"] != seed:
            raise ConfigError(
                f"finetuned {s.finetuned} was trained on {base['model']} built with seed "
                f"{base['seed']} (random weights); distill with --seed {base['seed']}")
        return cls(Path(s.finetuned), tensors, base, fp)

    def describe(self) -> dict[str, Any]:
        return {"run": str(self.path.resolve()), "fingerprint": self.fingerprint,
                "base": self.base, "tensors": len(self.tensors)}


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


@register_method("edge")
class Edge(DistillMethod):
    """EDGE: text-to-image from a fine-tuned SD (gitd finetune), prompts by a seeded strategy."""

    Settings = EdgeSettings
    presets = {"paper": _PAPER, "tiny": _TINY, "random-paper": _RANDOM_PAPER}
    roles = {
        # The pipeline's components; the trained UNet parameters are loaded onto its UNet.
        "sd": Role("text2img", "diffusion_model", "diffusion_revision", shares=("vae",)),
        "vae": Role("vae", "diffusion_model", "diffusion_revision"),
        "score": Role("score", "score_model", "score_revision"),
    }

    @classmethod
    def plan(cls, s: EdgeSettings, rt: Runtime) -> Plan:
        def ref(role):
            return cls.roles[role].ref(s)

        p = Plan()
        run = FinetunedRun.read(s, ref("sd").seed)
        # -- prompts: (record, caption) per pair, by the strategy ----------------------------
        if s.prompts == "random":
            picked = p.add("random-prompts", RandomPromptSettings(k=s.pairs, seed=s.seed),
                           random_prompt_stage)

            def chosen(r) -> list[tuple[int, str]]:
                return [(row["record"], r.dataset[row["record"]].captions[row["caption"]])
                        for row in r[picked]]

            p.output("prompts_info", lambda r: {"strategy": "random"})
            p.output("problems", lambda r: [])
        elif s.prompts == "clara":
            enc = p.add("encode", s.encode_settings(ref("vae"), s.resolution, rt,
                                                    workers=s.encode_workers),
                        lambda call: encode_stage(call, call.dataset.records),
                        roles={"vae": "vae"})
            picked = p.add("cluster", s.cluster_settings(rt), lambda call: cluster_stage(
                call, lambda: call[enc].matrix(valid_only=True),
                np.asarray(call[enc].valid_indices), [r.id for r in call.dataset]),
                upstream=(enc,))

            def chosen(r) -> list[tuple[int, str]]:
                return [(m, r.dataset[m].longest_caption) for m in r[picked]["medoids"]]

            p.output("prompts_info", lambda r: {"strategy": "clara",
                                                "cluster_sizes": r[picked]["sizes"],
                                                "cost": r[picked]["cost"]}, reads=(picked,))
            p.output("problems", lambda r: list(r[enc].problems), reads=(enc,))
        else:
            emb = p.add("embed", EmbedSettings(score=ref("score"), dtype=rt.dtype_name,
                                               device=rt.device_type),
                        lambda call: embed_stage(call, call.dataset.records),
                        roles={"score": "score"})
            picked = p.add("prototypes", s.prototype_settings(), lambda call: prototype_stage(
                call, call[emb], call.dataset.records)[0], upstream=(emb,))

            def chosen(r) -> list[tuple[int, str]]:
                texts = [c for rec in r.dataset for c in rec.captions]
                return [(row["nearest_record"], texts[row["caption_index"]])
                        for row in r[picked]["prototypes"]]

            p.output("prompts_info", lambda r: {
                "strategy": "prototype", "pairs_kept": r[picked]["pairs_kept"],
                "pairs_dropped": r[picked]["pairs_dropped"],
                "cluster_sizes": [row["members"] for row in r[picked]["prototypes"]]},
                reads=(picked,))
            p.output("problems", lambda r: list(r[emb].problems), reads=(emb,))
        p.output("chosen", chosen, reads=(picked,))

        # -- text-to-image, one image per prompt ---------------------------------------------
        gen = p.add("text2img", SampleSettings(
            pipeline=ref("sd"), finetuned=run.fingerprint if run else None,
            resolution=s.resolution, guidance_scale=s.guidance_scale,
            steps=s.num_inference_steps, negative_prompt=s.negative_prompt,
            batch_size=s.generate_batch_size, seed=s.seed, dtype=rt.dtype_name,
            device=rt.device_type),
            lambda call: sample_stage(call, [t for _, t in chosen(call)],
                                      trained=run.tensors if run else None,
                                      source=str(s.finetuned)),
            upstream=(picked,), roles={"pipeline": "sd"})
        p.output("images", lambda r: r[gen], reads=(gen,))
        p.output("finetuned", lambda r: run.describe() if run else None)
        return p

    def assemble(self, results: Results) -> tuple[list[OutputPair], dict[str, Any]]:
        dataset, images = results.dataset, results.output("images")
        pairs = []
        for j, (r, prompt) in enumerate(results.output("chosen")):
            rec = dataset[r]
            pairs.append(OutputPair(image=images[j], captions=[prompt], info={
                "source_id": rec.id, "source_image": str(rec.image), "source_caption": prompt}))
        return pairs, {"prompts": results.output("prompts_info"),
                       "finetuned": results.output("finetuned"),
                       "problems": results.output("problems")}
