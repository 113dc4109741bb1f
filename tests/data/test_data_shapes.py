"""gitd.data.shapes: determinism, caption truth and uniqueness, files, resume, CLI."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from gitd.data import shapes as S
from gitd.data.images import open_rgb
from gitd.errors import ConfigError


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file()}


def _captions(seed: int, split: str, index: int) -> tuple[dict, list[str]]:
    scene = S.make_scene(seed, split, index)
    return scene, S.make_captions(scene, S._rng_for(seed, split, index, 1))


@pytest.fixture(scope="module")
def small_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("shapes") / "a"
    summary = S.make_shapes(out, train=40, test=12, size=48, seed=3, workers=1)
    return out, summary


def test_same_bytes_for_same_seed_and_any_worker_count(small_run, tmp_path):
    a, _ = small_run
    b = tmp_path / "b"
    S.make_shapes(b, train=40, test=12, size=48, seed=3, workers=2)
    fa, fb = _files(a), _files(b)
    assert sorted(fa) == sorted(fb)
    assert len([k for k in fa if k.endswith(".png")]) == 52
    for name in fa:
        assert fa[name] == fb[name], name

    c = tmp_path / "c"
    S.make_shapes(c, train=40, test=12, size=48, seed=4, workers=2)
    fc = _files(c)
    assert fc["train.json"] != fa["train.json"]
    differing = [k for k in fa if k.endswith(".png") and fa[k] != fc[k]]
    assert len(differing) == 52


def test_blip_json_five_distinct_captions(small_run):
    out, summary = small_run
    assert summary["train"] == 40 and summary["test"] == 12
    for split, n in (("train", 40), ("test", 12)):
        rows = json.loads((out / f"{split}.json").read_text())
        assert len(rows) == n
        for row in rows:
            assert set(row) == {"image", "caption"}
            assert not Path(row["image"]).is_absolute() and row["image"].startswith("images/")
            assert open_rgb(out / row["image"]).size == (48, 48)
            caps = row["caption"]
            assert len(caps) == 5 and len(set(caps)) == 5
            assert all(isinstance(c, str) and c.strip() == c and c for c in caps)
    scenes = [json.loads(line) for line in (out / "scenes.jsonl").read_text().splitlines()]
    assert len(scenes) == 52 and {s["split"] for s in scenes} == {"train", "test"}
    info = json.loads((out / "info.json").read_text())
    assert info["seed"] == 3 and info["train"] == 40 and info["generator_version"] == 1
    assert len(info["vocabulary"]["shapes"]) >= 6 and len(info["vocabulary"]["colours"]) >= 8


def test_test_images_rarely_share_a_caption():
    def norm(c):
        return " ".join(re.sub(r"[^a-z0-9 ]+", " ", c.lower()).split())

    caps = [_captions(0, "test", i)[1] for i in range(500)]
    assert all(len({norm(c) for c in cs}) == 5 for cs in caps)
    count = Counter(norm(c) for cs in caps for c in cs)
    sharing = sum(any(count[norm(c)] > 1 for c in cs) for cs in caps)
    assert sharing < 5  # under 1% of 500


def _find(caption: str, words) -> list[int]:
    return [m.start() for w in words
            for m in re.finditer(rf"(?<![\w-]){re.escape(w)}(?![\w-])", caption)]


def _object_at(caption: str, obj) -> int:
    """Where the caption names this object (colour word directly before shape word)."""
    hits = []
    for colour in S.COLOURS[obj["colour"]][1]:
        hits += _find(caption, [f"{colour} {shape}" for shape in S.SHAPES[obj["shape"]]])
    return min(hits) if hits else -1


def test_captions_are_true_to_the_scene():
    all_bg_words = sorted({w for v in S.BACKGROUNDS.values() for w in v[1]}, key=len,
                          reverse=True)
    phrases = sorted(((p, cell) for cell, (ps, _) in S.POSITIONS.items() for p in ps),
                     key=lambda x: -len(x[0]))
    relations_checked = 0
    for index in range(300):
        scene, caps = _captions(7, "train", index)
        objs = scene["objects"]
        assert 1 <= len(objs) <= 3
        colours = {o["colour"] for o in objs}
        shapes = {o["shape"] for o in objs}
        cells = {(o["row"], o["col"]) for o in objs}
        for cap in caps:
            for obj in objs:  # every object named with its colour and shape
                assert _object_at(cap, obj) >= 0, (cap, obj)
            for shape, words in S.SHAPES.items():  # no shape that is not drawn
                if shape not in shapes:
                    assert not _find(cap, words), (cap, shape)
            rest = cap
            for w in all_bg_words:  # background colour words may name an object colour too
                rest = re.sub(rf"(?<![\w-]){re.escape(w)}(?= (?:\S+ )?(?:background|backdrop"
                              rf"|stripes|checks|checkerboard|dots|polka dots|gradient)\b)",
                              "", rest)
            for colour, (_, words) in S.COLOURS.items():
                if colour not in colours:
                    assert not _find(rest, words), (cap, colour)
            for phrase, cell in phrases:  # every position phrase names an occupied cell
                if phrase in rest:
                    assert cell in cells, (cap, phrase, objs)
                    rest = rest.replace(phrase, "")
            if len(objs) == 2:
                a, b = objs
                pa, pb = _object_at(cap, a), _object_at(cap, b)
                first, second = (a, b) if pa < pb else (b, a)
                between = cap[min(pa, pb):max(pa, pb)]
                if " above " in between:
                    assert first["row"] < second["row"], cap
                if " below " in between:
                    assert first["row"] > second["row"], cap
                if " to the left of " in between:
                    assert first["col"] < second["col"], cap
                if " to the right of " in between:
                    assert first["col"] > second["col"], cap
                relations_checked += any(r in between for r in (" above ", " below ", " left ",
                                                                 " right "))
    assert relations_checked > 50


def test_drawn_colours_are_where_the_scene_says():
    solid = {"circle", "square", "triangle", "star", "diamond", "hexagon", "cross", "heart"}
    checked = 0
    for index in range(60):
        scene, _, image = S.make_item(5, "test", index, 96)
        arr = np.asarray(image).astype(int)
        assert arr.shape == (96, 96, 3)
        for obj in scene["objects"]:
            if obj["shape"] not in solid:
                continue
            px = arr[int(obj["y"] * 96), int(obj["x"] * 96)]
            assert np.abs(px - np.array(S.COLOURS[obj["colour"]][0])).max() <= 20, (obj, px)
            checked += 1
    assert checked > 40
    # Backgrounds are not one flat colour per class: textures vary pixel values.
    textured = [S.make_item(5, "test", i, 64)[2] for i in range(30)]
    assert sum(np.asarray(im).std(axis=(0, 1)).max() > 8 for im in textured) > 10


def test_resume_and_changed_settings_give_identical_output(small_run, tmp_path):
    ref, _ = small_run
    out = tmp_path / "r"
    S.make_shapes(out, train=40, test=12, size=48, seed=9, workers=1)  # other settings first
    S.make_shapes(out, train=40, test=12, size=48, seed=3, workers=1)
    assert _files(out) == _files(ref)
    # A killed run: some images missing, a temporary file left behind.
    (out / "images" / "train_000005.png").unlink()
    (out / "images" / "test_000002.png").unlink()
    (out / "images" / ".train_000005.png.999999999-x.tmp").write_bytes(b"half a png")
    S.make_shapes(out, train=40, test=12, size=48, seed=3, workers=2)
    assert _files(out) == _files(ref)


@pytest.mark.parametrize("kwargs, message", [
    ({"train": 0}, "train must be >= 1, got 0"),
    ({"test": 0}, "test must be >= 1, got 0"),
    ({"size": 31}, "size must be >= 32, got 31"),
    ({"seed": -1}, "seed must be >= 0, got -1"),
    ({"workers": 0}, "workers must be >= 1, got 0"),
])
def test_bad_settings_are_one_line_config_errors(tmp_path, kwargs, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        S.make_shapes(tmp_path / "x", **kwargs)
    assert not (tmp_path / "x").exists()


def test_cli_end_to_end(tmp_path):
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    out = tmp_path / "cli"
    proc = subprocess.run([sys.executable, "-m", "gitd", "shapes", str(out), "--train", "8",
                           "--test", "3", "--size", "32", "--seed", "1", "--workers", "2", "-q"],
                          capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 1 and "8 train + 3 test" in lines[0] and str(out) in lines[0]
    assert len(json.loads((out / "train.json").read_text())) == 8
    assert len(list((out / "images").glob("*.png"))) == 11

    bad = subprocess.run([sys.executable, "-m", "gitd", "shapes", str(tmp_path / "bad"),
                          "--size", "16"], capture_output=True, text=True, env=env, timeout=120)
    assert bad.returncode == 2
    assert bad.stderr.strip() == ("gitd shapes: error: argument --size: must be an integer in "
                                  "[32, 4096], got '16' (see 'gitd shapes --help')")
