"""PDS: prototype-guided synthesis (ICLR 2026), training-free, as ``gitd distill --method pds``.

embed (CLIP image + text embeddings of every pair) -> filter (drop the ``filter_fraction`` of
pairs with the lowest image-text cosine) -> prototypes (k-means on images and on texts, clusters
matched by the Hungarian algorithm, prototype = mean of the shared members, caption = the real
caption nearest the text centroid) -> unclip (the unCLIP decoder conditioned on each
prototype's image embedding, prompted by its caption) -> optional recaption -> output.

``--no-diffusion`` is the generator-free variant: the real image nearest each prototype, with
the prototype's caption.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from gitd.data.output import OutputPair
from gitd.methods.base import DistillMethod, DistillSettings
from gitd.methods.fields import DiffusionSwitch, GenerationFields, PrototypeFields, ScoreFields
from gitd.models.roles import Role, Runtime
from gitd.plan import Plan, Results
from gitd.registry import register_method
from gitd.settings import Boolean, Interval, Text, inherit, setting
from gitd.stages.caption_synthesis import TINY as VLM_TINY
from gitd.stages.caption import CaptionerFields, caption_stage
from gitd.stages.embed import EmbedSettings, embed_stage
from gitd.stages.prototypes import prototype_stage
from gitd.stages.unclip import SynthesizeSettings, synthesize_stage


@dataclass(frozen=True)
class PdsSettings(ScoreFields, GenerationFields, DiffusionSwitch, PrototypeFields,
                  CaptionerFields, DistillSettings):
    """PDS's settings (the shared ones from their groups: ``gitd.methods.fields``; the
    captioner's, used with ``recaption``, from ``CaptionerFields``); the defaults are the
    ``paper`` preset."""

    # unCLIP-small is conditioned on CLIP ViT-L/14 image embeddings, so the score model that
    # embeds the data must be ViT-L/14.
    score_model: str = inherit(ScoreFields, "score_model", "openai/clip-vit-large-patch14")
    resolution: int = inherit(GenerationFields, "resolution", 768)
    num_inference_steps: int = inherit(GenerationFields, "num_inference_steps", 100)
    guidance_scale: float = inherit(GenerationFields, "guidance_scale", 5.0)
    negative_prompt: str = inherit(GenerationFields, "negative_prompt", "text, watermark")
    unclip_model: str = setting("stabilityai/stable-diffusion-2-1-unclip-small", Text(),
                                "Stable unCLIP id or folder, or tiny-unclip")
    unclip_revision: str | None = setting(None, Text(), "revision (commit/tag) of the unCLIP "
                                          "model", optional=True, metavar="REV")
    noise_level: int = setting(10, Interval(int, 0, 1000),
                               "unCLIP noise level added to the image embedding")
    # Optional re-captioning of each synthetic image, the score model keeping the best.
    recaption: bool = setting(False, Boolean(), "re-caption each image with the captioner, the "
                              "score model keeping the best (as GITD does)")


_CAPTION = {"num_captions": 5, "temperature": 0.7, "top_p": 0.9, "max_new_tokens": 30,
            "caption_batch_size": 8}
# 100 steps, CFG 5, noise level 10 (the paper's).
_PAPER = {**_CAPTION, "unclip_model": "stabilityai/stable-diffusion-2-1-unclip-small",
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
        "unclip": Role("unclip", "unclip_model", "unclip_revision"),
        "captioner": Role("captioner", "captioner", "captioner_revision"),
    }

    @classmethod
    def plan(cls, s: PdsSettings, rt: Runtime) -> Plan:
        def ref(role):
            return cls.roles[role].ref(s)

        p = Plan()
        embed = p.add("embed", EmbedSettings(score=ref("score"), dtype=rt.dtype_name,
                                             device=rt.device_type),
                      lambda call: embed_stage(call, call.dataset.records),
                      roles={"score": "score"})
        # -- filter + prototypes ---------------------------------------------------------
        protos = p.add("prototypes", s.prototype_settings(),
                       lambda call: prototype_stage(call, call[embed], call.dataset.records),
                       upstream=(embed,))

        def table(r) -> list[dict]:
            return r[protos][0]["prototypes"]

        def prompts(r) -> list[str]:
            texts = [cap for rec in r.dataset for cap in rec.captions]
            return [texts[row["caption_index"]] for row in table(r)]

        p.output("prototypes", lambda r: r[protos][0], reads=(protos,))
        p.output("prompts", prompts, reads=(protos,))
        p.output("source", lambda r: (int(r[embed].valid.sum()), r[embed].problems),
                 reads=(embed,))

        # -- unCLIP from each prototype, or the real image nearest it ----------------------
        if s.diffusion:
            def run_unclip(call) -> list:
                proto_image = call[protos][1]

                def check_match() -> None:
                    # A mismatched CLIP/unCLIP pair is a setting error: say so before any work.
                    from gitd.models.unclip import check_embedding_match

                    check_embedding_match(call.model("unclip"), proto_image.shape[1],
                                          score_model=s.score_model,
                                          unclip_model=s.unclip_model)

                return synthesize_stage(call, proto_image, prompts(call),
                                        [row["norm"] for row in table(call)],
                                        before=check_match)

            gen = p.add("unclip", SynthesizeSettings(
                unclip=ref("unclip"), resolution=s.resolution, steps=s.num_inference_steps,
                guidance_scale=s.guidance_scale, noise_level=s.noise_level,
                negative_prompt=s.negative_prompt, batch_size=s.generate_batch_size,
                seed=s.seed, dtype=rt.dtype_name, device=rt.device_type), run_unclip,
                upstream=(protos,), roles={"unclip": "unclip"})
            images = p.output("images", lambda r: r[gen], reads=(gen,))
        else:
            # Generator-free variant: the real image nearest each prototype, copied as is.
            images = p.output("images", lambda r: [r.dataset[row["nearest_record"]].image
                                                   for row in table(r)], reads=(protos,))

        # -- optional recaption ----------------------------------------------------------
        if s.recaption:
            cap = p.add("caption", s.caption_settings(ref("captioner"), ref("score"), rt),
                        lambda call: caption_stage(call, images(call)), upstream=images.reads,
                        roles={"captioner": "captioner", "score": "score"})
            p.output("captions", lambda r: r[cap], reads=(cap,))
        else:
            p.output("captions", lambda r: [{"caption": t, "scores": {}} for t in prompts(r)],
                     reads=(protos,))
        return p

    def assemble(self, results: Results) -> tuple[list[OutputPair], dict[str, Any]]:
        s, dataset = self.settings, results.dataset
        info = results.output("prototypes")
        table = info["prototypes"]
        images, captions = results.output("images"), results.output("captions")
        prompts = results.output("prompts")
        n_valid, problems = results.output("source")
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
            "n_valid": n_valid, "problems": problems,
        }
