"""The captioning prompt (issue 19 item 7): declared, defaulted per captioner, continued by the
model and left out of its captions, part of the caption stage's key."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from gitd.config import make_config
from gitd.models import build_captioner
from gitd.models.captioner import Captioner, default_prompt, strip_prompt
from gitd.models.roles import Runtime


def tiny_blip2_opt(seed: int = 0) -> Captioner:
    """BLIP-2 with an OPT decoder (the classes of Salesforce/blip2-opt-6.7b-coco) at toy sizes,
    with a processor that inserts the query-token placeholders as transformers 5 expects."""
    from transformers import (
        Blip2Config,
        Blip2ForConditionalGeneration,
        Blip2Processor,
        Blip2QFormerConfig,
        Blip2VisionConfig,
        BlipImageProcessor,
        OPTConfig,
    )

    from gitd.models.tiny import bert_tokenizer

    tok = bert_tokenizer(max_length=64)
    tok.add_special_tokens({"additional_special_tokens": ["<image>"]})
    tok.model_input_names = ["input_ids", "attention_mask"]
    queries = 4
    vision = Blip2VisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                               num_attention_heads=4, image_size=32, patch_size=8)
    qformer = Blip2QFormerConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=4,
                                 intermediate_size=64, encoder_hidden_size=32,
                                 vocab_size=len(tok))
    text = OPTConfig(vocab_size=len(tok), hidden_size=32, ffn_dim=64, num_hidden_layers=2,
                     num_attention_heads=4, max_position_embeddings=128, word_embed_proj_dim=32,
                     bos_token_id=tok.cls_token_id, eos_token_id=tok.sep_token_id,
                     pad_token_id=tok.pad_token_id)
    config = Blip2Config(vision_config=vision.to_dict(), qformer_config=qformer.to_dict(),
                         text_config=text.to_dict(), num_query_tokens=queries,
                         image_token_index=tok.convert_tokens_to_ids("<image>"))
    torch.manual_seed(seed)
    model = Blip2ForConditionalGeneration(config).eval()
    processor = Blip2Processor(image_processor=BlipImageProcessor(
        size={"height": 32, "width": 32}), tokenizer=tok, num_query_tokens=queries)
    return Captioner(model, processor, name="tiny-blip2-opt")


def contains(seq: list, sub: list) -> bool:
    return any(seq[i:i + len(sub)] == sub for i in range(len(seq) - len(sub) + 1))


def images(n=2):
    return [Image.new("RGB", (32, 32), (40 * i, 90, 200 - 30 * i)) for i in range(n)]


def test_strip_prompt():
    assert strip_prompt("a photo of a dog on a couch", "a photo of") == "a dog on a couch"
    assert strip_prompt("A Photo of  two cats", "a photo of") == "two cats"
    assert strip_prompt("a photo off the wall", "a photo of") == "a photo off the wall"
    assert strip_prompt("a dog", "a photo of") == "a dog"
    assert strip_prompt("a photo of", "a photo of") == ""
    assert strip_prompt("a dog", None) == "a dog"


def test_the_prompt_defaults_per_captioner():
    assert default_prompt("Salesforce/blip2-opt-6.7b-coco") == "a photo of"
    assert default_prompt("Salesforce/blip-image-captioning-base") is None
    paper, fast = make_config("paper"), make_config("fast")
    assert paper.resolved_caption_prompt() == "a photo of"
    assert fast.resolved_caption_prompt() is None
    assert make_config("paper", caption_prompt="").resolved_caption_prompt() is None
    assert make_config("fast", caption_prompt="a picture of").resolved_caption_prompt() == \
        "a picture of"
    assert make_config("paper", method="pds").resolved_caption_prompt() == "a photo of"


def test_the_prompt_is_part_of_the_caption_key_only():
    from gitd.registry import get_method

    rt = Runtime.resolve("cpu")
    gitd = get_method("gitd")

    def plan(**kw):
        return gitd.full_plan(make_config("tiny", pairs=2, **kw), rt)

    plain, prompted = plan().keys("data"), plan(caption_prompt="a photo of").keys("data")
    caption = next(e for e in plan(caption_prompt="a photo of") if e.name == "caption")
    assert caption.settings.prompt == "a photo of"
    assert plain["caption"] != prompted["caption"]
    assert all(plain[k] == prompted[k] for k in plain if k not in ("caption",
                                                                     "caption_synthesis"))


@pytest.mark.parametrize("make", [tiny_blip2_opt, lambda: build_captioner("tiny-blip")],
                         ids=["blip2-opt", "blip"])
def test_the_model_continues_the_prompt_and_the_caption_leaves_it_out(make, monkeypatch):
    cap = make()
    sent = []
    real = cap.model.generate

    def generate(**inputs):
        sent.append(inputs.get("input_ids"))
        return real(**inputs)

    monkeypatch.setattr(cap.model, "generate", generate)
    kw = dict(num_captions=3, temperature=1.0, top_p=1.0, max_new_tokens=6, seeds=[1, 2])
    with_prompt = cap.generate(images(), prompt="a photo of", **kw)
    ids = cap.tokenizer("a photo of", add_special_tokens=False)["input_ids"]
    # The prompt's tokens went into the model ...
    assert sent and all(contains(x[0].tolist(), ids) for x in sent)
    # ... and no caption starts with it.
    for caps in with_prompt:
        assert len(caps) == 3 and all(c and not c.lower().startswith("a photo of")
                                      for c in caps)
    sent.clear()
    cap.generate(images(), prompt=None, **kw)
    assert all(x is None or not contains(x[0].tolist(), ids) for x in sent)


def test_the_caption_stage_sends_its_prompt(monkeypatch):
    from gitd.stages.caption import caption_images

    seen = []

    class Fake:
        def generate(self, imgs, **kw):
            seen.append(kw["prompt"])
            return [["a cat"] for _ in imgs]

    caption_images(Fake(), None, images(1), num_captions=1, temperature=1.0, top_p=1.0,
                   max_new_tokens=5, seeds=[0], use_score=False, prompt="a photo of")
    assert seen == ["a photo of"]
