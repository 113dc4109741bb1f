"""CLIP's real tokenizer, built offline from open-clip-torch's BPE vocabulary, tokenises as CLIP
does, and the models that use CLIP's tokenizer in reality use it here too."""

from __future__ import annotations

import sys

import pytest
import torch

from gitd.models.clip_tokenizer import BOS_ID, EOS_ID, clip_tokenizer, vocabulary

TEXTS = ["a photo of a cat", "A PHOTO of a Dog, sitting on the grass!",
         "Hello, World! It's 2024 - naive cafe", "a   diagram\nof\tthings",
         "an astronaut riding a horse on mars, trending on artstation, 4k",
         "electroencephalography and pneumonoultramicroscopicsilicovolcanoconiosis"]


def test_built_without_importing_open_clip():
    import subprocess

    code = ("import sys; from gitd.models.clip_tokenizer import clip_tokenizer; "
            "t = clip_tokenizer(); assert len(t) == 49408; assert 'open_clip' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=300)
    vocab, merges = vocabulary()
    assert len(vocab) == 49408 and len(merges) == 48894
    assert vocab["<|startoftext|>"] == BOS_ID == 49406 and vocab["<|endoftext|>"] == EOS_ID
    tok = clip_tokenizer()
    assert len(tok) == 49408 and tok.model_max_length == 77
    assert (tok.bos_token, tok.eos_token, tok.pad_token) == ("<|startoftext|>", "<|endoftext|>",
                                                             "<|endoftext|>")


def test_tokenises_as_clip_does():
    """Against open_clip's own SimpleTokenizer (CLIP's reference implementation): the same ids,
    and the same truncation to 77 positions ending in <|endoftext|>."""
    open_clip_tokenizer = pytest.importorskip("open_clip.tokenizer")
    reference = open_clip_tokenizer.SimpleTokenizer()
    tok = clip_tokenizer()
    for text in TEXTS:
        want = reference(text, context_length=77)[0].tolist()
        want = want[:want.index(EOS_ID) + 1]
        assert tok(text)["input_ids"] == want, text
    # Known ids (CLIP's vocabulary): "a photo of a cat".
    assert tok("a photo of a cat")["input_ids"] == [49406, 320, 1125, 539, 320, 2368, 49407]
    long = " ".join(["word"] * 200)
    ids = tok(long, truncation=True, max_length=77)["input_ids"]
    want = reference(long, context_length=77)[0].tolist()
    assert len(ids) == 77 and ids == want and ids[-1] == EOS_ID


def test_models_that_use_clips_tokenizer_use_it():
    from transformers import CLIPTokenizer

    from gitd.models import build_img2img, build_score_model
    from gitd.models.unclip import build_unclip

    for tok in (build_img2img("tiny-sd").tokenizer, build_score_model("tiny-clip").tokenizer,
                build_unclip("tiny-unclip").tokenizer):
        assert isinstance(tok, CLIPTokenizer) and len(tok) == 49408
    pipe = build_img2img("tiny-sd")
    assert pipe.text_encoder.config.vocab_size == 49408
    ids = pipe.tokenizer(["a red square"], padding="max_length", max_length=77,
                         return_tensors="pt").input_ids
    with torch.no_grad():
        out = pipe.text_encoder(ids)[0]
    assert out.shape == (1, 77, pipe.text_encoder.config.hidden_size)
    score = build_score_model("tiny-clip")
    assert score.model.config.text_config.vocab_size == 49408
