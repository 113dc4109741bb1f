import pytest
import torch
from torch import nn

from gitd.retrieval.losses import info_nce, weighted_bce


def _emb(seed, n=6, d=8):
    torch.manual_seed(seed)
    return nn.functional.normalize(torch.randn(n, d), dim=-1)


def test_soft_info_nce_with_the_identity_is_info_nce():
    x, y = _emb(0), _emb(1)
    assert info_nce(x, y, 0.07, torch.eye(6)).item() == pytest.approx(info_nce(x, y).item())


def test_weighted_bce_is_lors_formula():
    """LoRS's WBCE (src/similarity_mining.py): per-pair BCE of sigmoid(logits) against the
    target with eps 1e-6, positives (> 0.5) and negatives averaged apart, then averaged."""
    x, y = _emb(0), _emb(1)
    target = torch.eye(6) * 0.9 + 0.02
    logits = x @ y.t() / 0.07
    p = torch.sigmoid(logits)
    per = -target * torch.log(p + 1e-6) - (1 - target) * torch.log(1 - p + 1e-6)
    pos = target > 0.5
    expected = 0.5 * (per[pos].mean() + per[~pos].mean())
    assert weighted_bce(x, y, 0.07, target).item() == pytest.approx(expected.item(), rel=1e-5)
    assert weighted_bce(x, y).item() == pytest.approx(
        weighted_bce(x, y, 0.07, torch.eye(6)).item())
    assert weighted_bce(x, x) < weighted_bce(x, y)
