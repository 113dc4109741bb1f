import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from gitd.data.check import check_dataset
from gitd.errors import DataError


def noisy(size=(48, 40), mode="RGB", seed=0):
    rng = np.random.default_rng(seed)
    arr = rng.integers(0, 256, size=(size[1], size[0], 3), dtype=np.uint8)
    return Image.fromarray(arr, "RGB").convert(mode)


def jpeg_bytes(size=(64, 64)):
    buf = io.BytesIO()
    noisy(size).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def png_bytes(im):
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return buf.getvalue()


def broken_set(root: Path) -> list[dict]:
    """One file per kind of image trouble, plus odd-but-fine modes."""
    root.mkdir(parents=True, exist_ok=True)
    good = {
        "rgb.png": png_bytes(noisy()),
        "rgba.png": png_bytes(noisy(mode="RGBA")),
        "p.png": png_bytes(noisy().convert("P")),
        "l.png": png_bytes(noisy(mode="L")),
        "i16.png": png_bytes(Image.fromarray(np.full((5, 7), 40000, np.uint16))),
        "ok.jpg": jpeg_bytes(),
    }
    buf = io.BytesIO()
    noisy(mode="CMYK").save(buf, format="JPEG")
    good["cmyk.jpg"] = buf.getvalue()
    broken_png = bytearray(png_bytes(noisy()))
    at = broken_png.index(b"IDAT")
    broken_png[at + 20:at + 60] = bytes(40)  # damaged compressed data, intact header
    bad = {
        "corrupt.png": bytes(broken_png),
        "corrupt.jpg": np.random.default_rng(1).integers(0, 256, 500, np.uint8).tobytes(),
        "truncated.jpg": jpeg_bytes()[:700],
        "zero.png": b"",
    }
    for name, data in {**good, **bad}.items():
        (root / name).write_bytes(data)
    (root / "folder.jpg").mkdir()
    return [{"image": n, "caption": f"caption of {n}"} for n in [*good, *bad, "folder.jpg"]]


def test_clean_dataset_summary(tmp_path):
    for i, size in enumerate([(10, 20), (30, 40), (50, 60)]):
        noisy(size).save(tmp_path / f"{i}.png")
    ann = tmp_path / "t.json"
    ann.write_text(json.dumps([{"image": "0.png", "caption": ["a", "b", "c"]},
                               {"image": "1.png", "caption": "d"},
                               {"image": "2.png", "caption": ["e", "f"]}]))
    report = check_dataset(ann)
    assert report.exit_code == 0 and report.problems == []
    s = report.summary
    assert (s["format"], s["images"], s["captions"]) == ("blip", 3, 6)
    assert s["captions_per_image"] == {"min": 1, "median": 2, "max": 3}
    assert s["image_size"]["width"] == {"min": 10, "median": 30, "max": 50}
    assert s["image_size"]["height"] == {"min": 20, "median": 40, "max": 60}
    text = report.format_text()
    assert "problems:     none" in text and "min 10x20, median 30x40, max 50x60" in text
    assert json.loads(report.to_json())["summary"]["images"] == 3


def test_every_image_problem_found_and_odd_modes_accepted(tmp_path):
    rows = broken_set(tmp_path)
    (tmp_path / "t.json").write_text(json.dumps(rows))
    report = check_dataset(tmp_path / "t.json", workers=1)
    by_id = {p.message.split("'")[1]: p.kind for p in report.problems}
    assert by_id == {"corrupt.png": "corrupt-image", "corrupt.jpg": "corrupt-image",
                     "truncated.jpg": "truncated-image", "zero.png": "corrupt-image",
                     "folder.jpg": "bad-image"}
    assert report.summary["images"] == 7  # rgb, rgba, p, l, i16, jpg, cmyk
    assert report.exit_code == 1
    for p in report.problems:
        line = str(p)
        assert "\n" not in line and line.startswith(f"{tmp_path / 't.json'}: row ")
        assert rows[p.row]["image"] in line


def test_row_and_caption_problems_and_duplicates(tmp_path):
    for n in ("a.png", "b.png"):
        noisy().save(tmp_path / n)
    noisy().save(tmp_path.parent / f"{tmp_path.name}-outside.png")
    ann = tmp_path / "t.json"
    ann.write_text(json.dumps([
        {"image": "a.png", "caption": "fine"},
        {"image": "b.png", "caption": 5},
        {"image": "b.png", "caption": ""},
        {"image": "b.png", "caption": None},
        {"image": "b.png", "caption": ["ok", 3]},
        {"image": "a.png", "caption": "again later"},
        {"caption": "no image"},
        {"image": "a.png"},
        {"image": 7, "caption": "x"},
        {"image": f"../{tmp_path.name}-outside.png", "caption": "x"},
        {"image": "/etc/passwd", "caption": "x"},
    ]))
    report = check_dataset(ann)
    got = [(p.row, p.kind) for p in report.problems]
    assert got == [(1, "bad-caption"), (2, "empty-caption"), (3, "bad-caption"),
                   (4, "bad-caption"), (4, "duplicate-image"), (5, "duplicate-image"),
                   (6, "missing-field"), (7, "missing-field"), (8, "bad-path"),
                   (9, "outside-root"), (10, "outside-root")]
    assert report.summary["problems_by_kind"]["outside-root"] == 2
    assert report.dataset[0].captions == ("fine", "again later")
    assert report.dataset[1].captions == ("ok",)
    allowed = check_dataset(ann, allow_outside_root=True)
    # /etc/passwd is now inside the rules but is not an image
    assert [p.kind for p in allowed.problems if p.row in (9, 10)] == ["corrupt-image"]


def test_decompression_bomb_uses_pil_limit(tmp_path, monkeypatch):
    noisy((40, 40)).save(tmp_path / "big.png")
    noisy((4, 4)).save(tmp_path / "small.png")
    ann = tmp_path / "t.json"
    ann.write_text(json.dumps([{"image": "big.png", "caption": "b"},
                               {"image": "small.png", "caption": "s"}]))
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)
    report = check_dataset(ann, workers=1)
    assert [(p.row, p.kind) for p in report.problems] == [(0, "decompression-bomb")]


def test_process_pool_keeps_order_and_pil_limit(tmp_path, monkeypatch):
    rows = []
    for i in range(70):
        name = f"{i:03d}.png"
        if i % 10 == 3:
            (tmp_path / name).write_bytes(b"junk")
        elif i == 50:
            noisy((40, 40)).save(tmp_path / name)
        else:
            noisy((4 + i % 5, 4)).save(tmp_path / name)
        rows.append({"image": name, "caption": f"c{i}"})
    ann = tmp_path / "t.json"
    ann.write_text(json.dumps(rows))
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)
    report = check_dataset(ann, workers=2)
    assert [(p.row, p.kind) for p in report.problems] == (
        [(i, "corrupt-image") for i in range(3, 50, 10)] + [(50, "decompression-bomb")]
        + [(i, "corrupt-image") for i in range(53, 70, 10)])
    assert report.summary["images"] == 70 - 8
    assert report.summary["image_size"]["width"] == {"min": 4, "median": 6, "max": 8}


def test_every_row_bad_is_a_report_not_an_error(tmp_path):
    (tmp_path / "t.json").write_text(json.dumps([{"image": "gone.png", "caption": "x"}]))
    report = check_dataset(tmp_path / "t.json")
    assert report.exit_code == 1 and report.summary["images"] == 0
    assert "image size" not in report.format_text()


def test_unreadable_dataset_raises(tmp_path):
    (tmp_path / "t.json").write_text('{"images": [1,],}')
    with pytest.raises(DataError, match="not valid JSON"):
        check_dataset(tmp_path / "t.json")


def test_karpathy_and_coco_summaries(tmp_path):
    noisy().save(tmp_path / "a.jpg")
    noisy().save(tmp_path / "b.jpg")
    k = tmp_path / "k.json"
    k.write_text(json.dumps({"images": [
        {"filename": "a.jpg", "split": "test", "sentences": [{"raw": "x"}, {"raw": "y"}]},
        {"filename": "b.jpg", "split": "train", "sentences": [{"raw": "z"}]}]}))
    report = check_dataset(k, split="test")
    assert report.summary["split"] == "test" and report.summary["images"] == 1
    assert "split:        test" in report.format_text()
    c = tmp_path / "c.json"
    c.write_text(json.dumps({"images": [{"id": 1, "file_name": "a.jpg"},
                                        {"id": 2, "file_name": "a.jpg"}],
                             "annotations": [{"image_id": 1, "caption": "p"},
                                             {"image_id": 2, "caption": "q"}]}))
    report = check_dataset(c)
    assert [p.kind for p in report.problems] == ["duplicate-image"]
    assert report.dataset[0].captions == ("p", "q")
