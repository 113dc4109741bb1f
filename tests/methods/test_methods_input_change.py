"""A source image replaced between a killed run and its resume recomputes what read it: the
result equals a fresh run on the changed data, and the log says why (issue 11, class 2)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from gitd.config import make_config
from gitd.data import dataset_fingerprint, load_dataset
from gitd.methods import distill


def tiny(**kw):
    return make_config("tiny", pairs=4, seed=0, device="cpu", **kw)


def result(out: Path) -> dict[str, bytes]:
    files = {p.name: p.read_bytes() for p in sorted((out / "images").iterdir())}
    files["annotations.json"] = (out / "annotations.json").read_bytes()
    return files


@pytest.fixture
def data(shapes, tmp_path) -> Path:
    """A private copy of the stand-in (this test rewrites one of its images)."""
    root = tmp_path / "data"
    shutil.copytree(shapes.parent / "images", root / "images")
    shutil.copy(shapes, root / "train.json")
    return root / "train.json"


def test_fingerprint_follows_each_image_file(data):
    before = dataset_fingerprint(load_dataset(data))
    assert dataset_fingerprint(load_dataset(data)) == before
    image = data.parent / json.loads(data.read_text())[7]["image"]
    Image.open(image).transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(image)
    assert dataset_fingerprint(load_dataset(data)) != before


class Crash(Exception):
    pass


def test_image_replaced_between_kill_and_resume_gives_the_fresh_result(data, tmp_path, caplog):
    out = tmp_path / "out"

    def crash(stage, j):
        if stage == "img2img" and j == 1:
            raise Crash()

    with pytest.raises(Crash):
        distill(data, out, tiny(), on_unit=crash)
    medoid = json.loads(next((out / "work").glob("cluster-*/medoids.json")).read_text())
    # Replace the first medoid's image, whose generated image is already on disk.
    path = data.parent / medoid["ids"][0]
    img = np.asarray(Image.open(path).convert("RGB"))
    Image.fromarray(255 - img).save(path)

    caplog.set_level("INFO", logger="gitd")
    distill(data, out, tiny())
    fresh = tmp_path / "fresh"
    distill(data, fresh, tiny())
    assert result(out) == result(fresh)
    assert f"1 image(s) changed ({medoid['ids'][0]})" in caplog.text
