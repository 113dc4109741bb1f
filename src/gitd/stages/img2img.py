"""The ``generate`` stage: img2img from each medoid's own latent, N candidates, the score model keeps one.

The medoid latents go straight into ``StableDiffusionImg2ImgPipeline`` as its ``image``: for a
4-channel tensor, diffusers (0.30 to 0.42 at least) skips both its image preprocessing
(``VaeImageProcessor.preprocess`` returns latents untouched) and VAE encoding, and does not
multiply by ``scaling_factor`` again (``prepare_latents``), so latents must already be scaled, as
``gitd.stages.latent_folder`` stores them.

Each medoid's candidates come from their own ``torch.Generator`` seeded from the medoid's seed,
so they do not depend on which other medoids share the pipeline call (see ``candidate_seed``).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any, Callable, ClassVar, Sequence

import numpy as np
import torch

from gitd.models.roles import ModelRef
from gitd.settings import Interval, check
from gitd.stages import unit_image


def candidate_seed(seed: int, candidate: int) -> int:
    """A 63-bit generator seed for one candidate of a medoid (no collisions between nearby
    medoid seeds, unlike ``seed + candidate``)."""
    blob = f"{int(seed)}:{int(candidate)}".encode()
    return int.from_bytes(hashlib.sha256(blob).digest()[:8], "little") & (2**63 - 1)


def generate_candidates(pipe, latents: torch.Tensor, prompts: Sequence[str], *,
                        negative_prompt: str | None, strength: float, guidance_scale: float,
                        num_inference_steps: int, num_candidates: int,
                        seeds: Sequence[int]) -> list[list]:
    """``num_candidates`` PIL images per medoid from ONE pipeline call.

    ``latents``: ``[B, 4, h, w]``, already scaled by ``vae.config.scaling_factor``;
    ``prompts``/``seeds``: one per medoid. Returns ``B`` lists of ``num_candidates`` images.
    """
    check("num_candidates", num_candidates, Interval(int, 1, None))
    check("num_inference_steps", num_inference_steps, Interval(int, 1, None))
    check("strength", strength, Interval(float, 0, 1, closed="right"))
    if latents.ndim != 4 or latents.shape[1] != 4:
        raise ValueError(f"latents must be [B, 4, h, w], got {tuple(latents.shape)}")
    b = latents.shape[0]
    if len(prompts) != b or len(seeds) != b:
        raise ValueError(f"need one prompt and one seed per latent: {b} latents, "
                         f"{len(prompts)} prompts, {len(seeds)} seeds")
    if b == 0:
        return []
    n = int(num_candidates)
    # The pipeline repeats prompt embeddings prompt-major (p0,p0,..,p1,p1,..); the latents must be
    # in the same order, and as many as images, or diffusers tiles them batch-major instead.
    init = latents.float().repeat_interleave(n, dim=0)
    generators = [torch.Generator(device="cpu").manual_seed(candidate_seed(s, c))
                  for s in seeds for c in range(n)]
    negative = [negative_prompt] * b if negative_prompt else None
    out = pipe(prompt=list(prompts), image=init, negative_prompt=negative,
               strength=float(strength), guidance_scale=float(guidance_scale),
               num_inference_steps=int(num_inference_steps), num_images_per_prompt=n,
               generator=generators, output_type="pil")
    images = list(out.images)
    return [images[i * n:(i + 1) * n] for i in range(b)]


def select_best(score_model, candidates: Sequence, prompt: str, *,
                use_score: bool = True) -> tuple[int, list[float]]:
    """Index of the candidate with the highest image-prompt cosine, and all the cosines.

    ``use_score=False`` (the paper's /S ablation) keeps candidate 0 but still records the scores
    when a score model is given.
    """
    if not candidates:
        raise ValueError("select_best needs at least one candidate")
    if score_model is None:
        if use_score:
            raise ValueError("select_best with use_score=True needs a score model")
        return 0, []
    scores = [float(s) for s in score_model.similarity(list(candidates), [prompt])[:, 0]]
    if not use_score:
        return 0, scores
    return max(range(len(scores)), key=lambda i: (scores[i], -i)), scores


# -- as a stage of a method run ------------------------------------------------------------------
@dataclass(frozen=True)
class GenerateSettings:
    """Everything a medoid's synthetic image depends on besides its latent and prompt (the
    ``img2img`` key; the prompts follow from the upstream medoids and ``prompt``)."""

    version: ClassVar[int] = 1  # bump when a change alters the images this stage writes

    img2img: ModelRef
    score: ModelRef | None  # None: keep the first candidate (the /S ablation)
    resolution: int
    strength: float
    guidance_scale: float
    steps: int
    candidates: int
    negative_prompt: str
    prompt: str  # which caption of the medoid prompts the generator
    # Medoids per pipeline call: batch composition can change low-order bits of the images.
    batch_size: int
    seed: int
    dtype: str
    device: str


def generate_stage(call, latents: Callable[[list[int]], Any],
                   prompts: Sequence[str]) -> list[dict[str, Any]]:
    """Run (or finish) the img2img stage (``call``: its ``gitd.plan.StageCall``, with models
    ``img2img`` and, unless /S, ``score``): unit ``j`` is the chosen candidate for prompt ``j``
    from ``latents([j, ...])`` (float32 ``[B, 4, h, w]``). Returns per unit the PIL image and
    its scores."""
    from gitd.store import (atomic_save_image, atomic_write_json, derive_seed, unit_json,
                            unit_path)

    st: GenerateSettings = call.settings
    models: dict[str, Any] = {}

    def compute(chunk: range) -> list:
        if not models:
            models["pipe"] = call.model("img2img")
            models["scorer"] = call.optional_model("score")
        rows = list(chunk)
        lat = torch.from_numpy(np.asarray(latents(rows), dtype=np.float32))
        seeds = [derive_seed(st.seed, "generate", j) for j in rows]
        cands = generate_candidates(
            models["pipe"], lat, [prompts[j] for j in rows], negative_prompt=st.negative_prompt,
            strength=st.strength, guidance_scale=st.guidance_scale,
            num_inference_steps=st.steps, num_candidates=st.candidates, seeds=seeds)
        return list(zip([prompts[j] for j in rows], seeds, cands))

    def write(stage, j: int, result) -> None:
        prompt, seed, cand = result
        scorer = models["scorer"]
        best, scores = (select_best(scorer, cand, prompt, use_score=True)
                        if scorer is not None else (0, []))
        atomic_save_image(unit_path(stage, j, ".png"), cand[best])
        atomic_write_json(unit_path(stage, j), {
            "prompt": prompt, "seed": seed, "candidate_scores": [float(x) for x in scores],
            "chosen_candidate": int(best)})

    def load(stage, j: int) -> dict[str, Any]:
        meta = unit_json(stage, j, "prompt", "seed", "candidate_scores", "chosen_candidate")
        return {"image": unit_image(stage, j), "scores": {
            "image_prompt_scores": meta["candidate_scores"],
            "chosen_candidate": meta["chosen_candidate"]}}

    return call.units(len(prompts), st.batch_size, compute, write, load, noun="medoid")
