"""distill, select and evaluate on WebDataset shards; --cluster-resolution; no Ray without
--ray (all CPU, offline, tiny models)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from gitd.config import make_config
from gitd.data import load_dataset
from gitd.data.check import check_dataset
from gitd.errors import DataError, GitdError
from gitd.methods.coreset import select_coreset
from gitd.methods import distill


def test_cli_distill_on_shards_never_imports_ray(shard_set, tmp_path):
    _, _, pattern = shard_set
    out = tmp_path / "out"
    code = ("import sys; from gitd.cli import main; "
            f"rc = main(['distill', {pattern!r}, '--pairs', '3', '--preset', 'tiny', "
            f"'--out', {str(out)!r}, '-q']); "
            "assert 'ray' not in sys.modules, 'ray was imported'; sys.exit(rc)")
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    res = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         timeout=600)
    assert res.returncode == 0, res.stderr[-2000:]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["source"]["format"] == "webdataset" and manifest["pairs"] == 3
    assert all(i["source_id"].count("/") == 1 for i in manifest["items"])
    assert check_dataset(out / "annotations.json").exit_code == 0


def test_select_on_shards_copies_member_bytes(shard_set, tmp_path):
    ann, folder, _ = shard_set
    out = tmp_path / "kcenter"
    select_coreset(folder, "kcenter", 4, out, seed=0, image_size=32, cache=tmp_path / "cache",
                   device="cpu")
    manifest = json.loads((out / "manifest.json").read_text())
    by_id = {r.id: r for r in load_dataset(folder)}
    for item in manifest["items"]:
        rec = by_id[item["source_id"]]
        assert (out / item["image"]).read_bytes() == rec.image.read_bytes()
    # The same selection as on the equivalent annotation file (same features, same seed).
    ref = tmp_path / "ref"
    select_coreset(ann, "kcenter", 4, ref, seed=0, image_size=32, cache=tmp_path / "cache",
                   device="cpu")
    a = json.loads((ref / "annotations.json").read_text())
    b = json.loads((out / "annotations.json").read_text())
    assert a == b
    # An output inside the shards' folder is refused, as one inside an image root is.
    with pytest.raises(GitdError, match="shard"):
        select_coreset(folder, "random", 2, folder / "out")
    assert not (folder / "out").exists()


def test_evaluate_trains_on_shards(shard_set, tmp_path):
    from gitd.evaluation.evaluate import evaluate
    from gitd.evaluation.tiny import write_tiny_text_model

    ann, folder, _ = shard_set
    text = str(write_tiny_text_model(tmp_path / "text"))
    res = evaluate(str(folder), str(ann.parent / "test.json"), epochs=1, seeds=1,
                   image_model="timm:resnet10t", pretrained=False, text_model=text,
                   image_size=32, batch_size=8, cache=str(tmp_path / "c"), device="cpu")
    # The test-overlap guard sees members too: the same samples, as shards or as files.
    with pytest.raises(DataError, match="shares 24 of its 24 images"):
        evaluate(str(folder), str(ann), epochs=1, seeds=1, image_model="timm:resnet10t",
                 pretrained=False, text_model=text, image_size=32, device="cpu")
    train = res["sets"]["train"]
    assert (train["format"], train["images"], train["captions"]) == ("webdataset", 24, 120)
    assert 0 <= res["summary"]["r_mean"]["mean"] <= 100


def test_cluster_resolution_encodes_everything_small_and_only_medoids_large(shard_set, tmp_path):
    ann, _, _ = shard_set
    cfg = make_config("tiny", pairs=3, seed=0, device="cpu", diffusion=True)
    out = distill(ann, tmp_path / "small", cfg.replace(cluster_resolution=32))
    manifest = json.loads((out / "manifest.json").read_text())
    work = out / "work"
    enc = np.load(work / f"encode-{manifest['stages']['encode']}" / "latents.npy")
    med = np.load(work / f"encode-medoids-{manifest['stages']['encode-medoids']}" / "latents.npy")
    assert enc.shape == (24, 4, 4, 4) and med.shape == (3, 4, 8, 8)
    # The default (and a cluster resolution equal to the resolution) keeps the paper's path and
    # its cache keys: no second encode.
    same = distill(ann, tmp_path / "same", cfg.replace(cluster_resolution=64))
    default = distill(ann, tmp_path / "default", cfg)
    s1 = json.loads((same / "manifest.json").read_text())["stages"]
    s2 = json.loads((default / "manifest.json").read_text())["stages"]
    assert s1 == s2 and "encode-medoids" not in s2


def test_no_diffusion_on_shards_captions_and_copies_the_members(shard_set, tmp_path):
    """/D on shards: the medoids' own images (members) go to the captioner and the output."""
    _, folder, _ = shard_set
    out = distill(folder, tmp_path / "d", make_config("tiny", pairs=3, seed=0, device="cpu",
                                                      diffusion=False))
    manifest = json.loads((out / "manifest.json").read_text())
    by_id = {r.id: r for r in load_dataset(folder)}
    for item in manifest["items"]:
        assert (out / item["image"]).read_bytes() == by_id[item["source_id"]].image.read_bytes()
        assert item["caption"]
