"""EDGE's two loss terms on CLIP features of a batch of (generated image, caption) pairs.

* ``contrastive_loss``: symmetric InfoNCE. Image and text features are L2-normalised; logits are
  their cosines divided by the temperature; pair i's positive is caption i; the loss is the mean
  of the image-to-text and text-to-image cross-entropies.
* ``diversity_loss``: each pair's joint feature is the concatenation [image, text] of the raw
  (unnormalised) features, L2-normalised, as in EDGE's released code; the loss is the mean
  cosine over the n(n-1) ordered pairs i != j. Lower means a more varied batch.

Both are computed in at least float32 (autocast hands over fp16/bf16 features).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _wide(x: torch.Tensor) -> torch.Tensor:
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


def contrastive_loss(image: torch.Tensor, text: torch.Tensor,
                     temperature: float = 0.1) -> torch.Tensor:
    if image.shape != text.shape or image.ndim != 2:
        raise ValueError(f"need [n, d] image and text features of one shape, got "
                         f"{tuple(image.shape)} and {tuple(text.shape)}")
    logits = F.normalize(_wide(image), dim=-1) @ F.normalize(_wide(text), dim=-1).T
    logits = logits / float(temperature)
    labels = torch.arange(len(logits), device=logits.device)
    return 0.5 * (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels))


def diversity_loss(image: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
    n = len(image)
    if n < 2:
        raise ValueError("the diversity term needs at least 2 pairs in a batch")
    joint = F.normalize(torch.cat([_wide(image), _wide(text)], dim=-1), dim=-1)
    sim = joint @ joint.T
    return (sim.sum() - sim.diagonal().sum()) / (n * (n - 1))


def loss_terms(image: torch.Tensor, text: torch.Tensor, denoise: torch.Tensor | None, *,
               contrastive_weight: float, diversity_weight: float, denoise_weight: float,
               temperature: float) -> dict[str, torch.Tensor]:
    """Every term and their weighted sum ``loss``. ``denoise``: per-pair noise-prediction MSE
    (``[n]``), or None when its weight is 0."""
    terms = {"contrastive": contrastive_loss(image, text, temperature),
             "diversity": diversity_loss(image, text)}
    loss = contrastive_weight * terms["contrastive"] + diversity_weight * terms["diversity"]
    if denoise is not None:
        terms["denoise"] = _wide(denoise).mean()
        loss = loss + denoise_weight * terms["denoise"]
    terms["loss"] = loss
    return terms
