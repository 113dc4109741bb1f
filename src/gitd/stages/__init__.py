"""The pipeline's stages, one module each, named by what it does (``encode``, ``cluster``,
``img2img``, ``unclip``, ``text2image``, ``caption``, ``embed``, ``prototypes``,
``pair_features``, ...): each takes a frozen settings object and runs through a
``gitd.plan.StageCall`` (a plan entry of a method run). Beside them, what stages share and is
no stage: row views and ``.npy`` files (``arrays``), CLARA (``clara``), the encoded-latents folder (``latent_folder``),
the VAE arithmetic (``vae_encoding``) and a Ray session (``ray_session``)."""

from __future__ import annotations

from pathlib import Path

from gitd.store import Damaged, Stage, unit_path


def unit_image(stage: Stage, j: int, suffix: str = ".png"):
    """Unit ``j``'s image, fully decoded, or ``Damaged`` saying why it cannot be (the unit is
    then computed again)."""
    from gitd.data.images import ImageError, open_rgb

    try:
        return open_rgb(unit_path(stage, j, suffix))
    except ImageError as exc:
        raise Damaged(f"{Path(exc.path).name}: {exc.problem}") from None
