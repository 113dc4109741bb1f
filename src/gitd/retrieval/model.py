"""The retrieval model of the shared protocol: trainable image encoder, frozen text features
through a trainable projection head, both L2-normalised into the image encoder's space."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from gitd.models.features import preprocess


class ProjectionHead(nn.Module):
    """Linear(text_dim, d) -> GELU -> Linear(d, d) -> Dropout, plus a residual of the first
    Linear's output, then LayerNorm (the head of MTT-VL / LoRS / GITD)."""

    def __init__(self, in_dim: int, out_dim: int, dropout: float = 0.1):
        super().__init__()
        self.fc1 = nn.Linear(in_dim, out_dim)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(out_dim, out_dim)
        self.drop = nn.Dropout(dropout)
        self.norm = nn.LayerNorm(out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.fc1(x)
        return self.norm(self.drop(self.fc2(self.act(h))) + h)


class RetrievalModel(nn.Module):
    """``image_encoder=None`` means images arrive as precomputed frozen features.

    ``freeze_bn``: BatchNorm layers of the image encoder stay in eval mode (pretrained running
    statistics) even while training; see ``gitd.retrieval.protocols``.
    """

    def __init__(self, text_dim: int, image_dim: int, image_encoder: nn.Module | None = None, *,
                 mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0), dropout: float = 0.1,
                 freeze_bn: bool = True):
        super().__init__()
        self.image_encoder = image_encoder
        self.head = ProjectionHead(text_dim, image_dim, dropout)
        self.mean = tuple(mean)
        self.std = tuple(std)
        self.freeze_bn = freeze_bn

    def train(self, mode: bool = True):
        super().train(mode)
        if mode and self.freeze_bn and self.image_encoder is not None:
            for m in self.image_encoder.modules():
                if isinstance(m, nn.modules.batchnorm._BatchNorm):
                    m.eval()
        return self

    def encode_images(self, x: torch.Tensor) -> torch.Tensor:
        if self.image_encoder is None:
            feats = x.float()
        else:
            feats = self.image_encoder(preprocess(x, self.mean, self.std))
        return F.normalize(feats.float(), dim=-1)

    def encode_texts(self, text_features: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.head(text_features.float()), dim=-1)

    def trainable_parameters(self):
        return [p for p in self.parameters() if p.requires_grad]
