"""Options shared by the commands that read several sets (evaluate, export)."""

from __future__ import annotations

DEFAULT_SPLITS = {"train": "train", "test": "test", "val": "val"}


def add_split_options(p, roles) -> None:
    """``--ROLE-split`` for each role: the split of a set that holds several."""
    for role in roles:
        p.add_argument(f"--{role}-split", metavar="SPLIT",
                       help=f"split of --{role} where it holds several (Karpathy file, Hugging "
                            f"Face split folders; default: {DEFAULT_SPLITS[role]})")
