"""Recipes that chain stages: one module per method (``gitd``, ``pds``, the coreset selections).

Every method registers itself with ``gitd.registry.register_method``; the registry imports the
modules of this package on its first lookup, so adding a method is adding a module here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


def distill(data: str | Path, out: str | Path, settings, *, models: dict[str, Any] | None = None,
            **io: Any) -> Path:
    """Run the distillation method that ``settings`` belong to (``settings.method``).

    ``models``: prebuilt models by role (see the method's ``roles``); ``io``: the method's
    ``run`` arguments (``images``, ``split``, ``strict``, ``allow_outside_root``, ``work``,
    ``config_file``, ``on_unit``)."""
    from gitd.registry import get_method

    return get_method(settings.method)(settings, models=models).run(data, out, **io)
