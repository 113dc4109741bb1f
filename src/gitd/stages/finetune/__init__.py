"""finetune: EDGE's fine-tuning of Stable Diffusion's UNet for image-text alignment and diversity.

Only the UNet's bias and normalisation parameters train (DiffFit); the VAE, SD's text encoder and
CLIP are frozen. See ``objective`` (the forward pass), ``losses`` (the two terms), ``train`` (the
loop: exact full-batch gradients over micro-batches and processes, checkpoints, curves) and
``state`` (the files a run writes). ``docs/edge.md`` lists where this departs from EDGE's
released code, and why.
"""

from gitd.stages.finetune.losses import contrastive_loss, diversity_loss, loss_terms
from gitd.stages.finetune.objective import EdgeModels, build_edge_models, is_trainable
from gitd.stages.finetune.settings import PRESETS, FinetuneSettings
from gitd.stages.finetune.state import apply_trained, read_trained
from gitd.stages.finetune.train import Trainer, finetune

__all__ = ["EdgeModels", "FinetuneSettings", "PRESETS", "Trainer", "apply_trained",
           "build_edge_models", "contrastive_loss", "diversity_loss", "finetune",
           "is_trainable", "loss_terms", "read_trained"]
