"""pyproject.toml's floors are the releases the code is written for, and what is installed here
meets them (issue 19, item 10)."""

from __future__ import annotations

import pytest

tomllib = pytest.importorskip("tomllib")
from importlib.metadata import version
from pathlib import Path

from packaging.requirements import Requirement
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]
# package -> the lowest release with what gitd uses (see pyproject.toml's comments)
WRITTEN_FOR = {"transformers": "4.56", "huggingface-hub": "0.34", "diffusers": "0.30",
               "torch": "2.4", "timm": "1.0", "accelerate": "0.33", "tokenizers": "0.21",
               "open-clip-torch": "2.0"}


def _requirements() -> dict[str, Requirement]:
    data = tomllib.loads((ROOT / "pyproject.toml").read_text())
    reqs = [Requirement(r) for r in data["project"]["dependencies"]]
    return {r.name.lower().replace("_", "-"): r for r in reqs}


def test_floors_are_what_the_code_needs():
    reqs = _requirements()
    for name, floor in WRITTEN_FOR.items():
        assert name in reqs, f"{name} is used but not declared"
        lows = [Version(s.version) for s in reqs[name].specifier if s.operator == ">="]
        assert lows and max(lows) >= Version(floor), (name, str(reqs[name].specifier))


def test_installed_versions_meet_the_floors():
    for name, req in _requirements().items():
        assert req.specifier.contains(version(name), prereleases=True), (name, version(name))
