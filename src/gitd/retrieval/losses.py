"""The evaluators' training losses over a batch's logits (image x text / temperature).

* ``info_nce``: the symmetric cross-entropy of CLIP (row i of each side is a matching pair).
  With a soft ``target`` it is LoRS's "InfoNCE" branch, ``-(target * log_softmax)`` summed over
  a row, which is the plain loss when the target is the identity.
* ``weighted_bce``: LoRS's "WBCE": binary cross-entropy of sigmoid(logits) against the target,
  positives (target > 0.5) and negatives averaged separately, then the two averaged
  (silicx/LoRS_Distill, src/similarity_mining.py, MultilabelContrastiveLoss).

The temperature is fixed, not learnt: a learnt one on a few distilled pairs collapses to zero.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

TEMPERATURE = 0.07
LOSSES = ("infonce", "wbce")


def info_nce(image_emb: torch.Tensor, text_emb: torch.Tensor,
             temperature: float = TEMPERATURE, target: torch.Tensor | None = None
             ) -> torch.Tensor:
    """Mean of the image->text and text->image cross-entropies. Embeddings should be
    L2-normalised (the model does it). ``target``: a soft [n, n] target, identity if None."""
    logits = image_emb @ text_emb.t() / temperature
    if target is None:
        own = torch.arange(len(logits), device=logits.device)
        return 0.5 * (F.cross_entropy(logits, own) + F.cross_entropy(logits.t(), own))
    target = target.to(logits)
    rows = -(target * F.log_softmax(logits, 1)).sum(1).mean()
    cols = -(target.t() * F.log_softmax(logits.t(), 1)).sum(1).mean()
    return 0.5 * (rows + cols)


def weighted_bce(image_emb: torch.Tensor, text_emb: torch.Tensor,
                 temperature: float = TEMPERATURE, target: torch.Tensor | None = None
                 ) -> torch.Tensor:
    """LoRS's weighted binary cross-entropy against ``target`` (identity if None)."""
    logits = image_emb @ text_emb.t() / temperature
    if target is None:
        target = torch.eye(len(logits), device=logits.device)
    target = target.to(logits)
    probs = torch.sigmoid(logits)
    per_pair = -target * torch.log(probs + 1e-6) - (1 - target) * torch.log(1 - probs + 1e-6)
    positive = (target > 0.5).detach()
    zero = per_pair.new_zeros(())
    pos = torch.where(positive, per_pair, zero).sum() / (positive.sum() + 1e-6)
    neg = torch.where(~positive, per_pair, zero).sum() / ((~positive).sum() + 1e-6)
    return 0.5 * (pos + neg)


def loss_function(name: str):
    """The loss called ``name`` (``LOSSES``)."""
    return {"infonce": info_nce, "wbce": weighted_bce}[name]


@torch.no_grad()
def in_batch_correct(image_emb: torch.Tensor, text_emb: torch.Tensor) -> torch.Tensor:
    """bool [n]: pair i is right within its batch when text i is image i's best match AND image
    i is text i's best match (ties go to the lower index, as ``argmax``)."""
    sim = image_emb @ text_emb.t()
    own = torch.arange(len(sim), device=sim.device)
    return (sim.argmax(1) == own) & (sim.argmax(0) == own)
