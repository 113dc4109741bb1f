"""gitd.outdir: outputs never overlap an input, never replace what gitd did not write, and are
replaced as a whole (issue 11, class 1; issue 10, item 4)."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest
from PIL import Image

from gitd.config import make_config
from gitd.data import load_dataset
from gitd.errors import GitdError
from gitd.methods.coreset import select_coreset
from gitd.methods import distill
from gitd.outdir import MARKER, Inputs, OutputFolder, claim, read_marker
from gitd.report import write_report

DEAD_PID = 999_999_999  # above any pid_max: never a live process


def imagefolder(root: Path, n: int = 6) -> Path:
    """A user's Hugging Face imagefolder: 0000.png ... and metadata.jsonl in one folder, the
    layout gitd's own output uses too (so an overwrite would be silent)."""
    root.mkdir(parents=True, exist_ok=True)
    lines = []
    for i in range(n):
        Image.new("RGB", (16, 16), (40 * i, 255 - 30 * i, 7 * i)).save(root / f"{i:04d}.png")
        lines.append(json.dumps({"file_name": f"{i:04d}.png", "text": f"user caption {i}"}))
    (root / "metadata.jsonl").write_text("\n".join(lines) + "\n")
    return root


def snapshot(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def no_models(**kw):
    """GITD with every model ablated: the output path runs in milliseconds."""
    kw = {"pairs": 3, "seed": 0, **kw}
    return make_config("tiny", device="cpu", cluster=False, diffusion=False,
                       captioner_on=False, **kw)


@pytest.fixture
def data(tmp_path) -> Path:
    return imagefolder(tmp_path / "photos")


@pytest.mark.parametrize("where", ["same", "inside", "parent", "file"])
def test_output_overlapping_an_input_is_refused_and_input_untouched(data, where):
    out = {"same": data, "inside": data / "distilled", "parent": data.parent,
           "file": data / "metadata.jsonl"}[where]
    before = snapshot(data.parent)
    for run in (lambda: distill(data, out, no_models()),
                lambda: select_coreset(data, "random", 3, out)):
        with pytest.raises(GitdError) as err:
            run()
        message = str(err.value)
        assert "\n" not in message and str(out) in message
        assert "existing file" in message if where == "file" else "never writes over" in message
    assert snapshot(data.parent) == before


def test_work_folder_config_file_and_outside_root_images_count_as_inputs(data, tmp_path):
    with pytest.raises(GitdError, match="work folder lies inside the dataset image root"):
        distill(data, tmp_path / "o1", no_models(), work=data / "work")
    cfg_dir = tmp_path / "cfgs"
    cfg_dir.mkdir()
    (cfg_dir / "c.yaml").write_text("preset: tiny\n")
    with pytest.raises(GitdError, match="contains the config file"):
        distill(data, cfg_dir, no_models(), config_file=cfg_dir / "c.yaml")
    # Images reached outside the image root (allowed on purpose) are inputs too.
    elsewhere = imagefolder(tmp_path / "elsewhere", 3)
    rows = [{"image": str(elsewhere / f"{i:04d}.png"), "caption": "far away"} for i in range(3)]
    ann = tmp_path / "ann" / "a.json"
    ann.parent.mkdir()
    ann.write_text(json.dumps(rows))
    with pytest.raises(GitdError, match="image folder"):
        select_coreset(ann, "random", 2, elsewhere / "out", allow_outside_root=True)
    assert not (elsewhere / "out").exists()


def test_a_folder_gitd_did_not_write_is_refused_an_empty_one_is_used(data, tmp_path):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("my notes")
    with pytest.raises(GitdError, match="not empty and was not written by gitd"):
        select_coreset(data, "random", 2, mine)
    assert snapshot(mine) == {"notes.txt": hashlib.sha256(b"my notes").hexdigest()}
    empty = tmp_path / "empty"
    empty.mkdir()
    select_coreset(data, "random", 2, empty)
    assert read_marker(empty)["written_by"] == "gitd select"
    # A gitd shapes folder is gitd's, but not this kind of output.
    (tmp_path / "shp").mkdir()
    (tmp_path / "shp" / MARKER).write_text(json.dumps({"kind": "shapes",
                                                        "written_by": "gitd shapes"}))
    with pytest.raises(GitdError, match="output of gitd shapes"):
        select_coreset(data, "random", 2, tmp_path / "shp")


def test_rerun_with_fewer_pairs_leaves_exactly_one_result(data, tmp_path, caplog):
    out = tmp_path / "out"
    distill(data, out, no_models(pairs=5))
    write_report(out)                                   # report.html belongs to that result
    (out / "results.json").write_text('{"gitd_version": "x", "summary": {}}')
    claim(out / "results.json")                         # as gitd evaluate --out does
    distill(data, out, no_models(pairs=2, seed=1))
    assert sorted(p.name for p in (out / "images").iterdir()) == ["0000.png", "0001.png"]
    assert not (out / "results.json").exists() and not (out / "report.html").exists()
    assert json.loads((out / "manifest.json").read_text())["pairs"] == 2
    assert len(json.loads((out / "annotations.json").read_text())) == 2
    caplog.set_level("INFO", logger="gitd")
    distill(data, out, no_models(pairs=2, seed=1))
    assert "cluster: cached" in caplog.text  # the work folder came across both swaps
    marker = read_marker(out)
    assert marker["complete"] and "images/0001.png" in marker["files"]
    assert not [p for p in tmp_path.iterdir() if ".gitd-" in p.name]  # no sibling left
    # The same for select, which has no work folder.
    sel = tmp_path / "sel"
    select_coreset(data, "random", 4, sel)
    select_coreset(data, "full", None, sel)
    select_coreset(data, "random", 1, sel)
    assert [p.name for p in (sel / "images").iterdir()] == ["0000.png"]


def test_a_file_added_by_the_user_blocks_replacement_and_survives(data, tmp_path):
    out = tmp_path / "out"
    select_coreset(data, "random", 3, out)
    (out / "images" / "mine.jpg").write_bytes(b"user's photo")
    before = snapshot(out)
    with pytest.raises(GitdError, match=r"files gitd did not write \(images/mine.jpg\)"):
        select_coreset(data, "random", 2, out)
    assert snapshot(out) == before


def test_what_a_killed_run_left_is_repaired_and_cleaned(data, tmp_path):
    out = tmp_path / "out"
    distill(data, out, no_models())
    reference = snapshot(out / "images")
    # Killed in the middle of a swap, after the work folder moved into the new result.
    half = tmp_path / f".out.gitd-new-{DEAD_PID}"
    half.mkdir()
    (half / MARKER).write_text(json.dumps({"kind": "pairs", "complete": False, "files": []}))
    (half / "images").mkdir()
    (half / "images" / "0000.png").write_bytes(b"half written")
    os.rename(out / "work", half / "work")
    # Killed during atomic writes, in the output and in a stage folder.
    (out / f".annotations.json.{DEAD_PID}-abc123.tmp").write_text("[")
    stage = next((half / "work").glob("cluster-*"))
    (stage / f".medoids.json.{DEAD_PID}-x.tmp").write_text("{")
    OutputFolder.prepare(out, command="distill", inputs=Inputs().dataset(load_dataset(data)),
                         work=out / "work")
    assert not half.exists()
    assert (out / "work").is_dir() and not list((out / "work").rglob("*.tmp"))
    assert not list(out.glob(".*.tmp"))
    assert snapshot(out / "images") == reference
    # Killed between moving the old result aside and moving the new one in: nothing at OUT.
    old = tmp_path / f".out.gitd-old-{DEAD_PID}"
    os.rename(out, old)
    select_coreset(data, "random", 3, tmp_path / "other")  # an unrelated run changes nothing
    assert not out.exists()
    distill(data, out, no_models())
    assert snapshot(out / "images") == reference and not old.exists()


def test_a_run_that_fails_before_any_work_leaves_nothing_behind(data, tmp_path):
    from gitd.errors import ModelUnavailableError
    from gitd.methods import distill as distill_any

    out = tmp_path / "new"
    cfg = make_config("tiny", pairs=2, seed=0, device="cpu",
                      diffusion_model=str(tmp_path / "no-such-model"))
    with pytest.raises(ModelUnavailableError):
        distill_any(data, out, cfg)
    assert not out.exists()
    given = tmp_path / "given"
    given.mkdir()
    with pytest.raises(ModelUnavailableError):
        distill_any(data, given, cfg)
    assert given.is_dir() and list(given.iterdir()) == []  # the user's folder stays, empty


def test_an_earlier_work_folder_is_kept_when_work_moves_elsewhere(data, tmp_path, caplog):
    out = tmp_path / "out"
    distill(data, out, no_models())
    distill(data, out, no_models(), work=tmp_path / "elsewhere")
    assert list((out / "work").glob("cluster-*")) and (tmp_path / "elsewhere").is_dir()
    caplog.set_level("INFO", logger="gitd")
    distill(data, out, no_models())
    assert "cluster: cached" in caplog.text
