"""Where the sets' images are found (issue 20, item 13's evaluate parts)."""

import json

import numpy as np
from PIL import Image

from gitd.evaluation.evaluate import evaluate
from gitd.log import setup_logging

TINY = dict(image_model="timm:resnet10t", pretrained=False, image_size=32, batch_size=4,
            lr=1e-3, workers=0, epochs=1, seeds=1)


def _karpathy_elsewhere(tmp_path):
    """A Karpathy file in one folder, its images in another (as Flickr30K is usually laid out)."""
    ann_dir, images = tmp_path / "ann", tmp_path / "flickr30k-images"
    ann_dir.mkdir()
    images.mkdir()
    rng = np.random.default_rng(0)
    entries = []
    for i, split in enumerate(["train"] * 6 + ["test"] * 3):
        Image.fromarray(rng.integers(0, 255, (24, 24, 3), dtype=np.uint8)).save(
            images / f"{i}.jpg")
        entries.append({"filename": f"{i}.jpg", "split": split,
                        "sentences": [{"raw": f"picture {i}"}, {"raw": f"shot {i} of {split}"}]})
    path = ann_dir / "dataset_flickr30k.json"
    path.write_text(json.dumps({"images": entries, "dataset": "flickr30k"}))
    return path, images


def test_test_set_reuses_the_image_root_the_pairs_manifest_records(tmp_path, tiny_text, capsys):
    from gitd.methods.coreset import select_coreset

    data, images = _karpathy_elsewhere(tmp_path)
    pairs = tmp_path / "pairs"
    select_coreset(data, "random", 3, pairs, images=images, seed=0)
    setup_logging(quiet=False)
    r = evaluate(pairs, data, text_model=tiny_text, cache=tmp_path / "c", **TINY)
    assert r["sets"]["test"]["images"] == 3 and r["splits"]["test"] == "test"
    assert f"reading images from {images}, the image root the training pairs' manifest " \
           "records" in capsys.readouterr().err
    assert r["test_overlap"]["images"] == 0  # the source split was re-read with that root too


def test_a_webdataset_output_is_evaluated_without_an_images_warning(shard_set, tmp_path,
                                                                     tiny_text, capsys):
    from gitd.methods.coreset import select_coreset

    ann, folder, _ = shard_set
    out = tmp_path / "from-shards"
    select_coreset(folder, "random", 4, out, seed=0)
    assert json.loads((out / "manifest.json").read_text())["source"]["format"] == "webdataset"
    setup_logging(quiet=False)
    capsys.readouterr()
    r = evaluate(out, ann.parent / "test.json", text_model=tiny_text, cache=tmp_path / "c",
                 **TINY)
    err = capsys.readouterr().err
    assert "--images is ignored" not in err
    assert r["test_overlap"]["checked_against"] and r["test_overlap"]["images"] == 0
