"""The score model: CLIP-style image and text embeddings and their cosine similarity.

GITD uses it twice: to keep the candidate image closest to its prompt, and to keep the sampled
caption closest to its image.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F


class ScoreModel:
    """Wraps a transformers ``CLIPModel`` (or any model with ``get_image_features`` and
    ``get_text_features``) with its tokenizer and image processor.

    Embeddings are L2-normalised float32 on the CPU, so callers can compare and store them
    without caring about the model's device or dtype.
    """

    def __init__(self, model, tokenizer, image_processor, *, name: str, batch_size: int = 64):
        self.model = model
        self.tokenizer = tokenizer
        self.image_processor = image_processor
        self.name = name
        self.batch_size = batch_size

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    @property
    def max_text_length(self) -> int:
        cfg = getattr(self.model.config, "text_config", self.model.config)
        return int(getattr(cfg, "max_position_embeddings", 77))

    @staticmethod
    def feature_tensor(out) -> torch.Tensor:
        # transformers 5 may return a model output rather than a tensor from get_*_features.
        if isinstance(out, torch.Tensor):
            return out
        for key in ("pooler_output", "image_embeds", "text_embeds"):
            value = getattr(out, key, None)
            if isinstance(value, torch.Tensor):
                return value
        return out[0]

    @torch.inference_mode()
    def encode_images(self, images: Sequence, *, normalize: bool = True) -> torch.Tensor:
        """``[n, d]`` unit vectors for PIL images (converted to RGB); ``normalize=False`` gives
        the raw projected embeddings (what an unCLIP decoder is conditioned on)."""
        chunks = []
        for i in range(0, len(images), self.batch_size):
            batch = [im.convert("RGB") for im in images[i:i + self.batch_size]]
            pixels = self.image_processor(images=batch, return_tensors="pt")["pixel_values"]
            feats = self.feature_tensor(self.model.get_image_features(
                pixel_values=pixels.to(self.device, self.dtype)))
            feats = feats.float()
            chunks.append((F.normalize(feats, dim=-1) if normalize else feats).cpu())
        return torch.cat(chunks) if chunks else torch.empty(0, 0)

    @torch.inference_mode()
    def encode_texts(self, texts: Sequence[str]) -> torch.Tensor:
        """``[n, d]`` unit vectors; texts longer than the model's context are truncated."""
        chunks = []
        for i in range(0, len(texts), self.batch_size):
            enc = self.tokenizer(list(texts[i:i + self.batch_size]), padding=True,
                                 truncation=True, max_length=self.max_text_length,
                                 return_tensors="pt")
            enc = {k: v.to(self.device) for k, v in enc.items()
                   if k in ("input_ids", "attention_mask")}
            feats = self.feature_tensor(self.model.get_text_features(**enc))
            chunks.append(F.normalize(feats.float(), dim=-1).cpu())
        return torch.cat(chunks) if chunks else torch.empty(0, 0)

    def similarity(self, images: Sequence, texts: Sequence[str]) -> torch.Tensor:
        """``[n_images, n_texts]`` cosine similarities."""
        return self.encode_images(images) @ self.encode_texts(texts).T

    def score(self, images: Sequence, texts: Sequence[str]) -> torch.Tensor:
        """``[n]`` cosine of image i with text i."""
        if len(images) != len(texts):
            raise ValueError(f"score needs as many texts as images, got {len(images)} images "
                             f"and {len(texts)} texts")
        return (self.encode_images(images) * self.encode_texts(texts)).sum(-1)

    def __repr__(self) -> str:
        return f"ScoreModel({self.name!r})"
