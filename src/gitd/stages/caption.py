"""Caption: M sampled captions per synthetic image; the score model keeps the closest one."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

from gitd.errors import ConfigError, check_positive_int
from gitd.models.captioner import FALLBACK_CAPTION
from gitd.store import Stage, require, unit_json, unit_path


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
    check_positive_int("num_captions", num_captions)
    check_positive_int("max_new_tokens", max_new_tokens)
    if not float(temperature) > 0:
        raise ConfigError(f"temperature must be > 0, got {temperature!r}")
    if not 0 < float(top_p) <= 1:
        raise ConfigError(f"top_p must be in (0, 1], got {top_p!r}")
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
