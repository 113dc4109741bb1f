"""The ``synthesize`` stage: unCLIP images from prototype image embeddings (prototype-guided synthesis)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, ClassVar, Sequence

import numpy as np
import torch

from gitd.models.roles import ModelRef
from gitd.settings import Interval, check
from gitd.stages import unit_image


def synthesize(pipe, image_embeds: torch.Tensor, prompts: Sequence[str], *,
               num_inference_steps: int = 100, guidance_scale: float = 5.0, noise_level: int = 10,
               negative_prompt: str | None = "text, watermark", seeds: Sequence[int],
               norms: Sequence[float] | None = None, height: int | None = None,
               width: int | None = None) -> list:
    """One image per prototype from ONE ``StableUnCLIPImg2ImgPipeline`` call, conditioned on the
    prototype's CLIP image embedding (no input image) and its caption. Each image's noise (the
    latents and the embedding noise) comes from its own generator, seeded by ``seeds[i]``.

    A prototype is a mean of unit CLIP embeddings, shorter than any real one; unCLIP was
    trained on raw CLIP image embeddings. With ``norms`` (the mean raw norm of each prototype's
    members, ``Prototypes.norm``) each prototype keeps its direction and gets that norm.
    """
    check("num_inference_steps", num_inference_steps, Interval(int, 1, None))
    b = image_embeds.shape[0]
    if len(prompts) != b or len(seeds) != b:
        raise ValueError(f"need one prompt and one seed per embedding: {b} embeddings, "
                         f"{len(prompts)} prompts, {len(seeds)} seeds")
    if b == 0:
        return []
    dtype = next(pipe.image_encoder.parameters()).dtype
    emb = image_embeds.float()
    if norms is not None:
        emb = torch.nn.functional.normalize(emb, dim=-1) * torch.tensor(
            [float(x) for x in norms]).unsqueeze(1)
    emb = emb.to(device=pipe.device, dtype=dtype)
    generators = [torch.Generator(device="cpu").manual_seed(int(s)) for s in seeds]
    out = pipe(prompt=list(prompts), image_embeds=emb,
               negative_prompt=[negative_prompt] * b if negative_prompt else None,
               num_inference_steps=int(num_inference_steps), guidance_scale=float(guidance_scale),
               noise_level=int(noise_level), generator=generators, height=height, width=width,
               output_type="pil")
    return list(out.images)


@dataclass(frozen=True)
class SynthesizeSettings:
    """Everything a prototype's image depends on besides its embedding and caption (the
    ``unclip`` key)."""

    version: ClassVar[int] = 1  # bump when a change alters the images this stage writes

    unclip: ModelRef
    resolution: int
    steps: int
    guidance_scale: float
    noise_level: int
    negative_prompt: str
    # Prototypes per pipeline call: batch composition can change low-order bits.
    batch_size: int
    seed: int
    dtype: str
    device: str


def synthesize_stage(call, embeds: np.ndarray, prompts: Sequence[str], norms: Sequence[float],
                     *, before: Callable[[], None] | None = None) -> list:
    """Run (or finish) the unCLIP stage (``call``: its ``gitd.plan.StageCall``, with model
    ``unclip``), one unit per prototype; returns the PIL images. ``before()`` runs first when a
    unit is missing (a check that must fail before any work)."""
    from gitd.store import (atomic_save_image, atomic_write_json, derive_seed, unit_json,
                            unit_path)

    st: SynthesizeSettings = call.settings

    def compute(chunk: range) -> list:
        seeds = [derive_seed(st.seed, "synthesize", j) for j in chunk]
        return list(zip(seeds, synthesize(
            call.model("unclip"), torch.from_numpy(embeds[list(chunk)]),
            [prompts[j] for j in chunk], num_inference_steps=st.steps,
            guidance_scale=st.guidance_scale, noise_level=st.noise_level,
            negative_prompt=st.negative_prompt, seeds=seeds, norms=[norms[j] for j in chunk],
            height=st.resolution, width=st.resolution)))

    def write(stage, j: int, result) -> None:
        seed, image = result
        atomic_save_image(unit_path(stage, j, ".png"), image)
        atomic_write_json(unit_path(stage, j), {"prompt": prompts[j], "seed": seed})

    def load(stage, j: int):
        unit_json(stage, j, "prompt", "seed")
        return unit_image(stage, j)

    return call.units(len(prompts), st.batch_size, compute, write, load, noun="prototype",
                      before=before)
