"""The ``sample`` stage: text-to-image generation, one image per prompt, each from its own seed (EDGE).

The pipeline is the registry's ``text2img`` model (``gitd.models.registry.text2img_pipeline``:
the img2img pipeline's components under a ``StableDiffusionPipeline``, so the same names and
weights serve both, and the fine-tuned UNet (``gitd.stages.finetune.apply_trained``) is
loaded onto it). ``sample_images`` makes
one image per prompt in ONE pipeline call; image i's initial noise comes from its own generator
seeded by ``seeds[i]``, so it does not depend on the other prompts of the batch (up to the
low-order bits batch composition may change, which the resumable stage keeps fixed).

``random_prompts`` is EDGE's prompt choice: training captions drawn uniformly without
replacement (seeded here; EDGE's script draws unseeded).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Sequence

import numpy as np
import torch

from gitd.errors import ConfigError
from gitd.models.roles import ModelRef
from gitd.settings import Interval, check


def sample_images(pipe, prompts: Sequence[str], *, seeds: Sequence[int], guidance_scale: float,
                  num_inference_steps: int, resolution: int,
                  negative_prompt: str | None = None) -> list:
    """One PIL image per prompt from one ``pipe`` call (a ``StableDiffusionPipeline``)."""
    check("num_inference_steps", num_inference_steps, Interval(int, 1, None))
    if len(prompts) != len(seeds):
        raise ValueError(f"need one seed per prompt: {len(prompts)} prompts, {len(seeds)} seeds")
    if not prompts:
        return []
    generators = [torch.Generator("cpu").manual_seed(int(s)) for s in seeds]
    out = pipe(prompt=list(prompts), negative_prompt=[negative_prompt] * len(prompts)
               if negative_prompt else None, num_inference_steps=int(num_inference_steps),
               guidance_scale=float(guidance_scale), height=int(resolution),
               width=int(resolution), generator=generators, output_type="pil")
    return list(out.images)


def random_prompts(captions_per_record: Sequence[Sequence[str]], k: int,
                   seed: int) -> list[tuple[int, int]]:
    """EDGE's prompts: ``k`` (record, caption) positions drawn uniformly without replacement
    from every caption of every record, in the order drawn."""
    flat = [(r, c) for r, caps in enumerate(captions_per_record) for c in range(len(caps))]
    if k > len(flat):
        raise ConfigError(f"asked for {k} prompts but the data has only {len(flat)} captions")
    order = np.random.default_rng(seed).choice(len(flat), size=k, replace=False)
    return [flat[int(i)] for i in order]


# -- as a stage of a method run ------------------------------------------------------------------
@dataclass(frozen=True)
class SampleSettings:
    """Everything a pair's image depends on besides its prompt (the ``text2img`` key; the
    prompts follow from the upstream stage)."""

    version: ClassVar[int] = 1  # bump when a change alters the images this stage writes

    pipeline: ModelRef
    finetuned: str | None  # fingerprint of the trained UNet parameters; None: the base model
    resolution: int
    guidance_scale: float
    steps: int
    negative_prompt: str
    # Pairs per pipeline call: batch composition can change low-order bits of the images.
    batch_size: int
    seed: int
    dtype: str
    device: str


def sample_stage(call, prompts: Sequence[str], *, trained: dict | None = None,
                 source: str = "trained") -> list[Any]:
    """Run (or finish) the text-to-image stage (``call``: its ``gitd.plan.StageCall``, with
    model ``pipeline``, an SD pipeline): unit ``j`` is the image of ``prompts[j]``, from seed
    ``derive_seed(seed, "sample", j)``. ``trained``: fine-tuned UNet tensors loaded onto the
    pipeline's UNet first (``gitd.stages.finetune.apply_trained``; ``source`` names them in
    errors). Returns the PIL images."""
    from gitd.data.images import open_rgb
    from gitd.store import atomic_save_image, atomic_write_json, derive_seed, unit_path

    st: SampleSettings = call.settings
    pipes: list[Any] = []

    def pipeline():
        if not pipes:
            pipe = call.model("pipeline")
            if trained is not None:
                from gitd.stages.finetune.state import apply_trained

                apply_trained(pipe.unet, trained, source=source)
            pipes.append(pipe)
        return pipes[0]

    def compute(chunk: range) -> list:
        seeds = [derive_seed(st.seed, "sample", j) for j in chunk]
        images = sample_images(pipeline(), [prompts[j] for j in chunk], seeds=seeds,
                               guidance_scale=st.guidance_scale, num_inference_steps=st.steps,
                               resolution=st.resolution, negative_prompt=st.negative_prompt)
        return list(zip(seeds, images))

    def write(stage, j: int, result) -> None:
        seed, image = result
        atomic_save_image(unit_path(stage, j, ".png"), image)
        atomic_write_json(unit_path(stage, j), {"prompt": prompts[j], "seed": seed})

    return call.units(len(prompts), st.batch_size, compute, write,
                      lambda stage, j: open_rgb(unit_path(stage, j, ".png")), noun="pair",
                      before=pipeline)
