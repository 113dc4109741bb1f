"""The captioner: sampled captions from any transformers image-to-text model.

Reproducibility: sampling draws from torch's global RNG, and in a batched ``generate`` call the
draws for one image depend on which other images share the batch. So each image is generated in
its own call, with the RNG seeded from that image's seed (in a forked RNG, leaving the caller's
stream untouched); its ``num_captions`` samples still run as one batch via
``num_return_sequences``. A resumed run therefore gives the same captions as an uninterrupted one
whatever the batch size.
"""

from __future__ import annotations

import re
from typing import Sequence

import torch

from gitd.log import get_logger

log = get_logger("gitd.models")

# The text each captioner was fine-tuned to continue, by hub id; a captioner not listed gets no
# prompt. Salesforce/blip2-opt-6.7b-coco is LAVIS' COCO-captioning fine-tune, trained and
# evaluated as continuations of "a photo of" (LAVIS, lavis/configs/models/blip2/
# blip2_caption_opt6.7b.yaml: ``prompt: "a photo of"``; its generate() drops the prompt's
# tokens from the output). BLIP base captions without one (transformers' examples: an
# unconditional caption).
DEFAULT_PROMPTS = {"Salesforce/blip2-opt-6.7b-coco": "a photo of"}


def default_prompt(captioner: str) -> str | None:
    """The prompt ``captioner`` was fine-tuned to continue (``DEFAULT_PROMPTS``), or None."""
    return DEFAULT_PROMPTS.get(captioner)


def strip_prompt(text: str, prompt: str | None) -> str:
    """``text`` without a leading copy of ``prompt`` (case and spacing aside): models that
    echo it in their text (BLIP) caption like those that do not (BLIP-2 OPT)."""
    if not prompt:
        return text
    head = clean_caption(prompt)
    if head and text.lower().startswith(head.lower()):
        rest = text[len(head):]
        if not rest or not rest[0].isalnum():  # "a photo of" is not stripped from "a photo off"
            return rest.strip()
    return text


# Used when a model samples nothing printable; flagged (CaptionResult.fallback, a warning) so a
# user can see it happened. Never an empty string: an empty caption breaks the retrieval model.
FALLBACK_CAPTION = "an image"

_SPACE = re.compile(r"\s+")


def clean_caption(text: str) -> str:
    return _SPACE.sub(" ", text.replace("\x00", " ")).strip()


class Captioner:
    """``model`` is a transformers image-to-text model with ``generate`` (BLIP, BLIP-2, LLaVA,
    ...); ``processor`` its processor (image processor + tokenizer). With a ``prompt`` and a
    processor that has a chat template (LLaVA and other chat VLMs), the prompt is sent as one
    user turn holding the image and the prompt text; otherwise as plain text (BLIP-2)."""

    def __init__(self, model, processor, *, name: str, prompt: str | None = None):
        self.model = model
        self.processor = processor
        self.name = name
        self.prompt = prompt
        self.fallbacks = 0
        # Set by CPU offload (gitd.models.offload): the GPU the model computes on while its
        # weights wait in CPU memory (or on the meta device) between uses.
        self.execution_device: torch.device | None = None

    @property
    def device(self) -> torch.device:
        if self.execution_device is not None:
            return self.execution_device
        return next(self.model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    @property
    def tokenizer(self):
        return getattr(self.processor, "tokenizer", self.processor)

    def _inputs(self, image, prompt: str | None) -> dict:
        kwargs = {"images": [image.convert("RGB")], "return_tensors": "pt"}
        if prompt:
            kwargs["text"] = [self._prompt_text(prompt)]
        enc = self.processor(**kwargs)
        out = {}
        for key, value in enc.items():
            if not isinstance(value, torch.Tensor):
                continue
            value = value.to(self.device)
            out[key] = value.to(self.dtype) if value.is_floating_point() else value
        return out

    def _prompt_text(self, prompt: str | None = None) -> str:
        prompt = self.prompt if prompt is None else prompt
        if getattr(self.processor, "chat_template", None):
            turn = [{"role": "user", "content": [{"type": "image"},
                                                 {"type": "text", "text": prompt}]}]
            return self.processor.apply_chat_template(turn, add_generation_prompt=True)
        return prompt

    @torch.inference_mode()
    def _sample(self, image, *, num_captions, temperature, top_p, max_new_tokens, seed,
                prompt) -> list[str]:
        inputs = self._inputs(image, prompt)
        devices = [self.device.index or 0] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(seed)
            out = self.model.generate(**inputs, do_sample=True, temperature=float(temperature),
                                      top_p=float(top_p), max_new_tokens=int(max_new_tokens),
                                      num_return_sequences=int(num_captions))
        sequences = out.sequences if hasattr(out, "sequences") else out
        prompt_ids = inputs.get("input_ids")
        if prompt_ids is not None and sequences.shape[1] > prompt_ids.shape[1] and torch.equal(
                sequences[:, :prompt_ids.shape[1]].cpu(),
                prompt_ids.expand(sequences.shape[0], -1).cpu()):
            # Decoder-only language models (BLIP-2 OPT) echo the prompt tokens first.
            sequences = sequences[:, prompt_ids.shape[1]:]
        texts = self.tokenizer.batch_decode(sequences, skip_special_tokens=True)
        # A plain-text prompt is the start of the caption: left out of it, as LAVIS does.
        chat = bool(getattr(self.processor, "chat_template", None))
        return [strip_prompt(clean_caption(t), None if chat else prompt) for t in texts]

    def generate(self, images: Sequence, *, num_captions: int, temperature: float, top_p: float,
                 max_new_tokens: int, seeds: Sequence[int],
                 prompt: str | None = ...) -> list[list[str]]:
        """``num_captions`` sampled captions per image, each non-empty; image ``i``'s captions
        depend only on ``seeds[i]``. ``prompt``: the text to continue for this call (default:
        the captioner's own ``prompt``; None or '' for none), never part of the captions."""
        if prompt is ...:
            prompt = self.prompt
        if len(seeds) != len(images):
            raise ValueError(f"need one seed per image, got {len(seeds)} seeds for "
                             f"{len(images)} images")
        results = []
        for image, seed in zip(images, seeds):
            caps = self._sample(image, num_captions=num_captions, temperature=temperature,
                                top_p=top_p, max_new_tokens=max_new_tokens, seed=int(seed),
                                prompt=prompt or None)
            if not all(caps):
                good = [c for c in caps if c]
                replacement = good[0] if good else FALLBACK_CAPTION
                n_empty = sum(not c for c in caps)
                self.fallbacks += n_empty
                log.warning("%s sampled %d empty caption(s) for one image (seed %d); replaced "
                            "with %r", self.name, n_empty, seed, replacement)
                caps = [c or replacement for c in caps]
            results.append(caps)
        return results

    def __repr__(self) -> str:
        return f"Captioner({self.name!r})"
