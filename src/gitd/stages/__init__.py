"""The pipeline's stages: each takes a frozen settings object and runs through a
``gitd.plan.StageCall`` (a plan entry of a method run, ``gitd.plan``)."""

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
