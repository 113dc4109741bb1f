"""BLIP's training augmentation, which EDGE's evaluator applies to the distilled images.

BLIP's ``transform_train`` (also in ichbill/EDGE, dataset/__init__.py and dataset/
randaugment.py): RandomResizedCrop(size, scale 0.5-1, bicubic), a horizontal flip with
probability 0.5, then ``RandomAugment(2, 5)``: two operations drawn (with replacement) from
Identity, AutoContrast, Brightness, Sharpness, Equalize, ShearX, ShearY, TranslateX, TranslateY
and Rotate, each applied with probability 0.5 at magnitude 5 of 10: shear 0.15, translation
5 px, rotation 15 degrees (each of random sign, filled with grey 128); brightness and sharpness
factor 5/10 * 1.8 + 0.1 = 1.0, i.e. unchanged.

Written here with torchvision's tensor operations on the batch, after the images were resized
to the protocol's size (BLIP crops the original photo before resizing); torchvision's affine
shears about the image centre where BLIP's cv2 code shears about the corner. Random draws come
from torch's global generator, which the trainer seeds per epoch.
"""

from __future__ import annotations

import math

import torch

OPS = ("identity", "autocontrast", "brightness", "sharpness", "equalize", "shear_x", "shear_y",
       "translate_x", "translate_y", "rotate")
N_OPS = 2
MAGNITUDE = 5
MAX_LEVEL = 10
FILL = 128


def _sign() -> float:
    return -1.0 if torch.rand(()) < 0.5 else 1.0


def _apply(op: str, img: torch.Tensor) -> torch.Tensor:
    from torchvision.transforms.v2 import functional as TF

    level = MAGNITUDE / MAX_LEVEL
    if op == "autocontrast":
        return TF.autocontrast(img)
    if op == "equalize":
        return TF.equalize(img)
    if op in ("brightness", "sharpness"):
        factor = level * 1.8 + 0.1  # 1.0 at magnitude 5: the image is unchanged
        fn = TF.adjust_brightness if op == "brightness" else TF.adjust_sharpness
        return fn(img, factor)
    if op.startswith("shear"):
        angle = math.degrees(math.atan(level * 0.3)) * _sign()
        shear = [angle, 0.0] if op == "shear_x" else [0.0, angle]
        return TF.affine(img, angle=0.0, translate=[0, 0], scale=1.0, shear=shear, fill=FILL)
    if op.startswith("translate"):
        offset = int(round(level * 10)) * _sign()
        move = [offset, 0] if op == "translate_x" else [0, offset]
        return TF.affine(img, angle=0.0, translate=move, scale=1.0, shear=[0.0, 0.0], fill=FILL)
    if op == "rotate":
        return TF.rotate(img, level * 30 * _sign(), fill=FILL)
    return img


def blip_augment(images: torch.Tensor) -> torch.Tensor:
    """Augment a batch [B, 3, s, s] image by image: uint8 stays uint8; float pixels on the
    0-255 scale (distilled tensors) are clipped to it while augmented."""
    from torchvision.transforms import v2

    size = images.shape[-1]
    crop = v2.RandomResizedCrop(size, scale=(0.5, 1.0), antialias=True,
                                interpolation=v2.InterpolationMode.BICUBIC)
    out = []
    for img in images:
        floating = img.dtype != torch.uint8
        x = img.clamp(0, 255).round().to(torch.uint8) if floating else img
        x = crop(x)
        if torch.rand(()) < 0.5:
            x = x.flip(-1)
        for i in torch.randint(len(OPS), (N_OPS,)).tolist():
            if torch.rand(()) < 0.5:
                x = _apply(OPS[i], x)
        out.append(x.to(img.dtype) if floating else x)
    return torch.stack(out)
