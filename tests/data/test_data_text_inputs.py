"""Hostile annotation text: each case is a per-row problem or a one-line file error naming what
is wrong, never a traceback (issue 11, class 6)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from gitd.cli import main
from gitd.config import read_config_file
from gitd.data import load_dataset
from gitd.data.check import check_dataset
from gitd.errors import ConfigError, DataError

HUGE = "9" * 5000  # over Python's int-string limit (4300 digits)


@pytest.fixture
def root(tmp_path) -> Path:
    (tmp_path / "images").mkdir()
    for i in range(3):
        Image.new("RGB", (8, 8), (60 * i, 0, 0)).save(tmp_path / "images" / f"{i}.png")
    return tmp_path


def problems_by_row(ds) -> dict:
    """The first problem of each row."""
    out: dict = {}
    for p in ds.problems:
        out.setdefault(p.row, p)
    return out


def test_a_5000_digit_number_is_a_per_row_problem(root):
    blip = root / "blip.json"
    blip.write_text('[{"image": "images/0.png", "caption": "fine"},'
                    f'{{"image": {HUGE}, "caption": "x"}},'
                    f'{{"image": "images/1.png", "caption": [{HUGE}]}}]')
    ds = load_dataset(blip)
    assert ds.ids == ["images/0.png"]
    rows = problems_by_row(ds)
    assert "number with 5000 digits" in rows[1].message and rows[1].kind == "bad-path"
    assert "number with 5000 digits" in rows[2].message and rows[2].kind == "bad-caption"
    coco = root / "coco.json"
    coco.write_text(f'{{"images": [{{"id": {HUGE}, "file_name": "images/0.png"}},'
                    '{"id": 2, "file_name": "images/2.png"}],'
                    f'"annotations": [{{"image_id": {HUGE}, "caption": "x"}},'
                    '{"image_id": 2, "caption": "two"}]}')
    ds = load_dataset(coco)
    assert ds.ids == ["images/2.png"]
    assert any("number with 5000 digits" in p.message for p in ds.problems)
    jsonl = root / "metadata.jsonl"
    jsonl.write_text(f'{{"file_name": "images/0.png", "text": {HUGE}}}\n'
                     '{"file_name": "images/1.png", "text": "ok"}\n')
    assert load_dataset(jsonl).ids == ["images/1.png"]
    cfg = root / "c.json"
    cfg.write_text(f'{{"seed": {HUGE}}}')
    with pytest.raises(ConfigError, match="c.json: not valid JSON"):
        read_config_file(cfg)


def test_lone_surrogates_in_paths_and_captions_are_per_row_problems(root, capsys):
    ann = root / "train.json"
    ann.write_text('[{"image": "images/\\ud800.png", "caption": "a"},'
                   '{"image": "images/1.png", "caption": ["ok", "a \\udc00 dog"]},'
                   '{"image": "images/2.png", "caption": "fine"}]')
    ds = load_dataset(ann)
    assert [r.captions for r in ds] == [("ok",), ("fine",)]
    rows = problems_by_row(ds)
    assert "lone surrogate U+D800" in rows[0].message and rows[0].kind == "bad-path"
    assert "lone surrogate U+DC00" in rows[1].message and rows[1].kind == "bad-caption"
    assert main(["check", str(ann)]) == 1
    assert main(["check", str(ann), "--json"]) == 1
    out = capsys.readouterr().out
    assert "lone surrogate" in out


def test_a_csv_field_over_the_csv_size_limit_is_a_per_row_problem(root, capsys):
    csv = root / "metadata.csv"
    csv.write_text('file_name,text\nimages/0.png,"' + "long " * 40_000 + '"\n'
                   "images/1.png,a short caption\n")
    report = check_dataset(root)
    assert report.exit_code == 1 and report.summary["images"] == 1
    (problem,) = report.problems
    assert problem.row == 2 and "200,000 characters long" in problem.message
    assert main(["check", str(root)]) == 1  # a problem, not an unreadable file (exit 2)
    capsys.readouterr()


def test_coco_without_annotations_says_so(root, capsys):
    coco = root / "captions_train.json"
    coco.write_text(json.dumps({"images": [{"id": 1, "file_name": "images/0.png"}]}))
    with pytest.raises(DataError, match="looks like COCO captions JSON .* no 'annotations'"):
        load_dataset(coco)
    assert main(["check", str(coco)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no 'annotations' list" in err[0]
