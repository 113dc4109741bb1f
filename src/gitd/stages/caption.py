"""Caption: M sampled captions per synthetic image; the score model keeps the closest one."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar, Sequence

from gitd.models.captioner import FALLBACK_CAPTION
from gitd.models.roles import ModelRef
from gitd.settings import Interval, Text, check, setting
from gitd.store import Stage, atomic_write_json, derive_seed, require, unit_json, unit_path


@dataclass
class CaptionResult:
    """``best`` = ``candidates[index]``; ``scores`` are image-caption cosines (empty without a
    score model); ``fallback`` is True when a sampled caption was empty and replaced."""

    best: str
    candidates: list[str]
    scores: list[float] = field(default_factory=list)
    index: int = 0
    fallback: bool = False


def caption_images(captioner, score_model, images: Sequence, *, num_captions: int,
                   temperature: float, top_p: float, max_new_tokens: int,
                   seeds: Sequence[int], use_score: bool = True) -> list[CaptionResult]:
    """One ``CaptionResult`` per image. Image ``i``'s captions depend only on ``seeds[i]``.

    ``use_score=False`` (the paper's /S ablation) keeps the first sampled caption; scores are
    still recorded when ``score_model`` is given.
    """
    check("num_captions", num_captions, Interval(int, 1, None))
    check("max_new_tokens", max_new_tokens, Interval(int, 1, None))
    check("temperature", temperature, Interval(float, 0, None, closed="right"))
    check("top_p", top_p, Interval(float, 0, 1, closed="right"))
    if use_score and score_model is None:
        raise ValueError("caption_images with use_score=True needs a score model")
    if len(seeds) != len(images):
        raise ValueError(f"need one seed per image: {len(images)} images, {len(seeds)} seeds")
    if not images:
        return []
    sampled = captioner.generate(list(images), num_captions=num_captions,
                                 temperature=temperature, top_p=top_p,
                                 max_new_tokens=max_new_tokens, seeds=list(seeds))
    sims = None
    if score_model is not None:
        # One text pass over every caption, one image pass over every image.
        flat = [c for caps in sampled for c in caps]
        text_emb = score_model.encode_texts(flat)
        img_emb = score_model.encode_images(list(images))
    results, offset = [], 0
    for i, caps in enumerate(sampled):
        caps = [c if c.strip() else FALLBACK_CAPTION for c in caps]
        scores: list[float] = []
        if score_model is not None:
            sims = text_emb[offset:offset + len(caps)] @ img_emb[i]
            scores = [float(s) for s in sims]
        offset += len(caps)
        index = 0
        if use_score and scores:
            index = max(range(len(scores)), key=lambda j: (scores[j], -j))
        results.append(CaptionResult(best=caps[index], candidates=list(caps), scores=scores,
                                     index=index, fallback=FALLBACK_CAPTION in caps))
    return results


def load_caption_unit(stage: Stage, j: int) -> dict:
    """A finished caption unit (``run_units``' ``load``): the kept caption and, as ``scores``,
    every candidate with its score. ``Damaged`` if its JSON lacks them (e.g. emptied)."""
    meta = unit_json(stage, j, "caption", "candidates", "scores")
    require(isinstance(meta["caption"], str) and meta["caption"].strip(),
            f"{unit_path(stage, j).name} has an empty caption")
    return {"caption": meta["caption"], "scores": {"caption_candidates": meta["candidates"],
                                                   "caption_scores": meta["scores"]}}


# -- as a stage of a method run ------------------------------------------------------------------

@dataclass(frozen=True)
class CaptionerFields:
    """The caption stage's settings as a method declares them (a mixin for methods that
    caption: ``class MySettings(CaptionerFields, DistillSettings)``)."""

    captioner: str = setting("Salesforce/blip2-opt-6.7b-coco", Text(),
                             "image-to-text model id or folder (BLIP, BLIP-2, ...), or tiny-blip")
    captioner_revision: str | None = setting(None, Text(), "revision (commit/tag) of the "
                                             "captioner", optional=True, metavar="REV")
    num_captions: int = setting(5, Interval(int, 1, 64), "captions sampled per synthetic image; "
                                "the score model keeps one")
    temperature: float = setting(0.7, Interval(float, 0, None, closed="right"),
                                 "captioner sampling temperature")
    top_p: float = setting(0.9, Interval(float, 0, 1, closed="right"),
                           "captioner nucleus sampling top_p")
    max_new_tokens: int = setting(30, Interval(int, 1, 512), "longest caption, in tokens")
    # Part of the cache key: batch composition can change low-order bits of the captions.
    caption_batch_size: int = setting(8, Interval(int, 1, 1024), "images per captioner call")

    def caption_settings(self, captioner: ModelRef, score: ModelRef | None,
                         runtime) -> "CaptionSettings":
        """The caption stage's settings for these fields (``runtime``: a
        ``gitd.models.roles.Runtime``)."""
        return CaptionSettings(captioner=captioner, score=score, num_captions=self.num_captions,
                               temperature=self.temperature, top_p=self.top_p,
                               max_new_tokens=self.max_new_tokens,
                               batch_size=self.caption_batch_size, seed=self.seed,
                               dtype=runtime.dtype_name, device=runtime.device_type)


@dataclass(frozen=True)
class CaptionSettings:
    """Everything an image's caption depends on besides the image (the ``caption`` key)."""

    version: ClassVar[int] = 1  # bump when a change alters the captions this stage writes

    captioner: ModelRef
    score: ModelRef | None  # None: keep the first sample (the /S ablation)
    num_captions: int
    temperature: float
    top_p: float
    max_new_tokens: int
    # Images per captioner call: batch composition can change low-order bits.
    batch_size: int
    seed: int
    dtype: str
    device: str


def caption_stage(call, images: Sequence) -> list[dict[str, Any]]:
    """Run (or finish) the caption stage (``call``: its ``gitd.plan.StageCall``, with models
    ``captioner`` and, unless /S, ``score``) over ``images`` (PIL images or paths), one unit
    per image. Returns per unit ``caption`` and its ``scores`` (the candidates and their
    cosines)."""
    from gitd.data.images import is_image_ref, open_rgb

    st: CaptionSettings = call.settings
    models: dict[str, Any] = {}

    def compute(chunk: range) -> list:
        if not models:
            models["captioner"] = call.model("captioner")
            models["scorer"] = call.optional_model("score")
        imgs = [open_rgb(images[j]) if is_image_ref(images[j]) else images[j] for j in chunk]
        seeds = [derive_seed(st.seed, "caption", j) for j in chunk]
        results = caption_images(
            models["captioner"], models["scorer"], imgs, num_captions=st.num_captions,
            temperature=st.temperature, top_p=st.top_p, max_new_tokens=st.max_new_tokens,
            seeds=seeds, use_score=models["scorer"] is not None)
        return list(zip(seeds, results))

    def write(stage, j: int, result) -> None:
        seed, res = result
        atomic_write_json(unit_path(stage, j), {
            "caption": res.best, "candidates": list(res.candidates),
            "scores": [float(x) for x in res.scores], "seed": seed})

    return call.units(len(images), st.batch_size, compute, write, load_caption_unit,
                      noun="image")
