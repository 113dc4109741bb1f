"""The forward pass of EDGE's objective, done the way the paper describes it.

For a batch of training pairs (image in [-1, 1], caption):

1. VAE-encode the image (a posterior sample, scaled by the VAE's scaling factor): z0;
2. draw a timestep t uniformly from [0, T) and noise eps; z_t = sqrt(a_t) z0 + sqrt(1 - a_t) eps;
3. the UNet predicts eps_hat from the NOISY latent z_t, conditioned on SD's text encoder states;
4. x0_hat = (z_t - sqrt(1 - a_t) eps_hat) / sqrt(a_t), consistent with that same z_t;
5. VAE-decode x0_hat / scaling_factor to pixels in [-1, 1] (clamped), then CLIP's own
   preprocessing: to [0, 1], resize shorter side + centre crop to CLIP's input size (bicubic,
   antialiased, like ``CLIPImageProcessor``), CLIP mean/std;
6. CLIP image features of those pixels, CLIP text features of the captions (CLIP's tokenizer).

Only the UNet is trained; everything else runs without gradients into its own weights, but the
image path (VAE decoder, CLIP vision tower) carries the gradient back to the UNet. Each pair's
timestep, noise and posterior sample come from its own generator (``pair_seed``), so a pair's
numbers do not depend on which batch, micro-batch or process it lands in.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import torch
import torch.nn.functional as F

from gitd.models.scoring import ScoreModel
from gitd.stages.img2img import candidate_seed

DIFFFIT_KEYS = ("bias", "norm")


def is_trainable(name: str) -> bool:
    """DiffFit: a UNet parameter trains iff its name contains ``bias`` or ``norm``."""
    return any(key in name for key in DIFFFIT_KEYS)


def pair_seed(seed: int, epoch: int, pair: int) -> int:
    return candidate_seed(candidate_seed(seed, epoch), pair)


@dataclass
class EdgeModels:
    """What the objective needs: SD's VAE, UNet, text encoder and tokenizer, the training noise
    schedule, and a CLIP ``ScoreModel`` (model, tokenizer, image processor)."""

    vae: Any
    unet: Any
    text_encoder: Any
    tokenizer: Any
    alphas_cumprod: torch.Tensor  # [T] float32
    clip: Any
    base: dict  # {"model", "revision", "seed"}: what the trained parameters apply to

    def trainable(self) -> list[tuple[str, torch.nn.Parameter]]:
        return [(n, p) for n, p in self.unet.named_parameters() if is_trainable(n)]

    def freeze(self) -> None:
        """Only the DiffFit parameters of the UNet require gradients."""
        for module in (self.vae, self.text_encoder, self.clip.model):
            module.requires_grad_(False)
        for name, p in self.unet.named_parameters():
            p.requires_grad_(is_trainable(name))


def build_edge_models(diffusion_model: str, clip_model: str, *, device, frozen_dtype,
                      seed: int = 0, diffusion_revision: str | None = None,
                      clip_revision: str | None = None) -> EdgeModels:
    """The models from the registry: the UNet in float32 (the trained master weights), the
    frozen ones in ``frozen_dtype``."""
    from gitd.models import build_img2img, build_score_model

    pipe = build_img2img(diffusion_model, device=device, dtype=torch.float32, seed=seed,
                         revision=diffusion_revision)
    clip = build_score_model(clip_model, device=device, dtype=frozen_dtype, seed=seed,
                             revision=clip_revision)
    if frozen_dtype != torch.float32:
        pipe.vae.to(frozen_dtype)
        pipe.text_encoder.to(frozen_dtype)
    models = EdgeModels(
        vae=pipe.vae, unet=pipe.unet, text_encoder=pipe.text_encoder, tokenizer=pipe.tokenizer,
        alphas_cumprod=pipe.scheduler.alphas_cumprod.detach().to(torch.float32).clone(),
        clip=clip, base={"model": diffusion_model, "revision": diffusion_revision,
                         "seed": seed})
    models.freeze()
    return models


@dataclass
class PairNoise:
    """Per-pair random draws: timesteps ``[n]``, noise and posterior noise ``[n, 4, h, w]``."""

    timesteps: torch.Tensor
    noise: torch.Tensor
    posterior: torch.Tensor


def draw_noise(seeds: Sequence[int], latent_shape: tuple[int, ...],
               num_timesteps: int) -> PairNoise:
    ts, noise, post = [], [], []
    for s in seeds:
        g = torch.Generator("cpu").manual_seed(int(s))
        ts.append(torch.randint(0, num_timesteps, (1,), generator=g))
        noise.append(torch.randn(latent_shape, generator=g))
        post.append(torch.randn(latent_shape, generator=g))
    return PairNoise(torch.cat(ts), torch.stack(noise), torch.stack(post))


def clip_pixels(images: torch.Tensor, image_processor) -> torch.Tensor:
    """Decoded images in [-1, 1] -> CLIP's input: [0, 1], shorter side resized and centre
    cropped to its crop size (bicubic, antialiased), normalised by its mean and std.
    Differentiable."""
    x = ((images.float() + 1.0) / 2.0).clamp(0.0, 1.0)
    size = getattr(image_processor, "size", None) or {}
    crop = getattr(image_processor, "crop_size", None) or {}
    short = int(size.get("shortest_edge") or min(size.get("height", 224), size.get("width", 224)))
    ch, cw = int(crop.get("height", short)), int(crop.get("width", short))
    h, w = x.shape[-2:]
    if min(h, w) != short:
        scale = short / min(h, w)
        nh, nw = max(short, round(h * scale)), max(short, round(w * scale))
        x = F.interpolate(x, size=(nh, nw), mode="bicubic", align_corners=False, antialias=True)
        h, w = nh, nw
    top, left = max(0, (h - ch) // 2), max(0, (w - cw) // 2)
    x = x[..., top:top + ch, left:left + cw]
    mean = torch.tensor(image_processor.image_mean, device=x.device).view(1, -1, 1, 1)
    std = torch.tensor(image_processor.image_std, device=x.device).view(1, -1, 1, 1)
    return (x - mean) / std


@torch.no_grad()
def text_features(models: EdgeModels, captions: Sequence[str]) -> torch.Tensor:
    """Raw (unnormalised) CLIP text features, float32."""
    clip = models.clip
    enc = clip.tokenizer(list(captions), padding=True, truncation=True,
                         max_length=clip.max_text_length, return_tensors="pt")
    enc = {k: v.to(clip.device) for k, v in enc.items() if k in ("input_ids", "attention_mask")}
    return ScoreModel.feature_tensor(clip.model.get_text_features(**enc)).float()


@torch.no_grad()
def sd_text_states(models: EdgeModels, captions: Sequence[str]) -> torch.Tensor:
    tok = models.tokenizer
    ids = tok(list(captions), padding="max_length", max_length=tok.model_max_length,
              truncation=True, return_tensors="pt").input_ids
    return models.text_encoder(ids.to(models.text_encoder.device))[0]


def image_features(models: EdgeModels, pixels: torch.Tensor, text_states: torch.Tensor,
                   noise: PairNoise) -> tuple[torch.Tensor, torch.Tensor]:
    """Steps 1-6 for one micro-batch: raw CLIP image features of the decoded x0 prediction
    ``[n, d]`` (float32, differentiable with respect to the UNet) and the per-pair MSE of the
    noise prediction ``[n]``. ``pixels``: ``[n, 3, R, R]`` in [-1, 1]."""
    vae, unet = models.vae, models.unet
    device = next(unet.parameters()).device
    vae_dtype = next(vae.parameters()).dtype
    scaling = float(vae.config.scaling_factor)
    with torch.no_grad():
        dist = vae.encode(pixels.to(device, vae_dtype)).latent_dist
        z0 = (dist.mean.float() + dist.std.float() * noise.posterior.to(device)) * scaling
    a = models.alphas_cumprod.to(device)[noise.timesteps.to(device)].view(-1, 1, 1, 1)
    eps = noise.noise.to(device)
    zt = a.sqrt() * z0 + (1 - a).sqrt() * eps
    eps_hat = unet(zt, noise.timesteps.to(device), encoder_hidden_states=text_states).sample
    eps_hat = eps_hat.float()
    x0 = (zt - (1 - a).sqrt() * eps_hat) / a.sqrt()
    decoded = vae.decode((x0 / scaling).to(vae_dtype)).sample
    pixels_clip = clip_pixels(decoded, models.clip.image_processor)
    clip_dtype = next(models.clip.model.parameters()).dtype
    feats = ScoreModel.feature_tensor(models.clip.model.get_image_features(
        pixel_values=pixels_clip.to(clip_dtype))).float()
    mse = (eps_hat - eps).pow(2).flatten(1).mean(1)
    return feats, mse
