"""`gitd export`: the layouts the field's training scripts open, read with their access pattern."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from PIL import Image

from gitd.cli import main
from gitd.data.export import MARKER, export
from gitd.data.output import OutputPair, write_output
from gitd.errors import ConfigError, DataError


@pytest.fixture
def out(tmp_path) -> Path:
    """A gitd output with a synthetic PNG, a copied JPEG and one image with three captions."""
    src = tmp_path / "src"
    src.mkdir()
    Image.new("RGB", (8, 8), (200, 10, 10)).save(src / "photo.jpg", format="JPEG")
    pairs = [OutputPair(Image.new("RGB", (8, 8), (10, 200, 10)), ["A green square."]),
             OutputPair(src / "photo.jpg", ["a red photo", "Red!", "crimson (dark)"]),
             OutputPair(Image.new("RGB", (8, 8), (10, 10, 200)), ["blue"])]
    return write_output(tmp_path / "out", pairs, {"method": "test"})


def karpathy_test(tmp_path) -> Path:
    root = tmp_path / "karpathy"
    (root / "imgs").mkdir(parents=True)
    entries = []
    for i, split in enumerate(["train", "test", "test", "val"]):
        Image.new("RGB", (8, 8), (i * 40, 0, 0)).save(root / "imgs" / f"{i}.png")
        entries.append({"filename": f"{i}.png", "filepath": "imgs", "split": split,
                        "sentences": [{"raw": f"image {i} a"}, {"raw": f"image {i} b"}]})
    (root / "dataset.json").write_text(json.dumps({"images": entries}))
    return root / "dataset.json"


@pytest.mark.parametrize("to", ["lors", "mtt-vl", "blip", "edge"])
@pytest.mark.parametrize("name", ["flickr30k", "coco"])
def test_every_target_loads_in_its_scripts_layout(out, tmp_path, to, name, field_loaders):
    dest = tmp_path / "dest"
    result = export(out, to, dest, name=name)
    train_file = field_loaders.LAYOUTS[to][name == "coco"]
    assert result.train_file == train_file and (dest / train_file).is_file()
    image_root = dest / "images" if to == "edge" else dest  # EDGE: distill_ann/images
    items = field_loaders.train_items(dest / train_file, str(image_root))
    assert [(Path(p).name, c, i) for p, c, i in items] == [
        ("0000.png", "a green square", 0), ("0001.jpg", "a red photo", 1), ("0001.jpg", "red", 1),
        ("0001.jpg", "crimson dark", 1), ("0002.png", "blue", 2)]
    assert (dest / "images" / "0001.jpg").read_bytes() == (out / "images/0001.jpg").read_bytes()
    assert str(dest) in result.usage


def test_test_and_val_files_with_absolute_paths(out, tmp_path, field_loaders):
    data = karpathy_test(tmp_path)
    dest = tmp_path / "lors"
    export(out, "lors", dest, test=data, val=data)
    # the eval classes: a caption list per image, os.path.join(image_root, image) opened
    for split, expected in (("test", ["1.png", "2.png"]), ("val", ["3.png"])):
        rows = json.loads((dest / f"flickr30k_{split}.json").read_text())
        assert [Path(r["image"]).name for r in rows] == expected
        for r in rows:
            Image.open(os.path.join(str(dest), r["image"])).convert("RGB")
            assert [field_loaders.pre_caption(c) for c in r["caption"]] == [
                f"image {Path(r['image']).stem} a", f"image {Path(r['image']).stem} b"]
    with pytest.raises(ConfigError, match="EDGE's evaluation reads its val and test"):
        export(out, "edge", tmp_path / "edge", test=data)


def test_refuses_overlap_and_foreign_files(out, tmp_path):
    for dest in (out, out / "export", tmp_path):
        with pytest.raises(ConfigError, match="overlaps the data read"):
            export(out, "lors", dest)
    dest = tmp_path / "ann"
    dest.mkdir()
    (dest / "flickr30k_test.json").write_text("the user's own test file")
    (dest / "flickr30k_train.json").write_text("the user's own train file")
    with pytest.raises(DataError, match="flickr30k_train.json already exist"):
        export(out, "lors", dest)
    assert not (dest / "images").exists() and not (dest / MARKER).exists()
    (dest / "flickr30k_train.json").unlink()
    export(out, "lors", dest)
    assert (dest / "flickr30k_test.json").read_text() == "the user's own test file"
    assert len(json.loads((dest / "flickr30k_train.json").read_text())) == 5


def test_reexport_replaces_only_its_own_files(out, tmp_path):
    dest = tmp_path / "dest"
    export(out, "edge", dest)
    (dest / "images" / "mine.png").write_bytes(b"user file")
    smaller = write_output(tmp_path / "small", [OutputPair(Image.new("RGB", (4, 4)), ["one"])],
                           {"method": "test"})
    export(smaller, "edge", dest)
    assert sorted(p.name for p in (dest / "images").iterdir()) == ["0000.png", "mine.png"]
    assert len(json.loads((dest / "flickr30k_train.json").read_text())) == 1
    # a file that takes the place of one of ours is the user's now only if not in the marker
    (dest / "images" / "0000.png").write_bytes(b"changed")
    export(out, "edge", dest)
    assert (dest / "images" / "0000.png").read_bytes() == (out / "images/0000.png").read_bytes()


def test_cli_export(out, tmp_path, capsys):
    assert main(["export", str(out), "--to", "lors", str(tmp_path / "x"), "-q"]) == 0
    assert "ann_root" in capsys.readouterr().out
    assert main(["export", str(out), "--to", "edge", str(out / "x"), "-q"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "overlaps the data read" in err[0]
