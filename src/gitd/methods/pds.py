"""PDS: prototype-guided synthesis (ICLR 2026), training-free, as ``gitd distill --method pds``.

embed (CLIP image + text embeddings of every pair) -> filter (drop the ``filter_fraction`` of
pairs with the lowest image-text cosine) -> prototypes (k-means on images and on texts, clusters
matched by the Hungarian algorithm, prototype = mean of the shared members, caption = the real
caption nearest the text centroid) -> synthesize (unCLIP decoder conditioned on each
prototype's image embedding, prompted by its caption) -> optional recaption -> output.

``--no-diffusion`` is the generator-free variant: the real image nearest each prototype, with
the prototype's caption.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from gitd.data import Dataset
from gitd.data.output import OutputPair
from gitd.log import get_logger
from gitd.methods.base import DistillMethod, DistillSettings
from gitd.models.roles import Role, Runtime
from gitd.registry import register_method
from gitd.settings import Boolean, Interval, Text, setting
from gitd.stages.caption_synthesis import TINY as VLM_TINY
from gitd.stages.caption import CaptionerFields, caption_stage
from gitd.stages.embed import EmbedSettings, embed_stage
from gitd.stages.prototypes import PrototypeSettings, prototype_stage
from gitd.stages.synthesize import SynthesizeSettings, synthesize_stage
from gitd.store import StagePlan

log = get_logger("pds")

# Stability AI withdrew stabilityai/stable-diffusion-2-1-unclip-small with the whole SD 2.x family
# (Nov 2025); this is its community mirror (provenance: docs/pds.md). The old id still works.
UNCLIP_MODEL = "sd2-community/stable-diffusion-2-1-unclip-small"


@dataclass(frozen=True)
class PdsSettings(CaptionerFields, DistillSettings):
    """PDS's settings (the captioner's, used with ``recaption``, from ``CaptionerFields``); the
    defaults are the ``paper`` preset."""

    resolution: int = setting(768, Interval(int, 8, 4096, multiple_of=8),
                              "side of the synthesised images in pixels")
    # unCLIP-small is conditioned on CLIP ViT-L/14 image embeddings, so the score model that
    # embeds the data must be ViT-L/14.
    score_model: str = setting("openai/clip-vit-large-patch14", Text(),
                               "CLIP id or folder that embeds every pair (the unCLIP decoder's "
                               "image encoder), or tiny-clip")
    score_revision: str | None = setting(None, Text(), "revision (commit/tag) of the score "
                                         "model", optional=True, metavar="REV")
    unclip_model: str = setting(UNCLIP_MODEL, Text(),
                                "Stable unCLIP id or folder, or tiny-unclip")
    unclip_revision: str | None = setting(None, Text(), "revision (commit/tag) of the unCLIP "
                                          "model", optional=True, metavar="REV")
    num_inference_steps: int = setting(100, Interval(int, 1, 1000), "unCLIP scheduler steps")
    guidance_scale: float = setting(5.0, Interval(float, 0, None),
                                    "classifier-free guidance scale")
    noise_level: int = setting(10, Interval(int, 0, 1000),
                               "unCLIP noise level added to the image embedding")
    negative_prompt: str = setting("text, watermark", Text(empty=True),
                                   "negative prompt for synthesis")
    filter_fraction: float = setting(0.2, Interval(float, 0, 1, closed="left"),
                                     "fraction of pairs with the lowest image-text cosine "
                                     "dropped before clustering")
    generate_batch_size: int = setting(2, Interval(int, 1, 1024), "prototypes per unCLIP call")
    diffusion: bool = setting(True, Boolean(), "unCLIP synthesis; --no-diffusion: the real "
                              "image nearest each prototype", flags=("--diffusion",
                                                                      "--no-diffusion"))
    # Optional re-captioning of each synthetic image, the score model keeping the best.
    recaption: bool = setting(False, Boolean(), "re-caption each image with the captioner, the "
                              "score model keeping the best (as GITD does)")

_CAPTION = {"num_captions": 5, "temperature": 0.7, "top_p": 0.9, "max_new_tokens": 30,
            "caption_batch_size": 8}
# 100 steps, CFG 5, noise level 10 (the paper's).
_PAPER = {**_CAPTION, "unclip_model": UNCLIP_MODEL,
          "score_model": "openai/clip-vit-large-patch14", "resolution": 768,
          "num_inference_steps": 100, "guidance_scale": 5.0, "noise_level": 10,
          "negative_prompt": "text, watermark", "filter_fraction": 0.2,
          "captioner": "Salesforce/blip2-opt-6.7b-coco", "generate_batch_size": 2}
_FAST = {**_PAPER, "resolution": 512, "num_inference_steps": 30, "num_captions": 3,
         "captioner": "Salesforce/blip-image-captioning-base", "generate_batch_size": 4}
_TINY = {**_PAPER, "unclip_model": "tiny-unclip", "score_model": "tiny-clip", "resolution": 64,
         "num_inference_steps": 4, "captioner": "tiny-blip", "num_captions": 2,
         "max_new_tokens": 8, "generate_batch_size": 4, **VLM_TINY}


@register_method("pds")
class Pds(DistillMethod):
    """PDS: CLIP prototypes of matched image/text clusters, decoded by unCLIP (training-free)."""

    Settings = PdsSettings
    presets = {"paper": _PAPER, "fast": _FAST, "tiny": _TINY}
    roles = {
        "score": Role("score", "score_model", "score_revision"),
        "unclip": Role("unclip", "unclip_model", "unclip_revision", used=lambda s: s.diffusion),
        "captioner": Role("captioner", "captioner", "captioner_revision",
                          used=lambda s: s.recaption),
    }

    @classmethod
    def stages(cls, s: PdsSettings, rt: Runtime) -> dict[str, StagePlan]:
        plan = {
            "embed": StagePlan(EmbedSettings(score=cls.roles["score"].ref(s),
                                             dtype=rt.dtype_name, device=rt.device_type)),
            "prototypes": StagePlan(PrototypeSettings(k=s.pairs,
                                                      filter_fraction=s.filter_fraction,
                                                      seed=s.seed), upstream="embed"),
        }
        if s.diffusion:
            plan["synthesize"] = StagePlan(SynthesizeSettings(
                unclip=cls.roles["unclip"].ref(s), resolution=s.resolution,
                steps=s.num_inference_steps, guidance_scale=s.guidance_scale,
                noise_level=s.noise_level, negative_prompt=s.negative_prompt,
                batch_size=s.generate_batch_size, seed=s.seed, dtype=rt.dtype_name,
                device=rt.device_type), upstream="prototypes")
        if s.recaption:
            plan["caption"] = StagePlan(
                s.caption_settings(cls.roles["captioner"].ref(s), cls.roles["score"].ref(s), rt),
                upstream="synthesize" if s.diffusion else "prototypes")
        return cls.with_caption_synthesis(plan, s, rt)

    def distill(self, dataset: Dataset) -> tuple[list[OutputPair], dict[str, Any]]:
        s, runner, models = self.settings, self.runner, self.models
        plan = runner.plan
        store = embed_stage(runner, "embed", plan["embed"].settings, dataset.records,
                            lambda: models.get("score"))
        texts = [cap for r in dataset for cap in r.captions]

        # -- filter + prototypes ---------------------------------------------------------
        info, proto_image = prototype_stage(runner, "prototypes", plan["prototypes"].settings,
                                            store, dataset.records)
        table = info["prototypes"]
        prompts = [texts[row["caption_index"]] for row in table]

        # -- synthesize ------------------------------------------------------------------
        if "synthesize" in plan:
            def check_match() -> None:
                # A mismatched CLIP/unCLIP pair is a setting error: say so before any work.
                from gitd.models.unclip import check_embedding_match

                check_embedding_match(models.get("unclip"), proto_image.shape[1],
                                      score_model=s.score_model, unclip_model=s.unclip_model)

            images: list[Any] = synthesize_stage(
                runner, "synthesize", plan["synthesize"].settings, proto_image, prompts,
                [row["norm"] for row in table], lambda: models.get("unclip"), before=check_match)
        else:
            runner.skip("synthesize")
            # Generator-free variant: the real image nearest each prototype, copied as is.
            images = [dataset[row["nearest_record"]].image for row in table]

        # -- optional recaption ----------------------------------------------------------
        if "caption" in plan:
            captions = caption_stage(runner, "caption", plan["caption"].settings, images,
                                     lambda: models.get("captioner"),
                                     lambda: models.get("score"))
        else:
            captions = [{"caption": p, "scores": {}} for p in prompts]

        pairs = []
        for j, row in enumerate(table):
            rec = dataset[row["nearest_record"]]
            pairs.append(OutputPair(image=images[j], captions=[captions[j]["caption"]], info={
                "source_id": rec.id, "source_image": str(rec.image), "source_caption": prompts[j],
                "cluster_size": row["members"], "prototype": {
                    "match_count": row["match_count"], "image_cluster": row["image_cluster"],
                    "text_cluster": row["text_cluster"], "members": row["members"],
                    "member_ids": row["member_ids"], "embedding_norm": row["norm"]},
                "scores": captions[j]["scores"]}))
        return pairs, {
            "ablations": {"diffusion": s.diffusion, "recaption": s.recaption},
            "filtering": {"fraction": s.filter_fraction, "pairs_kept": info["pairs_kept"],
                          "pairs_dropped": info["pairs_dropped"]},
            "clustering": {"method": "pds-prototypes", "sizes": [r["members"] for r in table],
                           "match_counts": [r["match_count"] for r in table]},
            "n_valid": int(store.valid.sum()), "problems": store.problems,
        }
