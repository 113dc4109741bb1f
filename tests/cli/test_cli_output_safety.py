"""Every command that writes refuses, in one line with exit 2, to write over an input or over a
file gitd did not write (issue 11, classes 1 and 4)."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest
from PIL import Image

from gitd.cli import main


def blip_set(root: Path, n: int = 5, name: str = "train.json") -> Path:
    (root / "images").mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(n):
        Image.new("RGB", (16, 16), (50 * i, 20, 200 - 30 * i)).save(root / "images" / f"{i}.png")
        rows.append({"image": f"images/{i}.png", "caption": [f"picture {i}"]})
    (root / name).write_text(json.dumps(rows))
    return root / name


def digest(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def run_cli(capsys, *args) -> tuple[int, list[str]]:
    rc = main([*map(str, args), "-q"])
    return rc, capsys.readouterr().err.strip().splitlines()


@pytest.fixture
def data(tmp_path) -> Path:
    return blip_set(tmp_path / "data")


def test_select_with_out_dot_inside_the_dataset_is_refused(data, capsys, monkeypatch):
    before = digest(data.parent)
    monkeypatch.chdir(data.parent)
    rc, err = run_cli(capsys, "select", "train.json", "--method", "random", "--pairs", "2",
                      "--out", ".")
    assert rc == 2 and len(err) == 1 and "never writes over its inputs" in err[0], err
    rc, err = run_cli(capsys, "distill", data, "--pairs", "2", "--preset", "tiny",
                      "--no-cluster", "--no-diffusion", "--no-captioner", "--out",
                      data.parent / "images")
    assert rc == 2 and len(err) == 1 and "is the dataset image folder" in err[0], err
    assert digest(data.parent) == before


def test_out_naming_a_file_and_a_foreign_folder(data, tmp_path, capsys):
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    rc, err = run_cli(capsys, "select", data, "-m", "random", "-k", "2", "--out", a_file)
    assert rc == 2 and len(err) == 1 and "names an existing file" in err[0]
    rc, err = run_cli(capsys, "shapes", tmp_path / "data", "--train", "2", "--test", "1")
    assert rc == 2 and len(err) == 1 and "not written by gitd" in err[0]
    assert a_file.read_text() == "x"


def test_evaluate_out_over_an_input_a_foreign_file_or_a_missing_folder(data, tmp_path, capsys):
    test = blip_set(tmp_path / "data", 3, "test.json")
    mine = tmp_path / "mine.json"
    mine.write_text('{"my": "numbers"}')
    base = ["evaluate", "--train", data, "--test", test, "--epochs", "0", "--seeds", "1"]
    cases = [(test, "is the test set annotation file"),
             (data.parent / "images" / "0.png", "is the training set image"),
             (mine, "exists and was not written by gitd"),
             (tmp_path / "missing" / "r.json", "does not exist"),
             (a_dir := tmp_path / "a_dir", "is a folder")]
    a_dir.mkdir()
    before = digest(tmp_path)
    for out, needle in cases:
        rc, err = run_cli(capsys, *base, "--out", out)
        assert rc == 2 and len(err) == 1 and needle in err[0], (out, err)
    assert digest(tmp_path) == before


def test_report_out_over_a_user_file_or_an_input_is_refused(data, tmp_path, capsys):
    out = tmp_path / "sel"
    assert run_cli(capsys, "select", data, "-m", "random", "-k", "2", "--out", out)[0] == 0
    page = tmp_path / "page.html"
    page.write_text("<html>my page</html>")
    for dest, needle in [(page, "not written by gitd"),
                         (out / "manifest.json", "is the file of the reported folder"),
                         (out / "images" / "0000.png", "is the pair image")]:
        before = dest.read_bytes()
        rc, err = run_cli(capsys, "report", out, "--out", dest)
        assert rc == 2 and len(err) == 1 and needle in err[0], (dest, err)
        assert dest.read_bytes() == before
    assert run_cli(capsys, "report", out)[0] == 0
    assert run_cli(capsys, "report", out)[0] == 0  # its own earlier report is replaced
    assert os.path.getsize(out / "report.html") > 1000
