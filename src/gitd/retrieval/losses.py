"""Symmetric InfoNCE (the CLIP loss) with a fixed temperature, as the shared protocol uses."""

from __future__ import annotations

import torch
import torch.nn.functional as F

TEMPERATURE = 0.07


def info_nce(image_emb: torch.Tensor, text_emb: torch.Tensor,
             temperature: float = TEMPERATURE) -> torch.Tensor:
    """Mean of image->text and text->image cross-entropy; row i of each is a matching pair.

    Embeddings should be L2-normalised (the model does it). The temperature is fixed, not learnt:
    a learnt one on a few distilled pairs collapses towards zero.
    """
    logits = image_emb @ text_emb.t() / temperature
    target = torch.arange(len(logits), device=logits.device)
    return 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.t(), target))


@torch.no_grad()
def in_batch_correct(image_emb: torch.Tensor, text_emb: torch.Tensor) -> torch.Tensor:
    """bool [n]: pair i is right within its batch when text i is image i's best match AND image
    i is text i's best match (ties go to the lower index, as ``argmax``)."""
    sim = image_emb @ text_emb.t()
    own = torch.arange(len(sim), device=sim.device)
    return (sim.argmax(1) == own) & (sim.argmax(0) == own)
