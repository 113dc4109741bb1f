"""Pixels to SD's scaled latents with a VAE: the arithmetic both encoders share
(``gitd.stages.encode`` in this process, ``gitd.stages.ray_encode`` on Ray), so that both give
the same bytes.

The VAE is SD's ``AutoencoderKL`` or TAESD (``AutoencoderTiny``, distilled to reproduce SD 1.x's
latent space); ``latent_scale`` is the one place that decides how each one's output reaches
SD's scaled latent range.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from PIL import Image

from gitd.data.images import resize_crop
from gitd.errors import ConfigError


def to_input(arr: np.ndarray) -> torch.Tensor:
    """uint8 HWC -> CHW float32 in [-1, 1], the same operations in every process, so a Ray
    actor's batch is bit-identical to a DataLoader's."""
    return torch.from_numpy(arr.astype(np.float32)).permute(2, 0, 1).div_(127.5).sub_(1.0)


def preprocess(img: Image.Image, resolution: int) -> torch.Tensor:
    """Shorter side to ``resolution`` (bicubic), centre crop, CHW float32 in [-1, 1]."""
    return to_input(resize_crop(img, resolution))


def latent_scale(vae) -> float:
    """The factor from what ``vae.encode`` returns to SD's scaled latent range (what the UNet
    sees); every latent gitd stores has been multiplied by it, once.

    ``AutoencoderKL``: its ``scaling_factor`` (0.18215 for SD 1.x). ``AutoencoderTiny`` (TAESD):
    1.0, because its encoder was distilled to output SD's already-scaled latents; its config
    must say 1.0 too, since diffusers' pipelines decode ``latents / vae.config.scaling_factor``.
    """
    from diffusers import AutoencoderKL, AutoencoderTiny

    factor = getattr(getattr(vae, "config", None), "scaling_factor", None)
    if isinstance(vae, AutoencoderTiny):
        if factor not in (None, 1.0):
            raise ConfigError(f"AutoencoderTiny with scaling_factor {factor} in its config: TAESD "
                              "latents are already on SD's scaled range, so it must be 1.0 "
                              "(diffusers decodes latents / scaling_factor)")
        return 1.0
    if isinstance(vae, AutoencoderKL):
        return float(factor if factor is not None else 1.0)
    raise ConfigError(f"cannot encode with {type(vae).__name__}: gitd encodes with diffusers' "
                      "AutoencoderKL (SD's VAE) or AutoencoderTiny (TAESD)")


def vae_latents(vae, x: torch.Tensor, *, sample: bool = False, indices: Sequence[int] = (),
                seed: int = 0) -> torch.Tensor:
    """``x`` ([B, 3, H, W] in [-1, 1]) to float32 latents on SD's scaled range (``latent_scale``
    applied here, and nowhere else).

    AutoencoderKL: the posterior mean, or with ``sample=True`` a draw seeded by ``seed`` and
    each row's entry of ``indices`` (reproducible whatever the batch). AutoencoderTiny has no
    posterior: its latent is deterministic and ``sample`` is refused.
    """
    scale = latent_scale(vae)
    if sample:
        check_can_sample(vae)
    out = vae.encode(x)
    if not hasattr(out, "latent_dist"):
        return out.latents.float() * scale
    dist = out.latent_dist
    if not sample:
        return dist.mean.float() * scale
    # One generator per image, seeded by its row: the draw does not depend on batch size,
    # on which rows were in the batch with it, or on resuming.
    noise = torch.stack([
        torch.randn(dist.mean.shape[1:], generator=torch.Generator("cpu").manual_seed(
            int(seed) * 1_000_003 + int(i)), dtype=torch.float32)
        for i in indices]).to(dist.mean.device, dist.mean.dtype)
    return (dist.mean + dist.std * noise).float() * scale


def check_can_sample(vae) -> None:
    """Refuse ``sample=True`` for a VAE without a posterior (TAESD)."""
    from diffusers import AutoencoderTiny

    if isinstance(vae, AutoencoderTiny):
        raise ConfigError("sample_latents needs a VAE with a posterior (AutoencoderKL); "
                          "AutoencoderTiny (TAESD) encodes deterministically")


def latent_shape(vae, resolution: int) -> tuple[int, int, int]:
    """(C, h, w) of the latent for a ``resolution`` image: SD's VAE and TAESD halve the size once
    per block after the first (the pipelines' ``vae_scale_factor``; AutoencoderTiny registers
    its ``block_out_channels`` for that)."""
    cfg = vae.config
    factor = 2 ** (len(cfg.block_out_channels) - 1)
    if resolution % factor:
        raise ConfigError(f"resolution must be a multiple of {factor} for this VAE, "
                          f"got {resolution}")
    side = resolution // factor
    return (int(cfg.latent_channels), side, side)


def encode_batch(vae, x: torch.Tensor, ok: np.ndarray, indices: np.ndarray, row_shape, *,
                 sample: bool, seed: int, device, dtype) -> np.ndarray:
    """float16 latents [len(x), *row_shape] of one fixed batch; rows not ``ok`` stay zero.
    Shared by the in-process and the Ray encoder so that both give the same bytes."""
    lat = np.zeros((len(x), *row_shape), dtype=np.float16)
    if ok.any():
        with torch.inference_mode():
            z = vae_latents(vae, x[ok].to(device, dtype=dtype), sample=sample,
                            indices=indices[ok], seed=seed)
        lat[ok] = z.float().cpu().numpy().astype(np.float16)
    return lat
