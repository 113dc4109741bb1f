"""Recipes that chain stages: ``gitd`` and ``pds`` distillation, coreset selections.

Imports are lazy so that ``import gitd.methods`` stays cheap for the CLI.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


def distill(data: str | Path, out: str | Path, config, **kwargs: Any) -> Path:
    """Run the distillation method named by ``config.method`` (``gitd`` or ``pds``)."""
    from gitd.outdir import OutputFolder

    if config.method == "pds":
        from gitd.methods.pds import distill as run
    else:
        from gitd.methods.gitd import distill as run
    try:
        return run(data, out, config, **kwargs)
    except BaseException:
        OutputFolder.discard_unused(out)  # a run that did nothing leaves nothing behind
        raise
