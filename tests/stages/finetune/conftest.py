"""A small training set for the fine-tuning tests: 16 stand-in images with one caption each, so
the tiny preset at batch 8 runs 2 steps per epoch."""

import json
from pathlib import Path

import pytest

from gitd.data.shapes import make_shapes


@pytest.fixture(scope="session")
def ft_data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("ft-data")
    make_shapes(root, train=16, test=2, size=64, seed=5, workers=1)
    rows = json.loads((root / "train.json").read_text())
    one = [{"image": r["image"], "caption": r["caption"][0]} for r in rows]
    (root / "one.json").write_text(json.dumps(one))
    return root / "one.json"
