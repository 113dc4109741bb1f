import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from gitd.cli import main

ENV = {**os.environ, "HF_HUB_OFFLINE": "1"}


def gitd(*args, cwd=None):
    proc = subprocess.run([sys.executable, "-m", "gitd", *map(str, args)], capture_output=True,
                          text=True, env=ENV, cwd=cwd, timeout=120)
    assert "Traceback" not in proc.stdout + proc.stderr, proc.stderr
    return proc


def good_png(path: Path, size=(6, 5), mode="RGB"):
    arr = np.random.default_rng(0).integers(0, 256, (size[1], size[0], 3), np.uint8)
    Image.fromarray(arr).convert(mode).save(path)


@pytest.fixture
def data(tmp_path):
    for n in ("a.png", "b.png"):
        good_png(tmp_path / n)
    (tmp_path / "clean.json").write_text(json.dumps(
        [{"image": "a.png", "caption": "one"}, {"image": "b.png", "caption": ["two", "three"]}]))
    (tmp_path / "junk.png").write_bytes(b"junk")
    (tmp_path / "dirty.json").write_text(json.dumps(
        [{"image": "a.png", "caption": "one"}, {"image": "junk.png", "caption": "x"},
         {"image": "b.png", "caption": 5}, {"image": "b.png", "caption": "ok"}]))
    return tmp_path


def test_end_to_end_exit_codes(data):
    clean = gitd("check", data / "clean.json", "-q")
    assert clean.returncode == 0, clean.stderr
    assert "images:       2 usable" in clean.stdout and "problems:     none" in clean.stdout

    dirty = gitd("check", data / "dirty.json", "--workers", "1")
    assert dirty.returncode == 1
    lines = dirty.stdout.splitlines()
    assert lines[-2:] == [f"{data / 'dirty.json'}: row 1: image 'junk.png': not a readable "
                          "image (unknown or corrupt format)",
                          f"{data / 'dirty.json'}: row 2: 'caption' must be a string, got "
                          "integer 5"]

    as_json = gitd("check", data / "dirty.json", "--json", "-q")
    out = json.loads(as_json.stdout)
    assert as_json.returncode == 1
    assert out["summary"]["problems_by_kind"] == {"corrupt-image": 1, "bad-caption": 1}
    assert out["problems"][0] == {"file": str(data / "dirty.json"), "row": 1,
                                  "kind": "corrupt-image",
                                  "problem": "image 'junk.png': not a readable image (unknown "
                                             "or corrupt format)"}

    (data / "trailing.json").write_text('[{"image": "a.png", "caption": "x"},]')
    bad = gitd("check", data / "trailing.json")
    assert bad.returncode == 2 and bad.stdout == ""
    assert bad.stderr.strip().splitlines()[-1].startswith(
        f"gitd check: error: {data / 'trailing.json'}: not valid JSON (line 1, column")


def test_images_split_and_outside_root_options(tmp_path):
    (tmp_path / "imgs").mkdir()
    good_png(tmp_path / "imgs" / "a.png")
    good_png(tmp_path / "b.png")
    (tmp_path / "k.json").write_text(json.dumps({"images": [
        {"filename": "a.png", "split": "val", "sentences": [{"raw": "x"}]},
        {"filename": "../b.png", "split": "val", "sentences": [{"raw": "y"}]}]}))
    args = ["check", tmp_path / "k.json", "--images", tmp_path / "imgs", "--split", "val", "-q"]
    assert main([str(a) for a in args]) == 1
    assert main([str(a) for a in args] + ["--allow-outside-root"]) == 0
    assert main([str(a) for a in args[:-3]] + ["-q"]) == 2  # default split train: none there


def _jpeg(size=(32, 32)):
    buf = io.BytesIO()
    arr = np.random.default_rng(0).integers(0, 256, (size[1], size[0], 3), np.uint8)
    Image.fromarray(arr).save(buf, format="JPEG")
    return buf.getvalue()


# name: (annotation content, exit code, problem kinds reported with --json)
BROKEN_ANNOTATIONS = {
    "trailing_comma": ('[{"image": "a.png", "caption": "x"},]', 2, None),
    "wrong_dict": ('{"data": [{"image": "a.png"}]}', 2, None),
    "number": ("42", 2, None),
    "empty_list": ("[]", 2, None),
    "empty_file": ("", 2, None),
    "binary": (b"\x89PNG\r\n\x1a\n\x00\x00\xff", 2, None),
    "deep": ("[" * 50000, 2, None),
    "caption_5": ('[{"image": "a.png", "caption": 5}]', 1, {"bad-caption", "no-caption"}),
    "caption_empty": ('[{"image": "a.png", "caption": ""}]', 1, {"empty-caption", "no-caption"}),
    "caption_null": ('[{"image": "a.png", "caption": null}]', 1, {"bad-caption", "no-caption"}),
    "caption_mixed": ('[{"image": "a.png", "caption": ["ok", 3]}]', 1, {"bad-caption"}),
    "no_image_key": ('[{"caption": "x"}, {"image": "a.png", "caption": "y"}]', 1,
                     {"missing-field"}),
    "image_int": ('[{"image": 7, "caption": "x"}]', 1, {"bad-path"}),
    "dotdot": ('[{"image": "../outside.png", "caption": "x"}]', 1, {"outside-root"}),
    "absolute": ('[{"image": "/etc/hostname", "caption": "x"}]', 1, {"outside-root"}),
    "nul_in_path": ('[{"image": "a\\u0000.png", "caption": "x"}]', 1, {"bad-path"}),
    "long_path": (json.dumps([{"image": "x" * 5000 + ".png", "caption": "x"}]), 1,
                  {"unreadable-image"}),
    "row_not_object": ('[[1, 2], "a.png", null]', 1, {"bad-row"}),
    "karpathy_bad": ('{"images": [{"filename": 3, "split": "train", "sentences": 5}]}', 1,
                     {"bad-path"}),
    "coco_bad": ('{"images": [{"id": [1], "file_name": "a.png"}, 3], "annotations": [7]}', 1,
                 {"bad-row"}),
    "images_broken": ('[{"image": "corrupt.png", "caption": "x"},'
                      ' {"image": "truncated.jpg", "caption": "x"},'
                      ' {"image": "zero.png", "caption": "x"},'
                      ' {"image": "folder.png", "caption": "x"},'
                      ' {"image": "modes/rgba.png", "caption": "fine"}]', 1,
                      {"corrupt-image", "truncated-image", "bad-image"}),
    "modes_fine": ('[{"image": "modes/rgba.png", "caption": "x"},'
                   ' {"image": "modes/p.png", "caption": "x"},'
                   ' {"image": "modes/l.png", "caption": "x"},'
                   ' {"image": "modes/i16.png", "caption": "x"},'
                   ' {"image": "modes/cmyk.jpg", "caption": "x"}]', 0, set()),
}


@pytest.fixture(scope="module")
def zoo(tmp_path_factory):
    root = tmp_path_factory.mktemp("zoo")
    good_png(root / "a.png")
    (root / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4)
    (root / "truncated.jpg").write_bytes(_jpeg()[:600])
    (root / "zero.png").write_bytes(b"")
    (root / "folder.png").mkdir()
    (root / "modes").mkdir()
    for mode in ("RGBA", "P", "L"):
        good_png(root / "modes" / f"{mode.lower()}.png", mode=mode)
    Image.fromarray(np.full((4, 5), 50000, np.uint16)).save(root / "modes" / "i16.png")
    Image.new("CMYK", (5, 4), (10, 20, 30, 40)).save(root / "modes" / "cmyk.jpg")
    good_png(root.parent / "outside.png")
    return root


@pytest.mark.parametrize("name", sorted(BROKEN_ANNOTATIONS))
def test_broken_inputs_give_one_line_messages_and_exit_codes(zoo, name, capsys):
    content, code, expected_kinds = BROKEN_ANNOTATIONS[name]
    ann = zoo / f"{name}.json"
    if isinstance(content, bytes):
        ann.write_bytes(content)
    else:
        ann.write_text(content)
    # Any exception other than GitdError would escape main() and fail here with a traceback.
    assert main(["check", str(ann), "-q", "--workers", "1"]) == code
    out, err = capsys.readouterr()
    if code == 2:
        assert out == "" and len(err.strip().splitlines()) == 1
        assert err.startswith(f"gitd check: error: {ann}")
        return
    problems = [line for line in out.splitlines() if line.startswith(f"{ann}: ")]
    assert bool(problems) == (code == 1)
    assert main(["check", str(ann), "-q", "--workers", "1", "--json"]) == code
    report = json.loads(capsys.readouterr().out)
    assert {p["kind"] for p in report["problems"]} == expected_kinds
    assert len(report["problems"]) == len(problems)


def test_unusable_paths(tmp_path, capsys):
    assert main(["check", str(tmp_path / "missing.json")]) == 2
    assert main(["check", str(tmp_path)]) == 2  # a folder without metadata
    assert main(["check", str(tmp_path), "--workers", "0"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err == [f"gitd check: error: {tmp_path / 'missing.json'}: annotation file not found",
                   f"gitd check: error: {tmp_path}: folder holds no annotations.json, "
                   "metadata.jsonl or metadata.csv, and no split sub-folder holding one; pass "
                   "the annotation file itself",
                   "gitd check: error: argument --workers: must be an integer in [1, 1024], "
                   "got '0' (see 'gitd check --help')"]


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their mode")
def test_unreadable_annotation_file(tmp_path, capsys):
    ann = tmp_path / "t.json"
    ann.write_text("[]")
    ann.chmod(0)
    assert main(["check", str(ann)]) == 2
    assert "permission denied" in capsys.readouterr().err


def test_decompression_bomb_through_cli(tmp_path, monkeypatch, capsys):
    good_png(tmp_path / "big.png", size=(30, 30))
    (tmp_path / "t.json").write_text(json.dumps([{"image": "big.png", "caption": "x"}]))
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)
    assert main(["check", str(tmp_path / "t.json"), "--json", "-q"]) == 1
    out = json.loads(capsys.readouterr().out)
    assert out["problems"][0]["kind"] == "decompression-bomb"
