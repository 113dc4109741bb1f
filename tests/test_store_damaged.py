"""A damaged cache is recomputed, never trusted, and never leaves a run stuck: a unit that fails
to load is computed again with a warning naming it, a stage whose own files are inconsistent is
recomputed from its inputs, and valid finished units are kept (issue 11, class 3)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from gitd.config import make_config
from gitd.data.shapes import make_shapes
from gitd.methods import distill
from gitd.store import (Stage, atomic_write_json, remove_stale_temp_files, run_units, unit_json,
                        unit_path)

PAIRS = 6


def tiny():
    return make_config("tiny", pairs=PAIRS, seed=0, device="cpu")


def result(out: Path) -> dict[str, bytes]:
    files = {p.name: p.read_bytes() for p in sorted((out / "images").iterdir())}
    files["annotations.json"] = (out / "annotations.json").read_bytes()
    return files


@pytest.fixture(scope="module")
def shapes(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("damaged-data")
    make_shapes(root, train=24, test=2, size=48, seed=5, workers=1)
    return root / "train.json"


@pytest.fixture(scope="module")
def reference(shapes, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("damaged") / "ref"
    distill(shapes, out, tiny())
    return out


def _one(out: Path, pattern: str) -> Path:
    found = list((out / "work").glob(pattern))
    assert len(found) == 1, (pattern, found)
    return found[0]


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: max(1, path.stat().st_size // 3)])


DAMAGE = {
    # stage files: the stage is recomputed from its inputs
    "latents.npy deleted": ("encode-*/latents.npy", Path.unlink, "encode: the cached stage"),
    "latents.npy truncated": ("encode-*/latents.npy", _truncate, "encode: the cached stage"),
    "progress.json corrupt": ("encode-*/progress.json",
                              lambda p: p.write_text('{"rows_done": "many'), "encode: the cached"),
    "index.json deleted": ("encode-*/index.json", Path.unlink, "encode: the cached stage"),
    "medoids.json emptied": ("cluster-*/medoids.json", lambda p: p.write_text("{}"),
                             "cluster: the cached stage"),
    # units: only the damaged one is computed again
    "generated PNG deleted": ("img2img-*/0002.png", Path.unlink,
                              "img2img: medoid 2 in"),
    "generated PNG truncated": ("img2img-*/0002.png", _truncate, "img2img: medoid 2 in"),
    "img2img JSON garbage": ("img2img-*/0002.json", lambda p: p.write_bytes(b"\x00\xff"),
                              "img2img: medoid 2 in"),
    "caption JSON emptied": ("caption-*/0003.json", lambda p: p.write_text("{}"),
                             "caption: image 3 in"),
}


@pytest.mark.parametrize("case", list(DAMAGE))
def test_damaged_cache_is_recomputed_and_gives_the_same_output(reference, shapes, tmp_path,
                                                               caplog, case):
    pattern, damage, warning = DAMAGE[case]
    out = tmp_path / "out"
    shutil.copytree(reference, out)
    target = _one(out, pattern)
    units = {p: p.stat().st_mtime_ns for p in target.parent.glob("0*.json")}
    damage(target)
    caplog.set_level("INFO", logger="gitd")
    distill(shapes, out, tiny())
    assert result(out) == result(reference)
    assert warning in caplog.text and "damaged" in caplog.text, caplog.text
    if "medoid" in warning or "image 3" in warning:
        # Every other finished unit was kept as it was.
        kept = {p: t for p, t in units.items() if p.stem != target.stem}
        assert {p: p.stat().st_mtime_ns for p in kept} == kept
        assert f"{PAIRS - 1} of {PAIRS}" in caplog.text


def test_run_units_recomputes_only_units_that_fail_to_load(tmp_path, caplog):
    stage = Stage.open(tmp_path, "squares", {"v": 1})
    calls: list[list[int]] = []

    def compute(chunk):
        calls.append(list(chunk))
        return [j * j for j in chunk]

    def write(j, value):
        atomic_write_json(unit_path(stage, j), {"value": value})

    def load(j):
        return unit_json(stage, j, "value")["value"]

    assert run_units(stage, 5, 2, compute, write, load) == [0, 1, 4, 9, 16]
    unit_path(stage, 3).write_text('{"other": 1}')      # emptied of what it must hold
    unit_path(stage, 4).write_text("")                  # cut off
    stamp = os.stat(unit_path(stage, 2)).st_mtime_ns
    calls.clear()
    caplog.set_level("INFO", logger="gitd")
    assert run_units(stage, 5, 2, compute, write, load) == [0, 1, 4, 9, 16]
    assert calls == [[2, 3], [4]]                       # the whole batch, for identical numbers
    assert os.stat(unit_path(stage, 2)).st_mtime_ns == stamp  # kept, not rewritten
    assert "unit 3 in" in caplog.text and "has no 'value'" in caplog.text
    assert "unit 4 in" in caplog.text and "not valid JSON" in caplog.text


def test_only_dead_writers_temp_files_are_removed(tmp_path):
    dead = tmp_path / ".x.json.999999999-abc.tmp"
    live = tmp_path / f".y.json.{os.getpid()}-abc.tmp"
    user = tmp_path / ".notes.tmp"
    for p in (dead, live, user):
        p.write_text("x")
    assert remove_stale_temp_files(tmp_path) == 1
    assert not dead.exists() and live.exists() and user.exists()
